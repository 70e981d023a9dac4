"""What the collector costs: reports stored per second, and a gzip bomb's time and memory.

Starts the real ``tagstat-collector serve`` on 127.0.0.1 with a fresh database
in a temporary directory, then prints:

- reports stored per second from one client and from ``--clients`` clients at
  once (gzip bodies of a realistic report: 4 devices, ``--sessions`` sessions);
- the time to answer a gzip bomb (``--bomb-mb`` MB of zeros, about 0.1 % of
  that on the wire) with 413, and the collector's peak resident memory
  (VmHWM) before and after it, so the bound on inflation shows as a number.

    python bench/collector_intake.py [--reports 300] [--clients 8] [--sessions 24] [--bomb-mb 100]
"""

import argparse
import concurrent.futures
import copy
import gzip
import json
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import requests

COLLECTOR = Path(sys.executable).with_name("tagstat-collector")
HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def template(sessions: int) -> dict:
    devices = [f"{i:016x}" for i in range(4)]
    stamp = "2026-03-01T10:00:00.000Z"
    return {
        "schema_version": 1, "kind": "usage", "report_id": "", "generated_at": stamp,
        "period": {"start": stamp, "end": stamp}, "user_id": str(uuid.uuid4()),
        "status": "CollectingAndUploading", "software": {"tagstat": "0.1.0", "python": "3.11"},
        "host": None,
        "devices": [
            {"device_id": d, "model": "Time Tagger Ultra", "serial": f"[serial:{d[:8]}]",
             "usb_speed": "super", "firmware": "1.30", "calibration": {"delay": list(range(18))},
             "configuration": {f"channel {c}": {"trigger level": 0.5} for c in range(18)},
             "sensors": {"fpga/temp": {"last": 41.0, "min": 40.0, "max": 44.0}},
             "first_seen": stamp, "last_seen": stamp}
            for d in devices
        ],
        "sessions": [
            {"session_id": "", "device_id": devices[i % 4], "start": stamp, "end": stamp,
             "duration_s": 3600.0, "bytes": 10**11, "tags": 10**10,
             "data_rate": {"min": 0.0, "avg": 2.7e7 + i, "max": 9e7}, "usb_speed": "super",
             "initial_sensors": {"fpga": {"temp": 40.0}}, "open": False, "end_reason": "idle"}
            for i in range(sessions)
        ],
        "messages": [],
    }  # fmt: skip


def body(base: dict) -> tuple[str, bytes]:
    report = copy.deepcopy(base)
    report["report_id"] = str(uuid.uuid4())
    for s in report["sessions"]:
        s["session_id"] = str(uuid.uuid4())
    return report["report_id"], gzip.compress(json.dumps(report).encode())


def post(url: str, report_id: str, data: bytes) -> str:
    headers = {**HEADERS, "Idempotency-Key": report_id}
    answer = requests.post(f"{url}/v1/reports", data=data, headers=headers, timeout=60)
    return answer.json()["status"]


def stored_per_s(url: str, bodies: list, clients: int) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(lambda b: post(url, *b), bodies))
    elapsed = time.perf_counter() - started
    assert statuses == ["stored"] * len(bodies), set(statuses)
    return len(bodies) / elapsed


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def gzip_bomb(megabytes: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join(deflater.compress(zeros) for _ in range(megabytes)) + deflater.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=24)
    parser.add_argument("--bomb-mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [str(COLLECTOR), "--log-level", "warning", "serve", "--port", "0",
             "--db", str(Path(tmp) / "c.db")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            url = proc.stdout.readline().split()[-1]
            run(url, proc.pid, args)
        finally:
            proc.terminate()
            proc.wait(10)


def run(url: str, pid: int, args) -> None:
    base = template(args.sessions)
    sample = body(base)[1]
    print(f"report: {args.sessions} sessions, 4 devices, {len(sample)} bytes gzip on the wire")
    one = stored_per_s(url, [body(base) for _ in range(args.reports)], 1)
    print(f"stored, 1 client:  {one:7.0f} reports/s")
    many = stored_per_s(url, [body(base) for _ in range(args.reports)], args.clients)
    print(f"stored, {args.clients} clients: {many:7.0f} reports/s")
    bomb = gzip_bomb(args.bomb_mb)
    before = peak_rss_mib(pid)
    started = time.perf_counter()
    answer = requests.post(f"{url}/v1/reports", data=bomb, headers=HEADERS, timeout=60)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"gzip bomb: {args.bomb_mb} MB of zeros, {len(bomb)} bytes on the wire: "
          f"HTTP {answer.status_code} in {elapsed_ms:.0f} ms")  # fmt: skip
    after = peak_rss_mib(pid)
    print(f"collector peak RSS: {before:.1f} MiB before the bomb, {after:.1f} MiB after")


if __name__ == "__main__":
    main()
