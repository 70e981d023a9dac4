"""Run the real tagstatd as a subprocess on simulated Time Taggers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from collectorproc import Collector
from faultproxy import FaultProxy

from tagstat import killswitch
from tagstat.client import Client
from tagstat.errors import DaemonNotRunningError

BIN = Path(sys.executable).parent


def _write_scenario(path: Path, devices: list[dict]) -> Path:
    lines = []
    for d in devices:
        lines.append("[[device]]")
        for key, value in d.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _clean_environ() -> dict:
    """The test run's environment without tagstat's kill switches, so that a developer's
    DO_NOT_TRACK or the project's own CI=true does not turn every daemon off: tests of
    the switches set them explicitly (and TAGSTAT_ALLOW_IN_CI=false to see CI win)."""
    env = {k: v for k, v in os.environ.items() if k not in killswitch.SWITCHES}
    return {**env, "TAGSTAT_ALLOW_IN_CI": "true"}


def wait_for(predicate, what: str, timeout_s: float = 30.0):
    """Poll until predicate() is truthy and return it; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    """One tagstatd process over one home directory."""

    def __init__(self, home: Path, scenario: Path | None, env: dict | None = None):
        self.home, self.scenario = home, scenario
        self.env = {**_clean_environ(), "TAGSTAT_POLL_INTERVAL_S": "0.25", **(env or {})}
        self.env.pop("TAGSTAT_HOME", None)
        self.proc: subprocess.Popen | None = None
        self.client = Client(home / "control.sock", timeout_s=10)

    def start(self, wait: bool = True, extra_args=()) -> "Daemon":
        args = [str(BIN / "tagstatd"), "--home", str(self.home), "--simulate"]
        args += [str(self.scenario)] if self.scenario else []
        self.log = open(self.home / "stderr.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([*args, *extra_args], env=self.env, stderr=self.log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tagstatd exited {self.proc.returncode}: {self.stderr()}")
            try:
                self.client.status()
                return
            except DaemonNotRunningError:
                time.sleep(0.05)
        raise AssertionError("tagstatd did not answer in time: " + self.stderr())

    def wait_until(self, predicate, timeout_s: float = 30.0, what: str = "condition"):
        """Poll the daemon's API until predicate(value) holds; the simulator runs on wall time."""
        return wait_for(predicate, what, timeout_s)

    def report(self) -> dict:
        return json.loads(self.client.report())

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout_s)
        self.log.close()
        return rc

    def stderr(self) -> str:
        return (self.home / "stderr.log").read_text(errors="replace")


def _new_home() -> Path:
    # AF_UNIX paths are limited to 107 bytes: keep the socket path short.
    return Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))


@pytest.fixture
def daemons_factory():
    """make() -> (home, daemons): a fresh home and a Daemon factory over it."""
    homes: list[Path] = []
    started: list[Daemon] = []

    def make():
        home = _new_home()
        homes.append(home)

        def daemons(scenario=None, env=None) -> Daemon:
            d = Daemon(home, scenario, env)
            started.append(d)
            return d

        return home, daemons

    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    for home in homes:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def _home_and_daemons(daemons_factory):
    return daemons_factory()


@pytest.fixture
def home(_home_and_daemons):
    return _home_and_daemons[0]


@pytest.fixture
def daemons(_home_and_daemons):
    return _home_and_daemons[1]


def _run_cli(home: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in _clean_environ().items() if k != "TAGSTAT_HOME"}
    proc = subprocess.run(
        [str(BIN / "tagstat"), "--home", str(home), *args],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"tagstat {args} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture
def write_scenario():
    """write_scenario(path, [device dict, ...]) -> path of a TOML scenario."""
    return _write_scenario


@pytest.fixture
def run_cli():
    """run_cli(home, *args, check=True) -> the finished `tagstat` process."""
    return _run_cli


@pytest.fixture
def collector(tmp_path):
    c = Collector(tmp_path / "collector.db").start()
    yield c
    c.stop()


@pytest.fixture
def proxy(collector):
    p = FaultProxy(("127.0.0.1", collector.port)).start()
    yield p
    p.stop()
