"""Schema checks over real HTTP: each broken field gets a 400 naming it; real reports pass."""

import datetime as dt
import json

import pytest
from collector_fixtures import BASE_REPORT, V1_HOST_NEW, V1_HOST_OLD, deletion_request, usage_report

from tagstat import calibration
from tagstat.example_report import HOST
from tagstat.records import DeviceRecord, SessionRecord
from tagstat.report import build_report, report_json
from tagstat.report import deletion_request as build_deletion_request
from tagstat.status import UsageStatisticsStatus
from tagstat.store import Store

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
REMOVE = object()


def changed(path: str, value) -> dict:
    """A valid report with the field at a dotted path (list indexes as numbers) changed."""
    report = usage_report()
    *parents, last = path.split(".")
    target = report
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        last = int(last)
    if value is REMOVE:
        del target[last]
    else:
        target[last] = value
    return report


CASES = [
    ("schema_version", REMOVE, "missing field schema_version"),
    ("schema_version", "1", "schema_version must be an integer, got string"),
    ("schema_version", True, "schema_version must be an integer, got boolean"),
    ("schema_version", 3, "unsupported schema_version (this collector reads 1 and 2)"),
    ("schema_version", 0, "unsupported schema_version (this collector reads 1 and 2)"),
    ("kind", REMOVE, "missing field kind"),
    ("kind", "telemetry", "kind must be 'usage' or 'deletion'"),
    ("report_id", "42", "report_id is not a UUID"),
    ("report_id", None, "report_id must be a UUID string, got null"),
    ("user_id", REMOVE, "missing field user_id"),
    ("user_id", "x" * 1000, "user_id is not a UUID"),
    ("generated_at", "yesterday", "generated_at must be an ISO 8601 time with a UTC offset or Z"),
    ("generated_at", "2026-03-02T00:00:00", "generated_at must be an ISO 8601 time with a UTC"),
    ("generated_at", "0001-01-01T00:00:00+01:00", "generated_at must be an ISO 8601 time"),
    ("period", [], "period must be an object, got array"),
    ("period.end", None, "period.end must be an ISO 8601 time, got null"),
    ("status", "On", "status must be one of Disabled, Collecting, CollectingAndUploading"),
    ("software.tagstat", 1, "software.tagstat must be a string, got number"),
    ("host.ram_gib", -1, "host.ram_gib must be at least 0"),
    ("host.ram_gib", "24", "host.ram_gib must be an integer, got string"),
    ("host.cpu.flags", [1], "host.cpu.flags[0] must be a string, got number"),
    ("host.cpu.isa_features", [], "host.cpu.isa_features must be an object, got array"),
    ("host.cpu.isa_features.sse", "yes", "host.cpu.isa_features.sse must be true or false"),
    ("host.cpu.family", "6", "host.cpu.family must be an integer or null, got string"),
    ("host.os.version", 12, "host.os.version must be a string or null, got number"),
    ("host.os", 12, "host.os must be a string, got number"),
    ("daemon", [], "daemon must be an object or null, got array"),
    ("daemon.read_errors", -1, "daemon.read_errors must be at least 0"),
    ("messages.0.source", 3, "messages[0].source must be a string, got number"),
    ("devices", {}, "devices must be an array, got object"),
    ("devices.0", "ab", "devices[0] must be a JSON object, got string"),
    ("devices.0.model", REMOVE, "missing field devices[0].model"),
    ("devices.0.model", "", "devices[0].model must have 1 to 200 characters"),
    ("devices.0.serial", "1234ABCDEF", "devices[0].serial holds a serial number in clear"),
    ("devices.0.sensors", None, "devices[0].sensors must be an object, got null"),
    ("sessions.0.session_id", REMOVE, "missing field sessions[0].session_id"),
    ("sessions.0.session_id", "\ud800", "sessions[0].session_id is not valid Unicode text"),
    ("sessions.0.device_id", "d" * 129, "sessions[0].device_id must have 1 to 128 characters"),
    ("sessions.0.data_rate.avg", "fast", "sessions[0].data_rate.avg must be a number, got string"),
    ("sessions.0.data_rate.avg", -5, "sessions[0].data_rate.avg must be a finite number of at"),
    ("sessions.0.duration_s", 10**400, "sessions[0].duration_s must be a finite number"),
    ("sessions.0.bytes", 2**64, "sessions[0].bytes must be at most 9223372036854775807"),
    ("sessions.0.bytes", 1.5, "sessions[0].bytes must be an integer, got number"),
    ("sessions.0.open", "yes", "sessions[0].open must be true or false, got string"),
    ("messages.0.count", None, "messages[0].count must be an integer, got null"),
]


