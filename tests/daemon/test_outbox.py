"""The outbox over a real store: periods, empty periods, limits, opting out, restarts,
the migration that adds it, and retention of what was sent."""

import dataclasses
import datetime as dt
import json
import re
import sqlite3
from pathlib import Path

from tagstat import migrations
from tagstat.config import Config
from tagstat.outbox import Outbox
from tagstat.records import DeviceRecord, SessionRecord, UploadAttempt
from tagstat.report import deletion_request
from tagstat.status import UsageStatisticsStatus as S
from tagstat.status_keeper import StatusKeeper
from tagstat.store import Store

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DEV = "ab" * 8


def make(store, clock, status=S.Collecting, **config) -> tuple[Outbox, StatusKeeper]:
    keeper = StatusKeeper(store, clock, status)
    cfg = dataclasses.replace(Config(), upload_interval_s=3600.0, **config)
    outbox = Outbox(store, keeper, clock, cfg, host=lambda: {"cpu": None})
    outbox.start()
    return outbox, keeper


def deliver(store, clock, report_id) -> None:
    """As the uploader records a 2xx answer."""
    attempt = UploadAttempt(clock.now, report_id, 1, "delivered", 201)
    store.outbox_record(attempt, "delivered", attempts=1, delivered_at=clock.now)


def switch(outbox, keeper, status) -> None:
    old = keeper.set(status, persistent=True)
    outbox.status_changed(old, status)


def session(store, sid: str, start: dt.datetime, status: int, seconds: float = 60.0) -> None:
    store.upsert_device(DeviceRecord(DEV, "Time Tagger Ultra", "[serial:abababab]", "super",
                                     "1.30", {}, {}, start, start))  # fmt: skip
    store.save_session(SessionRecord(
        sid, DEV, status, start, start + dt.timedelta(seconds=seconds), seconds, 10**9, 10**8,
        1e7, 2e7, "super", {}, False, "idle", "b", 0, 0, 0, start,
    ))  # fmt: skip


def test_a_period_report_holds_only_status_2_data_of_the_period(store, clock):
    outbox, keeper = make(store, clock)
    session(store, "before", T0 - dt.timedelta(hours=1), 1)
    store.record_message(DEV, "warning", "old warning", T0 - dt.timedelta(minutes=5), 1)
    clock.advance(10)
    switch(outbox, keeper, S.CollectingAndUploading)
    assert outbox.period_start() == clock.now
    session(store, "during", clock.now + dt.timedelta(seconds=5), 2)
    store.record_message(DEV, "warning", "new warning", clock.now + dt.timedelta(seconds=6), 2)
    clock.advance(3599)
    outbox.tick()
    assert store.outbox_pending() == []  # not over yet
    clock.advance(1)
    outbox.tick()
    (entry,) = store.outbox_pending("usage")
    report = json.loads(entry.body)
    assert report["kind"] == "usage" and report["report_id"] == entry.report_id
    assert [s["session_id"] for s in report["sessions"]] == ["during"]
    assert [m["text"] for m in report["messages"]] == ["new warning"]
    assert report["period"] == {"start": "2026-03-01T12:00:10.000Z",
                                "end": "2026-03-01T13:00:10.000Z"}  # fmt: skip
    assert entry.size_bytes == len(entry.body) and entry.user_id == keeper.user_id
    assert outbox.period_start() == clock.now  # the next period starts where this one ended


def test_the_report_shown_is_the_report_sent(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading)
    session(store, "s1", clock.now + dt.timedelta(seconds=1), 2)
    clock.advance(100)
    shown = outbox.usage_report(outbox.period_start(), clock.now)
    report_id = outbox.close_period()
    sent = json.loads(store.outbox_get(report_id).body)
    shown["report_id"] = sent["report_id"]
    assert shown == sent


def test_an_empty_period_is_skipped_and_a_new_one_starts(store, clock):
    outbox, _ = make(store, clock, S.CollectingAndUploading)
    clock.advance(3600)
    outbox.tick()
    assert store.outbox_pending() == [] and outbox.period_start() == clock.now


