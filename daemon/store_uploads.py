"""The store's upload tables: the outbox, the upload audit log, and export.

A part of ``Store`` (mixed in), kept apart because uploads are their own
concern: ``tagstat.outbox`` and ``tagstat.uploader`` schedule and send,
``tagstat.export`` hands pending reports to a file. Bodies are kept as the
exact bytes that are (or were) sent.
"""

import datetime as dt
import json
from collections.abc import Iterable

from tagstat.clock import iso, parse_iso
from tagstat.records import OutboxEntry, UploadAttempt
from tagstat.store_file import locked
from tagstat.store_rows import (
    AUDIT_INSERT,
    OUTBOX_COLUMNS,
    audit_row,
    outbox_entry,
    outbox_row,
    placeholders,
)


class UploadTables:
    """Outbox and audit methods; expects ``_db``, ``_lock`` and ``_transaction``."""

    # -- export (tagstat.export) -------------------------------------------------------------

    @locked
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

    @locked
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
                    self._db.conn.execute(AUDIT_INSERT, audit_row(attempt))
                    done += 1
        return done

    # -- upload outbox and audit log (tagstat.outbox, tagstat.uploader) -------------------

    @locked
    def outbox_add(self, entry: OutboxEntry, settings: dict | None = None) -> None:
        """Add ``entry``; ``settings`` (key -> JSON value) are written in the same transaction."""
        with self._transaction():
            self._db["outbox"].insert(outbox_row(entry))
            for key, value in (settings or {}).items():
                self._db["settings"].upsert({"key": key, "value": json.dumps(value)}, pk="key")

    @locked
    def outbox_get(self, report_id: str) -> OutboxEntry | None:
        """The entry with this id, or the only one whose id starts with it."""
        columns = ", ".join(OUTBOX_COLUMNS)
        rows = self._db.execute(
            f"SELECT {columns} FROM outbox WHERE report_id = ? UNION ALL SELECT * FROM ("
            f"SELECT {columns} FROM outbox WHERE substr(report_id, 1, ?) = ? LIMIT 2)",
            [report_id, len(report_id), report_id],
        ).fetchall()
        if not rows:
            return None
        if rows[0][0] != report_id and len(rows) > 1:
            return None  # an ambiguous prefix
        return outbox_entry(dict(zip(OUTBOX_COLUMNS, rows[0], strict=True)))

    @locked
    def outbox_next_due(self, now: dt.datetime, kinds: Iterable[str]) -> OutboxEntry | None:
        """The oldest pending entry of these kinds whose next attempt is due."""
        kinds = list(kinds)
        rows = self._db["outbox"].rows_where(
            f"state = 'pending' AND next_attempt_at <= ? AND kind IN ({placeholders(kinds)})",
            [iso(now), *kinds],
            order_by="created_at, rowid",
            limit=1,
        )
        return next((outbox_entry(r) for r in rows), None)

    @locked
    def outbox_earliest_attempt(self, kinds: Iterable[str]) -> dt.datetime | None:
        kinds = list(kinds)
        row = self._db.execute(
            "SELECT min(next_attempt_at) FROM outbox "
            f"WHERE state = 'pending' AND kind IN ({placeholders(kinds)})",
            kinds,
        ).fetchone()
        return parse_iso(row[0]) if row[0] else None

    @locked
    def outbox_pending(self, kind: str | None = None) -> list[OutboxEntry]:
        where, args = "state = 'pending'", []
        if kind is not None:
            where, args = where + " AND kind = ?", [kind]
        rows = self._db["outbox"].rows_where(where, args, order_by="created_at, rowid")
        return [outbox_entry(r) for r in rows]

    @locked
    def outbox_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
        return dict(rows)

    @locked
    def outbox_last_delivered(self) -> dt.datetime | None:
        row = self._db.execute("SELECT max(delivered_at) FROM outbox").fetchone()
        return parse_iso(row[0]) if row[0] else None

    @locked
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
            self._db.conn.execute(AUDIT_INSERT, audit_row(attempt))

    @locked
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
                    self._db.conn.execute(AUDIT_INSERT, audit_row(attempt))
                    done += 1
        return done

    @locked
    def upload_audit(self, limit: int | None = None) -> list[UploadAttempt]:
        """The newest ``limit`` audit lines, oldest first."""
        rows = self._db.execute(
            "SELECT at, report_id, size_bytes, result, http_status, detail FROM ("
            "SELECT * FROM upload_audit ORDER BY id DESC LIMIT ?) ORDER BY id",
            [-1 if limit is None else limit],
        ).fetchall()
        return [UploadAttempt(parse_iso(r[0]), *r[1:]) for r in rows]

    @locked
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
