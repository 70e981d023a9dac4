"""What a full-disk episode keeps and loses, and what holding it costs in memory.

1. Memory: a ``WriteBack`` filled to its limits with realistic held writes (a Time
   Tagger Ultra's flattened sensor readings, device messages, measurement events,
   sessions), measured with tracemalloc.
2. The episode (needs root, for a tmpfs): the real tagstatd, on a simulated Ultra at
   30 MB/s, with its home on a 4 MiB tmpfs; the disk is filled, kept full for
   ``--full-s`` seconds (with a restart in the middle unless ``--no-restart``), then freed.
   It prints the bytes tagstatd showed during the episode, the bytes in the database
   afterwards, the messages counted, and what the log says was lost.

    python bench/full_disk.py [--full-s 30] [--no-restart]
"""

import argparse
import datetime as dt
import logging
import os
import sqlite3
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from tagstat.drivers.sim import documents  # noqa: E402
from tagstat.errors import StoreError  # noqa: E402
from tagstat.measurement_data import MeasurementEvent  # noqa: E402
from tagstat.poller import flatten_numbers  # noqa: E402
from tagstat.records import SessionRecord  # noqa: E402
from tagstat.store_writeback import LIMITS, WriteBack  # noqa: E402

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


class Full:
    path = "tagstat.db"

    def __getattr__(self, name):
        def write(*args, **kwargs):
            import sqlite3 as s

            cause = s.OperationalError("database or disk is full")
            cause.sqlite_errorcode = 13
            raise StoreError("full") from cause

        return write


class Clock:
    def monotonic(self):
        return 0.0

    def utc_now(self):
        return T0


def memory_at_the_limits() -> tuple[int, int]:
    logging.getLogger("tagstat").setLevel(logging.CRITICAL)  # the episode's own log line
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    wb = WriteBack(Full(), Clock())
    for i in range(LIMITS["sensors"]):
        values = flatten_numbers(documents.sensors("Time Tagger Ultra", i * 10.0, i * 10.0, 2e8))
        wb.record_sensors(f"{i % 4:016x}", T0 + dt.timedelta(seconds=10 * i), 2, values)
    for i in range(LIMITS["messages"]):
        text = f"TimeTagger '[serial:0a1b2c3d]': the data rate exceeds the USB rate ({i})."
        wb.record_message(f"{i % 4:016x}", "warning", text, T0, 2)
    event = MeasurementEvent("Correlation", T0, T0, 1.0, None, {"binwidth": 1000, "n_bins": 5000},
                             {"events_processed": 9.1e8, "cpu_time_s": 0.4})  # fmt: skip
    wb.record_measurements([(event, 2)] * LIMITS["measurements"], T0)
    for i in range(200):
        wb.save_session(SessionRecord(
            f"{i:032x}", f"{i % 4:016x}", 2, T0, T0, 60.0, 10**9, 10**8, 1e7, 2e7, "super",
            documents.sensors("Time Tagger Ultra", 0, 0, 2e8), False, "idle", "b" * 16,
            0, 0, 0, T0,
        ))  # fmt: skip
    after = tracemalloc.take_snapshot()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    return wb.held(), size


def episode(full_s: float, restart: bool) -> None:
    from conftest import Daemon, _write_scenario, wait_for
    from test_full_disk import DEVICE, fill, session_bytes, small_file_system

    try:
        cm = small_file_system()
        home = cm.__enter__()
    except BaseException as e:  # pytest.skip outside pytest
        print(f"episode: skipped ({e})")
        return
    try:
        sc = _write_scenario(home / "s.toml", [DEVICE])
        env = {"TAGSTAT_CHECKPOINT_S": "1"}
        d = Daemon(home, sc, env).start()
        wait_for(lambda: session_bytes(d) > 0, "a session")
        filler = fill(home)
        wait_for(lambda: d.client.status().get("storage"), "the episode")
        time.sleep(full_s / 2)
        if restart:
            d.stop()
            d = Daemon(home, sc, env).start()
        time.sleep(full_s / 2)
        shown = session_bytes(d)
        held = (d.client.status().get("storage") or {}).get("held_writes")
        filler.unlink()
        wait_for(lambda: d.client.status().get("storage") is None, "the end", timeout_s=120)
        d.stop()
        db = sqlite3.connect(home / "tagstat.db")
        stored, sessions = db.execute("SELECT sum(bytes_total), count(*) FROM sessions").fetchone()
        messages = db.execute("SELECT sum(count) FROM messages").fetchone()[0]
        db.close()
        lost = [line for line in d.stderr().splitlines()
                if "which are lost" in line or "lost for lack of memory" in line]  # fmt: skip
        print(f"episode: {full_s:g} s full{', restarted in the middle' if restart else ''}")
        print(f"  held writes at the end of the episode: {held}")
        print(f"  session bytes shown during the episode: {shown:,}")
        print(f"  session bytes in the database after: {stored:,} ({sessions} sessions)")
        print(f"  device messages counted: {messages}")
        print("  log lines about losses:" + ("" if lost else " none"))
        for line in lost:
            print("   ", line[:200])
    finally:
        cm.__exit__(None, None, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full-s", type=float, default=30.0)
    p.add_argument("--no-restart", action="store_true")
    args = p.parse_args()
    held, size = memory_at_the_limits()
    print(f"memory: {held:,} held writes at the limits {LIMITS} + 200 sessions: "
          f"{size / 2**20:.1f} MiB")  # fmt: skip
    if os.geteuid() == 0:
        episode(args.full_s, not args.no_restart)
    else:
        print("episode: skipped (mounting a tmpfs needs root)")


if __name__ == "__main__":
    main()
