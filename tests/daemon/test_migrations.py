"""Tests of schema migrations, version checks and recovery from corrupt database files."""

import datetime as dt
import os
import sqlite3

import pytest

from tagstat import migrations
from tagstat.errors import StoreError
from tagstat.store import Store

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def test_fresh_database_gets_latest_version(tmp_path):
    store = Store.open(tmp_path / "t.db")
    assert store.schema_version() == migrations.latest_version() >= 1
    store.close()


def test_migration_numbers_are_consecutive():
    assert [m.number for m in migrations.MIGRATIONS] == list(
        range(1, len(migrations.MIGRATIONS) + 1)
    )


def test_reopening_is_idempotent_and_keeps_data(tmp_path):
    path = tmp_path / "t.db"
    store = Store.open(path)
    store.set_setting("user_id", "u-1")
    store.close()
    for _ in range(2):
        store = Store.open(path)
        assert store.schema_version() == migrations.latest_version()
        assert store.get_setting("user_id") == "u-1"
        assert store.recovered_from is None
        store.close()


def test_failed_migration_leaves_previous_version(tmp_path, monkeypatch):
    broken = migrations.Migration(2, "broken", ("CREATE TABLE extra (x)", "NOT SQL"))
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1] + (broken,))
    with pytest.raises(StoreError, match="t.db"):
        Store.open(tmp_path / "t.db")
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "extra" not in tables and "sessions" in tables
    conn.close()


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {migrations.latest_version() + 5}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    message = (
        f"database schema {migrations.latest_version() + 5} is newer than this tagstat "
        f"({migrations.latest_version()}); upgrade tagstat"
    )
    with pytest.raises(StoreError) as raised:
        Store.open(path)
    assert str(raised.value) == message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]


def _real_database(path):
    store = Store.open(path)
    for i in range(2000):
        store.record_message("d", "info", f"message number {i} " * 5, T0, 1)
    store.close()
    return path.read_bytes()


def _random_bytes(path):
    data = os.urandom(64 * 1024)
    path.write_bytes(data)
    return data


def _truncated(path):
    data = _real_database(path)[: 40 * 1024]
    path.write_bytes(data)
    return data


def _bad_header(path):
    data = b"SQLite format 3\x00" + b"\xff" * 4080
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("damage", [_random_bytes, _truncated, _bad_header])
def test_corrupt_file_is_moved_aside_intact(tmp_path, damage, caplog):
    path = tmp_path / "t.db"
    original = damage(path)
    wal = tmp_path / "t.db-wal"
    wal.write_bytes(b"stale wal")
    store = Store.open(path)
    moved = store.recovered_from
    assert moved is not None and moved.name.startswith("t.db.corrupt-")
    assert moved.read_bytes() == original
    assert os.path.exists(f"{moved}-wal")
    assert str(path) in caplog.text and str(moved) in caplog.text
    store.set_setting("k", "fresh")
    assert store.get_setting("k") == "fresh"
    assert store.schema_version() == migrations.latest_version()
    store.close()


def test_zero_length_file_is_a_new_database(tmp_path):
    path = tmp_path / "t.db"
    path.write_bytes(b"")
    store = Store.open(path)
    assert store.recovered_from is None
    assert store.schema_version() == migrations.latest_version()
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]
