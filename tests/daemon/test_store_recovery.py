"""Recovery from a damaged database, against real SQLite files in a temporary directory.

Each test damages a file the way a disk, a crash or a careless hand does (a zeroed page,
an empty or missing file, flipped bytes in the write-ahead log) and checks what the
store keeps, what it moves or copies aside, and what it logs.
"""

import dataclasses
import datetime as dt
import logging
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest

from tagstat import migrations, store_file
from tagstat.errors import StoreError
from tagstat.records import OutboxEntry, SessionRecord
from tagstat.store import Store

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
PAGE_BYTES = 4096  # SQLite's default, which the store keeps
TABLE_LEAF, INDEX_LEAF = 0x0D, 0x0A  # b-tree page types (the first byte of a page)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def session_id(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def session(n: int) -> SessionRecord:
    return SessionRecord(
        session_id=session_id(n),
        device_id="d" * 64,
        status=1,
        start=at(n),
        end=at(n + 0.5),
        duration_s=30.0,
        bytes_total=123_456_789 + n,
        tags_total=4_000_000,
        rate_min_bytes_per_s=1.5e6,
        rate_max_bytes_per_s=3.25e8,
        usb_speed="super",
        initial_sensors={"temp sensors": {"fpga": {"temp": 41.5}}},
        open=False,
        end_reason="idle",
        boot_tag="b" * 16,
        last_bytes=2**64 - 1,
        last_tags=2**63,
        last_uptime_ms=86_400_000,
        checkpoint_at=at(n + 0.5),
    )


def outbox_entry(n: int) -> OutboxEntry:
    delivered = n % 4 == 0
    body = b'{"report": %d, "padding": "%s"}' % (n, b"x" * 300)
    return OutboxEntry(
        report_id=str(uuid.UUID(int=10_000 + n)),
        kind="usage",
        user_id="u-1",
        created_at=at(n),
        body=body,
        size_bytes=len(body),
        state="delivered" if delivered else "pending",
        attempts=n % 3,
        next_attempt_at=at(n + 60),
        last_error=None if delivered else "HTTP 503",
        delivered_at=at(n + 1) if delivered else None,
        quota_exempt=False,
    )


# -- damaging files -------------------------------------------------------------------------


