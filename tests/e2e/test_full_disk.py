"""A full disk, on a real small file system: tagstatd keeps collecting and answering, is
restarted on the full disk without exiting, and writes what it held once space returns.

A tmpfs of 4 MiB is mounted for the daemon's home, which needs root (CI runs as root);
elsewhere the test skips and says why. The in-process tests of the same episode are in
tests/daemon/test_store_writeback.py."""

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import Daemon, wait_for

pytestmark = pytest.mark.e2e

RATE = 30_000_000
DEVICE = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "rate": [[0, RATE]],
          "loop_s": 2, "messages": [[0.5, "warning", "overflow on channel 3"]]}  # fmt: skip


@contextlib.contextmanager
def small_file_system(size: str = "4m"):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8); CI runs as root")
    where = Path(tempfile.mkdtemp(prefix="ts-full-", dir="/tmp"))  # noqa: S108 - AF_UNIX limit
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def fill(home: Path) -> Path:
    """Write zeros until the file system is full; the filler file."""
    filler = home / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def session_bytes(d) -> int:
    return sum(s["bytes"] for s in d.client.sessions())


def test_a_full_disk_is_an_episode_survived_across_a_restart(write_scenario):
    with small_file_system() as home:
        sc = write_scenario(home / "s.toml", [DEVICE])
        env = {"TAGSTAT_CHECKPOINT_S": "0.5"}
        d = Daemon(home, sc, env).start()
        wait_for(lambda: session_bytes(d) > 0, "a session")
        filler = fill(home)
        storage = wait_for(lambda: d.client.status().get("storage"), "the episode in status")
        assert "full" in storage["error"] and storage["database"] == str(home / "tagstat.db")
        seen = wait_for(lambda: (b := session_bytes(d)) > RATE * 3 and b, "collecting on")
        assert d.proc.poll() is None  # still running: an episode, not a crash
        assert d.stop() == 0  # a clean stop, even with writes it cannot save
        stderr = d.stderr()
        assert stderr.count("cannot write the database") == 1 and "Traceback" not in stderr

        again = Daemon(home, sc, env).start()  # started on the full disk
        wait_for(lambda: again.client.status().get("storage"), "the episode after a restart")
        wait_for(lambda: session_bytes(again) > 0, "sessions while the disk is full")
        assert again.proc.poll() is None

        filler.unlink()  # space returns
        wait_for(lambda: again.client.status().get("storage") is None, "the episode to end",
                 timeout_s=120)  # fmt: skip
        after = wait_for(lambda: (b := session_bytes(again)) > seen and b, "more data, stored")
        assert again.stop() == 0
        assert "can be written again" in again.stderr()
        db = sqlite3.connect(home / "tagstat.db")
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = db.execute("SELECT sum(bytes_total), count(*) FROM sessions").fetchone()
        db.close()
        assert stored[0] >= after > seen  # what was shown during the episode reached the disk
