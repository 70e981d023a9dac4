"""Crash soak: N kill -9s of tagstatd at random moments, and what survives them.

In the spirit of SQLite's crash tests. One home, two simulated Time Taggers and a real
collector on loopback. Each round starts tagstatd, lets it poll, checkpoint, close
upload periods and upload while a client thread calls it (status, sessions, report,
and now and then a switch between Collecting and CollectingAndUploading), then kills
it with SIGKILL after a random delay (0 to 2 s, so some kills land in the start-up).
Between rounds, with no daemon running, the database is checked:

- integrity: ``PRAGMA integrity_check`` must say ok;
- sessions lost: every session the database held after the previous round must still
  be there, with at least the bytes it had (a restart resumes open sessions);
- reports: how many reached the collector, and how many were sent again after a kill
  between sending and recording the answer (the collector answers ``duplicate`` and
  keeps one).

It prints the kills, integrity failures, sessions lost, bytes that went backwards,
reports delivered and resent, and the median restart time (start to first answer).

    python bench/crash_soak.py [--kills 200] [--seed 1]
"""

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests" / "e2e"
sys.path.insert(0, str(TESTS))

from collectorproc import Collector  # noqa: E402

from tagstat.client import Client  # noqa: E402
from tagstat.errors import TagstatError  # noqa: E402

BIN = Path(sys.executable).parent
DEVICES = [
    {"serial": "1740000JEH", "model": "Time Tagger Ultra", "rate": [[0, 40e6], [3, 0], [5, 9e7]],
     "loop_s": 8, "messages": [[1, "warning", "overflow on channel 3"]]},
    {"serial": "1809000LGG", "model": "Time Tagger 20", "usb_speed": "high",
     "rate": [[0, 8e6]]},
]  # fmt: skip


def scenario(path: Path) -> Path:
    lines = []
    for d in DEVICES:
        lines.append("[[device]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in d.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(db: Path) -> tuple[bool, dict[str, int]]:
    """(integrity ok, session_id -> bytes) of the database, read-only."""
    if not db.exists():
        return True, {}
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT session_id, bytes_total FROM sessions").fetchall()
    finally:
        conn.close()
    return ok, dict(rows)


def client_load(client: Client, stop: threading.Event, rng: random.Random) -> None:
    while not stop.is_set():
        try:
            choice = rng.random()
            if choice < 0.1:
                status = rng.choice(["collecting", "collecting-and-uploading"])
                client.set_status(status, origin="cli")
            elif choice < 0.5:
                client.sessions()
            elif choice < 0.8:
                client.report()
            else:
                client.status()
        except (TagstatError, ValueError, OSError):
            pass  # the daemon is starting, or was just killed
        stop.wait(rng.uniform(0.01, 0.1))


def one_round(home, sc, env, rng) -> float | None:
    """Start, load, kill -9; the restart time (to first answer), or None if it never answered."""
    log = open(home / "stderr.log", "ab")  # noqa: SIM115 - closed below
    t0 = time.monotonic()
    proc = subprocess.Popen([str(BIN / "tagstatd"), "--home", str(home), "--simulate", str(sc)],
                            env=env, stderr=log)  # fmt: skip
    client = Client(home / "control.sock", timeout_s=2)
    stop = threading.Event()
    loader = threading.Thread(target=client_load, args=(client, stop, rng), daemon=True)
    loader.start()
    kill_at = t0 + rng.uniform(0.0, 2.0)
    ready = None
    while time.monotonic() < kill_at:
        if ready is None:
            try:
                client.status()
                ready = time.monotonic() - t0
            except (TagstatError, OSError):
                pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    loader.join(5)
    log.close()
    return ready


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="ts-soak-", dir="/tmp") as tmp:  # noqa: S108
        home = Path(tmp) / "h"
        home.mkdir()
        collector = Collector(Path(tmp) / "collector.db").start()
        env = {**os.environ, "TAGSTAT_UPLOAD_URL": collector.url, "TAGSTAT_ALLOW_IN_CI": "true",
               "TAGSTAT_UPLOAD_INTERVAL_S": "1", "TAGSTAT_CHECKPOINT_S": "0.3",
               "TAGSTAT_POLL_INTERVAL_S": "0.1",
               "TAGSTAT_UPLOAD_BACKOFF_INITIAL_S": "0.2"}  # fmt: skip
        env.pop("TAGSTAT_HOME", None)
        sc = scenario(Path(tmp) / "s.toml")
        db = home / "tagstat.db"
        before: dict[str, int] = {}
        bad_integrity = lost = shrunk = never_ready = 0
        restarts = []
        for _ in range(args.kills):
            ready = one_round(home, sc, env, rng)
            if ready is None:
                never_ready += 1
            else:
                restarts.append(ready)
            ok, after = snapshot(db)
            bad_integrity += not ok
            lost += sum(1 for sid in before if sid not in after)
            shrunk += sum(1 for sid, n in before.items() if sid in after and after[sid] < n)
            before = after
        ids = [r["report_id"] for r in collector.reports()]
        collector.stop()
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        resent = conn.execute(
            "SELECT count(*) FROM upload_audit WHERE result = 'duplicate'"
        ).fetchone()[0]
        conn.close()
    print(f"kills: {args.kills} (seed {args.seed}); killed before the first answer: "
          f"{never_ready}")  # fmt: skip
    print(f"integrity failures: {bad_integrity}")
    print(f"sessions lost: {lost}; sessions whose bytes went backwards: {shrunk}")
    print(f"sessions in the database at the end: {len(before)}")
    print(f"reports at the collector: {len(ids)} (each stored once: {len(ids) == len(set(ids))});"
          f" sent again after a kill and answered duplicate: {resent}")  # fmt: skip
    if restarts:
        median_ms, max_ms = statistics.median(restarts) * 1000, max(restarts) * 1000
        print(
            f"restart to first answer: median {median_ms:.0f} ms, max {max_ms:.0f} ms "
            f"({len(restarts)} restarts that answered)"
        )


if __name__ == "__main__":
    main()
