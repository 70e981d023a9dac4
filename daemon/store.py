"""The SQLite store: the only module that imports sqlite_utils.

One ``Store`` per daemon, the single writer (the CLI asks the daemon, it never
opens the file). It keeps settings, status history, devices, usage sessions,
hourly sensor buckets and deduplicated messages, all already masked. Stamps are
stored as ISO 8601 UTC text with milliseconds and ``Z`` (so sub-millisecond
precision is dropped, and text order is time order); dicts as JSON text. A file
that is not a valid database is moved aside, never deleted, and a fresh one is
started; a database from a newer tagstat is refused and left alone. The schema
lives in ``tagstat.migrations``; retention and size limits in ``prune``.
Opening the file is ``tagstat.store_file``, the row mapping and SQL
``tagstat.store_rows``, the upload tables ``tagstat.store_uploads``.
"""

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import sqlite_utils

from tagstat import migrations, store_file
from tagstat.clock import Clock, iso, parse_iso
from tagstat.errors import StoreError
from tagstat.measurement_data import MeasurementEvent
from tagstat.records import (
    DeviceRecord,
    MessageRecord,
    SensorStat,
    SessionRecord,
    StatusChange,
)
from tagstat.store_file import Corrupt, locked
from tagstat.store_rows import (
    AGES,
    DEVICE_KEEP,
    MEASUREMENT_INSERT,
    MESSAGE_UPSERT,
    PURGE_STATEMENTS,
    SENSOR_SUMMARY,
    SENSOR_UPSERT,
    add_counts,
    clean_text,
    device_record,
    device_row,
    file_size,
    finite_or_none,
    hour_of,
    measurement_event,
    measurement_row,
    session_record,
    session_row,
)
from tagstat.store_uploads import UploadTables

log = logging.getLogger(__name__)

# Measurement events kept at most (the newest), whatever the age and size limits allow:
# months of a busy lab's measurements, and the report still builds in well under a second.
MAX_MEASUREMENT_ROWS = 100_000


