"""How long `tagstat purge` holds the daemon's lock: purge a filled database.

Fills a fresh store with ``--sessions`` closed sessions, as many message rows and
an hour of sensor buckets per 10 sessions (roughly what a lab's months look like),
then times ``Store.purge_collected`` (DELETE with secure_delete, VACUUM, truncating
WAL checkpoint) — the part of a purge whose cost grows with the database; polling
waits for it. Prints the file size before and after and the seconds taken, the
median of ``--runs`` runs, each on a fresh copy.

    python bench/purge_time.py [--sessions 100000] [--runs 3]
"""

import argparse
import datetime as dt
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tagstat.records import SessionRecord
from tagstat.store import Store

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def fill(path: Path, n_sessions: int) -> None:
    store = Store.open(path)
    recs = []
    for i in range(n_sessions):
        start = T0 + dt.timedelta(minutes=i)
        recs.append(SessionRecord(
            f"{i:08x}-0000-4000-8000-000000000000", f"{i % 8:016x}", 1, start,
            start + dt.timedelta(seconds=50), 50.0, 10**10, 10**8, 1e7, 2e8, "super",
            {"fpga": {"temp": 40.0}}, False, "idle", "b" * 16, 0, 0, 0, start,
        ))  # fmt: skip
    store.save_sessions(recs)
    for i in range(n_sessions):
        at = T0 + dt.timedelta(minutes=i)
        store.record_message(f"{i % 8:016x}", "warning", f"tags were lost ({i})", at, 1)
        if i % 10 == 0:
            store.record_sensors(f"{i % 8:016x}", at, 1, {f"s{k}": float(k) for k in range(12)})
    store.close()


def size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / "master" / "tagstat.db"
        master.parent.mkdir()
        fill(master, args.sessions)
        before = size_bytes(master)
        times, after = [], 0
        for run in range(args.runs):
            copy = Path(tmp) / f"run{run}"
            shutil.copytree(master.parent, copy)
            store = Store.open(copy / "tagstat.db")
            started = time.perf_counter()
            store.purge_collected()
            times.append(time.perf_counter() - started)
            after = size_bytes(store.path)
            store.close()
    print(f"database before: {before / 1e6:.1f} MB ({args.sessions} sessions, as many messages)")
    print(f"after purge:     {after / 1e6:.3f} MB")
    print(f"purge time:      median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s, max {max(times):.2f} s over {args.runs} runs")  # fmt: skip


if __name__ == "__main__":
    main()
