"""Opening the database file: connect, check, configure, and move a bad file aside.

Part of the store (``tagstat.store`` is the only module that uses these). A
file that is not a valid SQLite database is moved aside with its -wal and -shm,
never deleted; a database from a newer tagstat is refused and left untouched.
"""

import datetime as dt
import functools
import os
import sqlite3
from pathlib import Path

from tagstat import migrations
from tagstat.errors import StoreError

BUSY_TIMEOUT_MS = 5000  # only tests and `sqlite3` by hand ever compete with the daemon
JOURNAL_SIZE_LIMIT_BYTES = 1 << 20  # keep an idle WAL file small after checkpoints
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


class Corrupt(Exception):
    """The file at hand is not a usable SQLite database."""


def connect(path: Path) -> sqlite3.Connection:
    try:
        # The daemon calls in from several threads; the store's lock serializes them.
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot open database {path}: {exc}; check that the directory exists and is writable"
        ) from exc


def check(path: Path) -> None:
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
            raise Corrupt(str(exc)) from exc
        raise StoreError(f"cannot read database {path}: {exc}; check its permissions") from exc
    if result != ["ok"]:
        raise Corrupt("; ".join(result[:3]))
    if version > migrations.latest_version():
        raise StoreError(
            f"database schema {version} is newer than this tagstat "
            f"({migrations.latest_version()}); upgrade tagstat"
        )


def configure(conn: sqlite3.Connection) -> None:
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


def move_aside(path: Path, now: dt.datetime) -> Path:
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


def locked(method):
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
