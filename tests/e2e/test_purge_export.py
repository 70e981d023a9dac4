"""Purge and export end to end: the real tagstatd, the real `tagstat` CLI (on a
pseudo-terminal for the confirmation) and the real collector (served on loopback and
`tagstat-collector import`).

After `tagstat purge` no earlier session id, start stamp, device id or message text is
in the database, its WAL or SHM, while the daemon runs and after it stops; an open
session is not written back. An exported report reaches the collector exactly once
(imported twice), is audited delivered-by-export and is never POSTed afterwards.
"""

import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from collectorproc import Collector

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SERIAL = "1740000JEH"
MESSAGE = "coolant purple-elephant warning"
FAST = {"TAGSTAT_CHECKPOINT_S": "0.5", "TAGSTAT_UPLOAD_INTERVAL_S": "1",
        "TAGSTAT_UPLOAD_BACKOFF_INITIAL_S": "0.2", "TAGSTAT_UPLOAD_BACKOFF_MAX_S": "1"}  # fmt: skip


def device(**more) -> dict:
    return {"serial": SERIAL, "model": "Time Tagger Ultra", "rate": [[0, 40e6]],
            "messages": [[0.3, "warning", MESSAGE]], **more}  # fmt: skip


def db_bytes(home: Path) -> bytes:
    files = [home / f"tagstat.db{suffix}" for suffix in ("", "-wal", "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def traces(d) -> list[bytes]:
    """Session ids and start stamps, device ids, and the device's message, as the API shows."""
    out = [MESSAGE.encode()]
    for s in d.client.sessions():
        out += [s["session_id"].encode(), s["start"].encode()]
    out += [dev["device_id"].encode() for dev in d.client.devices()]
    return out


def client_env() -> dict:
    # Without the kill switches a developer may have set (the daemons' fixture drops them too).
    drop = {"TAGSTAT_HOME", "TAGSTAT_DISABLE", "DO_NOT_TRACK"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def cli(home: Path, *args, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    env = client_env()
    return subprocess.run([str(BIN / "tagstat"), "--home", str(home), *args], stdin=stdin,
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_purge_leaves_no_earlier_session_in_the_file(home, daemons, write_scenario):
    # The device goes away after 3 s: then nothing new is collected, so whatever the file
    # holds after the purge can only be left over.
    scenario = write_scenario(home / "s.toml", [device(faults=[[3, "unplug"]])])
    d = daemons(scenario, env=FAST).start()
    d.wait_until(lambda: any(not s["open"] for s in d.client.sessions()), what="a closed session")
    d.wait_until(lambda: MESSAGE.encode() in db_bytes(home), what="the message stored")
    found = traces(d)
    user_before = d.report()["user_id"]
    status_before = d.client.status()
    assert len(found) >= 4 and all(t in db_bytes(home) for t in found)
    purged = cli(home, "purge", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "new user id" in purged.stdout and "no deletion request" in purged.stdout
    d.client.sessions()  # the daemon runs on: a checkpoint now, polls meanwhile
    d.report()
    assert [t for t in found if t in db_bytes(home)] == []
    assert d.client.sessions() == [] and d.client.devices() == []
    status_after = d.client.status()
    assert (status_after["status"], status_after["since"]) == (1, status_before["since"])
    assert d.report()["user_id"] != user_before
    assert d.stop() == 0
    assert [t for t in found if t in db_bytes(home)] == []
    assert SERIAL.encode() not in db_bytes(home)


def test_an_open_session_is_not_brought_back(home, daemons, write_scenario):
    d = daemons(write_scenario(home / "s.toml", [device()]), env=FAST).start()
    (old,) = d.wait_until(lambda: [s for s in d.client.sessions() if s["open"]], what="a session")
    assert cli(home, "purge", "--yes").returncode == 0
    (new,) = d.wait_until(lambda: d.client.sessions(), what="a new session")
    d.wait_until(lambda: db_bytes(home).count(new["session_id"].encode()), what="a checkpoint")
    ids = [s["session_id"] for s in d.client.sessions()]  # each call checkpoints too
    assert ids == [new["session_id"]] and new["session_id"] != old["session_id"]
    assert new["start"] > old["start"]
    assert d.stop() == 0
    assert old["session_id"].encode() not in db_bytes(home)


def test_purge_asks_on_a_terminal_and_refuses_without_one(home, daemons, write_scenario):
    # Uploads capped off: the first interactive run then has no consent question to ask,
    # and the only prompt on the terminal is the purge's.
    env = {**FAST, "TAGSTAT_MAX_STATUS": "collecting"}
    d = daemons(write_scenario(home / "s.toml", [device()]), env=env).start()
    before = {s["session_id"] for s in d.wait_until(d.client.sessions, what="a session")}
    refused = cli(home, "purge")  # stdin is /dev/null
    assert refused.returncode == 1
    assert "stdin is not a terminal; pass --yes" in refused.stderr
    assert on_a_terminal(home, "purge", answer=b"\n").endswith("nothing was deleted")  # default
    assert on_a_terminal(home, "purge", answer=b"n\n").endswith("nothing was deleted")
    assert before <= {s["session_id"] for s in d.client.sessions()}
    said = on_a_terminal(home, "purge", answer=b"y\n")
    assert "[y/N]" in said and "purged:" in said
    assert before.isdisjoint(s["session_id"] for s in d.client.sessions())


def on_a_terminal(home: Path, *args, answer: bytes) -> str:
    """Run `tagstat` with a pseudo-terminal as stdin and stdout; answer its prompt."""
    main, sub = pty.openpty()
    env = client_env()
    proc = subprocess.Popen([str(BIN / "tagstat"), "--home", str(home), *args],
                            stdin=sub, stdout=sub, stderr=sub, env=env)  # fmt: skip
    os.close(sub)
    seen = b""
    try:
        seen = read_until(main, b"[y/N] ", seen)
        os.write(main, answer)
        assert proc.wait(30) == 0
        seen = read_until(main, None, seen)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    return seen.decode(errors="replace").replace("\r\n", "\n").strip()


def read_until(fd: int, marker: bytes | None, seen: bytes) -> bytes:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (marker is None or marker not in seen):
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if marker is None:
                return seen
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: the program has exited
            return seen
        if not chunk:
            return seen
        seen += chunk
    assert marker is None or marker in seen, seen
    return seen


# -- export --------------------------------------------------------------------------------


def test_export_round_trip_delivers_each_report_once(home, daemons, write_scenario, tmp_path):
    d = daemons(write_scenario(home / "s.toml", [device()]), env=FAST).start()
    assert cli(home, "status", "collecting-and-uploading").returncode == 0
    d.wait_until(lambda: d.client.status()["upload"]["pending"] >= 2, what="queued reports")
    out = tmp_path / "lab.jsonl"
    done = cli(home, "export", str(out))
    assert done.returncode == 0, done.stderr
    header, *bodies = out.read_bytes().splitlines()
    exported = [json.loads(b)["report_id"] for b in bodies]
    assert json.loads(header)["reports"] == len(exported) >= 2
    assert f"exported {len(exported)} report(s)" in done.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert SERIAL.encode() not in out.read_bytes()
    for report_id, body in zip(exported, bodies, strict=True):  # the stored bytes, exactly
        assert d.client.upload_body(report_id)["body"].encode() == body
    audit = {a["report_id"]: a for a in d.client.uploads()}
    assert all(audit[r]["result"] == "exported" for r in exported)
    assert all(audit[r]["detail"] == "delivered-by-export" for r in exported)
    again = cli(home, "export", str(out))
    assert again.returncode == 1 and "exists; pass --force" in again.stderr

    # Now the lab gets a network: later reports are uploaded, the exported ones never.
    collector = Collector(tmp_path / "collector.db").start()
    try:
        (home / "tagstat.toml").write_text(f'upload_url = "{collector.url}"\n')
        d.proc.send_signal(signal.SIGHUP)
        d.wait_until(lambda: len(collector.report_ids()) >= 2, what="later reports uploaded")
        posted = collector.report_ids()  # all came by POST so far
        assert set(posted).isdisjoint(exported)
        tried = [a for a in d.client.uploads() if a["report_id"] in exported]
        assert {a["result"] for a in tried} == {"exported"}  # never attempted by the uploader
        first = import_file(out, collector.db)
        second = import_file(out, collector.db)
        assert (first["stored"], first["duplicate"]) == (len(exported), 0)
        assert (second["stored"], second["duplicate"]) == (0, len(exported))
        ids = collector.report_ids()
        assert sorted(i for i in ids if i in exported) == sorted(exported)  # once each
        assert len(ids) == len(set(ids))
    finally:
        collector.stop()


def test_export_with_nothing_pending_writes_nothing(home, daemons, write_scenario, tmp_path):
    daemons(write_scenario(home / "s.toml", [device()]), env=FAST).start()
    out = tmp_path / "empty.jsonl"
    done = cli(home, "export", str(out))
    assert done.returncode == 0 and "nothing to export" in done.stdout
    assert not out.exists()


def import_file(path: Path, db: Path) -> dict:
    done = subprocess.run(
        [str(BIN / "tagstat-collector"), "--log-level", "warning", "import", str(path),
         "--db", str(db), "--json"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
