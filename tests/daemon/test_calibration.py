"""The calibration summary: what the report says of a calibration table, and that it does not
tell units apart. The raw table stays on the computer."""

import collections
import datetime as dt
import json
import random
import string

import pytest

from tagstat import calibration
from tagstat.drivers.sim import documents
from tagstat.masking import Masker
from tagstat.poller import Poller

NOW = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
TABLE = {
    "calibration date": "2025-11-04T10:24:00Z",
    "reference clock": {"frequency Hz": 500_000_000, "offset ppb": -17},
    "channels": {str(c): {"delay ps": 1003 + 13 * c, "offset ps": c - 9, "rms jitter ps": 8}
                 for c in range(1, 19)},
    "status": "OK",
}  # fmt: skip


def test_the_summary_has_status_age_channels_and_rounded_medians():
    view = calibration.report_view(calibration.summarize(TABLE, 0), NOW)
    assert view == {
        "status": "OK",
        "age_days": 90,  # 118 days, in steps of 30
        "channels": 18,
        "quantities": {
            "delay ps": {"median": 1000},  # 1016 .. 1237: one digit of the largest
            "offset ps": {"median": 0},  # -8 .. 9
            "rms jitter ps": {"median": 8},
        },
    }
    text = json.dumps(view)
    assert "offset ppb" not in text and "-17" not in text and "1237" not in text


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, {"status": None, "age_days": None, "channels": 0, "quantities": {}}),
        ({"status": "recalibrate: /home/x"}, {"status": "other"}),
        ({"calibration date": "not a date"}, {"age_days": None}),
        ({"calibration date": "2030-01-01"}, {"age_days": 0}),  # a clock behind: never < 0
        ({"channels": [{"d": 1.0}, {"d": True}, {"d": float("nan")}]}, {"channels": 3}),
    ],
)
def test_odd_tables_give_a_summary_anyway(table, expected):
    view = calibration.report_view(calibration.summarize(table, 0), NOW)
    assert view.items() >= expected.items()


def test_no_summary_is_no_calibration():
    assert calibration.report_view({}, NOW) is None
    assert calibration.summarize(["not", "a", "dict"], 0) == {}


def serials(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.digits + string.ascii_uppercase
    return [
        "".join(rng.choices(string.digits, k=4)) + "".join(rng.choices(alphabet, k=6))
        for _ in range(n)
    ]


@pytest.mark.parametrize("model", sorted(documents.CHANNELS))
def test_most_units_of_a_model_share_one_summary(model):
    counts = collections.Counter(
        json.dumps(calibration.summarize(documents.calibration(model, s), 0)["quantities"])
        for s in serials(3000, seed=len(model))
    )
    shares = sorted((n / 3000 for n in counts.values()), reverse=True)
    assert shares[0] >= 0.65 and shares[-1] > 0.01, shares  # no summary is rare


def test_the_age_offset_is_keyed_per_install():
    table = documents.calibration("Time Tagger Ultra", "1740000JEH")

    def offset(secret: bytes) -> int:
        masker = Masker(secret, hostnames=(), usernames=())
        poller = Poller(None, masker, secret, config=None)
        view = type("View", (), {"device_id": masker.device_id("1740000JEH")})
        return poller._age_offset(view)

    offsets = {offset(bytes([i]) * 32) for i in range(40)}
    assert len(offsets) > 10 and offsets <= set(range(30))
    # the day on which the age steps up differs between installs
    days = set()
    for off in sorted(offsets):
        summary = calibration.summarize(table, off)
        ages = [calibration.report_view(summary, NOW + dt.timedelta(d))["age_days"]
                for d in range(31)]  # fmt: skip
        days.add(next(d for d in range(1, 31) if ages[d] != ages[d - 1]))
        assert all(a % 30 == 0 for a in ages)
    assert len(days) > 10
