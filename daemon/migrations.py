"""Numbered schema migrations for the tagstat database.

The schema version lives in ``PRAGMA user_version``: 0 is an empty file, and
migration N brings a database from N-1 to N. Each migration runs in its own
transaction together with the version bump, so a crash mid-migration leaves the
database at the previous version, never half-migrated. Migrations are append-only:
once released, a migration is never edited; a change to the schema is a new one.
This module works on a plain ``sqlite3`` connection so the store stays the only
module that imports sqlite_utils. Stamps are ISO 8601 UTC text with milliseconds
and ``Z``, which sorts in time order, so range queries compare text.
"""

import dataclasses
import logging
import sqlite3

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Migration:
    number: int
    why: str
    statements: tuple[str, ...]


_INITIAL = (
    """CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL  -- JSON
    )""",
    """CREATE TABLE status_changes (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        old INTEGER,
        new INTEGER NOT NULL,
        persistent INTEGER NOT NULL,
        reason TEXT NOT NULL
    )""",
    """CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        serial_masked TEXT NOT NULL,
        usb_speed TEXT NOT NULL,
        firmware TEXT NOT NULL,
        calibration TEXT NOT NULL,  -- JSON
        configuration TEXT NOT NULL,  -- JSON
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL
    )""",
    # No foreign key to devices: a session is checkpointed before, or without, its
    # device record (a device whose documents could not be read), and prune and
    # purge must be able to delete in any order.
    """CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        status INTEGER NOT NULL,
        start TEXT NOT NULL,
        "end" TEXT NOT NULL,
        duration_s REAL NOT NULL,
        bytes_total INTEGER NOT NULL,
        tags_total INTEGER NOT NULL,
        rate_min_bytes_per_s REAL NOT NULL,
        rate_max_bytes_per_s REAL NOT NULL,
        usb_speed TEXT NOT NULL,
        initial_sensors TEXT NOT NULL,  -- JSON
        open INTEGER NOT NULL,
        end_reason TEXT,
        boot_tag TEXT NOT NULL,
        last_bytes INTEGER NOT NULL,  -- u64 device counter stored as two's complement i64
        last_tags INTEGER NOT NULL,
        last_uptime_ms INTEGER NOT NULL,
        checkpoint_at TEXT NOT NULL
    )""",
    'CREATE INDEX sessions_end ON sessions ("end")',
    "CREATE INDEX sessions_open ON sessions (open)",
    "CREATE INDEX sessions_start ON sessions (start)",
    # One row per device, UTC hour, status and flattened sensor key; the primary key
    # doubles as the (device_id, hour) index the summary query needs.
    """CREATE TABLE sensor_buckets (
        device_id TEXT NOT NULL,
        hour TEXT NOT NULL,
        status INTEGER NOT NULL,
        key TEXT NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        last REAL NOT NULL,
        last_at TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (device_id, hour, status, key)
    )""",
    "CREATE INDEX sensor_buckets_hour ON sensor_buckets (hour)",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        level TEXT NOT NULL,
        text TEXT NOT NULL,
        status INTEGER NOT NULL,
        count INTEGER NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX messages_identity ON messages (source, level, text, status)",
    "CREATE INDEX messages_last_seen ON messages (last_seen)",
)

