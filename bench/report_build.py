"""Time to build the usage-statistics report over 10,000 stored sessions.

Seeds a fresh SQLite store (in a temporary directory) with ``--sessions``
closed sessions over 4 devices, a few hundred messages and a week of hourly
sensor buckets, then builds the report (store queries + JSON) ``--runs`` times
and prints the median, min and max in milliseconds, and the JSON size.

    python bench/report_build.py [--sessions 10000] [--runs 15]
"""

import argparse
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from tagstat.records import DeviceRecord, SessionRecord
from tagstat.report import build_report, report_json
from tagstat.status import UsageStatisticsStatus
from tagstat.store import Store

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def seed(store: Store, n: int) -> None:
    devices = [f"{i:016x}" for i in range(4)]
    for d in devices:
        config = {f"channel {c}": {"trigger level": 0.5, "deadtime": 2000} for c in range(18)}
        store.upsert_device(
            DeviceRecord(
                d,
                "Time Tagger Ultra",
                f"[serial:{d[:8]}]",
                "super",
                "1.30",
                {"delay": list(range(18))},
                config,
                T0,
                T0,
            )
        )
    sensors = {
        "temp sensors/fpga/temp": 41.0,
        "fans/fan 1/RPM": 3000.0,
        "power supply/12.0V in/volt": 12.0,
    }
    recs = []
    for i in range(n):
        start = T0 + dt.timedelta(minutes=5 * i)
        recs.append(SessionRecord(
            str(uuid.uuid4()), devices[i % 4], 1, start, start + dt.timedelta(minutes=4),
            240.0, 240 * 10**8, 3 * 10**9, 5e7, 2e8, "super", {"temp sensors": {"fpga": 41.0}},
            False, "idle", "b" * 16, 0, 0, 0, start + dt.timedelta(minutes=4),
        ))  # fmt: skip
    store.save_sessions(recs)
    for h in range(24 * 7):
        for d in devices:
            store.record_sensors(d, T0 + dt.timedelta(hours=h), 1, sensors)
    for i in range(300):
        store.record_message(devices[i % 4], "warning", f"overflow on channel {i % 18}", T0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "tagstat.db")
        t = time.perf_counter()
        seed(store, args.sessions)
        print(f"seeded {args.sessions} sessions in {time.perf_counter() - t:.2f} s")
        times, size = [], 0
        for _ in range(args.runs):
            t = time.perf_counter()
            text = report_json(build_report(store, user_id=str(uuid.uuid4()),
                                            status=UsageStatisticsStatus.Collecting, host=None,
                                            now=T0 + dt.timedelta(days=40)))  # fmt: skip
            times.append((time.perf_counter() - t) * 1000)
            size = len(text)
        store.close()
    med = statistics.median(times)
    print(
        f"report over {args.sessions} sessions: median {med:.1f} ms "
        f"(min {min(times):.1f}, max {max(times):.1f}, {args.runs} runs), {size / 1e6:.2f} MB JSON"
    )


if __name__ == "__main__":
    main()
