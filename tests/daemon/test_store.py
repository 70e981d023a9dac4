"""Tests of the SQLite store against real database files in a temporary directory."""

import dataclasses
import datetime as dt
import subprocess
import sys
import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagstat.clock import Clock
from tagstat.errors import StoreError
from tagstat.records import DeviceRecord, MessageRecord, SensorStat, SessionRecord, StatusChange
from tagstat.store import Store

T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


def at(minutes: float = 0) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def session(n: int = 0, **changes) -> SessionRecord:
    rec = SessionRecord(
        session_id=str(uuid.UUID(int=n + 1)),
        device_id="d" * 64,
        status=1,
        start=at(n),
        end=at(n + 0.5),
        duration_s=30.0,
        bytes_total=123_456_789,
        tags_total=4_000_000,
        rate_min_bytes_per_s=1.5e6,
        rate_max_bytes_per_s=3.25e8,
        usb_speed="super",
        initial_sensors={"temp sensors": {"fpga": {"temp": 41.5}}, "fans": [1, 2]},
        open=False,
        end_reason="idle",
        boot_tag="b" * 16,
        last_bytes=2**64 - 1,  # a full-width u64 device counter
        last_tags=2**63,
        last_uptime_ms=86_400_000,
        checkpoint_at=at(n + 0.5),
    )
    return dataclasses.replace(rec, **changes)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "state" / "tagstat.db")
    yield s
    s.close()


