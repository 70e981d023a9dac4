"""Fixtures for the driver tests: simulated Time Taggers behind a real USB stack.

``usb_env(scenario)`` builds a ``Simulation`` on a test-driven clock and puts
it behind a pyusb backend. The fixture is parametrized over two transports:
"pyusb" (the simulator's pure-Python ``SimBackend``, pyusb's own code on top)
and "umockdev" (pyusb's real libusb1 backend against devices emulated by
umockdev; runs only under ``umockdev-wrapper``, skipped otherwise). Every
driver test takes ``usb_env``, so the same assertions hold on both.
"""

import dataclasses
import gc
import importlib
from collections.abc import Callable

import pytest

from tagstat.drivers.sim.model import Simulation
from tagstat.drivers.sim.pyusb_backend import SimBackend
from tagstat.drivers.sim.scenario import parse_scenario

START_S = 1_700_000_000.0

ULTRA = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super"}
TT20 = {"serial": "1809000LGG", "model": "Time Tagger 20", "usb_speed": "high"}
TTX = {"serial": "2023000TMV", "model": "Time Tagger X", "usb_speed": "super"}


class TestClock:
    """A clock that moves only when the test says so."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, t: float = START_S):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclasses.dataclass
class UsbEnv:
    simulation: Simulation
    backend: object
    clock: TestClock
    sync: Callable[[], None]
    transport: str


def scenario(*devices: dict, **overrides) -> dict:
    """A scenario dict with copies of ``devices``, each updated with ``overrides``."""
    return {"device": [dict(d, **overrides) for d in devices]}


def _umockdev_module():
    try:
        module = importlib.import_module("tagstat.drivers.sim.umockdev")
    except ImportError as e:
        pytest.skip(f"tagstat.drivers.sim.umockdev is not importable: {e}")
    reason = module.available()
    if reason:
        pytest.skip(reason)
    return module


@pytest.fixture(params=["pyusb", pytest.param("umockdev", marks=pytest.mark.umockdev)])
def usb_env(request):
    """Factory: ``usb_env(scenario_dict)`` -> UsbEnv with a fresh simulation."""
    transport = request.param
    umockdev = _umockdev_module() if transport == "umockdev" else None
    harnesses = []

    def make(scenario_dict: dict) -> UsbEnv:
        clock = TestClock()
        sim = Simulation(parse_scenario(scenario_dict, "test"), state_dir=None, clock=clock)
        if umockdev is None:
            return UsbEnv(sim, SimBackend(sim), clock, lambda: None, transport)
        harness = umockdev.UMockdevHarness(sim)
        harnesses.append(harness)
        return UsbEnv(sim, harness.backend(), clock, harness.sync, transport)

    yield make
    if harnesses:
        # Let pyusb close the handles the test's devices still hold while their libusb
        # context is alive; an fd left open would outlive the testbed it was opened on.
        gc.collect()
    for harness in harnesses:
        harness.close()
