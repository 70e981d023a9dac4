"""The report: valid when empty, complete, and every field documented in DATA.md."""

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from tagstat import calibration
from tagstat.example_report import HOST
from tagstat.fields import OPAQUE  # documented as a whole, not key by key
from tagstat.measurement_data import MeasurementEvent
from tagstat.records import DeviceRecord, SessionRecord
from tagstat.report import build_report, report_json
from tagstat.status import UsageStatisticsStatus
from tagstat.store import Store

DATA_MD = Path(__file__).parents[2] / "docs" / "DATA.md"
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
CALIBRATION = {"calibration date": "2025-11-04", "status": "OK",
               "channels": {"1": {"delay ps": 1010}, "2": {"delay ps": 1190}}}  # fmt: skip


def field_paths(obj, prefix=""):
    if prefix in OPAQUE:
        yield prefix
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from field_paths(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
        for item in obj:
            yield from field_paths(item, f"{prefix}[]")
    else:
        yield prefix


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "t.db")
    yield s
    s.close()


def seed(store):
    store.upsert_device(DeviceRecord("ab" * 8, "Time Tagger Ultra", "[serial:abababab]", "super",
                                     "1.30", CALIBRATION, {"resolution": "HighResA"}, T0, T0,
                                     calibration.summarize(CALIBRATION, 0), 1, 1))  # fmt: skip
    store.save_session(SessionRecord(
        "s1", "ab" * 8, 1, T0, T0 + dt.timedelta(seconds=100), 100.0, 10**10, 10**9, 5e7, 2e8,
        "super", {"fpga sensors": {"temp": 40.0}}, False, "idle", "x", 0, 0, 0, T0,
    ))  # fmt: skip
    store.record_sensors("ab" * 8, T0, 1, {"fpga sensors/temp": 40.0})
    store.record_sensors("ab" * 8, T0 + dt.timedelta(hours=2), 1, {"fpga sensors/temp": 44.0})
    store.record_message("ab" * 8, "warning", "overflow", T0, 1)
    store.record_daemon_counts(T0, 1, {"read_errors": 3, "log_warnings": 4})
    event = MeasurementEvent("Correlation", T0, T0 + dt.timedelta(seconds=2), 2.0, "ValueError",
                             {"binwidth": 1000}, {"events_processed": 5})  # fmt: skip
    store.record_measurements([(event, 1)], T0)


def report(store, **kw):
    return build_report(store, user_id="u", status=UsageStatisticsStatus.Collecting,
                        host=HOST.to_report(), now=T0 + dt.timedelta(days=1),
                        **kw)  # fmt: skip


def test_empty_report_is_valid_json_with_empty_lists(store):
    r = json.loads(report_json(report(store)))
    assert r["devices"] == [] and r["sessions"] == [] and r["messages"] == []
    assert r["schema_version"] == 2 and r["period"]["start"] is None
    assert r["daemon"] == {"read_errors": 0, "scan_errors": 0, "log_warnings": 0, "log_errors": 0}


def test_report_contents(store):
    seed(store)
    r = report(store)
    (s,) = r["sessions"]
    assert s["data_rate"] == {"min": 5e7, "avg": 1e8, "max": 2e8}
    assert s["duration_s"] == 100.0 and s["bytes"] == 10**10
    (d,) = r["devices"]
    assert d["sensors"]["fpga sensors/temp"] == {"last": 44.0, "min": 40.0, "max": 44.0}
    assert r["messages"] == [{"device_id": "ab" * 8, "level": "warning", "text": "overflow",
                              "count": 1, "first_seen": "2026-03-01T00:00:00.000Z",
                              "last_seen": "2026-03-01T00:00:00.000Z"}]  # fmt: skip
    assert r["daemon"] == {"read_errors": 3, "scan_errors": 0, "log_warnings": 4, "log_errors": 0}
    assert r["host"]["cpu"]["logical_processors"] == 20 and r["host"]["ram_gib"] == 32
    # the calibration table stays here; the report has its summary (2025-11-04 is 117 days
    # before the report: 90 in steps of 30)
    assert d["calibration"] == {"status": "OK", "age_days": 90, "channels": 2,
                                "quantities": {"delay ps": {"median": 1000}}}  # fmt: skip
    assert "1010" not in report_json(r) and "1190" not in report_json(r)


def test_upload_view_leaves_out_data_collected_before_consent(store):
    seed(store)
    r = report(store, min_status=2, since=T0 - dt.timedelta(hours=1))
    assert r["sessions"] == [] and r["messages"] == [] and r["measurements"] == []
    (d,) = r["devices"]  # seen in the period, but its documents were read under status 1
    assert d["calibration"] is None and d["configuration"] is None and d["sensors"] == {}
    assert r["daemon"]["read_errors"] == 0


def test_a_device_first_seen_before_the_period_is_shown_from_the_period_start(store):
    seed(store)
    since = T0 + dt.timedelta(minutes=30)
    seen = since + dt.timedelta(seconds=1)
    store.upsert_device(dataclasses.replace(store.devices()[0], last_seen=seen))
    (d,) = report(store, since=since)["devices"]
    assert d["first_seen"] == "2026-03-01T00:30:00.000Z"


def test_every_report_field_is_documented():
    """Fails when the report gains a field docs/DATA.md does not describe."""
    documented = set(re.findall(r"^\| `([^`]+)` \|", DATA_MD.read_text(), flags=re.M))
    tmp = Path(__import__("tempfile").mkdtemp())
    s = Store.open(tmp / "t.db")
    seed(s)
    fields = set(field_paths(report(s)))
    s.close()
    missing = sorted(f for f in fields if f not in documented)
    assert missing == [], f"report fields missing from docs/DATA.md: {missing}"
    # and the parents of documented leaves exist as documented fields
    assert {"sessions[]", "devices[]", "messages[]"} <= documented
