"""Fixtures for the umockdev harness tests: a simulation on a test clock behind a testbed.

``umockdev_env(*devices)`` builds a ``Simulation`` from device dicts and puts
it behind a ``UMockdevHarness``; tests then talk to it through pyusb's real
libusb1 backend. Without ``umockdev-wrapper`` (or without umockdev installed)
every test that takes the fixture is skipped with ``available()``'s reason.
"""

import dataclasses

import pytest

from tagstat.drivers.sim import umockdev
from tagstat.drivers.sim.model import Simulation
from tagstat.drivers.sim.scenario import parse_scenario

START_S = 1_700_000_000.0
ULTRA = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super"}
TT20 = {"serial": "1809000LGG", "model": "Time Tagger 20", "usb_speed": "high"}


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self, t: float = START_S):
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclasses.dataclass
class UMockdevEnv:
    simulation: Simulation
    harness: umockdev.UMockdevHarness
    backend: object
    clock: ManualClock


def make_simulation(devices, clock) -> Simulation:
    return Simulation(parse_scenario({"device": list(devices)}, "test"), clock=clock)


@pytest.fixture
def umockdev_env():
    """Factory: ``umockdev_env(*device_dicts)`` -> UMockdevEnv; closed after the test."""
    reason = umockdev.available()
    if reason:
        pytest.skip(reason)
    harnesses = []

    def make(*devices: dict) -> UMockdevEnv:
        clock = ManualClock()
        simulation = make_simulation(devices or (ULTRA,), clock)
        harness = umockdev.UMockdevHarness(simulation)
        harnesses.append(harness)
        return UMockdevEnv(simulation, harness, harness.backend(), clock)

    yield make
    for harness in harnesses:
        errors = list(harness.handler_errors)
        harness.close()
        assert errors == [], f"the ioctl handler failed: {errors!r}"
