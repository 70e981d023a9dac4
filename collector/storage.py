"""The collector's SQLite database: reports stored once, sessions upserted, deletions kept.

Plain ``sqlite3``, not sqlite-utils: the collector needs a handful of fixed
statements, explicit ``BEGIN IMMEDIATE`` transactions and the UNIQUE
constraint's verdict (``ON CONFLICT DO NOTHING`` and its row count), which
the standard library gives directly. Each call takes a connection from a
small pool, so the threaded HTTP server's requests never share one at the
same time; WAL mode lets readers run beside the single writer. Every write
is one transaction that takes the write lock first, so "is this user
deleted?" and "store this report" cannot interleave with a deletion.
``synchronous=FULL`` (the default, kept on purpose): an answer "stored"
means the report survives a power cut.
"""

import contextlib
import dataclasses
import datetime as dt
import queue
import sqlite3
import statistics
import threading
from pathlib import Path

from tagstat.collector.errors import CollectorError
from tagstat.collector.schema import DeletionRequest, UsageReport

SCHEMA_VERSION = 1  # PRAGMA user_version of a database this collector made
BUSY_TIMEOUT_S = 10.0  # a writer waits this long for another before a 503
# Connections are kept open and reused: opening one per request costs more than
# the request, and closing the last one checkpoints and removes the WAL each time.
MAX_IDLE_CONNECTIONS = 16
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    report_id TEXT PRIMARY KEY,     -- the UNIQUE constraint that makes storing idempotent
    kind TEXT NOT NULL,             -- usage or deletion
    user_id TEXT NOT NULL,
    generated_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,    -- of body, after decompression
    wire_bytes INTEGER NOT NULL,    -- as received
    body BLOB NOT NULL              -- exactly as received, after decompression
);
CREATE INDEX IF NOT EXISTS reports_user ON reports (user_id);
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    model TEXT NOT NULL,
    generated_at TEXT NOT NULL,     -- of the report that described it last
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    model TEXT,                     -- NULL if no report described the device
    avg_bytes_per_s REAL NOT NULL,
    duration_s REAL NOT NULL,
    bytes INTEGER NOT NULL,
    open INTEGER NOT NULL,
    report_id TEXT NOT NULL,
    generated_at TEXT NOT NULL,     -- of the report this version came from
    PRIMARY KEY (user_id, session_id)
);
CREATE TABLE IF NOT EXISTS deleted_users (
    user_id TEXT PRIMARY KEY,
    deleted_at TEXT NOT NULL,
    report_id TEXT NOT NULL
);
"""
# The UNIQUE constraint decides, not a check before the insert: concurrent
# identical uploads cannot both get in.
_INSERT_REPORT = "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
# An open session is reported again with larger numbers; the version from the
# latest-generated report wins, whatever order retried uploads arrive in.
_UPSERT_SESSION = """
INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id, session_id) DO UPDATE SET
    device_id = excluded.device_id, model = excluded.model,
    avg_bytes_per_s = excluded.avg_bytes_per_s, duration_s = excluded.duration_s,
    bytes = excluded.bytes, open = excluded.open, report_id = excluded.report_id,
    generated_at = excluded.generated_at
WHERE excluded.generated_at >= sessions.generated_at
"""
_UPSERT_DEVICE = """
INSERT INTO devices VALUES (?, ?, ?, ?)
ON CONFLICT (user_id, device_id) DO UPDATE SET
    model = excluded.model, generated_at = excluded.generated_at
WHERE excluded.generated_at >= devices.generated_at
"""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of a report: stored, duplicate, discarded or deleted."""

    status: str
    report_id: str
    removed_reports: int = 0

    def to_json(self) -> dict:
        answer = {"status": self.status, "report_id": self.report_id}
        if self.status == "deleted":
            answer["removed_reports"] = self.removed_reports
        return answer


