"""The SQLite store: the only module that imports sqlite_utils.

One ``Store`` per daemon, the single writer (the CLI asks the daemon, it never
opens the file). It keeps settings, status history, devices, usage sessions,
hourly sensor buckets and deduplicated messages, all already masked. Stamps are
stored as ISO 8601 UTC text with milliseconds and ``Z`` (so sub-millisecond
precision is dropped, and text order is time order); dicts as JSON text. A file
that is not a valid database is moved aside, never deleted, and a fresh one is
started; a database from a newer tagstat is refused and left alone. The schema
lives in ``tagstat.migrations``; retention and size limits in ``prune``.
"""

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import sqlite_utils

from tagstat import migrations
from tagstat.clock import Clock, iso, parse_iso
from tagstat.errors import StoreError
from tagstat.measurement_data import MeasurementEvent
from tagstat.records import (
    DeviceRecord,
    MessageRecord,
    OutboxEntry,
    SensorStat,
    SessionRecord,
    StatusChange,
    UploadAttempt,
)

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000  # only tests and `sqlite3` by hand ever compete with the daemon
JOURNAL_SIZE_LIMIT_BYTES = 1 << 20  # keep an idle WAL file small after checkpoints
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_U64 = 1 << 64
_SESSION_UNSIGNED = ("last_bytes", "last_tags", "last_uptime_ms")  # raw u64 device counters
# Measurement events kept at most (the newest), whatever the age and size limits allow:
# months of a busy lab's measurements, and the report still builds in well under a second.
MAX_MEASUREMENT_ROWS = 100_000


class _Corrupt(Exception):
    """Internal: the file at hand is not a usable SQLite database."""