def test_open_creates_directory_and_wal_database(store, tmp_path):
    assert store.path == tmp_path / "state" / "tagstat.db"
    assert store.path.exists()
    assert store.recovered_from is None
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_unwritable_location_raises_store_error_naming_path(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(StoreError, match="not-a-dir"):
        Store.open(blocker / "tagstat.db")


def test_use_after_close_raises_store_error(tmp_path):
    store = Store.open(tmp_path / "t.db")
    store.close()
    with pytest.raises(StoreError, match="t.db"):
        store.get_setting("user_id")


def test_threads_share_one_store(store):
    def work(n):
        for i in range(50):
            store.save_session(session(n * 100 + i))
            store.record_message("daemon", "info", f"thread {n}", at(i), 1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.sessions()) == 200
    assert sorted(m.count for m in store.messages()) == [50] * 4


def test_settings_round_trip(store):
    assert store.get_setting("user_id") is None
    assert store.get_setting("status", default=0) == 0
    values = {"user_id": "u-1", "status": 2, "flags": {"a": [1, 2.5, None, True]}, "none": None}
    for key, value in values.items():
        store.set_setting(key, value)
    store.set_setting("status", 1)
    assert {k: store.get_setting(k, "missing") for k in values} == values | {"status": 1}


def test_status_changes_round_trip_in_order(store):
    changes = [
        StatusChange(at=at(0), old=None, new=1, persistent=True, reason="install"),
        StatusChange(at=at(1), old=1, new=2, persistent=False, reason="api"),
        StatusChange(at=at(0.5), old=2, new=0, persistent=True, reason="config"),
    ]
    for change in changes:
        store.add_status_change(change)
    assert store.status_changes() == changes


def test_device_upsert_keeps_first_seen(store):
    first = DeviceRecord(
        device_id="a" * 64,
        model="Time Tagger Ultra",
        serial_masked="1740XXXXXX",
        usb_speed="high",
        firmware="1.30",
        calibration={"channels": [0.1, -0.25]},
        configuration={"resolution": "Standard", "channels": {"1": {"trigger level": 0.5}}},
        first_seen=at(0),
        last_seen=at(0),
    )
    store.upsert_device(first)
    assert store.devices() == [first]
    later = dataclasses.replace(first, usb_speed="super", first_seen=at(60), last_seen=at(60))
    store.upsert_device(later)
    assert store.devices() == [dataclasses.replace(later, first_seen=at(0))]


def test_session_round_trip_is_exact(store):
    rec = session(0, end_reason=None, open=True)
    store.save_session(rec)
    (back,) = store.sessions()
    assert back == rec
    assert back.last_bytes == 2**64 - 1
    assert back.start.tzinfo is not None


def test_checkpoint_then_close_upserts_one_row(store):
    store.save_session(session(0, open=True, end_reason=None))
    assert [s.open for s in store.open_sessions()] == [True]
    closed = session(0, end=at(10), duration_s=600.0, bytes_total=9, end_reason="unplugged")
    store.save_session(closed)
    assert store.open_sessions() == []
    assert store.sessions() == [closed]


def test_save_sessions_is_one_transaction(store):
    good = session(0)
    bad = dataclasses.replace(session(1), device_id=None)  # violates NOT NULL
    with pytest.raises(StoreError, match="NOT NULL"):
        store.save_sessions([good, bad])
    assert store.sessions() == []


def test_open_sessions_only_open_oldest_first(store):
    recs = [session(3, open=True), session(1, open=True), session(2)]
    store.save_sessions(recs)
    assert store.open_sessions() == [recs[1], recs[0]]


def test_session_filters(store):
    recs = [session(i * 10, status=i % 3) for i in range(6)]  # starts at 0, 10, ... 50 min
    store.save_sessions(reversed(recs))
    assert store.sessions() == recs
    assert store.sessions(since=at(20.4)) == recs[2:]  # end > since
    assert store.sessions(since=at(20.5)) == recs[3:]  # one that ended at since is not in
    assert store.sessions(until=at(20)) == recs[:2]  # start < until
    assert store.sessions(min_status=2) == [recs[2], recs[5]]
    assert store.sessions(min_status=1, limit=2) == [recs[1], recs[2]]
    assert store.sessions(since=at(10), until=at(40), min_status=1) == [recs[1], recs[2]]


def test_sensor_summary_over_buckets_and_statuses(store):
    dev = "d1"
    store.record_sensors(dev, at(0), 1, {"temp/fpga": 40.0, "volt/12V": 12.1})
    store.record_sensors(dev, at(30), 1, {"temp/fpga": 38.0})
    store.record_sensors(dev, at(70), 2, {"temp/fpga": 45.0, "volt/12V": 11.9})  # next hour
    store.record_sensors(dev, at(130), 1, {"temp/fpga": 42.0})
    store.record_sensors(dev, at(135), 0, {"temp/fpga": 99.0})  # collected while disabled
    store.record_sensors("other", at(200), 2, {"temp/fpga": -5.0})
    assert store.sensor_summary(dev, min_status=1) == [
        SensorStat(key="temp/fpga", last=42.0, min=38.0, max=45.0, last_at=at(130)),
        SensorStat(key="volt/12V", last=11.9, min=11.9, max=12.1, last_at=at(70)),
    ]
    assert store.sensor_summary(dev, min_status=2) == [
        SensorStat(key="temp/fpga", last=45.0, min=45.0, max=45.0, last_at=at(70)),
        SensorStat(key="volt/12V", last=11.9, min=11.9, max=11.9, last_at=at(70)),
    ]
    assert store.sensor_summary(dev)[0] == SensorStat("temp/fpga", 99.0, 38.0, 99.0, at(135))
    # since=at(65): the first hour's bucket ended at 30 min, the 60-min bucket counts
    assert [s.key for s in store.sensor_summary(dev, since=at(65), min_status=1)] == [
        "temp/fpga",
        "volt/12V",
    ]
    assert store.sensor_summary(dev, since=at(131), min_status=1) == []
    assert store.sensor_summary("nobody") == []


def test_sensor_out_of_order_sample_does_not_replace_last(store):
    store.record_sensors("d", at(10), 1, {"t": 2.0})
    store.record_sensors("d", at(5), 1, {"t": 1.0})
    assert store.sensor_summary("d") == [SensorStat("t", 2.0, 1.0, 2.0, at(10))]


def test_sensor_non_numbers_are_skipped(store):
    store.record_sensors("d", at(0), 1, {"nan": float("nan"), "text": "n/a", "ok": True, "i": 3})
    assert [(s.key, s.last) for s in store.sensor_summary("d")] == [("i", 3.0), ("ok", 1.0)]


def test_message_dedup_counts_first_and_last_seen(store):
    store.record_message("dev1", "warning", "not on USB 3", at(0), 1)
    store.record_message("dev1", "warning", "not on USB 3", at(5), 1, count=3)
    store.record_message("dev1", "warning", "not on USB 3", at(-5), 1)
    store.record_message("dev1", "warning", "not on USB 3", at(1), 2)  # other status
    store.record_message("daemon", "error", "poll failed", at(2), 1)
    assert store.messages() == [
        MessageRecord("dev1", "warning", "not on USB 3", 2, 1, at(1), at(1)),
        MessageRecord("daemon", "error", "poll failed", 1, 1, at(2), at(2)),
        MessageRecord("dev1", "warning", "not on USB 3", 1, 5, at(-5), at(5)),
    ]
    assert [m.status for m in store.messages(min_status=2)] == [2]
    assert [m.text for m in store.messages(since=at(3))] == ["not on USB 3"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(level=st.text(max_size=20), text=st.text(max_size=300), status=st.integers(0, 2))
def test_any_message_text_round_trips(store, level, text, status):
    store.purge_collected()
    store.record_message("src", level, text, at(0), status)
    store.record_message("src", level, text, at(1), status)
    assert store.messages() == [MessageRecord("src", level, text, status, 2, at(0), at(1))]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(st.characters(codec=None, categories=["Cs", "Ll"]), max_size=20))
def test_unencodable_message_text_never_raises(store, text):
    store.record_message("src", "error", text, at(0), 1)
    assert store.messages()


def test_prune_by_age_never_removes_open_sessions(store):
    old_open = session(0, open=True, end_reason=None)
    old_closed, new_closed = session(1), session(24 * 60 * 3)
    store.save_sessions([old_open, old_closed, new_closed])
    store.record_sensors("d", at(1), 1, {"t": 1.0})
    store.record_sensors("d", at(24 * 60 * 3), 1, {"t": 2.0})
    store.record_message("d", "info", "old", at(1), 1)
    store.record_message("d", "info", "new", at(24 * 60 * 3), 1)
    store.record_daemon_counts(at(1), 1, {"read_errors": 5, "log_errors": 0})
    store.record_daemon_counts(at(24 * 60 * 3), 1, {"read_errors": 2})
    now = at(24 * 60 * 3 + 60)
    removed = store.prune(now, max_age_s=2 * 86400, max_bytes=10**9, max_messages=1000)
    assert removed == {"sessions": 1, "sensor_buckets": 1, "messages": 1, "measurements": 0,
                       "daemon_counters": 1}  # fmt: skip
    assert store.daemon_counts() == {"read_errors": 2}
    assert store.sessions() == [old_open, new_closed]
    assert store.sensor_summary("d") == [SensorStat("t", 2.0, 2.0, 2.0, at(24 * 60 * 3))]
    assert [m.text for m in store.messages()] == ["new"]


def test_prune_bounds_messages_dropping_oldest(store):
    for i in range(50):
        store.record_message("d", "info", f"m{i}", at(i), 1)
    removed = store.prune(at(60), max_age_s=1e9, max_bytes=10**9, max_messages=10)
    assert removed["messages"] == 40
    assert [m.text for m in store.messages()] == [f"m{i}" for i in range(40, 50)]


def test_prune_by_size_shrinks_file_and_keeps_newest(store):
    recs = [session(i) for i in range(20_000)] + [session(-1, open=True, end_reason=None)]
    store.save_sessions(recs)
    for i in range(200):
        store.record_sensors("d", at(i * 100), 1, {f"k{j}": float(j) for j in range(10)})
    before = store.db_size_bytes()
    limit = 1_000_000
    assert before > 4 * limit
    removed = store.prune(at(30_000), max_age_s=1e9, max_bytes=limit, max_messages=1000)
    assert store.db_size_bytes() <= limit
    kept = store.sessions()
    assert removed["sessions"] == 20_001 - len(kept) and removed["sensor_buckets"] > 0
    assert kept[0] == recs[-1]  # the open session survives though oldest
    assert kept[-1] == recs[-2]  # the newest closed session survives
    assert len(kept) > 1000  # it did not throw away far more than needed
    ends = [s.end for s in kept[1:]]
    assert ends == sorted(ends) and ends[0] > recs[0].end


def test_prune_reports_when_limit_cannot_be_met(store, caplog):
    store.save_session(session(0, open=True, end_reason=None))
    removed = store.prune(at(10), max_age_s=1e9, max_bytes=1, max_messages=10)
    assert removed == {"sessions": 0, "sensor_buckets": 0, "messages": 0, "measurements": 0,
                       "daemon_counters": 0}  # fmt: skip
    assert "nothing left to prune" in caplog.text
    assert len(store.open_sessions()) == 1


def test_purge_collected_keeps_settings_and_status_history(store):
    store.set_setting("user_id", "u")
    change = StatusChange(at(0), None, 1, True, "install")
    store.add_status_change(change)
    store.save_session(session(0))
    store.record_sensors("d", at(0), 1, {"t": 1.0})
    store.record_message("d", "info", "x", at(0), 1)
    store.purge_collected()
    assert store.sessions() == [] and store.messages() == [] and store.devices() == []
    assert store.sensor_summary("d") == []
    assert store.get_setting("user_id") == "u" and store.status_changes() == [change]


def test_purge_leaves_no_copy_in_the_file(store):
    for i in range(500):
        store.record_message("d", "error", f"secret-marker-{i} " * 10, at(i), 1)
    store.purge_collected()
    store.set_setting("after", 1)
    data = store.path.read_bytes() + store.path.with_name("tagstat.db-wal").read_bytes()
    assert b"secret-marker" not in data


_WRITER = """
import datetime as dt, os, sys
from pathlib import Path
from tagstat.store import Store
s = Store.open(Path(sys.argv[1]))
s.set_setting("user_id", "survivor")
s.record_message("daemon", "error", "before the kill", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 1)
os._exit(0)  # no close, no checkpoint
"""


def test_committed_data_survives_process_kill(tmp_path):
    path = tmp_path / "tagstat.db"
    subprocess.run([sys.executable, "-c", _WRITER, str(path)], check=True, timeout=60)
    assert (tmp_path / "tagstat.db-wal").stat().st_size > 0  # the data is only in the WAL
    reopened = Store.open(path)
    assert reopened.recovered_from is None
    assert reopened.get_setting("user_id") == "survivor"
    assert [m.text for m in reopened.messages()] == ["before the kill"]
    reopened.close()


def test_timing_of_10k_sessions(store):
    recs = [session(i, open=i % 10 == 0) for i in range(10_000)]
    started = time.perf_counter()
    store.save_sessions(recs)
    saved = time.perf_counter()
    back = store.sessions()
    read = time.perf_counter()
    assert back == recs
    print(
        f"\n10k sessions: save_sessions {saved - started:.3f} s, sessions() {read - saved:.3f} s, "
        f"file {store.db_size_bytes() / 1e6:.1f} MB"
    )


class FixedClock(Clock):
    def utc_now(self) -> dt.datetime:
        return dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.UTC)


def test_clock_names_the_corrupt_copy(tmp_path):
    path = tmp_path / "tagstat.db"
    path.write_bytes(b"not sqlite at all" * 100)
    store = Store.open(path, clock=FixedClock())
    assert store.recovered_from == tmp_path / "tagstat.db.corrupt-20240506T070809Z"
    store.close()
    again = tmp_path / "again.db"
    again.write_bytes(b"x" * 4096)
    (tmp_path / "again.db.corrupt-20240506T070809Z").write_bytes(b"earlier")
    store = Store.open(again, clock=FixedClock())
    assert store.recovered_from == tmp_path / "again.db.corrupt-20240506T070809Z-1"
    store.close()