def test_no_periods_outside_status_2(store, clock):
    outbox, keeper = make(store, clock)
    session(store, "s", T0, 1)
    clock.advance(10 * 3600)
    outbox.tick()
    assert outbox.close_period() is None and store.outbox_pending() == []
    assert outbox.seconds_to_period_end() is None and outbox.sendable_kinds() == ("deletion",)


def test_opting_out_cancels_queues_one_deletion_and_rotates_the_user(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading)
    old_user = keeper.user_id
    session(store, "s", clock.now, 2)
    clock.advance(3600)
    sent = outbox.close_period()
    deliver(store, clock, sent)  # one report of this user id reached a collector
    session(store, "t", clock.now, 2)
    clock.advance(3600)
    queued = outbox.close_period()
    switch(outbox, keeper, S.Disabled)
    assert store.outbox_get(queued).state == "cancelled"
    (deletion,) = store.outbox_pending()
    assert deletion.kind == "deletion" and deletion.quota_exempt
    assert json.loads(deletion.body) == {
        "schema_version": 2, "kind": "deletion", "report_id": deletion.report_id,
        "generated_at": "2026-03-01T14:00:00.000Z", "user_id": old_user,
    }  # fmt: skip
    assert keeper.user_id != old_user and outbox.period_start() is None
    assert outbox.sendable_kinds() == ("deletion",)  # deletions go out even when Disabled
    assert outbox.next_to_send().report_id == deletion.report_id
    results = [(a.report_id, a.result) for a in store.upload_audit()]
    assert results == [(sent, "delivered"), (queued, "cancelled")]


def test_opting_out_asks_no_deletion_when_nothing_left_the_computer(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading)  # no upload_url at all
    old_user = keeper.user_id
    session(store, "s", clock.now, 2)
    clock.advance(3600)
    queued = outbox.close_period()
    switch(outbox, keeper, S.Collecting)
    assert store.outbox_get(queued).state == "cancelled" and store.outbox_pending() == []
    assert keeper.user_id != old_user


def test_a_report_that_may_be_on_the_wire_counts_as_left(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading)
    outbox.sending_configured = lambda: True  # an uploader with a collector to send to
    session(store, "s", clock.now, 2)
    clock.advance(3600)
    outbox.close_period()  # due now: the upload thread may be sending it
    switch(outbox, keeper, S.Collecting)
    assert [e.kind for e in store.outbox_pending()] == ["deletion"]


def test_re_entering_status_2_starts_a_fresh_period(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading)
    session(store, "first", clock.now, 2)
    switch(outbox, keeper, S.Collecting)
    clock.advance(600)
    switch(outbox, keeper, S.CollectingAndUploading)
    session(store, "second", clock.now + dt.timedelta(seconds=1), 2)
    clock.advance(3600)
    report = json.loads(store.outbox_get(outbox.close_period()).body)
    assert [s["session_id"] for s in report["sessions"]] == ["second"]
    assert report["user_id"] == keeper.user_id


def test_a_restart_cancels_reports_left_by_a_crash_during_opt_out(tmp_path, clock):
    store = Store.open(tmp_path / "t.db")
    outbox, keeper = make(store, clock, S.CollectingAndUploading)
    session(store, "s", clock.now, 2)
    clock.advance(3600)
    queued = outbox.close_period()
    keeper.set(S.Collecting, persistent=True)  # ... and the daemon dies before opt_out
    store.close()
    store = Store.open(tmp_path / "t.db")
    outbox, keeper = make(store, clock)
    assert store.outbox_get(queued).state == "cancelled" and outbox.period_start() is None
    store.close()


def test_a_restart_under_status_2_keeps_the_period(tmp_path, clock):
    store = Store.open(tmp_path / "t.db")
    outbox, _ = make(store, clock, S.CollectingAndUploading)
    start = outbox.period_start()
    store.close()
    clock.advance(100)
    store = Store.open(tmp_path / "t.db")
    outbox, _ = make(store, clock)
    assert outbox.period_start() == start
    store.close()


