"""The masking boundary: what the poller hands on holds no serial or unit identifier."""

import dataclasses
import json

import pytest

from tagstat.config import Config
from tagstat.drivers.discovery import Discovery
from tagstat.drivers.sim.model import Simulation
from tagstat.drivers.sim.pyusb_backend import SimBackend
from tagstat.drivers.sim.scenario import parse_scenario
from tagstat.masking import Masker
from tagstat.poller import Poller

SECRET = b"k" * 32
SERIALS = ["1740000JEH", "1809000LGG"]


class Clock:
    def __init__(self):
        self.t = 1_700_000_000.0

    def __call__(self):
        return self.t


@pytest.fixture
def rig():
    clock = Clock()
    sc = {"device": [
        {"serial": SERIALS[0], "model": "Time Tagger Ultra", "usb_speed": "high",
         "rate": [[0, 1e8]], "messages": [[0.5, "error", "{serial} failed: /home/bob/x"]]},
        {"serial": SERIALS[1], "model": "Time Tagger 20", "usb_speed": "high", "rate": [[0, 1e7]]},
    ]}  # fmt: skip
    sim = Simulation(parse_scenario(sc, "test"), clock=clock)
    masker = Masker(SECRET, hostnames=["labpc"], usernames=["bob"])
    poller = Poller(Discovery(backend=SimBackend(sim)), masker, SECRET, Config())
    return clock, sim, poller


def dump(observations) -> str:
    return json.dumps([dataclasses.asdict(o) for o in observations], default=repr)


def test_observations_hold_no_serial_or_unit_id(rig):
    clock, sim, poller = rig
    obs, gone, errors = poller.poll(0.0)
    clock.t += 1
    obs2, _, _ = poller.poll(1.0)
    text = dump(obs + obs2)
    for s in SERIALS:
        assert s not in text and s.lower() not in text
    ultra = next(o for o in obs if o.device.model == "Time Tagger Ultra")
    config = ultra.configuration
    assert config["serial"].startswith("[")
    assert config["PCB UID"].startswith("[id:") and config["FPGA ID"].startswith("[id:")
    assert "[path]" in json.dumps(config)  # the user's file path is gone
    texts = [t for o in obs + obs2 for _, t in o.messages]
    assert any("[serial:" in t and "[path]" in t for t in texts), texts
    assert gone == [] and errors == []


def test_schedules_and_counters(rig):
    clock, sim, poller = rig
    first, _, _ = poller.poll(0.0)
    assert all(o.calibration is not None and o.configuration is not None for o in first)
    clock.t += 1
    second, _, _ = poller.poll(1.0)
    assert all(o.configuration is None for o in second)  # re-read only every config_interval_s
    tt20 = next(o for o in second if o.device.model == "Time Tagger 20")
    assert tt20.counters.bytes_sent > 0
    assert next(o for o in first if o.device.model == "Time Tagger 20").sensors == {}


def test_unplug_reports_the_device_gone(rig):
    clock, sim, poller = rig
    poller.poll(0.0)
    sim.unplug(SERIALS[1])
    clock.t += 1
    obs, gone, _ = poller.poll(1.0)
    assert [v.model for v in gone] == ["Time Tagger 20"]
    assert [o.device.model for o in obs] == ["Time Tagger Ultra"]


def test_a_failed_reading_is_an_error_not_a_crash(rig):
    clock, sim, poller = rig
    poller.poll(0.0)
    sim.inject(SERIALS[0], "garbage")
    clock.t += 1
    obs, _, _ = poller.poll(1.0)
    ultra = next(o for o in obs if o.device.model == "Time Tagger Ultra")
    assert ultra.errors and ultra.counters is None
    assert all(s not in " ".join(ultra.errors) for s in SERIALS)
