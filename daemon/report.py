"""The usage-statistics report: one JSON document built from the store.

The same builder serves ``getUsageStatisticsReport()`` and the upload (a
``kind: "usage"`` report per period, see ``tagstat.outbox``), so what a user
sees is what would be sent; ``deletion_request`` is the other kind of upload.
Every field is described in ``docs/DATA.md``; a test fails if the report
gains a field the document does not describe. All data in the store is
already masked. A report of status-2 data (``min_status``) holds only what was
measured under that status: sessions, messages, sensor readings and device
documents each carry the status they were measured under, and a device's
``first_seen`` is never before the report's period.
"""

import datetime as dt
import json
import platform
import uuid

import tagstat
from tagstat import calibration, measurement_data
from tagstat.clock import iso
from tagstat.daemon_counters import report_block
from tagstat.records import SessionRecord
from tagstat.status import UsageStatisticsStatus

SCHEMA_VERSION = 2


def build_report(
    store,
    *,
    user_id: str,
    status: UsageStatisticsStatus,
    host: dict | None,
    now: dt.datetime,
    since: dt.datetime | None = None,
    min_status: int = 0,
    report_id: str | None = None,
) -> dict:
    """The report over (since, now] of data collected under at least ``min_status``.

    ``since`` is open: what was measured at that instant closed the period before."""
    sessions = store.sessions(since=since, min_status=min_status)
    messages = store.messages(since=since, min_status=min_status)
    measurements = store.measurements(since=since, min_status=min_status)
    devices = [
        _device(store, d, since, min_status, now)
        for d in store.devices()
        if since is None or d.last_seen > since
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "usage",
        "report_id": report_id or str(uuid.uuid4()),
        "generated_at": iso(now),
        "period": {
            "start": iso(since) if since else _first_start(sessions, measurements),
            "end": iso(now),
        },
        "user_id": user_id,
        "status": status.name,
        "software": {"tagstat": tagstat.__version__, "python": platform.python_version()},
        "host": host,
        "devices": devices,
        "sessions": [session_entry(s) for s in sessions],
        "messages": [
            {
                "device_id": m.source,
                "level": m.level,
                "text": m.text,
                "count": m.count,
                "first_seen": iso(m.first_seen),
                "last_seen": iso(m.last_seen),
            }
            for m in messages
        ],
        "measurements": measurement_data.summarize(measurements),
        "daemon": report_block(store.daemon_counts(since=since, min_status=min_status)),
    }


def deletion_request(*, user_id: str, now: dt.datetime, report_id: str | None = None) -> dict:
    """Asks the collector to delete every report of ``user_id``; carries nothing else."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "deletion",
        "report_id": report_id or str(uuid.uuid4()),
        "generated_at": iso(now),
        "user_id": user_id,
    }


def report_json(report: dict) -> str:
    return json.dumps(report, sort_keys=False, separators=(",", ":"))


def session_entry(s: SessionRecord) -> dict:
    return {
        "session_id": s.session_id,
        "device_id": s.device_id,
        "start": iso(s.start),
        "end": iso(s.end),
        "duration_s": round(s.duration_s, 3),
        "bytes": s.bytes_total,
        "tags": s.tags_total,
        "data_rate": {
            "min": round(s.rate_min_bytes_per_s, 1),
            "avg": round(s.rate_avg_bytes_per_s, 1),
            "max": round(s.rate_max_bytes_per_s, 1),
        },
        "usb_speed": s.usb_speed,
        "initial_sensors": s.initial_sensors,
        "open": s.open,
        "end_reason": s.end_reason,
    }


def _device(store, d, since, min_status, now) -> dict:
    sensors = {
        st.key: {"last": st.last, "min": st.min, "max": st.max}
        for st in store.sensor_summary(d.device_id, since=since, min_status=min_status)
    }
    # A document is shown only if it was read under the statuses this report covers.
    cal_ok = (d.calibration_status or 0) >= min_status
    config_ok = (d.configuration_status or 0) >= min_status
    return {
        "device_id": d.device_id,
        "model": d.model,
        "serial": d.serial_masked,
        "usb_speed": d.usb_speed,
        "firmware": d.firmware,
        "calibration": calibration.report_view(d.calibration_summary, now) if cal_ok else None,
        "configuration": d.configuration if config_ok else None,
        "sensors": sensors,
        "first_seen": iso(max(d.first_seen, since) if since else d.first_seen),
        "last_seen": iso(d.last_seen),
    }


def _first_start(sessions, measurements) -> str | None:
    starts = [s.start for s in sessions] + [m.start for m in measurements]
    return iso(min(starts)) if starts else None