def test_limits_drop_the_oldest_usage_reports_never_deletions(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading, outbox_max_reports=3)
    ids = []
    for i in range(5):
        session(store, f"s{i}", clock.now, 2)
        clock.advance(3600)
        ids.append(outbox.close_period())
    assert [e.report_id for e in store.outbox_pending("usage")] == ids[2:]
    assert [store.outbox_get(i).state for i in ids[:2]] == ["dropped", "dropped"]
    assert {a.result for a in store.upload_audit()} == {"dropped"}
    size = store.outbox_get(ids[-1]).size_bytes
    outbox.reconfigure(dataclasses.replace(outbox._config, outbox_max_bytes=2 * size + 10))
    assert outbox.enforce_limits() == 1
    deliver(store, clock, ids[-1])
    switch(outbox, keeper, S.Collecting)
    for i in range(5):  # deletions are exempt from both limits
        switch(outbox, keeper, S.CollectingAndUploading)
        session(store, f"u{i}", clock.now, 2)
        clock.advance(3600)
        deliver(store, clock, outbox.close_period())
        switch(outbox, keeper, S.Collecting)
    assert len(store.outbox_pending("deletion")) == 6


def test_summary_names_the_endpoint_waiting_and_last_delivery(store, clock):
    outbox, _ = make(store, clock, S.CollectingAndUploading, upload_url="https://c.example")
    session(store, "s", clock.now, 2)
    clock.advance(3600)
    report_id = outbox.close_period()
    summary = outbox.summary()
    assert summary["endpoint"] == "https://c.example" and summary["pending"] == 1
    assert summary["last_delivery"] is None
    store.outbox_record(UploadAttempt(clock.now, report_id, 1, "delivered", 200), "delivered",
                        delivered_at=clock.now)  # fmt: skip
    assert outbox.summary()["last_delivery"] == "2026-03-01T13:00:00.000Z"
    assert outbox.summary()["pending"] == 0


def test_delivered_state_wins_over_a_cancel_that_raced_the_upload(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading)
    session(store, "s", clock.now, 2)
    clock.advance(3600)
    report_id = outbox.close_period()
    switch(outbox, keeper, S.Collecting)  # cancelled while (say) it was on the wire
    store.outbox_record(UploadAttempt(clock.now, report_id, 1, "retry"), "pending")
    assert store.outbox_get(report_id).state == "cancelled"  # a retry does not revive it
    store.outbox_record(UploadAttempt(clock.now, report_id, 1, "delivered"), "delivered")
    assert store.outbox_get(report_id).state == "delivered"  # it did arrive


def test_retention_prunes_what_was_sent_and_the_audit_keeps_pending(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading, outbox_max_reports=1)
    for i in range(2):
        session(store, f"s{i}", clock.now, 2)
        clock.advance(3600)
        outbox.close_period()
    (pending,) = store.outbox_pending()
    removed = store.prune_uploads(clock.now + dt.timedelta(days=1))
    assert removed == {"outbox": 1, "upload_audit": 1}  # the dropped one and its audit line
    assert store.outbox_pending() == [pending]


def test_outbox_get_by_unique_prefix(store, clock):
    outbox, keeper = make(store, clock, S.CollectingAndUploading)
    session(store, "s", clock.now, 2)
    clock.advance(3600)
    report_id = outbox.close_period()
    assert store.outbox_get(report_id[:8]).report_id == report_id
    assert store.outbox_get("ffffffff-0000") is None


def test_migration_2_upgrades_a_schema_1_database_keeping_its_data(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    one = migrations.Migration(1, "initial schema", migrations.MIGRATIONS[0].statements)
    migrations._apply(conn, one)
    conn.execute("INSERT INTO settings VALUES ('user_id', '\"u-1\"')")
    conn.commit()
    conn.close()
    store = Store.open(path)
    try:
        assert store.schema_version() >= 2 and store.get_setting("user_id") == "u-1"
        assert store.outbox_pending() == [] and store.upload_audit() == []
    finally:
        store.close()


def test_every_deletion_request_field_is_documented():
    data_md = (Path(__file__).parents[2] / "docs" / "DATA.md").read_text()
    section = data_md[data_md.index("## Uploads") :]
    documented = set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.M))
    assert set(deletion_request(user_id="u", now=T0)) <= documented
