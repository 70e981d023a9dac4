"""Opening the database file: connect, check, configure, and deal with a bad file.

Part of the store (``tagstat.store`` is the only module that uses these). A
file that is not a valid SQLite database is moved aside with its -wal and -shm,
never deleted, and what can still be read from it is copied into the fresh one
(``tagstat.store_salvage``); a database from a newer tagstat is refused and left
untouched. An empty or missing database on an install that has existed is lost
data, and said so. A write-ahead log whose frames SQLite would silently drop (it
stops at the first frame whose checksum fails) is copied aside and the loss logged.
"""

import dataclasses
import datetime as dt
import functools
import logging
import os
import shutil
import sqlite3
import struct
from pathlib import Path

from tagstat import migrations, store_salvage
from tagstat.errors import StoreError
from tagstat.store_salvage import Salvage

log = logging.getLogger(__name__)

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
    """Check version and integrity of an existing file, read-only.

    Read-only, so that a refused file stays byte for byte as it was, and so that
    SQLite does not delete the -wal of a damaged database when the check closes.
    The version comes first: a damaged database of a newer tagstat is refused too,
    not salvaged into an older schema.
    """
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            version = migrations.current_version(conn)
            if version > migrations.latest_version():
                raise StoreError(
                    f"database schema {version} is newer than this tagstat "
                    f"({migrations.latest_version()}); upgrade tagstat"
                )
            result = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES:
            raise Corrupt(str(exc)) from exc
        raise StoreError(f"cannot read database {path}: {exc}; check its permissions") from exc
    if result != ["ok"]:
        raise Corrupt("; ".join(result[:3]))


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


def set_up(conn: sqlite3.Connection, salvage_from: Path | None = None) -> Salvage | None:
    """Configure and migrate a connection; into a fresh database, first copy what
    ``salvage_from`` (a corrupt file moved aside) still holds."""
    configure(conn)
    salvage = store_salvage.salvage(conn, salvage_from) if salvage_from else None
    migrations.migrate(conn)
    return salvage


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


def _free_name(path: Path, label: str, now: dt.datetime) -> Path:
    stamp = f"{path}.{label}-{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    target, n = Path(stamp), 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):  # within a second
        target, n = Path(f"{stamp}-{n}"), n + 1
    return target


def move_aside(path: Path, now: dt.datetime, label: str = "corrupt") -> Path:
    """Rename ``path`` and its -wal and -shm to ``<path>.<label>-<UTC stamp>``."""
    target = _free_name(path, label, now)
    try:
        for suffix in ("-wal", "-shm", ""):  # the main file last: it is what marks a database
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.replace(source, f"{target}{suffix}")
    except OSError as exc:
        raise StoreError(
            f"database {path} is {label} and could not be moved aside "
            f"to {target}: {exc}; move or delete it by hand"
        ) from exc
    return target


# -- an empty or missing database on an install that has existed ------------------------


@dataclasses.dataclass(frozen=True)
class LostDatabase:
    what: str  # "empty" or "missing"
    moved_to: Path | None  # the empty file (with any -wal, -shm), or an orphan -wal


def set_aside_lost(path: Path, now: dt.datetime, marker: Path | None) -> LostDatabase | None:
    """If ``path`` is empty or missing although the install has existed (``marker``, or
    a -wal beside it, says so), move what is there aside and log the loss at error.
    Else (a first start) leave things be: SQLite starts an empty file as a new database,
    and would delete an orphan -wal, which is why that one is moved aside too."""
    size = path.stat().st_size if path.exists() else None
    if size:
        return None
    wal = Path(f"{path}-wal")
    evidence = _install_evidence(marker, wal)
    if evidence is None:
        return None
    moved_to = None
    if size == 0:
        what, moved_to = "empty", move_aside(path, now, "empty")
    elif wal.exists():
        what, moved_to = "missing", Path(f"{move_aside(path, now, 'missing')}-wal")
    else:
        what = "missing"
    log.error(
        "database %s is %s although this install has existed %s: collected data and "
        "settings are lost; a new database was started; look for a backup%s",
        path,
        what,
        evidence,
        f" (what was there is kept at {moved_to})" if moved_to else "",
    )
    return LostDatabase(what, moved_to)


def _install_evidence(marker: Path | None, wal: Path) -> str | None:
    if marker is not None and marker.exists():
        since = dt.datetime.fromtimestamp(marker.stat().st_mtime, dt.UTC)
        return f"since {since:%Y-%m-%d %H:%M} UTC ({marker})"
    if wal.exists():  # written only beside a database that had a header
        return f"({wal} exists)"
    return None


# -- a write-ahead log with frames SQLite will not apply --------------------------------
# The format is https://sqlite.org/fileformat2.html#walformat: a 32-byte header (magic,
# version, page size, checkpoint sequence, two salts, a checksum of the first 24 bytes),
# then frames of a 24-byte header (page number, database size in pages for the frame
# that commits a transaction, else 0; the salts; a checksum running over every frame
# so far) and one page. SQLite replays frames up to the last commit before the first
# frame whose salts or checksum do not match, and ignores the rest without a word.

_WAL_MAGIC = (0x377F0682, 0x377F0683)  # the low bit: checksum words are big-endian
_WAL_VERSION = 3007000
_WAL_HEADER_BYTES = 32
_FRAME_HEADER_BYTES = 24


