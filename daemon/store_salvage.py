"""Salvage: copy what SQLite can still read from a damaged database into a fresh one.

Part of the store (``tagstat.store_file`` calls it after moving a corrupt file aside).
Table by table, each in rowid order; where a scan breaks (a damaged page, a broken
overflow chain) it probes for the next rowid from which reading works again, so one
bad page costs the rows on that page, not the rest of the table. The damaged file is
only ever opened read-only. The fresh database first gets the damaged file's schema
version, so rows go in as they were and later migrations change them as they would
have (migration 6, for one, deletes texts that must not be kept). The fresh schema's
columns are the ones copied; a row the schema refuses is skipped, never forced in.
"""

import dataclasses
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from tagstat import migrations

log = logging.getLogger(__name__)

MIN_ROWID, MAX_ROWID = -(2**63), 2**63 - 1
BATCH_ROWS = 500
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclasses.dataclass(frozen=True)
class TableSalvage:
    table: str
    rows_salvaged: int
    rows_lost: bool  # some rows (or the whole table) could not be read or were refused


@dataclasses.dataclass(frozen=True)
class Salvage:
    """What was copied out of a damaged database; ``tables`` is empty when nothing in
    it was readable as a tagstat database."""

    damaged_file: Path  # kept: the user deletes it once the salvaged data is checked
    tables: tuple[TableSalvage, ...]

    @property
    def rows_salvaged(self) -> int:
        return sum(t.rows_salvaged for t in self.tables)

    @property
    def complete(self) -> bool:
        return bool(self.tables) and not any(t.rows_lost for t in self.tables)

    def counts(self) -> dict[str, int]:
        return {t.table: t.rows_salvaged for t in self.tables}


def salvage(conn: sqlite3.Connection, damaged: Path) -> Salvage:
    """Copy the rows of ``damaged`` into ``conn``, a fresh database with no schema yet,
    and log what was saved; the caller migrates ``conn`` to the latest schema after."""
    source = _open_source(damaged)
    if source is None:
        result = Salvage(damaged, ())
    else:
        try:
            tables = ()
            version = _schema_version(source)
            if version:  # else there is no schema to read the rows by
                _create_schema(conn, min(version, migrations.latest_version()))
                tables = tuple(_copy_table(source, conn, name) for name in _tables(conn))
        finally:
            source.close()
        result = Salvage(damaged, tables)
    _log(result)
    return result


def _open_source(path: Path) -> sqlite3.Connection | None:
    try:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                return None  # not a database at all: nothing to look for
        # Read-only, so the damaged copy stays as it was: its -wal is read, never checkpointed.
        return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return None


def _schema_version(source: sqlite3.Connection) -> int | None:
    try:
        return migrations.current_version(source)
    except sqlite3.DatabaseError:
        return None  # the header page is gone, and with it the schema


def _create_schema(conn: sqlite3.Connection, version: int) -> None:
    # Only up to the damaged file's version: the rest must run over the salvaged rows.
    migrations.migrate(conn, up_to=version)


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid"
    )
    return [r[0] for r in rows]


def _copy_table(source: sqlite3.Connection, dest: sqlite3.Connection, table: str) -> TableSalvage:
    columns = [r[1] for r in dest.execute(f'PRAGMA table_info("{table}")')]
    names = ", ".join(f'"{c}"' for c in columns)
    reader = _TableReader(source, f'SELECT rowid, {names} FROM "{table}" NOT INDEXED')
    insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    before = dest.total_changes
    with dest:
        dest.execute("BEGIN IMMEDIATE")
        batch = []
        for row in reader:
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                dest.executemany(insert, batch)
                batch = []
        dest.executemany(insert, batch)
    inserted = dest.total_changes - before
    return TableSalvage(table, inserted, reader.lost or inserted < reader.rows_read)


class _TableReader:
    """The rows of one table in rowid order, stepping over the parts that cannot be read.

    ``lost`` says whether any part was stepped over (or the table was not there)."""

    def __init__(self, source: sqlite3.Connection, select: str):
        self._source = source
        self._select = f"{select} WHERE rowid >= ? ORDER BY rowid"
        self.lost = False
        self.rows_read = 0

    def __iter__(self) -> Iterator[tuple]:
        start = MIN_ROWID
        while start is not None:
            try:
                for row in self._source.execute(self._select, (start,)):
                    start = _after(row[0])
                    self.rows_read += 1
                    yield row[1:]
                    if start is None:
                        return
                return
            except sqlite3.DatabaseError:
                pass
            # The scan broke somewhere from ``start`` on: is it the next row itself
            # (an overflow page), or the way to the rows after it (its leaf page)?
            ok, row = self._first_from(start)
            if ok and row is not None:
                start = _after(row[0])
                self.rows_read += 1
                yield row[1:]
            else:
                self.lost = True
                start = self._next_readable(start) if not ok else None

    def _first_from(self, start: int) -> tuple[bool, tuple | None]:
        try:
            return True, self._source.execute(f"{self._select} LIMIT 1", (start,)).fetchone()
        except sqlite3.DatabaseError:
            return False, None

    def _next_readable(self, failed: int) -> int | None:
        """The least rowid above ``failed`` from which reading works, None if none does.

        Steps double until a read works, then halve back: a damaged page costs about
        2 log2(rows on it) probes, each a seek."""
        step, good = 1, None
        while good is None:
            candidate = min(failed + step, MAX_ROWID)
            if self._first_from(candidate)[0]:
                good = candidate
            elif candidate == MAX_ROWID:
                return None
            else:
                failed, step = candidate, step * 2
        while good - failed > 1:
            middle = (failed + good) // 2
            if self._first_from(middle)[0]:
                good = middle
            else:
                failed = middle
        return good


def _after(rowid: int) -> int | None:
    return rowid + 1 if rowid < MAX_ROWID else None


def _log(result: Salvage) -> None:
    if not result.tables:
        log.error(
            "nothing could be salvaged from the damaged database %s: it is not readable "
            "as a tagstat database; the file is kept there, delete it once you no longer "
            "need it",
            result.damaged_file,
        )
        return
    tables = ", ".join(
        f"{t.table} {t.rows_salvaged}{' (some lost)' if t.rows_lost else ''}" for t in result.tables
    )
    log.error(
        "salvaged %d rows from the damaged database into the new one (%s): %s; "
        "the damaged file is kept at %s: once you have checked the salvaged data "
        "(tagstat status, tagstat sessions), delete it",
        result.rows_salvaged,
        tables,
        "nothing was lost" if result.complete else "rows marked 'some lost' could not be read",
        result.damaged_file,
    )
