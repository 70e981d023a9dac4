"""The real tagstatd under the kernel's form of MemoryDenyWriteExecute=yes.

``PR_SET_MDWE`` (Linux 6.3+) refuses memory that is writable and executable,
or made executable later, as systemd's MemoryDenyWriteExecute= does; it is
inherited across fork and exec. tagstatd must still start, read the simulated
instrument, collect host information (py-cpuinfo) and answer.
"""

import ctypes
import os
import subprocess
import sys

import pytest

from tagstat.client import Client

pytestmark = pytest.mark.e2e

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
LAUNCH = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


def mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", LAUNCH, "/bin/true"], timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not hasattr(ctypes, "CDLL"), reason="needs ctypes")
def test_tagstatd_runs_with_memory_deny_write_execute(home, daemons, write_scenario):
    if not mdwe_supported():
        pytest.skip("PR_SET_MDWE needs Linux 6.3 or later")
    sc = write_scenario(home / "s.toml", [{"serial": "1740000JEH", "model": "Time Tagger Ultra",
                                           "usb_speed": "super", "rate": [[0, 50e6]]}])  # fmt: skip
    tagstatd = os.path.join(os.path.dirname(sys.executable), "tagstatd")
    d = daemons(sc)
    d.log = open(home / "stderr.log", "ab")  # noqa: SIM115 - closed by d.stop()
    d.proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, tagstatd, "--home", str(home), "--simulate", str(sc)],
        env=d.env, stderr=d.log,
    )  # fmt: skip
    d.wait_ready()
    devices = d.wait_until(lambda: Client(home / "control.sock").devices(), what="a device")
    assert devices[0]["model"] == "Time Tagger Ultra"
    report = d.wait_until(lambda: (r := d.report()).get("host") and r, what="host information")
    host = report["host"]  # probed under MDWE: a fresh home has no cached copy
    cpu = host["cpu"]
    assert cpu["logical_processors"] >= 1 and cpu["brand"] and host["ram_gib"] >= 1
    assert len(cpu["isa_features"]) == 15 and host["os"]["family"] == "Linux"
    assert d.stop() == 0
