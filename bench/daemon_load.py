"""CPU share and peak RSS of tagstatd polling simulated Time Taggers.

Starts the real daemon (``tagstatd --simulate``) on a scenario of N devices
(default 4) polled every second, lets it warm up, then measures over
``--seconds`` (default 60): the CPU share (user + system time of the process
over wall time, in percent of one core) and the peak resident set size
(VmHWM). Prints one line per figure.

    python bench/daemon_load.py [--devices 4] [--seconds 60] [--poll 1.0]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tagstat.client import Client

MODELS = ["Time Tagger Ultra", "Time Tagger X", "Time Tagger 20", "Time Tagger Ultra"]


def scenario(n: int) -> str:
    out = []
    for i in range(n):
        out.append(
            f'[[device]]\nserial = "19{i:02d}000ABC"\nmodel = "{MODELS[i % 4]}"\n'
            f'usb_speed = "{"high" if MODELS[i % 4] == "Time Tagger 20" else "super"}"\n'
            f"rate = [[0, {50e6 * (i + 1)}], [20, {20e6 * (i + 1)}], [40, {90e6 * (i + 1)}]]\n"
            "loop_s = 60\n"
        )
    return "\n".join(out)


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ts-bench-", dir="/tmp"))
    (home / "s.toml").write_text(scenario(args.devices))
    env = {**os.environ, "TAGSTAT_POLL_INTERVAL_S": str(args.poll)}
    tagstatd = Path(sys.executable).parent / "tagstatd"
    cmd = [str(tagstatd), "--home", str(home), "--simulate", str(home / "s.toml")]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        p = psutil.Process(proc.pid)
        time.sleep(args.warmup)  # start-up (imports, first scan) is not the steady state
        t0, c0 = time.monotonic(), p.cpu_times()
        time.sleep(args.seconds)
        t1, c1 = time.monotonic(), p.cpu_times()
        cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0)
        rss = peak_rss_bytes(proc.pid)
        report = json.loads(Client(home / "control.sock").report())
        seen = len(report["devices"])
        if seen != args.devices:
            raise SystemExit(f"the daemon saw {seen} devices, not {args.devices}")
        print(f"devices polled: {seen}, sessions: {len(report['sessions'])}")
        print(f"poll interval: {args.poll} s, window: {t1 - t0:.1f} s")
        print(f"cpu share: {100 * cpu:.2f} % of one core")
        print(f"peak rss: {rss / 2**20:.1f} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