CASE_IDS = [f"{path}={value!r:.20}" for path, value, _ in CASES]


@pytest.mark.parametrize(("path", "value", "reason"), CASES, ids=CASE_IDS)
def test_a_broken_field_is_400_naming_it(collector, path, value, reason):
    r = collector.post(changed(path, value), idempotency=False)
    assert r.status_code == 400
    assert r.json()["error"].startswith(reason)
    assert collector.reports() == []


def test_a_number_too_large_for_a_float_is_400(collector):
    text = json.dumps(usage_report()).replace('"max": 200000000.0', '"max": 1e400')
    assert "1e400" in text
    r = collector.post(text.encode())
    assert r.status_code == 400
    assert r.json()["error"] == "sessions[0].data_rate.max must be a finite number of at least 0"


def test_unknown_fields_are_tolerated(collector):
    report = usage_report(new_top_level={"x": 1})
    report["sessions"][0]["new_field"] = [1, 2]
    assert collector.post(report).json()["status"] == "stored"


@pytest.mark.parametrize("host", [V1_HOST_OLD, V1_HOST_NEW], ids=["v1-daemon", "v1-consent"])
def test_schema_1_reports_are_read(collector, host):
    # an older tagstat, or a newer one whose user agreed to schema 1 only
    report = usage_report(schema_version=1, host=host)
    del report["daemon"]
    report["messages"][0]["source"] = "device"
    assert collector.post(report).json()["status"] == "stored"


def test_nullable_fields_may_be_null(collector):
    report = usage_report(host=None, period={"start": None, "end": BASE_REPORT["generated_at"]})
    report["devices"][0].update(usb_speed=None, firmware=None, calibration=None)
    report["sessions"][0].update(end_reason=None, initial_sensors=None)
    report["messages"][0]["device_id"] = None
    assert collector.post(report).json()["status"] == "stored"


def test_a_deletion_request_needs_only_its_five_fields(collector):
    request = deletion_request()
    assert collector.post(request).json()["status"] == "deleted"
    broken = deletion_request()
    del broken["generated_at"]
    r = collector.post(broken)
    assert r.status_code == 400 and r.json() == {"error": "missing field generated_at"}


def test_a_report_built_by_the_daemon_is_accepted(collector, tmp_path):
    """What the daemon's own report builder makes passes the checks."""
    store = Store.open(tmp_path / "daemon.db")
    try:
        store.upsert_device(
            DeviceRecord("cd" * 8, "Time Tagger X", "[serial:cdcdcdcd]", "super", "1.30",
                         {"delay": [1]}, {"mode": "A"}, T0, T0,
                         calibration.summarize({"status": "OK"}, 3), 2, 2)
        )  # fmt: skip
        store.save_session(SessionRecord(
            "5b1f7c1e-0c55-4bd4-9a57-8d4c6f0e7a10", "cd" * 8, 2, T0, T0 + dt.timedelta(seconds=50),
            50.0, 10**9, 10**8, 1e7, 3e7, "super", {}, True, None, "x", 0, 0, 0, T0,
        ))  # fmt: skip
        store.record_message("cd" * 8, "error", "usb link lost", T0, 2)
        store.record_daemon_counts(T0, 2, {"scan_errors": 2})
        report = build_report(store, user_id="0b9e4a52-8a1d-4d7e-9a52-3f0c2a9e1b11",
                              status=UsageStatisticsStatus.CollectingAndUploading,
                              host=HOST.to_report(), now=T0 + dt.timedelta(days=1))  # fmt: skip
    finally:
        store.close()
    report = json.loads(report_json(report))
    assert report["kind"] == "usage" and report["sessions"][0]["session_id"]
    r = collector.post(report)
    assert r.status_code == 200, r.text
    assert collector.stats()["models"][0]["model"] == "Time Tagger X"


def test_a_deletion_request_built_by_the_daemon_is_carried_out(collector):
    request = build_deletion_request(user_id=deletion_request()["user_id"], now=T0)
    assert collector.post(request).json()["status"] == "deleted"
