"""What one ``track_measurement`` block costs an application, with tagstatd up and down.

Starts a real ``tagstatd --simulate`` in a temporary home, then runs an
application process that times ``--calls`` empty ``with
tagstat.track_measurement(...)`` blocks one by one (after a warm-up that
starts the sender thread) and prints the median and 90th percentile in
microseconds. The same application then runs against a home where no daemon
listens, and once with ``TAGSTAT_DISABLE=1``. Each line also says how long the
application's exit hook waited, the median cost of ``record_measurement``
(1,000 calls), and how many events the sender delivered and
dropped (its queue holds 1,000, so back-to-back calls faster than it drains
drop the oldest: that is the design, and part of what is measured). Each
application runs in a fresh interpreter, as lab software would.

    python bench/measurement_cost.py [--calls 20000] [--pause-us 0]
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECORD_CALLS = 1000


def application(calls: int, pause_us: float) -> None:
    """The measured side: runs in its own process, prints one JSON line."""
    atexit_start = [0.0]
    # Registered before tagstat's own hook, so it runs after it and can time it.
    atexit.register(lambda: print(json.dumps({"exit_wait_ms": _ms_since(atexit_start[0])})))
    import tagstat
    from tagstat import measurements

    for _ in range(200):  # warm-up: imports, the sender thread, the first connection
        with tagstat.track_measurement("Correlation", config={"binwidth": 1000, "n_bins": 100}):
            pass
    costs_ns = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        with tagstat.track_measurement("Correlation", config={"binwidth": 1000, "n_bins": 100}):
            pass
        costs_ns.append(time.perf_counter_ns() - t0)
        if pause_us:
            _spin(pause_us)
    record_ns = []
    for _ in range(RECORD_CALLS):
        now = time.time()
        t0 = time.perf_counter_ns()
        tagstat.record_measurement("Counter", now - 1, now, config={"n_values": 10})
        record_ns.append(time.perf_counter_ns() - t0)
    sender = measurements._sender
    costs_ns.sort()
    print(json.dumps({
        "median_us": statistics.median(costs_ns) / 1000,
        "p90_us": costs_ns[int(len(costs_ns) * 0.9)] / 1000,
        "max_us": costs_ns[-1] / 1000,
        "record_us": statistics.median(record_ns) / 1000,
        "sent": sender.sent if sender else 0,
        "dropped": sender.dropped if sender else 0,
    }))  # fmt: skip
    sys.stdout.flush()
    atexit_start[0] = time.perf_counter()


def _ms_since(t: float) -> float:
    return round((time.perf_counter() - t) * 1000, 2)


def _spin(us: float) -> None:
    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass


def run_application(home: Path, calls: int, pause_us: float, **env) -> dict:
    clean = {"PATH": os.environ["PATH"], "TAGSTAT_HOME": str(home), **env}
    cmd = [sys.executable, __file__, "--application", "--calls", str(calls),
           "--pause-us", str(pause_us)]  # fmt: skip
    out = subprocess.run(cmd, env=clean, capture_output=True, text=True, timeout=600, check=True)
    if out.stderr:
        raise SystemExit(f"the application wrote to stderr: {out.stderr}")
    result = {}
    for line in out.stdout.splitlines():
        result.update(json.loads(line))
    return result


def start_daemon(home: Path) -> subprocess.Popen:
    from tagstat.client import Client
    from tagstat.errors import DaemonNotRunningError

    tagstatd = Path(sys.executable).parent / "tagstatd"
    proc = subprocess.Popen([str(tagstatd), "--home", str(home), "--simulate"],
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            Client(home / "control.sock").status()
            return proc
        except DaemonNotRunningError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("tagstatd did not start")


def stored_measurements(home: Path) -> int:
    from tagstat.client import Client

    report = json.loads(Client(home / "control.sock").report())
    return sum(m["count"] for m in report["measurements"])


def line(label: str, r: dict) -> str:
    return (
        f"{label:<20} median {r['median_us']:6.2f} us  p90 {r['p90_us']:6.2f} us  "
        f"max {r['max_us']:8.1f} us  record_measurement median {r['record_us']:5.2f} us  "
        f"exit wait {r['exit_wait_ms']:6.2f} ms  "
        f"sent during run {r['sent']}  dropped {r['dropped']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--pause-us", type=float, default=0.0, help="busy pause between calls")
    ap.add_argument("--application", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.application:
        return application(args.calls, args.pause_us)
    up, down = (Path(tempfile.mkdtemp(prefix=p, dir="/tmp")) for p in ("ts-up-", "ts-down-"))
    daemon = start_daemon(up)
    try:
        r_up = run_application(up, args.calls, args.pause_us)
        stored = stored_measurements(up)
        r_down = run_application(down, args.calls, args.pause_us)
        r_off = run_application(down, args.calls, args.pause_us, TAGSTAT_DISABLE="1")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
        shutil.rmtree(up, ignore_errors=True)
        shutil.rmtree(down, ignore_errors=True)
    print(f"{args.calls} empty track_measurement blocks per run, pause {args.pause_us:g} us")
    print(line("daemon up:", r_up) + f"  (daemon stored {stored})")
    print(line("daemon down:", r_down))
    print(line("TAGSTAT_DISABLE=1:", r_off))


if __name__ == "__main__":
    main()
