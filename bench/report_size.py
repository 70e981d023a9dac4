"""Bytes of one device's usage report for one day, and of its host block.

Runs the real service in this process, over the default simulated Time Tagger
(one Time Tagger Ultra, a 10-minute cycle of measurements), with a hand-driven
clock: it switches to CollectingAndUploading, polls for ``--hours`` of
simulated time at the default intervals, closes the upload period and measures
the report that the outbox stored for upload (its exact JSON bytes, and gzip as
on the wire). The host block is this machine's, as the report carries it.

``--baseline REV`` measures a git revision too, in the same run: it checks REV
out into a temporary worktree and runs this script's measurement there, so the
two figures come from one machine and one moment.

    python bench/report_size.py [--hours 24] [--baseline REV]
"""

import argparse
import contextlib
import dataclasses
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)


def measure(hours: float) -> dict:
    from tagstat.clock import Clock
    from tagstat.config import Config
    from tagstat.drivers.sim.model import Simulation
    from tagstat.drivers.sim.pyusb_backend import SimBackend
    from tagstat.drivers.sim.scenario import default_scenario
    from tagstat.paths import Paths
    from tagstat.service import build_service
    from tagstat.status import UsageStatisticsStatus

    class HandClock(Clock):
        t = T0.timestamp()

        def monotonic(self):
            return self.t

        def utc_now(self):
            return dt.datetime.fromtimestamp(self.t, dt.UTC)

    clock = HandClock()
    with tempfile.TemporaryDirectory(prefix="tagstat-bench-") as home:
        sim = Simulation(default_scenario(), state_dir=None, clock=lambda: clock.t)
        config = dataclasses.replace(Config(), upload_interval_s=hours * 3600 + 3600)
        service = build_service(Paths.for_home(home), config, clock=clock, backend=SimBackend(sim))
        service.hostinfo.get(timeout_s=30)
        service.set_status(UsageStatisticsStatus.CollectingAndUploading, persistent=True)
        for _ in range(int(hours * 3600 / config.poll_interval_s)):
            clock.t += config.poll_interval_s
            service.poll_once()
            if int(clock.t) % int(config.checkpoint_s) == 0:
                service.checkpoint()
        service.checkpoint()
        report_id = service.outbox.close_period()
        entry = next(e for e in service.store.outbox_pending("usage") if e.report_id == report_id)
        body = entry.body
        report = json.loads(body)
        host = json.dumps(report.get("host"), separators=(",", ":")).encode()
        service.shutdown()
    return {
        "report_bytes": len(body),
        "report_gzip_bytes": len(gzip.compress(body)),
        "report_lines_pretty": len(json.dumps(report, indent=2).splitlines()),
        "sessions": len(report.get("sessions", [])),
        "host_bytes": len(host),
        "host_keys": sorted(_paths(report.get("host"), "host")),
    }


def _paths(obj, prefix: str) -> set[str]:
    out = {prefix}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out |= _paths(value, f"{prefix}.{key}")
    return out


@contextlib.contextmanager
def importable_tree(rev: str):
    """REV checked out, with a ``tagstat`` package laid out as setuptools' package-dir does."""
    with tempfile.TemporaryDirectory(prefix="tagstat-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree),
                        rev], check=True)  # fmt: skip
        try:
            pkg = Path(tmp) / "path" / "tagstat"
            pkg.mkdir(parents=True)
            for item in (tree / "daemon").iterdir():
                (pkg / item.name).symlink_to(item)
            (pkg / "drivers").symlink_to(tree / "drivers")
            (pkg / "collector").symlink_to(tree / "collector")
            yield pkg.parent
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           check=False)  # fmt: skip


def run_baseline(rev: str, hours: float) -> dict:
    with importable_tree(rev) as path:
        env = dict(os.environ, PYTHONPATH=str(path))
        out = subprocess.run(
            [sys.executable, __file__, "--hours", str(hours), "--json"],
            env=env, check=True, capture_output=True, text=True, cwd=path,
        )  # fmt: skip
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=24.0, help="simulated time (default 24)")
    p.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    now = measure(args.hours)
    if args.json:
        print(json.dumps(now))
        return
    rows = [("this tree", now)]
    if args.baseline:
        rows.insert(0, (args.baseline, run_baseline(args.baseline, args.hours)))
    print(f"one simulated Time Tagger Ultra, {args.hours:g} h under CollectingAndUploading")
    print(f"{'tree':<14}{'report B':>10}{'gzip B':>9}{'lines':>7}{'sessions':>9}{'host B':>8}")
    for name, r in rows:
        print(f"{name:<14}{r['report_bytes']:>10,}{r['report_gzip_bytes']:>9,}"
              f"{r['report_lines_pretty']:>7,}{r['sessions']:>9}{r['host_bytes']:>8,}")  # fmt: skip
    for name, r in rows:
        print(f"host fields ({name}): {', '.join(r['host_keys'])}")


if __name__ == "__main__":
    main()
