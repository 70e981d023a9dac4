"""Scenario files: the default parses, and every kind of mistake names file, device and key."""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simhelpers import device_table

from tagstat.drivers.sim.scenario import (
    DeviceScenario,
    default_scenario,
    load_scenario,
    parse_scenario,
)
from tagstat.errors import ScenarioError

PREFIX = "scenario.toml: device 2 (1740000JEH): "


def parse_second(**table):
    """Parse a scenario whose second device is ``table`` (over sane defaults)."""
    tables = [device_table(serial="1809000LGG", model="Time Tagger 20"), device_table(**table)]
    return parse_scenario({"device": tables}, "scenario.toml")


def test_default_scenario_is_one_varying_ultra():
    (device,) = default_scenario().devices
    rates = [r for _, r in device.rate]
    assert device.model == "Time Tagger Ultra" and device.usb_speed == "super"
    assert len(rates) >= 5 and max(rates) >= 200e6 and device.loop_s
    assert any(device.serial in text for _, _, text in device.messages)


def test_load_scenario_reads_a_file(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(
        '[[device]]\nserial = "1740000JEH"\nmodel = "Time Tagger X"\n'
        'rate = [[0, 5e7], [10, 0]]\nfaults = [[3, "unplug"], [4, "replug"]]\n'
        '[[device]]\nserial = "1809000LGG"\nmodel = "Time Tagger 20"\ncounter_bits = 32\n'
    )
    scenario = load_scenario(path)
    x, tt20 = scenario.devices
    assert x == DeviceScenario(
        "1740000JEH",
        "Time Tagger X",
        "super",
        rate=((0.0, 5e7), (10.0, 0.0)),
        faults=((3.0, "unplug"), (4.0, "replug")),
    )
    assert (tt20.usb_speed, tt20.counter_bits) == ("high", 32)
    assert scenario.source == str(path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"serial": "1740000jeh"}, "device 2: serial: must be 4 digits"),
        ({"serial": "1740000JEH\n"}, "device 2: serial: must be 4 digits"),
        ({"model": "Time Tagger 9000"}, PREFIX + "model: must be one of"),
        ({"usb_speed": "full"}, PREFIX + "usb_speed: must be one of"),
        ({"rate": [[0, 1], [1, 2], [2, 3], [3, -5]]}, PREFIX + "rate[3]: bytes_per_second must"),
        ({"rate": [[2, 1], [1, 2]]}, PREFIX + "rate[1]: times must not decrease"),
        ({"rate": [[-1, 1]]}, PREFIX + "rate[0]: t_seconds must be a number >= 0"),
        ({"rate": [[1, 1], [1, 2]]}, PREFIX + "rate[1]: two rate steps"),
        ({"rate": [[0, float("nan")]]}, PREFIX + "rate[0]: bytes_per_second"),
        ({"rate": "fast"}, PREFIX + "rate: must be a list"),
        ({"messages": [[0, "debug", "x"]]}, PREFIX + "messages[0]: level must be one of"),
        ({"messages": [[0, "error"]]}, PREFIX + "messages[0]: must be [t_seconds, level, text]"),
        ({"faults": [[0, "explode"]]}, PREFIX + "faults[0]: kind must be one of"),
        ({"counter_bits": 8}, PREFIX + "counter_bits: must be an integer from 16 to 64"),
        ({"counter_bits": 16, "counter_start": 1 << 16}, PREFIX + "counter_start: must be"),
        ({"loop_s": 0}, PREFIX + "loop_s: must be a number of seconds > 0"),
        ({"loop_s": 10, "rate": [[10, 1]]}, PREFIX + "rate[0]: t_seconds 10 must be < loop_s"),
        ({"product_id": 0x10000}, PREFIX + "product_id: must be an integer"),
        ({"colour": "red"}, PREFIX + "colour: unknown key"),
    ],
)
def test_each_kind_of_error_names_file_device_and_key(table, message):
    with pytest.raises(ScenarioError) as caught:
        parse_second(**table)
    assert str(caught.value).startswith("scenario.toml: ")
    assert message in str(caught.value)


def test_missing_key_and_duplicate_serial():
    with pytest.raises(ScenarioError, match=r"device 1 \(1740000JEH\): model: missing"):
        parse_scenario({"device": [{"serial": "1740000JEH"}]}, "s.toml")
    with pytest.raises(ScenarioError, match=r"device 2 \(1740000JEH\): serial: duplicate"):
        parse_scenario({"device": [device_table(), device_table()]}, "s.toml")


def test_time_tagger_20_cannot_be_super_speed():
    with pytest.raises(ScenarioError, match="usb_speed: a Time Tagger 20 is a USB 2.0 device"):
        parse_second(model="Time Tagger 20", usb_speed="super")


def test_file_level_errors(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[device]\n")
    with pytest.raises(ScenarioError, match="bad.toml: not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="s.toml: device: at least one"):
        parse_scenario({}, "s.toml")
    with pytest.raises(ScenarioError, match="s.toml: devices: unknown key"):
        parse_scenario({"devices": []}, "s.toml")


def test_serial_placeholder_is_replaced():
    (_, device) = parse_second(messages=[[1, "warning", "'{serial}' is hot"]]).devices
    assert device.messages == ((1.0, "warning", "'1740000JEH' is hot"),)


# -- any input gives a scenario or a ScenarioError, never another exception --------

toml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["1740000JEH", "Time Tagger Ultra", "high", "super", "warning", "reset"])
)
values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
keys = st.sampled_from(
    ["serial", "model", "usb_speed", "rate", "messages", "faults", "counter_bits"]
    + ["counter_start", "loop_s", "product_id", "firmware", "other"]
)
device_tables = st.dictionaries(keys, values, max_size=8).map(lambda d: {**device_table(), **d})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(device_tables | values, max_size=3) | values)
def test_random_values_give_scenario_or_scenario_error(devices):
    try:
        parse_scenario({"device": devices}, "fuzz.toml")
    except ScenarioError as e:
        assert str(e).startswith("fuzz.toml: ")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=string.printable + "[]{}=\"'", max_size=200))
def test_random_toml_text_gives_scenario_or_scenario_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.toml"
    path.write_text(text)
    try:
        load_scenario(path)
    except ScenarioError as e:
        assert str(e).startswith(str(path))