# -- 2: the upload outbox and its audit log (issue 4) ---------------------------------
# A report is stored here, as the exact JSON bytes to send, before its first attempt;
# the retry schedule lives in the row, so it survives restarts.
_OUTBOX = (
    """CREATE TABLE outbox (
        report_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,  -- 'usage' or 'deletion'
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        body BLOB NOT NULL,  -- exact JSON bytes; gzip is applied when sending
        size_bytes INTEGER NOT NULL,
        -- 'pending', 'delivered', 'rejected', 'dropped', 'cancelled', 'exported'
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        delivered_at TEXT,
        quota_exempt INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX outbox_state_created ON outbox (state, created_at)",
    """CREATE TABLE upload_audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        report_id TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        -- 'delivered', 'duplicate', 'rejected', 'retry', 'dropped', 'cancelled'
        result TEXT NOT NULL,
        http_status INTEGER,
        detail TEXT
    )""",
    "CREATE INDEX upload_audit_at ON upload_audit (at)",
)

# -- 3: measurement events from applications (issue 7) ----------------------------------
# One row per finished measurement, already minimised (allowlisted type, config keys
# and indicator names; the error's class name only), so the report can give medians.
_MEASUREMENTS = (
    """CREATE TABLE measurements (
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        status INTEGER NOT NULL,
        start TEXT NOT NULL,
        "end" TEXT NOT NULL,
        duration_s REAL NOT NULL,
        error TEXT,  -- exception class name; NULL when the measurement succeeded
        config TEXT NOT NULL,  -- JSON
        indicators TEXT NOT NULL  -- JSON
    )""",
    'CREATE INDEX measurements_end ON measurements ("end")',
)

# A period report takes the events the daemon *received* in that period: selecting
# by a measurement's end lost events an application delivered after their period
# closed (queued while the daemon restarted), and counted one ending exactly on
# a boundary twice. Older rows take their end as the time they were received.
_MEASUREMENTS_RECEIVED = (
    "ALTER TABLE measurements ADD COLUMN received_at TEXT",
    'UPDATE measurements SET received_at = "end"',
    "CREATE INDEX measurements_received ON measurements (received_at)",
)

# -- 5: the consent boundary for device documents, and the calibration summary (issue 10) --
# A calibration or configuration read before consent to upload must never be uploaded,
# so each carries the status it was read under; rows from before are NULL: not uploadable.
# The report carries a summary of the calibration, never the raw table.
_DEVICE_DOCUMENTS = (
    "ALTER TABLE devices ADD COLUMN calibration_summary TEXT NOT NULL DEFAULT '{}'",  # JSON
    "ALTER TABLE devices ADD COLUMN calibration_status INTEGER",
    "ALTER TABLE devices ADD COLUMN configuration_status INTEGER",
)

# -- 6: tagstatd's own problems become counters (issue 10) ----------------------------------
# Its warnings reached the report's messages[] as if the instrument had said them, with
# texts such as group names and hex dumps. They go to the journal only; the report counts
# them. The texts stored so far are deleted.
_DAEMON_COUNTERS = (
    "DELETE FROM messages WHERE source = 'daemon'",
    """CREATE TABLE daemon_counters (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,  -- when the counts were written (they cover the time since the last)
        status INTEGER NOT NULL,
        name TEXT NOT NULL,  -- 'read_errors', 'scan_errors', 'log_warnings', 'log_errors'
        count INTEGER NOT NULL
    )""",
    "CREATE INDEX daemon_counters_at ON daemon_counters (at)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _INITIAL),
    Migration(2, "upload outbox and audit log", _OUTBOX),
    Migration(3, "measurement events", _MEASUREMENTS),
    Migration(4, "when each measurement event was received", _MEASUREMENTS_RECEIVED),
    Migration(5, "status of device documents, calibration summary", _DEVICE_DOCUMENTS),
    Migration(6, "daemon problems as counters, not messages", _DAEMON_COUNTERS),
)


def latest_version() -> int:
    return MIGRATIONS[-1].number


def current_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, up_to: int | None = None) -> list[int]:
    """Apply every migration newer than the database (up to ``up_to``, default all);
    returns the numbers applied.

    The caller has already refused a database newer than ``latest_version()``.
    """
    applied = []
    for migration in MIGRATIONS:
        if up_to is not None and migration.number > up_to:
            break
        if migration.number > current_version(conn):
            _apply(conn, migration)
            applied.append(migration.number)
    return applied


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    log.info("migrating database to schema %d (%s)", migration.number, migration.why)
    with conn:  # commits on success, rolls back on any error
        conn.execute("BEGIN IMMEDIATE")
        for statement in migration.statements:
            conn.execute(statement)
        # user_version lives in the file header and is part of the transaction.
        conn.execute(f"PRAGMA user_version = {int(migration.number)}")
