"""Deletion, statistics with session upsert, persistence and server faults, over real HTTP."""

import logging
import sqlite3
import threading
import uuid

import pytest
from collector_fixtures import (
    USER,
    Collector,
    deletion_request,
    device,
    session,
    usage_report,
)

from tagstat.collector import storage
from tagstat.collector.errors import CollectorError
from tagstat.collector.storage import CollectorStore

OTHER_USER = "7d4c1b2a-1111-4a2b-8c3d-9e8f7a6b5c4d"


def rows(db_path, table: str, user_id: str) -> int:
    with sqlite3.connect(db_path) as conn:
        query = f"SELECT COUNT(*) FROM {table} WHERE user_id = ?"
        return conn.execute(query, (user_id,)).fetchone()[0]


def test_deletion_removes_everything_of_that_user_only(collector):
    for _ in range(2):
        assert collector.post(usage_report()).json()["status"] == "stored"
    kept = usage_report(user_id=OTHER_USER)
    collector.post(kept)
    request = deletion_request(USER)
    r = collector.post(request)
    assert r.status_code == 200
    assert r.json() == {
        "status": "deleted",
        "report_id": request["report_id"],
        "removed_reports": 2,
    }
    for table in ("sessions", "devices"):
        assert rows(collector.db_path, table, USER) == 0
        assert rows(collector.db_path, table, OTHER_USER) == 1
    listed = [(x["kind"], x["user_id"]) for x in collector.reports()]
    assert listed == [("usage", OTHER_USER), ("deletion", USER)]


def test_a_report_of_a_deleted_user_is_discarded_not_stored(collector):
    early = usage_report()
    collector.post(early)
    collector.post(deletion_request())
    late = usage_report()
    for report in (late, early):  # a new one, and a retry of one from before the deletion
        r = collector.post(report)
        assert r.status_code == 200
        assert r.json() == {"status": "discarded", "report_id": report["report_id"]}
    assert rows(collector.db_path, "reports", USER) == 1  # the deletion request itself
    assert collector.get(f"/v1/reports/{early['report_id']}").status_code == 404
    assert collector.stats()["models"] == []


def test_a_repeated_deletion_request_is_carried_out_and_kept_once(collector):
    request = deletion_request()
    collector.post(usage_report())
    assert collector.post(request).json()["removed_reports"] == 1
    again = collector.post(request)
    assert again.status_code == 200 and again.json()["removed_reports"] == 0
    assert [x["kind"] for x in collector.reports()] == ["deletion"]


def test_stats_count_distinct_devices_and_take_the_median_per_model(collector):
    ultra_a, ultra_b, tt20 = "a1" * 8, "b2" * 8, "c3" * 8
    collector.post(usage_report(
        devices=[device(ultra_a), device(ultra_b), device(tt20, "Time Tagger 20")],
        sessions=[session("s1", 1e8, device_id=ultra_a), session("s2", 3e8, device_id=ultra_b),
                  session("s3", 4e6, device_id=tt20)],
    ))  # fmt: skip
    # Another install with a device of the same pseudonym: a different device.
    collector.post(usage_report(
        user_id=OTHER_USER, devices=[device(ultra_a)],
        sessions=[session("s1", 2e8, device_id=ultra_a), session("s4", 6e8, device_id=ultra_a)],
    ))  # fmt: skip
    stats = collector.stats()
    assert stats["models"] == [
        {"model": "Time Tagger 20", "devices": 1, "sessions": 1,
         "median_session_avg_bytes_per_s": 4e6},
        {"model": "Time Tagger Ultra", "devices": 3, "sessions": 4,
         "median_session_avg_bytes_per_s": 2.5e8},
    ]  # fmt: skip
    assert stats["reports"] == 2 and stats["reports_by_kind"] == {"usage": 2}


def test_an_open_session_reported_again_counts_once_with_its_latest_values(collector):
    def report(day, avg, open_):
        return usage_report(generated_at=f"2026-03-0{day}T00:00:00.000Z",
                            sessions=[session("s1", avg, open_=open_)])  # fmt: skip

    collector.post(report(2, 1e8, True))
    collector.post(report(3, 5e8, False))
    collector.post(report(1, 7.0, True))  # generated earlier, delivered late: does not win
    (ultra,) = collector.stats()["models"]
    assert ultra["sessions"] == 1 and ultra["median_session_avg_bytes_per_s"] == 5e8
    assert collector.stats()["reports"] == 3


def test_a_session_of_a_device_described_in_an_earlier_report_gets_its_model(collector):
    collector.post(usage_report(sessions=[]))
    collector.post(usage_report(devices=[], sessions=[session("s9", 3e8)]))
    (ultra,) = collector.stats()["models"]
    assert ultra["sessions"] == 1 and ultra["devices"] == 1


def test_reports_persist_across_a_restart(tmp_path):
    report = usage_report()
    first = Collector(tmp_path / "c.db")
    first.post(report)
    first.stop()
    second = Collector(tmp_path / "c.db")
    try:
        assert second.post(report).json()["status"] == "duplicate"
        assert second.stats()["reports"] == 1
    finally:
        second.stop()


def test_the_report_list_pages(collector):
    ids = [usage_report() for _ in range(3)]
    for report in ids:
        collector.post(report)
    page = collector.get("/v1/reports?limit=2&offset=1").json()["reports"]
    assert [x["report_id"] for x in page] == [r["report_id"] for r in ids[1:]]


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "c.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(CollectorError, match=f"database {path}: file is not a database"):
        CollectorStore(path)
    assert path.read_bytes().startswith(b"not a database")  # left alone


def test_a_database_of_a_newer_collector_is_refused(tmp_path):
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(CollectorError, match="made by a newer collector"):
        CollectorStore(path)


def test_a_database_busy_past_its_timeout_is_503_with_retry_after(collector, monkeypatch):
    monkeypatch.setattr(storage, "BUSY_TIMEOUT_S", 0.1)
    holder = sqlite3.connect(collector.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        r = collector.post(usage_report())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json() == {"error": "database busy, retry later"}
    assert collector.post(usage_report()).json()["status"] == "stored"


def test_a_server_fault_is_a_logged_500(collector, monkeypatch, caplog):
    def broken_disk(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(collector.app.store, "ingest", broken_disk)
    with caplog.at_level(logging.ERROR, logger="tagstat.collector.app"):
        r = collector.post(usage_report())
    assert r.status_code == 500
    assert r.json() == {"error": "internal error of the collector (see its log)"}
    assert "disk I/O error" in caplog.text


def test_concurrent_reports_of_many_users_are_all_stored(collector):
    reports = [usage_report(user_id=str(uuid.uuid4())) for _ in range(24)]
    answers = []
    threads = [
        threading.Thread(target=lambda r=r: answers.append(collector.post(r))) for r in reports
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(a.json()["status"] for a in answers) == ["stored"] * 24
    assert collector.stats()["models"][0]["devices"] == 24