def page_holding(path: Path, needle: str, page_type: int) -> int:
    """The number (1-based) of the b-tree page of ``page_type`` whose cells hold ``needle``."""
    data = path.read_bytes()
    for number in range(2, len(data) // PAGE_BYTES + 1):
        page = data[(number - 1) * PAGE_BYTES : number * PAGE_BYTES]
        if page[0] == page_type and needle.encode() in page:
            return number
    raise AssertionError(f"no page of type {page_type:#x} holds {needle}")


def zero_page(path: Path, number: int) -> None:
    with open(path, "r+b") as f:
        f.seek((number - 1) * PAGE_BYTES)
        f.write(bytes(PAGE_BYTES))


def readable_rows(path: Path, table: str, rowids: range) -> int:
    """How many rows of ``table`` a direct read of ``path``, row by row, still returns."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    found = 0
    for rowid in rowids:
        try:
            found += (
                conn.execute(f"SELECT * FROM {table} WHERE rowid = ?", [rowid]).fetchone()
                is not None
            )
        except sqlite3.DatabaseError:
            pass
    conn.close()
    return found


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- a corrupt file: salvage ------------------------------------------------------------------


def test_zeroed_page_keeps_the_file_aside_and_salvages_the_rest(tmp_path, caplog):
    path = tmp_path / "tagstat.db"
    store = Store.open(path)
    store.set_setting("user_id", "u-survivor")
    store.set_setting("status", 2)
    store.save_sessions([session(i) for i in range(2000)])
    store.close()  # the last connection checkpoints: every page is in the file
    assert not Path(f"{path}-wal").exists()
    zero_page(path, page_holding(path, session_id(1000), TABLE_LEAF))
    damaged = path.read_bytes()

    store = Store.open(path)
    moved = store.recovered_from
    assert moved is not None and moved.read_bytes() == damaged  # kept, byte for byte
    readable = readable_rows(moved, "sessions", range(1, 2001))
    assert 1900 < readable < 2000
    assert store.salvage.counts()["sessions"] == readable
    back = store.sessions()
    originals = {session_id(i): session(i) for i in range(2000)}
    assert len(back) == readable and all(s == originals[s.session_id] for s in back)
    assert store.get_setting("user_id") == "u-survivor" and store.get_setting("status") == 2
    assert store.schema_version() == migrations.latest_version()
    (line,) = [m for m in errors(caplog) if m.startswith("salvaged")]
    assert f"sessions {readable} (some lost)" in line and "settings 2," in line
    assert f"the damaged file is kept at {moved}: once you have checked the salvaged data" in line
    assert line.endswith("delete it")
    store.close()


@pytest.mark.parametrize("damaged", ["table", "index"])
def test_salvage_keeps_each_outbox_entry_once_with_its_id_and_state(tmp_path, damaged):
    path = tmp_path / "tagstat.db"
    store = Store.open(path)
    entries = {e.report_id: e for e in map(outbox_entry, range(200))}
    for entry in entries.values():
        store.outbox_add(entry)
    store.close()
    needle = outbox_entry(100).report_id
    zero_page(path, page_holding(path, needle, TABLE_LEAF if damaged == "table" else INDEX_LEAF))

    store = Store.open(path)
    readable = readable_rows(store.recovered_from, "outbox", range(1, 201))
    back = [store.outbox_get(report_id) for report_id in entries]
    back = [e for e in back if e is not None]
    assert len(back) == readable == store.salvage.counts()["outbox"]
    assert all(e == entries[e.report_id] for e in back)  # report_id, state, schedule, body
    pending = store.outbox_pending()
    assert len({e.report_id for e in pending}) == len(pending)
    assert {e.report_id for e in pending} == {e.report_id for e in back if e.state == "pending"}
    if damaged == "index":  # the rows themselves were never damaged: all of them are back
        assert readable == 200 and store.salvage.complete
    else:
        assert 180 < readable < 200 and not store.salvage.complete
    store.close()


def test_salvage_of_an_older_schema_runs_the_later_migrations_over_the_rows(tmp_path, monkeypatch):
    path = tmp_path / "tagstat.db"
    with monkeypatch.context() as m:  # a database of the tagstat before schema 6
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:5])
        store = Store.open(path)
        store.record_message("daemon", "warning", "group tagstat-admin missing", at(0), 1)
        for i in range(300):
            store.record_message("device", "info", f"device message {i:04d} " * 4, at(i), 1)
        store.close()
    zero_page(path, page_holding(path, "device message 0200", TABLE_LEAF))

    store = Store.open(path)
    texts = [m.text for m in store.messages()]
    assert store.schema_version() == migrations.latest_version()
    assert all("group tagstat-admin" not in t for t in texts)  # migration 6 deleted it
    assert 270 < len(texts) < 300
    store.close()


def test_nothing_readable_is_logged_and_the_file_kept(tmp_path, caplog):
    path = tmp_path / "tagstat.db"
    garbage = b"this is not a database\x00" * 100
    path.write_bytes(garbage)
    store = Store.open(path)
    assert store.recovered_from.read_bytes() == garbage
    assert store.salvage.tables == () and store.salvage.rows_salvaged == 0
    assert any(
        m.startswith("nothing could be salvaged from the damaged database") for m in errors(caplog)
    )
    store.close()


def test_damaged_database_of_a_newer_tagstat_is_refused_untouched(tmp_path):
    path = tmp_path / "tagstat.db"
    store = Store.open(path)
    store.save_sessions([session(i) for i in range(500)])
    store.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {migrations.latest_version() + 1}")
    conn.commit()
    conn.close()
    zero_page(path, page_holding(path, session_id(250), TABLE_LEAF))
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer than this tagstat"):
        Store.open(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []


def test_reopening_after_a_salvage_is_an_ordinary_open(tmp_path):
    path = tmp_path / "tagstat.db"
    store = Store.open(path)
    store.save_sessions([session(i) for i in range(500)])
    store.close()
    zero_page(path, page_holding(path, session_id(250), TABLE_LEAF))
    Store.open(path).close()
    store = Store.open(path)
    assert store.recovered_from is None and store.salvage is None
    assert 450 < len(store.sessions()) < 500
    store.close()


# -- an empty or missing file on an install that has existed -------------------------------


@pytest.fixture
def secret(tmp_path) -> Path:
    marker = tmp_path / "secret.key"
    marker.write_bytes(bytes(32))
    return marker


def test_empty_file_beside_the_secret_is_lost_data(tmp_path, secret, caplog):
    path = tmp_path / "tagstat.db"
    path.write_bytes(b"")
    store = Store.open(path, install_marker=secret)
    assert store.data_lost == "empty"
    moved = store.recovered_from
    assert moved.name.startswith("tagstat.db.empty-") and moved.read_bytes() == b""
    (line,) = errors(caplog)
    assert line.startswith(f"database {path} is empty although this install has existed since ")
    assert f"({secret}): collected data and settings are lost" in line
    assert "a new database was started; look for a backup" in line and str(moved) in line
    assert store.schema_version() == migrations.latest_version()
    store.close()


def test_empty_file_beside_a_wal_is_lost_data_even_without_the_secret(tmp_path, caplog):
    path = tmp_path / "tagstat.db"
    path.write_bytes(b"")
    Path(f"{path}-wal").write_bytes(b"frames of a database that was")
    store = Store.open(path, install_marker=tmp_path / "secret.key")
    assert store.data_lost == "empty"
    assert Path(f"{store.recovered_from}-wal").read_bytes() == b"frames of a database that was"
    (line,) = errors(caplog)
    assert f"is empty although this install has existed ({path}-wal exists)" in line
    store.close()


def test_empty_file_on_a_first_start_is_a_new_database(tmp_path, caplog):
    path = tmp_path / "tagstat.db"
    path.write_bytes(b"")
    store = Store.open(path, install_marker=tmp_path / "secret.key")
    assert store.data_lost is None and store.recovered_from is None
    assert errors(caplog) == []
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tagstat.db"]


def test_missing_file_beside_the_secret_is_lost_data(tmp_path, secret, caplog):
    path = tmp_path / "tagstat.db"
    store = Store.open(path, install_marker=secret)
    assert store.data_lost == "missing" and store.recovered_from is None
    (line,) = errors(caplog)
    assert line.startswith(f"database {path} is missing although this install has existed since")
    assert "collected data and settings are lost; a new database was started" in line
    store.close()


def test_missing_file_on_a_first_start_logs_nothing(tmp_path, caplog):
    store = Store.open(tmp_path / "tagstat.db", install_marker=tmp_path / "secret.key")
    assert store.data_lost is None and errors(caplog) == []
    store.close()


def test_orphan_wal_of_a_missing_file_is_kept_not_deleted(tmp_path, secret):
    path = tmp_path / "tagstat.db"
    Path(f"{path}-wal").write_bytes(b"the newest writes")
    store = Store.open(path, install_marker=secret)
    assert store.data_lost == "missing"
    kept = list(tmp_path.glob("tagstat.db.missing-*-wal"))
    assert [p.read_bytes() for p in kept] == [b"the newest writes"]
    store.close()


# -- a damaged write-ahead log --------------------------------------------------------------


def wal_snapshot(tmp_path, sessions: int = 30, restart_after: int | None = None) -> Path:
    """A database and its -wal copied from a running store, one transaction per session
    (``restart_after``: checkpoint and restart the log after that many, so later frames
    overwrite the first ones and stale frames of the earlier log stay behind them)."""
    live = Store.open(tmp_path / "live" / "tagstat.db")
    for i in range(sessions):
        live.save_session(session(i))
        if i + 1 == restart_after:
            live._db.execute("PRAGMA wal_checkpoint(RESTART)")
    copy = tmp_path / "copy" / "tagstat.db"
    copy.parent.mkdir()
    shutil.copyfile(live.path, copy)
    shutil.copyfile(f"{live.path}-wal", f"{copy}-wal")
    live.close()
    return copy


def frame_count(wal: Path) -> int:
    return (wal.stat().st_size - 32) // (24 + PAGE_BYTES)


def flip_page_bytes(wal: Path, frame: int) -> None:
    """Flip bytes in the page data of ``frame`` (1-based), as a bad sector would."""
    with open(wal, "r+b") as f:
        f.seek(32 + (frame - 1) * (24 + PAGE_BYTES) + 24 + 1000)
        data = f.read(8)
        f.seek(-8, 1)
        f.write(bytes(b ^ 0xFF for b in data))


def test_damaged_wal_frame_is_logged_and_the_log_copied_aside(tmp_path, caplog):
    path = wal_snapshot(tmp_path)
    wal = Path(f"{path}-wal")
    frames = frame_count(wal)
    bad = frames - 10  # within one of the last transactions
    flip_page_bytes(wal, bad)
    damaged = wal.read_bytes()

    store = Store.open(path)
    damage = store.wal_damage
    assert damage.first_bad_frame == bad and damage.frames_in_log == frames
    assert 1 <= damage.frames_lost <= frames - bad + 1
    assert damage.bytes_lost == damage.frames_lost * (24 + PAGE_BYTES)
    assert damage.copy.name.startswith("tagstat.db-wal.damaged-")
    assert damage.copy.read_bytes() == damaged
    (line,) = errors(caplog)
    assert line == (
        f"the write-ahead log {wal} is damaged at frame {bad} of {frames}: sqlite will roll "
        f"back {damage.frames_lost} frames (about {damage.bytes_lost} bytes) of recent writes; "
        f"a copy of the damaged log is kept at {damage.copy}; delete it once you no longer "
        "need it"
    )
    kept = len(store.sessions())
    assert 0 < kept < 30  # what the log held before the bad frame is there, the rest not
    assert [s.session_id for s in store.sessions()] == [session_id(i) for i in range(kept)]
    store.close()


def test_intact_wal_is_not_reported(tmp_path, caplog):
    path = wal_snapshot(tmp_path)
    store = Store.open(path)
    assert store.wal_damage is None and errors(caplog) == []
    assert len(store.sessions()) == 30
    store.close()
    assert not list(path.parent.glob("*damaged*"))


def test_stale_frames_of_an_earlier_log_are_not_damage(tmp_path, caplog):
    path = wal_snapshot(tmp_path, sessions=30, restart_after=25)
    assert store_file.inspect_wal(Path(f"{path}-wal")) is None
    store = Store.open(path)
    assert store.wal_damage is None and errors(caplog) == []
    assert len(store.sessions()) == 30
    store.close()


def test_damaged_wal_header_loses_the_whole_log(tmp_path):
    path = wal_snapshot(tmp_path)
    wal = Path(f"{path}-wal")
    with open(wal, "r+b") as f:
        f.seek(12)  # the checkpoint sequence number, covered by the header checksum
        f.write(b"\xff\xff\xff\xff")
    damage = store_file.inspect_wal(wal, PAGE_BYTES)
    assert damage.first_bad_frame == 1 and damage.frames_lost == frame_count(wal)
    store = Store.open(path)
    assert store.wal_damage == dataclasses.replace(damage, copy=store.wal_damage.copy)
    assert store.sessions() == []
    store.close()
