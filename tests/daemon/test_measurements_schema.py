"""The measurement allowlists: what passes, what is dropped, and that DATA.md lists it all."""

import fractions
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tagstat import killswitch
from tagstat import measurement_schema as schema

DATA_MD = Path(__file__).parents[2] / "docs" / "DATA.md"


def test_types_outside_the_allowlist_become_other():
    assert schema.measurement_type("Correlation") == "Correlation"
    for name in ("correlation", "MyMeasurement", "/home/alice/run.py", "", None, 3, ["Counter"]):
        assert schema.measurement_type(name) == "Other"


def test_error_class_names_only():
    for name in ("ValueError", "TimeTaggerError", "mod.Outer.Inner", "_Private", "E" + "x" * 80):
        assert schema.error_class(name) == name
    bad = ("No such file: /home/alice/x", "ValueError: boom", "1abc", "", "E" + "x" * 81,
           "Err_1740000JEH", "x.1809000LGG", "err1740000jeh", "Ref2066wiiu2vError", None, 42,
           "Größe")  # fmt: skip
    for name in bad:
        assert schema.error_class(name) == "Exception", name


def test_config_keeps_numbers_booleans_and_listed_names_under_listed_keys():
    raw = {
        "binwidth": 1000, "n_bins": 5000, "test_signal": True, "coincidence_window": 0.5,
        "resolution": "HighResA", "channel_edge": "Rising",
        "file": "/home/alice/data.ttbin", "comment": "sample from Alice",
        "serial": "1740000JEH", "n_values": "1740000JEH", "tagger": "my tagger",
        "channel_count": [1, 2, 3], "n_histograms": {"a": 1}, "binwidth_1": None,
        "exp_start": float("nan"), "exp_stop": float("inf"), 7: 7, "resolution2": "Standard",
    }  # fmt: skip
    assert schema.config(raw) == {
        "binwidth": 1000, "n_bins": 5000, "test_signal": True, "coincidence_window": 0.5,
        "resolution": "HighResA", "channel_edge": "Rising",
    }  # fmt: skip
    assert schema.config(None) == {} and schema.config("binwidth=1") == {}


def test_an_enumerated_name_counts_only_under_its_own_key():
    assert schema.config({"resolution": "Rising", "channel_edge": "HighResA"}) == {}


def test_numbers_keep_four_significant_digits():
    assert schema.number(1234) == 1234
    assert schema.number(1740000123) == 1740000000  # an all-digit serial loses its tail
    assert schema.number(-98766) == -98770
    assert schema.number(0.000123456) == 0.0001235
    assert schema.number(fractions.Fraction(1, 3)) == 0.3333
    assert schema.number(10**19) is None and schema.number(-1e19) is None
    assert schema.number(True) is True and schema.number("12") is None


def test_indicators_are_non_negative_numbers_under_listed_names():
    raw = {"events_processed": 10**6, "cpu_time_s": 0.25, "dropped_events": -1,
           "events_per_s": True, "wall": 3, "user": "alice"}  # fmt: skip
    assert schema.indicators(raw) == {"events_processed": 1000000, "cpu_time_s": 0.25}


def test_durations():
    assert schema.duration(1.23456) == 1.235
    for bad in (-1, float("nan"), 10**9, "1", True, None):
        assert schema.duration(bad) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)
keys = st.sampled_from(sorted(schema.CONFIG_KEYS | {"file", "path", "serial"})) | st.text()
values = json_values | st.sampled_from(["1740000JEH", "/home/alice/x"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=8))
def test_whatever_comes_in_only_allowlisted_scalars_come_out(raw):
    out = schema.config(raw)
    assert set(out) <= schema.CONFIG_KEYS
    for key, value in out.items():
        if isinstance(value, str):
            assert value in schema.ENUM_VALUES[key]
        elif not isinstance(value, bool):
            assert isinstance(value, int | float)
            # at most four significant digits: rounding to four changes nothing
            # (a 16-digit expansion shows binary representation noise, so not that)
            assert value == float(f"{value:.4g}"), value
    assert "1740000JEH" not in json.dumps(out) and "alice" not in json.dumps(out)
    assert set(schema.indicators(raw)) <= set(schema.INDICATORS)


def test_data_md_lists_every_allowlisted_name():
    text = DATA_MD.read_text()
    names = set(schema.MEASUREMENT_TYPES) | schema.CONFIG_KEYS | set(schema.INDICATORS)
    names |= {v for values in schema.ENUM_VALUES.values() for v in values}
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert missing == [], f"docs/DATA.md does not list {missing}"


def test_kill_switches():
    assert killswitch.active({}) is None
    assert killswitch.active({"TAGSTAT_DISABLE": "0", "DO_NOT_TRACK": ""}) is None
    assert killswitch.active({"DO_NOT_TRACK": "1"}) == "DO_NOT_TRACK"
    assert killswitch.active({"DO_NOT_TRACK": "true", "TAGSTAT_DISABLE": "yes"}) == (
        "TAGSTAT_DISABLE"
    )
    assert "DO_NOT_TRACK" in killswitch.describe({"DO_NOT_TRACK": "1"})
    assert killswitch.describe({}) is None
