"""Upload throughput and volume: drain 1,000 queued reports, and the bytes a day costs.

1. Drain: queues ``--reports`` copies of a realistic day's report (each with its
   own ``report_id``) in a fresh outbox, starts the real collector
   (``tagstat-collector serve``, a subprocess on 127.0.0.1, fresh database),
   and times the real uploader sending them one at a time, oldest first, as
   tagstatd's upload thread does (gzip, Idempotency-Key, one POST each,
   keep-alive). Median, min and max over ``--runs`` runs, and reports/s.
2. Volume: the report of one day for 4 devices (2 Time Tagger Ultra, a Time
   Tagger 20, a Time Tagger X) with typical use: 6 sessions a day each, sensors
   every minute, a few warnings, the simulator's calibration and configuration
   documents, masked as tagstatd masks them, built by the real builder. Prints
   its raw JSON bytes and its gzip bytes (what goes on the wire, once a day).

    python bench/upload_drain.py [--reports 1000] [--runs 3]
"""

import argparse
import dataclasses
import datetime as dt
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from tagstat import calibration
from tagstat.clock import Clock
from tagstat.config import Config
from tagstat.drivers.sim import documents
from tagstat.hostinfo import HostInfo
from tagstat.masking import Masker
from tagstat.poller import flatten_numbers
from tagstat.records import DeviceRecord, OutboxEntry, SessionRecord
from tagstat.report import build_report, report_json
from tagstat.status import UsageStatisticsStatus
from tagstat.store import Store
from tagstat.uploader import Uploader

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
BIN = Path(sys.executable).parent
DEVICES = [("1740000JEH", "Time Tagger Ultra", "super", 120e6),
           ("1740000JEK", "Time Tagger Ultra", "super", 60e6),
           ("1809000LGG", "Time Tagger 20", "high", 8e6),
           ("2023000TMV", "Time Tagger X", "super", 400e6)]  # fmt: skip
HOST = HostInfo("AuthenticAMD", "AMD Ryzen 9 7950X 16-Core Processor", 25, 97, 32,
                ("sse", "sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "avx512",
                 "fma", "bmi1", "bmi2", "popcnt", "aes"), 64, "Linux", "debian", "12", "3.11.2",
                "0.1.0")  # fmt: skip


def day_report(store: Store) -> bytes:
    masker = Masker(os.urandom(32), hostnames=(), usernames=())
    for serial, model, speed, rate in DEVICES:
        masker.learn(serial)
        device_id = masker.device_id(serial)
        table = masker.scrub(documents.calibration(model, serial))
        store.upsert_device(DeviceRecord(
            device_id, model, masker.masked_serial(serial), speed, "2.03", table,
            masker.scrub(documents.configuration(model, serial, "2.03")), T0, T0 + dt.timedelta(1),
            calibration.summarize(table, 7), 2, 2,
        ))  # fmt: skip
        for minute in range(0, 24 * 60):  # sensors every minute, into hourly buckets
            t = minute * 60.0
            values = flatten_numbers(masker.scrub(documents.sensors(model, t, t, rate)))
            store.record_sensors(device_id, T0 + dt.timedelta(seconds=t), 2, values)
        for i in range(6):  # 6 sessions of 20 min to 2 h through the day
            start = T0 + dt.timedelta(hours=1 + 3.5 * i)
            seconds = 1200 + 1200 * (i % 6)
            initial = masker.scrub(documents.sensors(model, 0, 600, rate))
            store.save_session(SessionRecord(
                str(uuid.uuid4()), device_id, 2, start, start + dt.timedelta(seconds=seconds),
                seconds, int(rate * seconds), int(rate * seconds / 16), rate * 0.2, rate * 1.6,
                speed, initial, False, "idle", "x", 0, 0, 0, start,
            ))  # fmt: skip
        for i, text in enumerate(["the data rate exceeds the USB transfer rate, tags were lost "
                                  "(overflow).", "input 3: signal above the trigger range",
                                  "USB link re-established at super speed"]):  # fmt: skip
            at = T0 + dt.timedelta(hours=2 + 5 * i)
            store.record_message(device_id, "warning", masker.scrub_text(text), at, 2, 3 + i)
    store.record_daemon_counts(T0 + dt.timedelta(hours=1), 2, {"scan_errors": 1, "log_warnings": 1})
    report = build_report(
        store, user_id=str(uuid.uuid4()), status=UsageStatisticsStatus.CollectingAndUploading,
        host=HOST.to_report(), now=T0 + dt.timedelta(days=1), since=T0, min_status=2,
    )  # fmt: skip
    return report_json(report).encode()


def start_collector(db: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [str(BIN / "tagstat-collector"), "--log-level", "warning", "serve", "--host",
         "127.0.0.1", "--port", "0", "--db", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    match = re.search(r"listening on (\S+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("the collector did not start")
    return proc, match.group(1)


def queue(store: Store, body: bytes, n: int) -> None:
    template = json.loads(body)
    now = dt.datetime.now(dt.UTC)
    for i in range(n):
        report_id = str(uuid.uuid4())
        data = report_json(template | {"report_id": report_id}).encode()
        at = now + dt.timedelta(microseconds=i * 1000)  # distinct, ordered creation times
        store.outbox_add(OutboxEntry(report_id, "usage", template["user_id"], at, data,
                                     len(data), "pending", 0, now, None, None, False))  # fmt: skip


def drain_once(body: bytes, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_collector(Path(tmp) / "collector.db")
        store = Store.open(Path(tmp) / "tagstat.db")
        try:
            queue(store, body, n)
            uploader = Uploader(store, dataclasses.replace(Config(), upload_url=url), Clock())
            started = time.perf_counter()
            while uploader.send_due():
                pass
            elapsed = time.perf_counter() - started
            delivered = store.outbox_counts().get("delivered", 0)
            stored = len(requests.get(f"{url}/v1/reports", timeout=30).json()["reports"])
            if delivered != n or stored != n:
                raise SystemExit(f"only {delivered} delivered, {stored} stored of {n}")
            return elapsed
        finally:
            store.close()
            proc.terminate()
            proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "day.db")
        body = day_report(store)
        store.close()
    if any(serial.encode() in body for serial, *_ in DEVICES):
        raise SystemExit("a serial reached the report: masking is broken")
    wire = gzip.compress(body, mtime=0)
    print(f"one day, 4 devices: {len(body):,} bytes of JSON, {len(wire):,} bytes gzip-compressed "
          f"on the wire (6 sessions/device, sensors every minute)")  # fmt: skip
    times = [drain_once(body, args.reports) for _ in range(args.runs)]
    median = statistics.median(times)
    print(f"drain {args.reports} queued reports of that size to the collector on loopback: "
          f"median {median:.2f} s ({args.reports / median:.0f} reports/s), "
          f"min {min(times):.2f} s, max {max(times):.2f} s over {args.runs} runs")  # fmt: skip


if __name__ == "__main__":
    main()