@dataclasses.dataclass(frozen=True)
class WalDamage:
    """Frames of a write-ahead log that SQLite will not apply, though they were committed."""

    first_bad_frame: int  # 1-based: SQLite applies none of the frames from here on
    frames_lost: int  # from that frame up to the last commit written after it
    bytes_lost: int  # their size in the log: about as much page data
    frames_in_log: int
    copy: Path | None  # the damaged log, copied aside before SQLite reads it


def keep_damaged_wal(path: Path, now: dt.datetime) -> WalDamage | None:
    """Before SQLite reads ``path``: if its -wal has committed frames SQLite will not
    apply, copy the log to ``<path>-wal.damaged-<UTC stamp>`` and log the loss at error."""
    wal = Path(f"{path}-wal")
    damage = inspect_wal(wal, _page_size(path))
    if damage is None:
        return None
    copy = _free_name(wal, "damaged", now)
    try:
        shutil.copy2(wal, copy)
        kept = f"a copy of the damaged log is kept at {copy}; delete it once you no longer need it"
    except OSError as exc:  # the loss is logged all the same; the frames are not worth a refusal
        copy, kept = None, f"the damaged log could not be copied aside: {exc}"
    log.error(
        "the write-ahead log %s is damaged at frame %d of %d: sqlite will roll back %d "
        "frames (about %d bytes) of recent writes; %s",
        wal,
        damage.first_bad_frame,
        damage.frames_in_log,
        damage.frames_lost,
        damage.bytes_lost,
        kept,
    )
    return dataclasses.replace(damage, copy=copy)


def inspect_wal(wal: Path, db_page_size: int | None = None) -> WalDamage | None:
    """Committed frames of ``wal`` that SQLite will not apply, or None if there are none.

    ``db_page_size`` (from the database header) counts the frames of a log whose own
    header is unreadable."""
    try:
        data = wal.read_bytes()
    except OSError:  # none, or unreadable: then SQLite will not read it either
        return None
    if len(data) < _WAL_HEADER_BYTES:
        return None
    magic, version, page_size, _, salt1, salt2, sum1, sum2 = struct.unpack_from(">8I", data)
    salts, big_endian = (salt1, salt2), bool(magic & 1)
    header_ok = (
        magic in _WAL_MAGIC
        and version == _WAL_VERSION
        and _valid_page_size(page_size)
        and _checksum(data[:24], (0, 0), big_endian) == (sum1, sum2)
    )
    page_size = page_size if _valid_page_size(page_size) else db_page_size
    if page_size is None:
        return None
    frames = (len(data) - _WAL_HEADER_BYTES) // (_FRAME_HEADER_BYTES + page_size)
    if frames == 0:
        return None
    headers = [_frame_header(data, i, page_size) for i in range(frames)]
    if header_ok:
        first_bad = _first_bad_frame(data, headers, page_size, salts, (sum1, sum2), big_endian)
    else:  # SQLite ignores the whole log; the header's salts may be what is damaged
        first_bad, salts = 0, headers[0][2:4]
    commits = [i for i in range(first_bad, frames) if headers[i][1] and headers[i][2:4] == salts]
    if not commits:  # only stale frames of an earlier log, or an unfinished transaction
        return None
    lost = commits[-1] - first_bad + 1
    return WalDamage(
        first_bad_frame=first_bad + 1,
        frames_lost=lost,
        bytes_lost=lost * (_FRAME_HEADER_BYTES + page_size),
        frames_in_log=frames,
        copy=None,
    )


def _frame_header(data: bytes, i: int, page_size: int) -> tuple[int, ...]:
    """(page number, database pages if it commits, salt 1, salt 2, checksum 1, checksum 2)"""
    return struct.unpack_from(">6I", data, _frame_offset(i, page_size))


def _frame_offset(i: int, page_size: int) -> int:
    return _WAL_HEADER_BYTES + i * (_FRAME_HEADER_BYTES + page_size)


def _first_bad_frame(data, headers, page_size, salts, checksum, big_endian) -> int:
    for i, (page_number, _, *frame_salts, sum1, sum2) in enumerate(headers):
        if page_number == 0 or tuple(frame_salts) != salts:
            return i
        start = _frame_offset(i, page_size)
        checksum = _checksum(data[start : start + 8], checksum, big_endian)
        page = data[start + _FRAME_HEADER_BYTES : start + _FRAME_HEADER_BYTES + page_size]
        checksum = _checksum(page, checksum, big_endian)
        if checksum != (sum1, sum2):
            return i
    return len(headers)


def _checksum(data: bytes, checksum: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    # Pure Python, about 35 ms per MB of log: the autocheckpoint keeps it to a few MB.
    s1, s2 = checksum
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for a, b in zip(words[0::2], words[1::2], strict=True):
        s1 = (s1 + a + s2) & 0xFFFFFFFF
        s2 = (s2 + b + s1) & 0xFFFFFFFF
    return s1, s2


def _valid_page_size(size: int) -> bool:
    return 512 <= size <= 65536 and size & (size - 1) == 0


def _page_size(path: Path) -> int | None:
    """The page size in a database file's header, or None if it has no valid header."""
    try:
        with open(path, "rb") as f:
            header = f.read(18)
    except OSError:
        return None
    if len(header) < 18 or not header.startswith(store_salvage.SQLITE_MAGIC):
        return None
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    return size if _valid_page_size(size) else None