def stamp(when: dt.datetime) -> str:
    """UTC text of fixed width, so text order is time order (microseconds kept)."""
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class CollectorStore:
    """The database at ``path``; created with its schema if it does not exist."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._write_lock = threading.Lock()
        try:
            with self._connect() as conn:
                self._migrate(conn)
        except sqlite3.Error as exc:
            raise CollectorError(f"cannot use the database {self.path}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CollectorError(
                f"the database {self.path} was made by a newer collector (schema {version})"
            )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # Later schema versions go here as numbered steps; never change a past one.

    @contextlib.contextmanager
    def _connect(self):
        """A connection of the pool, for one thread at a time; returned when done."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,  # pooled across threads
            )
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        try:
            yield conn
        finally:
            if conn.in_transaction or self._idle.qsize() >= MAX_IDLE_CONNECTIONS:
                conn.close()
            else:
                self._idle.put(conn)

    def close(self) -> None:
        """Close the idle connections (the last close checkpoints the WAL)."""
        while not self._idle.empty():
            self._idle.get_nowait().close()

    @contextlib.contextmanager
    def _write(self):
        """One write transaction, holding the write lock from its start."""
        # Writers of this process queue here: SQLite's own busy wait sleeps in
        # growing steps, which halves throughput when many uploads arrive at once.
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise sqlite3.OperationalError("database is locked (by this collector's writers)")
        try:
            with self._connect() as conn, self._transaction(conn):
                yield conn
        finally:
            self._write_lock.release()

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn):
        conn.execute("BEGIN IMMEDIATE")  # other processes (an import, sqlite3 by hand) too
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def ingest(self, report, body: bytes, wire_bytes: int, received_at: dt.datetime) -> Outcome:
        """Store a checked report (or carry out a deletion request) exactly once."""
        row = (
            report.report_id,
            report.kind,
            report.user_id,
            stamp(report.generated_at),
            stamp(received_at),
            len(body),
            wire_bytes,
            body,
        )
        with self._write() as conn:
            if isinstance(report, DeletionRequest):
                return self._delete_user(conn, report, row, received_at)
            return self._store_usage(conn, report, row)

    def _store_usage(self, conn, report: UsageReport, row: tuple) -> Outcome:
        deleted = conn.execute("SELECT 1 FROM deleted_users WHERE user_id = ?", (report.user_id,))
        if deleted.fetchone():
            # A retried upload from before the deletion must not bring the data back.
            return Outcome("discarded", report.report_id)
        inserted = conn.execute(_INSERT_REPORT, row)
        if inserted.rowcount == 0:
            return Outcome("duplicate", report.report_id)
        generated = row[3]
        for device_id, model in report.models.items():
            conn.execute(_UPSERT_DEVICE, (report.user_id, device_id, model, generated))
        for s in report.sessions:
            model = report.models.get(s.device_id) or self._known_model(conn, report, s.device_id)
            conn.execute(
                _UPSERT_SESSION,
                (report.user_id, s.session_id, s.device_id, model, s.avg_bytes_per_s,
                 s.duration_s, s.bytes_total, int(s.open), report.report_id, generated),
            )  # fmt: skip
        return Outcome("stored", report.report_id)

    @staticmethod
    def _known_model(conn, report: UsageReport, device_id: str) -> str | None:
        found = conn.execute(
            "SELECT model FROM devices WHERE user_id = ? AND device_id = ?",
            (report.user_id, device_id),
        ).fetchone()
        return found[0] if found else None

    def _delete_user(self, conn, request: DeletionRequest, row, received_at) -> Outcome:
        user = (request.user_id,)
        removed = conn.execute(
            "DELETE FROM reports WHERE user_id = ? AND kind = 'usage'", user
        ).rowcount
        conn.execute("DELETE FROM sessions WHERE user_id = ?", user)
        conn.execute("DELETE FROM devices WHERE user_id = ?", user)
        conn.execute(
            "INSERT INTO deleted_users VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (request.user_id, stamp(received_at), request.report_id),
        )
        # The request itself is kept (ids and a time only), so labs can see it was carried out.
        conn.execute(_INSERT_REPORT, row)
        return Outcome("deleted", request.report_id, removed)

    def stats(self) -> dict:
        """Per model: distinct devices and the median of the sessions' average data rate."""
        with self._connect() as conn:
            conn.execute("BEGIN")  # one snapshot for all three queries
            devices = dict(conn.execute("SELECT model, COUNT(*) FROM devices GROUP BY model"))
            rates: dict[str, list[float]] = {}
            query = "SELECT model, avg_bytes_per_s FROM sessions WHERE model IS NOT NULL"
            for model, avg in conn.execute(query):
                rates.setdefault(model, []).append(avg)
            kinds = dict(conn.execute("SELECT kind, COUNT(*) FROM reports GROUP BY kind"))
            conn.execute("COMMIT")
        models = [
            {
                "model": model,
                "devices": devices.get(model, 0),
                "sessions": len(rates.get(model, ())),
                "median_session_avg_bytes_per_s": (
                    statistics.median(rates[model]) if model in rates else None
                ),
            }
            for model in sorted(set(devices) | set(rates))
        ]
        return {"models": models, "reports": sum(kinds.values()), "reports_by_kind": kinds}

    def list_reports(self, *, limit: int | None = None, offset: int = 0) -> list[dict]:
        """Stored reports and deletion requests in the order they arrived (no bodies)."""
        query = (
            "SELECT report_id, kind, received_at, size_bytes, wire_bytes, user_id FROM reports"
            " ORDER BY rowid LIMIT ? OFFSET ?"
        )
        keys = ("report_id", "kind", "received_at", "size_bytes", "wire_bytes", "user_id")
        with self._connect() as conn:
            rows = conn.execute(query, (-1 if limit is None else limit, offset)).fetchall()
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def body(self, report_id: str) -> bytes | None:
        """A stored body exactly as received (after decompression), or None."""
        with self._connect() as conn:
            found = conn.execute(
                "SELECT body FROM reports WHERE report_id = ?", (report_id,)
            ).fetchone()
        return bytes(found[0]) if found else None

    def check(self) -> None:
        """Raises sqlite3.Error if the database cannot be read (for /healthz)."""
        with self._connect() as conn:
            conn.execute("SELECT COUNT(*) FROM deleted_users").fetchone()