class Store(UploadTables):
    def __init__(self, db: sqlite_utils.Database, path: Path, recovered_from: Path | None):
        self._db = db
        self._lock = threading.RLock()
        self.path = path
        self.recovered_from = recovered_from

    @classmethod
    def open(
        cls, path: Path, *, clock: Clock | None = None, install_marker: Path | None = None
    ) -> "Store":
        """Open the database at ``path``, creating it; recover what can be from a damaged
        file or log (tagstat.store_file), and say what was lost. ``install_marker`` is a
        file that exists once this install has run (its secret file): beside it, an empty
        or missing database is lost data and is logged as such. Sets ``recovered_from``,
        ``salvage``, ``wal_damage`` and ``data_lost`` ("empty", "missing" or None)."""
        clock = clock or Clock()
        path, now = Path(path), clock.utc_now()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create database directory {path.parent}: {exc}") from exc
        lost = store_file.set_aside_lost(path, now, install_marker)
        wal_damage = store_file.keep_damaged_wal(path, now)  # before SQLite drops the frames
        corrupt = None
        try:
            store_file.check(path)
        except Corrupt as exc:
            corrupt = store_file.move_aside(path, now)
            log.error(
                "database %s is not a valid sqlite database (%s); moved aside to %s; "
                "started a fresh one with what can still be read from it",
                path,
                exc,
                corrupt,
            )
        conn = store_file.connect(path)
        try:
            salvage = store_file.set_up(conn, salvage_from=corrupt)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(
                f"cannot set up database {path}: {exc}; check that it is "
                "writable and the disk is not full"
            ) from exc
        store = cls(sqlite_utils.Database(conn), path, corrupt or (lost and lost.moved_to))
        store.salvage, store.wal_damage = salvage, wal_damage
        store.data_lost = lost.what if lost else None
        return store

    @locked
    def close(self) -> None:
        self._db.close()

    @locked
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

    @locked
    def get_setting(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return json.loads(row[0]) if row else default

    @locked
    def set_setting(self, key: str, value) -> None:
        self._db["settings"].upsert({"key": key, "value": json.dumps(value)}, pk="key")

    @locked
    def add_status_change(self, change: StatusChange) -> None:
        row = dataclasses.asdict(change) | {"at": iso(change.at), "persistent": change.persistent}
        self._db["status_changes"].insert(row)

    @locked
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

    @locked
    def upsert_device(self, rec: DeviceRecord) -> None:
        row = device_row(rec)
        updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in DEVICE_KEEP)
        columns = ", ".join(row)
        self._db.execute(
            f"INSERT INTO devices ({columns}) VALUES ({', '.join('?' * len(row))}) "
            f"ON CONFLICT (device_id) DO UPDATE SET {updates}",
            list(row.values()),
        )

    @locked
    def devices(self) -> list[DeviceRecord]:
        rows = self._db["devices"].rows_where(order_by="first_seen, device_id")
        return [device_record(r) for r in rows]

    # -- sessions -------------------------------------------------------------------

    @locked
    def save_session(self, rec: SessionRecord) -> None:
        self.save_sessions([rec])

    @locked
    def save_sessions(self, recs: Iterable[SessionRecord]) -> None:
        rows = [session_row(r) for r in recs]
        if not rows:
            return
        with self._transaction():
            self._db["sessions"].upsert_all(rows, pk="session_id", batch_size=500, alter=False)

    @locked
    def open_sessions(self) -> list[SessionRecord]:
        rows = self._db["sessions"].rows_where("open = 1", order_by="start, session_id")
        return [session_record(r) for r in rows]

    @locked
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
            where.append('"end" > ?')  # a session that ended at ``since`` was reported
            args.append(iso(since))
        if until is not None:
            where.append("start < ?")
            args.append(iso(until))
        rows = self._db["sessions"].rows_where(
            " AND ".join(where), args, order_by="start, session_id", limit=limit
        )
        return [session_record(r) for r in rows]

    # -- sensors ----------------------------------------------------------------------

    @locked
    def record_sensors(
        self, device_id: str, at: dt.datetime, status: int, values: dict[str, float]
    ) -> None:
        hour, stamp = iso(hour_of(at)), iso(at)
        rows = []
        for key, value in values.items():
            number = finite_or_none(value)
            if number is None:
                log.debug("skipping sensor %s: not a number", key)
                continue
            rows.append((device_id, hour, status, key, number, number, number, stamp))
        if not rows:
            return
        with self._transaction():
            self._db.conn.executemany(SENSOR_UPSERT, rows)

    @locked
    def sensor_summary(
        self, device_id: str, since: dt.datetime | None = None, min_status: int = 0
    ) -> list[SensorStat]:
        where, args = "device_id = ? AND status >= ?", [device_id, min_status]
        if since is not None:
            where += " AND hour >= ? AND last_at > ?"
            args += [iso(hour_of(since)), iso(since)]
        rows = self._db.execute(SENSOR_SUMMARY.format(where=where), args).fetchall()
        return [
            SensorStat(key=k, last=last, min=lo, max=hi, last_at=parse_iso(at))
            for k, lo, hi, last, at in rows
        ]

    # -- messages ---------------------------------------------------------------------

    @locked
    def record_message(
        self, source: str, level: str, text: str, at: dt.datetime, status: int, count: int = 1
    ) -> None:
        stamp = iso(at)
        row = (clean_text(source), clean_text(level), clean_text(text), status, count, stamp, stamp)
        self._db.execute(MESSAGE_UPSERT, row)

    @locked
    def messages(
        self, since: dt.datetime | None = None, min_status: int = 0
    ) -> list[MessageRecord]:
        where, args = "status >= ?", [min_status]
        if since is not None:
            where += " AND last_seen > ?"
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

    # -- tagstatd's own problems, counted (tagstat.daemon_counters) -------------------------

    @locked
    def record_daemon_counts(self, at: dt.datetime, status: int, counts: dict[str, int]) -> None:
        rows = [(iso(at), status, name, n) for name, n in sorted(counts.items()) if n > 0]
        if rows:
            with self._transaction():
                self._db.conn.executemany(
                    "INSERT INTO daemon_counters (at, status, name, count) VALUES (?, ?, ?, ?)",
                    rows,
                )

    @locked
    def daemon_counts(
        self, since: dt.datetime | None = None, min_status: int = 0
    ) -> dict[str, int]:
        """Counts written after ``since`` under at least ``min_status``, per name.

        After, not at: counts are written when a period closes, at the instant the next
        one starts, and belong to the period that closed."""
        where, args = "status >= ?", [min_status]
        if since is not None:
            where += " AND at > ?"
            args.append(iso(since))
        rows = self._db.execute(
            f"SELECT name, sum(count) FROM daemon_counters WHERE {where} GROUP BY name", args
        ).fetchall()
        return dict(rows)

    # -- measurement events (tagstat.measurement_data) ---------------------------------------

    @locked
    def record_measurements(
        self, events: Iterable[tuple[MeasurementEvent, int]], received_at: dt.datetime
    ) -> int:
        """Store (event, status) pairs received at ``received_at``; returns how many."""
        rows = [(*measurement_row(event, status), iso(received_at)) for event, status in events]
        if rows:
            with self._transaction():
                self._db.conn.executemany(MEASUREMENT_INSERT, rows)
        return len(rows)

    @locked
    def measurements(
        self, since: dt.datetime | None = None, min_status: int = 0
    ) -> list[MeasurementEvent]:
        """Events received at or after ``since``, oldest start first."""
        where, args = "status >= ?", [min_status]
        if since is not None:
            where += " AND received_at > ?"
            args.append(iso(since))
        rows = self._db.execute(
            'SELECT type, start, "end", duration_s, error, config, indicators '
            f"FROM measurements WHERE {where} ORDER BY start, id",
            args,
        ).fetchall()
        return [measurement_event(row) for row in rows]

    def _bound_measurements(self) -> int:
        with self._transaction():
            return self._db.conn.execute(
                "DELETE FROM measurements WHERE id NOT IN "
                '(SELECT id FROM measurements ORDER BY "end" DESC, id DESC LIMIT ?)',
                [MAX_MEASUREMENT_ROWS],
            ).rowcount

    # -- retention ----------------------------------------------------------------------

    @locked
    def prune(
        self, now: dt.datetime, max_age_s: float, max_bytes: int, max_messages: int
    ) -> dict[str, int]:
        """Apply age, row and size limits; returns rows removed per table."""
        removed = {"sessions": 0, "sensor_buckets": 0, "messages": 0, "measurements": 0,
                   "daemon_counters": 0}  # fmt: skip
        add_counts(removed, self._delete_older(iso(now - dt.timedelta(seconds=max_age_s))))
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
            add_counts(removed, self._delete_older(cutoff, inclusive=True))
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
            "daemon_counters": f"DELETE FROM daemon_counters WHERE at {op} ?",
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
        total = self._db.execute(f"SELECT count(*) FROM ({AGES})").fetchone()[0]
        if total == 0:
            return None
        # Rows are of similar size, so remove a proportional share plus a margin.
        share = min(1.0, excess_bytes / max(1, self._live_bytes()) + 0.02)
        offset = min(total, max(1, int(total * share))) - 1
        row = self._db.execute(f"{AGES} ORDER BY 1 LIMIT 1 OFFSET ?", [offset]).fetchone()
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

    @locked
    def db_size_bytes(self) -> int:
        return sum(file_size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal"))

    # -- purge (tagstat.purge) ------------------------------------------------------------

    @locked
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
                    for table, sql in PURGE_STATEMENTS.items()
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

    @locked
    def outbox_usage_left(self, user_id: str) -> bool:
        """Whether a usage report of ``user_id`` reached, or may have reached, a collector:
        delivered, exported, or attempted at least once (an answer can be lost)."""
        row = self._db.execute(
            "SELECT 1 FROM outbox WHERE kind = 'usage' AND user_id = ? "
            "AND (state IN ('delivered', 'exported') OR attempts > 0) LIMIT 1",
            [user_id],
        ).fetchone()
        return row is not None