def _locked(method):
    """Serialize a public method (one connection, shared by the daemon's threads),
    and turn SQLite's errors into StoreError so callers need not import sqlite3."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise StoreError(f"database {self.path}: {method.__name__} failed: {exc}") from exc

    return wrapper


class Store:
    def __init__(self, db: sqlite_utils.Database, path: Path, recovered_from: Path | None):
        self._db = db
        self._lock = threading.RLock()
        self.path = path
        self.recovered_from = recovered_from

    @classmethod
    def open(cls, path: Path, *, clock: Clock | None = None) -> "Store":
        clock = clock or Clock()
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create database directory {path.parent}: {exc}") from exc
        recovered = None
        try:
            _check(path)
        except _Corrupt as exc:
            recovered = _move_aside(path, clock.utc_now())
            log.error(
                "database %s is not a valid sqlite database (%s); moved it to %s "
                "and started a fresh one",
                path,
                exc,
                recovered,
            )
        conn = _connect(path)
        try:
            _configure(conn)
            migrations.migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot set up database {path}: {exc}; check that it is "
                "writable and the disk is not full"
            ) from exc
        return cls(sqlite_utils.Database(conn), path, recovered)

    @_locked
    def close(self) -> None:
        self._db.close()

    @_locked
    def schema_version(self) -> int:
        return migrations.current_version(self._db.conn)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # An explicit BEGIN, so every statement inside (sqlite-utils' own writes
        # included, which nest as savepoints) commits or rolls back together.
        with self._db.conn:
            self._db.conn.execute("BEGIN IMMEDIATE")
            yield

    # -- settings and status history --------------------------------------------

    @_locked
    def get_setting(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    @_locked
    def set_setting(self, key: str, value) -> None:
        self._db["settings"].upsert({"key": key, "value": json.dumps(value)}, pk="key")

    @_locked
    def add_status_change(self, change: StatusChange) -> None:
        row = dataclasses.asdict(change) | {"at": iso(change.at), "persistent": change.persistent}
        self._db["status_changes"].insert(row)

    @_locked
    def status_changes(self) -> list[StatusChange]:
        rows = self._db["status_changes"].rows_where(order_by="id")
        return [
            StatusChange(
                at=parse_iso(r["at"]),
                old=r["old"],
                new=r["new"],
                persistent=bool(r["persistent"]),
                reason=r["reason"],
            )
            for r in rows
        ]

    # -- devices --------------------------------------------------------------------

    @_locked
    def upsert_device(self, rec: DeviceRecord) -> None:
        row = _device_row(rec)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in _DEVICE_KEEP)
        columns = ", ".join(row)
        self._db.execute(
            f"INSERT INTO devices ({columns}) VALUES ({', '.join('?' * len(row))}) "
            f"ON CONFLICT (device_id) DO UPDATE SET {updates}",
            list(row.values()),
        )

    @_locked
    def devices(self) -> list[DeviceRecord]:
        rows = self._db["devices"].rows_where(order_by="first_seen, device_id")
        return [_device_record(r) for r in rows]

    # -- sessions -------------------------------------------------------------------

    @_locked
    def save_session(self, rec: SessionRecord) -> None:
        self.save_sessions([rec])

    @_locked
    def save_sessions(self, recs: Iterable[SessionRecord]) -> None:
        rows = [_session_row(r) for r in recs]
        if not rows:
            return
        with self._transaction():
            self._db["sessions"].upsert_all(rows, pk="session_id", batch_size=500, alter=False)

    @_locked
    def open_sessions(self) -> list[SessionRecord]:
        rows = self._db["sessions"].rows_where("open = 1", order_by="start, session_id")
        return [_session_record(r) for r in rows]

    @_locked
    def sessions(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        min_status: int = 0,
        limit: int | None = None,
    ) -> list[SessionRecord]:
        """Sessions overlapping [since, until), oldest start first."""
        where, args = ["status >= ?"], [min_status]
        if since is not None:
            where.append('"end" >= ?')
            args.append(iso(since))
        if until is not None:
            where.append("start < ?")
            args.append(iso(until))
        rows = self._db["sessions"].rows_where(
            " AND ".join(where), args, order_by="start, session_id", limit=limit
        )
        return [_session_record(r) for r in rows]

    # -- sensors ----------------------------------------------------------------------

    @_locked
    def record_sensors(
        self, device_id: str, at: dt.datetime, status: int, values: dict[str, float]
    ) -> None:
        hour, stamp = iso(_hour_of(at)), iso(at)
        rows = []
        for key, value in values.items():
            number = _finite_or_none(value)
            if number is None:
                log.debug("skipping sensor %s: not a number", key)
                continue
            rows.append((device_id, hour, status, key, number, number, number, stamp))
        if not rows:
            return
        with self._transaction():
            self._db.conn.executemany(_SENSOR_UPSERT, rows)

    @_locked
    def sensor_summary(
        self, device_id: str, since: dt.datetime | None = None, min_status: int = 0
    ) -> list[SensorStat]:
        where, args = "device_id = ? AND status >= ?", [device_id, min_status]
        if since is not None:
            where += " AND hour >= ? AND last_at >= ?"
            args += [iso(_hour_of(since)), iso(since)]
        rows = self._db.execute(_SENSOR_SUMMARY.format(where=where), args).fetchall()
        return [
            SensorStat(key=k, last=last, min=lo, max=hi, last_at=parse_iso(at))
            for k, lo, hi, last, at in rows
        ]

    # -- messages ---------------------------------------------------------------------

    @_locked
    def record_message(
        self, source: str, level: str, text: str, at: dt.datetime, status: int, count: int = 1
    ) -> None:
        stamp = iso(at)
        row = (_clean(source), _clean(level), _clean(text), status, count, stamp, stamp)
        self._db.execute(_MESSAGE_UPSERT, row)

    @_locked
    def messages(
        self, since: dt.datetime | None = None, min_status: int = 0
    ) -> list[MessageRecord]:
        where, args = "status >= ?", [min_status]
        if since is not None:
            where += " AND last_seen >= ?"
            args.append(iso(since))
        rows = self._db["messages"].rows_where(where, args, order_by="last_seen, id")
        return [
            MessageRecord(
                source=r["source"],
                level=r["level"],
                text=r["text"],
                status=r["status"],
                count=r["count"],
                first_seen=parse_iso(r["first_seen"]),
                last_seen=parse_iso(r["last_seen"]),
            )
            for r in rows
        ]

    # -- measurement events (tagstat.measurement_data) ---------------------------------------

    @_locked
    def record_measurements(
        self, events: Iterable[tuple[MeasurementEvent, int]], received_at: dt.datetime
    ) -> int:
        """Store (event, status) pairs received at ``received_at``; returns how many."""
        rows = [(*_measurement_row(event, status), iso(received_at)) for event, status in events]
        if rows:
            with self._transaction():
                self._db.conn.executemany(_MEASUREMENT_INSERT, rows)
        return len(rows)

    @_locked
    def measurements(
        self, since: dt.datetime | None = None, min_status: int = 0
    ) -> list[MeasurementEvent]:
        """Events received at or after ``since``, oldest start first."""
        where, args = "status >= ?", [min_status]
        if since is not None:
            where += " AND received_at >= ?"
            args.append(iso(since))
        rows = self._db.execute(
            'SELECT type, start, "end", duration_s, error, config, indicators '
            f"FROM measurements WHERE {where} ORDER BY start, id",
            args,
        ).fetchall()
        return [_measurement_event(row) for row in rows]

    def _bound_measurements(self) -> int:
        with self._transaction():
            return self._db.conn.execute(
                "DELETE FROM measurements WHERE id NOT IN "
                '(SELECT id FROM measurements ORDER BY "end" DESC, id DESC LIMIT ?)',
                [MAX_MEASUREMENT_ROWS],
            ).rowcount

    # -- retention ----------------------------------------------------------------------

    @_locked
    def prune(
        self, now: dt.datetime, max_age_s: float, max_bytes: int, max_messages: int
    ) -> dict[str, int]:
        """Apply age, row and size limits; returns rows removed per table."""
        removed = {"sessions": 0, "sensor_buckets": 0, "messages": 0, "measurements": 0}
        _add(removed, self._delete_older(iso(now - dt.timedelta(seconds=max_age_s))))
        removed["messages"] += self._bound_messages(max_messages)
        removed["measurements"] += self._bound_measurements()
        while (excess := self._live_bytes() - max_bytes) > 0:
            cutoff = self._size_cutoff(excess)
            if cutoff is None:
                log.warning(
                    "database still %d bytes over its limit with nothing left to "
                    "prune; raise the size limit",
                    excess,
                )
                break
            _add(removed, self._delete_older(cutoff, inclusive=True))
        self._shrink_file()
        if any(removed.values()):
            log.info("pruned %s; database now %d bytes", removed, self.db_size_bytes())
        return removed

    def _delete_older(self, cutoff: str, inclusive: bool = False) -> dict[str, int]:
        op = "<=" if inclusive else "<"
        # A bucket goes once its last sample is old; the hour term lets the index narrow it.
        statements = {
            "sessions": f'DELETE FROM sessions WHERE open = 0 AND "end" {op} ?',
            "sensor_buckets": f"DELETE FROM sensor_buckets WHERE hour <= ? AND last_at {op} ?",
            "messages": f"DELETE FROM messages WHERE last_seen {op} ?",
            "measurements": f'DELETE FROM measurements WHERE "end" {op} ?',
        }
        with self._transaction():
            return {
                table: self._db.conn.execute(sql, [cutoff] * sql.count("?")).rowcount
                for table, sql in statements.items()
            }

    def _bound_messages(self, max_messages: int) -> int:
        with self._transaction():
            return self._db.conn.execute(
                "DELETE FROM messages WHERE id NOT IN "
                "(SELECT id FROM messages ORDER BY last_seen DESC, id DESC LIMIT ?)",
                [max(0, max_messages)],
            ).rowcount

    def _size_cutoff(self, excess_bytes: int) -> str | None:
        """The stamp up to which rows must go to free about ``excess_bytes``."""
        total = self._db.execute(f"SELECT count(*) FROM ({_AGES})").fetchone()[0]
        if total == 0:
            return None
        # Rows are of similar size, so remove a proportional share plus a margin.
        share = min(1.0, excess_bytes / max(1, self._live_bytes()) + 0.02)
        offset = min(total, max(1, int(total * share))) - 1
        row = self._db.execute(f"{_AGES} ORDER BY 1 LIMIT 1 OFFSET ?", [offset]).fetchone()
        return row[0]

    def _live_bytes(self) -> int:
        pages = self._pragma("page_count") - self._pragma("freelist_count")
        return pages * self._pragma("page_size")

    def _pragma(self, name: str) -> int:
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    def _shrink_file(self) -> None:
        if self._pragma("auto_vacuum") == 2:
            # Each step of this pragma frees one page, and execute() steps once;
            # executescript() steps it to the end.
            self._db.conn.executescript("PRAGMA incremental_vacuum;")
        elif self._pragma("freelist_count"):
            self._db.execute("VACUUM")  # a database created without auto_vacuum
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- purge (tagstat.purge) ------------------------------------------------------------

    @_locked
    def purge_collected(self) -> dict[str, int]:
        """Delete everything collected, and every copy of it in the file; rows per table.

        Collected: sessions, devices, sensor buckets, messages, measurements, the
        bodies of usage reports in the outbox (their audit lines stay; cancel the
        pending ones first, so that is audited) and the per-device message cursors
        (their keys are device ids). Kept: settings, status history, deletion
        requests. Deleted rows are overwritten (secure_delete), then VACUUM rewrites
        every page, so neither free pages nor the stale bytes that earlier updates left
        inside live pages keep a copy; the WAL is then checkpointed and truncated.
        """
        # Builds differ (Debian's SQLite overwrites deleted content by default, the
        # upstream default does not): force it on for the purge, then restore it.
        secure = self._pragma("secure_delete")
        self._db.execute("PRAGMA secure_delete = ON")
        try:
            with self._transaction():
                removed = {
                    table: self._db.conn.execute(sql).rowcount
                    for table, sql in _PURGE_STATEMENTS.items()
                }
            self._db.execute("VACUUM")
            self._checkpoint_truncate()
        finally:
            self._db.execute(f"PRAGMA secure_delete = {int(secure)}")
        log.info("purged collected data (%s); settings and status history kept", removed)
        return removed

    def _checkpoint_truncate(self) -> None:
        busy, _log, _done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:  # another connection holds a snapshot: its WAL frames cannot go yet
            raise sqlite3.OperationalError(
                "the write-ahead log could not be emptied: another process has the "
                "database open; close it and purge again"
            )

    @_locked
    def outbox_usage_left(self, user_id: str) -> bool:
        """Whether a usage report of ``user_id`` reached, or may have reached, a collector:
        delivered, exported, or attempted at least once (an answer can be lost)."""
        row = self._db.execute(
            "SELECT 1 FROM outbox WHERE kind = 'usage' AND user_id = ? "
            "AND (state IN ('delivered', 'exported') OR attempts > 0) LIMIT 1",
            [user_id],
        ).fetchone()
        return row is not None

    # -- export (tagstat.export) -------------------------------------------------------------

    @_locked
    def outbox_states(self, report_ids: list[str]) -> dict[str, str]:
        """report_id -> state for those of ``report_ids`` still in the outbox."""
        states = {}
        for report_id in report_ids:
            row = self._db.execute(
                "SELECT state FROM outbox WHERE report_id = ?", [report_id]
            ).fetchone()
            if row is not None:
                states[report_id] = row[0]
        return states

    @_locked
    def outbox_mark_exported(self, report_ids: list[str], at: dt.datetime, detail: str) -> int:
        """Pending entries -> 'exported' (delivered at ``at``), each audited; how many."""
        done = 0
        with self._transaction():
            for report_id in report_ids:
                row = self._db.conn.execute(
                    "UPDATE outbox SET state = 'exported', delivered_at = ?, last_error = NULL "
                    "WHERE report_id = ? AND state = 'pending' RETURNING size_bytes",
                    [iso(at), report_id],
                ).fetchone()
                if row is not None:
                    attempt = UploadAttempt(at, report_id, row[0], "exported", None, detail)
                    self._db.conn.execute(_AUDIT_INSERT, _audit_row(attempt))
                    done += 1
        return done

    @_locked
    def db_size_bytes(self) -> int:
        return sum(_file_size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal"))

    # -- upload outbox and audit log (tagstat.outbox, tagstat.uploader) -------------------

    @_locked
    def outbox_add(self, entry: OutboxEntry) -> None:
        self._db["outbox"].insert(_outbox_row(entry))

    @_locked
    def outbox_get(self, report_id: str) -> OutboxEntry | None:
        """The entry with this id, or the only one whose id starts with it."""
        columns = ", ".join(_OUTBOX_COLUMNS)
        rows = self._db.execute(
            f"SELECT {columns} FROM outbox WHERE report_id = ? UNION ALL SELECT * FROM ("
            f"SELECT {columns} FROM outbox WHERE substr(report_id, 1, ?) = ? LIMIT 2)",
            [report_id, len(report_id), report_id],
        ).fetchall()
        if not rows:
            return None
        if rows[0][0] != report_id and len(rows) > 1:
            return None  # an ambiguous prefix
        return _outbox_entry(dict(zip(_OUTBOX_COLUMNS, rows[0], strict=True)))

    @_locked
    def outbox_next_due(self, now: dt.datetime, kinds: Iterable[str]) -> OutboxEntry | None:
        """The oldest pending entry of these kinds whose next attempt is due."""
        kinds = list(kinds)
        rows = self._db["outbox"].rows_where(
            f"state = 'pending' AND next_attempt_at <= ? AND kind IN ({_marks(kinds)})",
            [iso(now), *kinds],
            order_by="created_at, rowid",
            limit=1,
        )
        return next((_outbox_entry(r) for r in rows), None)

    @_locked
    def outbox_earliest_attempt(self, kinds: Iterable[str]) -> dt.datetime | None:
        kinds = list(kinds)
        row = self._db.execute(
            "SELECT min(next_attempt_at) FROM outbox "
            f"WHERE state = 'pending' AND kind IN ({_marks(kinds)})",
            kinds,
        ).fetchone()
        return parse_iso(row[0]) if row[0] else None

    @_locked
    def outbox_pending(self, kind: str | None = None) -> list[OutboxEntry]:
        where, args = "state = 'pending'", []
        if kind is not None:
            where, args = where + " AND kind = ?", [kind]
        rows = self._db["outbox"].rows_where(where, args, order_by="created_at, rowid")
        return [_outbox_entry(r) for r in rows]

    @_locked
    def outbox_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
        return dict(rows)

    @_locked
    def outbox_last_delivered(self) -> dt.datetime | None:
        row = self._db.execute("SELECT max(delivered_at) FROM outbox").fetchone()
        return parse_iso(row[0]) if row[0] else None

    @_locked
    def outbox_record(self, attempt: UploadAttempt, state: str | None = None, **changes) -> None:
        """Audit one attempt and update its entry in one transaction.

        ``state`` replaces only ``pending``, except ``delivered``, which is always
        the truth: a report cancelled while it was on the wire did arrive.
        """
        sets = [f"{column} = ?" for column in changes]
        args = [iso(v) if isinstance(v, dt.datetime) else v for v in changes.values()]
        if state is not None:
            sets.append(
                "state = CASE WHEN state = 'pending' OR ? = 'delivered' THEN ? ELSE state END"
            )
            args += [state, state]
        with self._transaction():
            if sets:
                self._db.conn.execute(
                    f"UPDATE outbox SET {', '.join(sets)} WHERE report_id = ?",
                    [*args, attempt.report_id],
                )
            self._db.conn.execute(_AUDIT_INSERT, _audit_row(attempt))

    @_locked
    def outbox_retire(self, report_ids: list[str], state: str, at: dt.datetime, why: str) -> int:
        """Move pending entries to ``state`` (dropped, cancelled) and audit each; how many."""
        done = 0
        with self._transaction():
            for report_id in report_ids:
                row = self._db.conn.execute(
                    "UPDATE outbox SET state = ?, last_error = ? "
                    "WHERE report_id = ? AND state = 'pending' RETURNING size_bytes",
                    [state, why, report_id],
                ).fetchone()
                if row is not None:
                    attempt = UploadAttempt(at, report_id, row[0], state, None, why)
                    self._db.conn.execute(_AUDIT_INSERT, _audit_row(attempt))
                    done += 1
        return done

    @_locked
    def upload_audit(self, limit: int | None = None) -> list[UploadAttempt]:
        """The newest ``limit`` audit lines, oldest first."""
        rows = self._db.execute(
            "SELECT at, report_id, size_bytes, result, http_status, detail FROM ("
            "SELECT * FROM upload_audit ORDER BY id DESC LIMIT ?) ORDER BY id",
            [-1 if limit is None else limit],
        ).fetchall()
        return [UploadAttempt(parse_iso(r[0]), *r[1:]) for r in rows]

    @_locked
    def prune_uploads(self, cutoff: dt.datetime) -> dict[str, int]:
        """Delete sent, rejected, dropped and cancelled entries and audit lines older than
        ``cutoff``; pending entries stay (the outbox limits bound them)."""
        with self._transaction():
            outbox = self._db.conn.execute(
                "DELETE FROM outbox WHERE state != 'pending' AND created_at < ?", [iso(cutoff)]
            ).rowcount
            audit = self._db.conn.execute(
                "DELETE FROM upload_audit WHERE at < ?", [iso(cutoff)]
            ).rowcount
        return {"outbox": outbox, "upload_audit": audit}


# -- opening ------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # The daemon calls in from several threads; the store's lock serializes them.
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot open database {path}: {exc}; check that the directory exists and is writable"
        ) from exc


def _check(path: Path) -> None:
    """Check integrity and version of an existing file, read-only.

    Read-only, so that a refused file stays byte for byte as it was, and so that
    SQLite does not delete the -wal of a damaged database when the check closes.
    """
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            result = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            version = migrations.current_version(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES:
            raise _Corrupt(str(exc)) from exc
        raise StoreError(f"cannot read database {path}: {exc}; check its permissions") from exc
    if result != ["ok"]:
        raise _Corrupt("; ".join(result[:3]))
    if version > migrations.latest_version():
        raise StoreError(
            f"database schema {version} is newer than this tagstat "
            f"({migrations.latest_version()}); upgrade tagstat"
        )


def _configure(conn: sqlite3.Connection) -> None:
    # auto_vacuum only takes effect before the first table exists, so that prune
    # can give freed pages back to the file system.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
    # In WAL mode, synchronous=NORMAL makes a commit durable against a crash or
    # kill of the process (the WAL is written before commit returns) and never
    # corrupts the file; only a power cut may lose the last commits, which for
    # usage statistics is an acceptable price for not syncing on every checkpoint.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")


def _move_aside(path: Path, now: dt.datetime) -> Path:
    target = Path(f"{path}.corrupt-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}")
    n = 1
    while target.exists():  # two recoveries within one second
        target, n = Path(f"{path}.corrupt-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{n}"), n + 1
    try:
        for suffix in ("-wal", "-shm", ""):  # the main file last: it is what marks a database
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.replace(source, f"{target}{suffix}")
    except OSError as exc:
        raise StoreError(
            f"database {path} is corrupt and could not be moved aside "
            f"to {target}: {exc}; move or delete it by hand"
        ) from exc
    return target


# -- rows <-> records ------------------------------------------------------------------------

_OUTBOX_COLUMNS = (
    "report_id", "kind", "user_id", "created_at", "body", "size_bytes", "state", "attempts",
    "next_attempt_at", "last_error", "delivered_at", "quota_exempt",
)  # fmt: skip
_AUDIT_INSERT = (
    "INSERT INTO upload_audit (at, report_id, size_bytes, result, http_status, detail) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _outbox_row(entry: OutboxEntry) -> dict:
    row = dataclasses.asdict(entry)
    for key in ("created_at", "next_attempt_at", "delivered_at"):
        row[key] = iso(row[key]) if row[key] is not None else None
    row["quota_exempt"] = int(entry.quota_exempt)
    return row


def _outbox_entry(row: dict) -> OutboxEntry:
    values = dict(row)
    for key in ("created_at", "next_attempt_at", "delivered_at"):
        values[key] = parse_iso(row[key]) if row[key] is not None else None
    values["body"] = bytes(row["body"])
    values["quota_exempt"] = bool(row["quota_exempt"])
    return OutboxEntry(**values)


def _audit_row(a: UploadAttempt) -> tuple:
    return (iso(a.at), a.report_id, a.size_bytes, a.result, a.http_status, a.detail)


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


_DEVICE_KEEP = {"device_id", "first_seen"}
_DEVICE_JSON = ("calibration", "configuration")


def _device_row(rec: DeviceRecord) -> dict:
    row = dataclasses.asdict(rec)
    for key in _DEVICE_JSON:
        row[key] = json.dumps(row[key])
    return row | {"first_seen": iso(rec.first_seen), "last_seen": iso(rec.last_seen)}


def _device_record(row: dict) -> DeviceRecord:
    values = dict(row) | {k: json.loads(row[k]) for k in _DEVICE_JSON}
    values |= {"first_seen": parse_iso(row["first_seen"]), "last_seen": parse_iso(row["last_seen"])}
    return DeviceRecord(**values)


def _session_row(rec: SessionRecord) -> dict:
    row = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
    for key in ("start", "end", "checkpoint_at"):
        row[key] = iso(row[key])
    for key in _SESSION_UNSIGNED:
        row[key] = row[key] - _U64 if row[key] >= 1 << 63 else row[key]
    row["initial_sensors"] = json.dumps(rec.initial_sensors)
    row["open"] = int(rec.open)
    return row


def _session_record(row: dict) -> SessionRecord:
    values = dict(row)
    for key in ("start", "end", "checkpoint_at"):
        values[key] = parse_iso(row[key])
    for key in _SESSION_UNSIGNED:
        values[key] = row[key] + _U64 if row[key] < 0 else row[key]
    values["initial_sensors"] = json.loads(row["initial_sensors"])
    values["open"] = bool(row["open"])
    return SessionRecord(**values)


def _measurement_row(event: MeasurementEvent, status: int) -> tuple:
    return (event.type, status, iso(event.start), iso(event.end), event.duration_s, event.error,
            json.dumps(event.config), json.dumps(event.indicators))  # fmt: skip


def _measurement_event(row: tuple) -> MeasurementEvent:
    type_, start, end, duration_s, error, config, indicators = row
    return MeasurementEvent(type_, parse_iso(start), parse_iso(end), duration_s, error,
                            json.loads(config), json.loads(indicators))  # fmt: skip


def _hour_of(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _finite_or_none(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN would become NULL in SQLite


def _clean(text: str) -> str:
    # A lone surrogate (from a badly decoded device string) cannot be stored as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        total[key] += n


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


_SENSOR_UPSERT = """
INSERT INTO sensor_buckets (device_id, hour, status, key, min, max, last, last_at, n)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (device_id, hour, status, key) DO UPDATE SET
    min = min(min, excluded.min),
    max = max(max, excluded.max),
    last = CASE WHEN excluded.last_at >= last_at THEN excluded.last ELSE last END,
    last_at = max(last_at, excluded.last_at),
    n = n + 1
