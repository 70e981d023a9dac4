"""Fixtures for the simulator's own tests: an injectable clock and scenario builders."""

import pytest
from simhelpers import FakeClock

from tagstat.drivers.sim.model import Simulation
from tagstat.drivers.sim.scenario import parse_scenario


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sim(clock, tmp_path):
    """Build a Simulation from [[device]] tables, with state in tmp_path unless told."""

    def make(*tables, state_dir=tmp_path / "sim", source="test.toml"):
        scenario = parse_scenario({"device": [dict(t) for t in tables]}, source)
        return Simulation(scenario, state_dir=state_dir, clock=clock)

    return make
