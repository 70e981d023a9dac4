"""Shared fixtures: no kill switches in the environment, a hand-driven clock, a fresh store.

The project's own CI sets CI=true, and a developer may have DO_NOT_TRACK=1: either would
force every in-process tagstatd service to Disabled (tagstat.killswitch). Tests of the
switches set them explicitly with monkeypatch.
"""

import datetime as dt

import pytest

from tagstat import killswitch
from tagstat.clock import Clock
from tagstat.config import Config
from tagstat.drivers.sim.model import Simulation
from tagstat.drivers.sim.pyusb_backend import SimBackend
from tagstat.drivers.sim.scenario import default_scenario
from tagstat.paths import Paths
from tagstat.service import build_service
from tagstat.store import Store
from tagstat.tagstatd import simulated_backend

# The fixed start of the hand-driven clock: tests that use `clock` define T0 equal to it.
CLOCK_START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _no_kill_switches(monkeypatch):
    for name in (*killswitch.SWITCHES, *killswitch.CI_VARIABLES):
        monkeypatch.delenv(name, raising=False)


class FakeClock(Clock):
    """UTC time that moves only when a test says so."""

    def __init__(self):
        self.now = CLOCK_START

    def utc_now(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path):
    """A fresh store in tmp_path (test modules may define their own)."""
    s = Store.open(tmp_path / "t.db")
    yield s
    s.close()


@pytest.fixture
def service_factory(tmp_path):
    """make(clock=None, **config) -> a real Service in tmp_path over the default simulated
    Time Tagger (on ``clock``, if given, and so is the simulator); make.stop(service) shuts
    one down before the test ends (to start another over the same home)."""
    made = []

    def make(clock=None, **config):
        paths = Paths.for_home(tmp_path)
        cfg = Config(poll_interval_s=0.05, checkpoint_s=0.05, **config)
        backend = simulated_backend(paths, None)
        if clock is not None:  # the simulator on the same hand-driven clock
            sim = Simulation(default_scenario(), state_dir=paths.simulator_dir, clock=clock.wall)
            backend = SimBackend(sim)
        made.append(build_service(paths, cfg, clock=clock, backend=backend))
        return made[-1]

    def stop(service):
        made.remove(service)
        service.shutdown()

    make.stop = stop
    yield make
    for s in made:
        s.shutdown()