"""

_SENSOR_SUMMARY = """
SELECT key, lo, hi, last, last_at FROM (
    SELECT key, last, last_at,
        min(min) OVER (PARTITION BY key) AS lo,
        max(max) OVER (PARTITION BY key) AS hi,
        row_number() OVER (PARTITION BY key ORDER BY last_at DESC) AS rank
    FROM sensor_buckets WHERE {where}
) WHERE rank = 1 ORDER BY key
"""

_MESSAGE_UPSERT = """
INSERT INTO messages (source, level, text, status, count, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, level, text, status) DO UPDATE SET
    count = count + excluded.count,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen)
"""

_MEASUREMENT_INSERT = """
INSERT INTO measurements
    (type, status, start, "end", duration_s, error, config, indicators, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# What a purge deletes (tagstat.purge); settings other than message cursors, the
# status history, deletion requests and the upload audit log stay.
_PURGE_STATEMENTS = {
    "sessions": "DELETE FROM sessions",
    "sensor_buckets": "DELETE FROM sensor_buckets",
    "messages": "DELETE FROM messages",
    "measurements": "DELETE FROM measurements",
    "devices": "DELETE FROM devices",
    "usage_reports": "DELETE FROM outbox WHERE kind = 'usage'",
    "message_cursors": "DELETE FROM settings WHERE key LIKE 'msg\\_cursor:%' ESCAPE '\\'",
}

# The age of every prunable row, so the size limit removes the oldest data first.
_AGES = """
SELECT "end" FROM sessions WHERE open = 0
UNION ALL SELECT last_at FROM sensor_buckets
UNION ALL SELECT last_seen FROM messages
UNION ALL SELECT "end" FROM measurements
"""
