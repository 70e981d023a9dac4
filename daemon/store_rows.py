"""Rows and records: how the store's tables map to the data model, and its SQL.

Part of the store (only ``tagstat.store`` uses these). Stamps are ISO 8601 UTC
text with milliseconds; dicts are JSON text; raw u64 device counters are kept
as two's-complement i64, which is what SQLite's integers hold.
"""

import dataclasses
import datetime as dt
import json
from pathlib import Path

from tagstat.clock import iso, parse_iso
from tagstat.measurement_data import MeasurementEvent
from tagstat.records import DeviceRecord, OutboxEntry, SessionRecord, UploadAttempt

U64 = 1 << 64
SESSION_UNSIGNED = ("last_bytes", "last_tags", "last_uptime_ms")  # raw u64 device counters

OUTBOX_COLUMNS = (
    "report_id", "kind", "user_id", "created_at", "body", "size_bytes", "state", "attempts",
    "next_attempt_at", "last_error", "delivered_at", "quota_exempt",
)  # fmt: skip
AUDIT_INSERT = (
    "INSERT INTO upload_audit (at, report_id, size_bytes, result, http_status, detail) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def outbox_row(entry: OutboxEntry) -> dict:
    row = dataclasses.asdict(entry)
    for key in ("created_at", "next_attempt_at", "delivered_at"):
        row[key] = iso(row[key]) if row[key] is not None else None
    row["quota_exempt"] = int(entry.quota_exempt)
    return row


def outbox_entry(row: dict) -> OutboxEntry:
    values = dict(row)
    for key in ("created_at", "next_attempt_at", "delivered_at"):
        values[key] = parse_iso(row[key]) if row[key] is not None else None
    values["body"] = bytes(row["body"])
    values["quota_exempt"] = bool(row["quota_exempt"])
    return OutboxEntry(**values)


def audit_row(a: UploadAttempt) -> tuple:
    return (iso(a.at), a.report_id, a.size_bytes, a.result, a.http_status, a.detail)


def placeholders(values: list) -> str:
    return ", ".join("?" * len(values))


DEVICE_KEEP = {"device_id", "first_seen"}
DEVICE_JSON = ("calibration", "configuration", "calibration_summary")


def device_row(rec: DeviceRecord) -> dict:
    row = dataclasses.asdict(rec)
    for key in DEVICE_JSON:
        row[key] = json.dumps(row[key])
    return row | {"first_seen": iso(rec.first_seen), "last_seen": iso(rec.last_seen)}


def device_record(row: dict) -> DeviceRecord:
    values = dict(row) | {k: json.loads(row[k]) for k in DEVICE_JSON}
    values |= {"first_seen": parse_iso(row["first_seen"]), "last_seen": parse_iso(row["last_seen"])}
    return DeviceRecord(**values)


def session_row(rec: SessionRecord) -> dict:
    row = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
    for key in ("start", "end", "checkpoint_at"):
        row[key] = iso(row[key])
    for key in SESSION_UNSIGNED:
        row[key] = row[key] - U64 if row[key] >= 1 << 63 else row[key]
    row["initial_sensors"] = json.dumps(rec.initial_sensors)
    row["open"] = int(rec.open)
    return row


def session_record(row: dict) -> SessionRecord:
    values = dict(row)
    for key in ("start", "end", "checkpoint_at"):
        values[key] = parse_iso(row[key])
    for key in SESSION_UNSIGNED:
        values[key] = row[key] + U64 if row[key] < 0 else row[key]
    values["initial_sensors"] = json.loads(row["initial_sensors"])
    values["open"] = bool(row["open"])
    return SessionRecord(**values)


def measurement_row(event: MeasurementEvent, status: int) -> tuple:
    return (event.type, status, iso(event.start), iso(event.end), event.duration_s, event.error,
            json.dumps(event.config), json.dumps(event.indicators))  # fmt: skip


def measurement_event(row: tuple) -> MeasurementEvent:
    type_, start, end, duration_s, error, config, indicators = row
    return MeasurementEvent(type_, parse_iso(start), parse_iso(end), duration_s, error,
                            json.loads(config), json.loads(indicators))  # fmt: skip


def hour_of(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def finite_or_none(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN would become NULL in SQLite


def clean_text(text: str) -> str:
    # A lone surrogate (from a badly decoded device string) cannot be stored as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


def add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        total[key] += n


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


SENSOR_UPSERT = """
INSERT INTO sensor_buckets (device_id, hour, status, key, min, max, last, last_at, n)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (device_id, hour, status, key) DO UPDATE SET
    min = min(min, excluded.min),
    max = max(max, excluded.max),
    last = CASE WHEN excluded.last_at >= last_at THEN excluded.last ELSE last END,
    last_at = max(last_at, excluded.last_at),
    n = n + 1
"""

SENSOR_SUMMARY = """
SELECT key, lo, hi, last, last_at FROM (
    SELECT key, last, last_at,
        min(min) OVER (PARTITION BY key) AS lo,
        max(max) OVER (PARTITION BY key) AS hi,
        row_number() OVER (PARTITION BY key ORDER BY last_at DESC) AS rank
    FROM sensor_buckets WHERE {where}
) WHERE rank = 1 ORDER BY key
"""

MESSAGE_UPSERT = """
INSERT INTO messages (source, level, text, status, count, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, level, text, status) DO UPDATE SET
    count = count + excluded.count,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen)
"""

MEASUREMENT_INSERT = """
INSERT INTO measurements
    (type, status, start, "end", duration_s, error, config, indicators, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# What a purge deletes (tagstat.purge); settings other than message cursors, the
# status history, deletion requests and the upload audit log stay.
PURGE_STATEMENTS = {
    "sessions": "DELETE FROM sessions",
    "sensor_buckets": "DELETE FROM sensor_buckets",
    "messages": "DELETE FROM messages",
    "measurements": "DELETE FROM measurements",
    "devices": "DELETE FROM devices",
    "usage_reports": "DELETE FROM outbox WHERE kind = 'usage'",
    "message_cursors": "DELETE FROM settings WHERE key LIKE 'msg\\_cursor:%' ESCAPE '\\'",
    "daemon_counters": "DELETE FROM daemon_counters",
}

# The age of every prunable row, so the size limit removes the oldest data first.
AGES = """
SELECT "end" FROM sessions WHERE open = 0
UNION ALL SELECT last_at FROM sensor_buckets
UNION ALL SELECT last_seen FROM messages
UNION ALL SELECT "end" FROM measurements
UNION ALL SELECT at FROM daemon_counters
"""
