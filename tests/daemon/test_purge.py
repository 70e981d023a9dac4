"""Purge over a real service (store, recorder, outbox) and simulated Time Taggers: nothing
of an earlier session is left in the database file, its WAL or SHM; the settings stay;
a new user id; an open session is not written back; waiting reports are cancelled and
audited; a deletion request for the old user id only when its reports left the computer."""

import datetime as dt
import json

import pytest
from service_sim import MESSAGE, SERIAL, SimService

from tagstat.clock import iso
from tagstat.records import UploadAttempt
from tagstat.status import UsageStatisticsStatus as S
from tagstat.store import Store


@pytest.fixture
def sim(tmp_path):
    s = SimService(tmp_path / "home")
    yield s
    s.close()


def earlier_traces(sim) -> list[bytes]:
    """Session ids and start stamps, device ids and message texts now in the store."""
    store = sim.service.store
    # The status history is kept on purpose, and a session that began with a status
    # change starts at that change's stamp: such a stamp is not a trace of the session.
    kept = {iso(c.at) for c in store.status_changes()}
    traces = []
    for s in store.sessions():
        traces.append(s.session_id.encode())
        traces += [iso(s.start).encode()] if iso(s.start) not in kept else []
    traces += [d.device_id.encode() for d in store.devices()]
    traces += [m.text.encode() for m in store.messages() if m.source != "daemon"]
    return traces


def collect_and_upload(sim) -> None:
    """Sessions, sensors, a device message; then a period report, sent once."""
    sim.poll(5)
    sim.set_status(S.CollectingAndUploading)
    sim.poll(5)
    sim.clock.t += 3600
    sim.service.close_period_if_due()
    entry = sim.service.store.outbox_pending("usage")[0]
    attempt = UploadAttempt(sim.clock.utc_now(), entry.report_id, entry.size_bytes, "delivered")
    sim.service.store.outbox_record(attempt, "delivered", attempts=1)
    sim.poll(3)


def test_after_a_purge_no_earlier_session_is_left_in_the_file(sim):
    collect_and_upload(sim)
    sim.set_status(S.Disabled)  # nothing new is collected after the purge
    traces = earlier_traces(sim)
    assert len(traces) >= 5 and MESSAGE.encode() in traces
    assert all(t in sim.db_bytes() for t in traces)  # the search finds them before
    sim.service.purge()
    sim.poll(3)
    data = sim.db_bytes()
    assert [t for t in traces if t in data] == []
    assert SERIAL.encode() not in data
    sim.close()
    data = sim.db_bytes()
    assert [t for t in traces if t in data] == []


def test_purge_keeps_settings_and_status_history_and_makes_a_new_user_id(sim):
    sim.poll(3)
    sim.set_status(S.CollectingAndUploading)
    store, keeper = sim.service.store, sim.service.keeper
    before_user, history = keeper.user_id, store.status_changes()
    (device,) = store.devices()
    assert store.get_setting(f"msg_cursor:{device.device_id}") is not None
    result = sim.service.purge()
    assert keeper.user_id == result["user_id"] != before_user
    assert keeper.current == S.CollectingAndUploading and store.get_setting("status") == 2
    assert store.status_changes() == history
    assert result["removed"]["sessions"] == 1 and result["removed"]["devices"] == 1
    assert store.sessions() == [] and store.devices() == [] and store.messages() == []
    assert store.get_setting(f"msg_cursor:{device.device_id}") is None  # keyed by device id


def test_an_open_session_is_not_written_back_at_the_next_checkpoint(sim):
    sim.poll(5)
    sim.service.checkpoint()
    (old,) = sim.service.store.open_sessions()
    sim.poll(2)  # the tracker has counted more than the checkpoint holds
    sim.service.purge()
    sim.service.checkpoint()
    assert sim.service.store.sessions() == []
    purged_at = sim.clock.utc_now()
    sim.poll(4)
    sim.service.checkpoint()
    (new,) = sim.service.store.sessions()
    assert new.session_id != old.session_id and new.open
    assert new.start >= purged_at  # a fresh baseline: nothing counted from before
    assert new.bytes_total <= 5 * 50e6


def test_purge_does_not_read_the_device_messages_again(sim):
    sim.poll(5)
    assert [m.text for m in sim.service.store.messages() if m.source != "daemon"]
    sim.service.purge()
    sim.poll(5)
    assert [m.text for m in sim.service.store.messages() if m.source != "daemon"] == []


def test_waiting_reports_are_cancelled_and_audited(sim):
    sim.set_status(S.CollectingAndUploading)
    sim.poll(5)
    sim.clock.t += 3600
    sim.service.close_period_if_due()
    (waiting,) = sim.service.store.outbox_pending("usage")
    result = sim.service.purge()
    assert result["cancelled_reports"] == 1
    audit = [a for a in sim.service.store.upload_audit() if a.report_id == waiting.report_id]
    assert [(a.result, a.detail) for a in audit] == [("cancelled", "purged")]
    assert sim.service.store.outbox_get(waiting.report_id) is None  # its body is gone
    assert result["deletion_request"] is None  # it never left: nothing to delete


def test_a_deletion_request_for_the_old_user_id_when_reports_were_delivered(sim):
    collect_and_upload(sim)
    old_user = sim.service.keeper.user_id
    result = sim.service.purge()
    entry = sim.service.store.outbox_get(result["deletion_request"])
    assert entry.kind == "deletion" and entry.state == "pending"
    assert json.loads(entry.body)["user_id"] == old_user != result["user_id"]
    assert old_user.encode() in sim.db_bytes()  # the deletion request carries it, nothing else


@pytest.mark.parametrize("outcome", ["retry", "exported"])
def test_a_report_that_may_have_arrived_counts_as_delivered(sim, outcome):
    sim.set_status(S.CollectingAndUploading)
    sim.poll(3)
    sim.clock.t += 3600
    sim.service.close_period_if_due()
    (entry,) = sim.service.store.outbox_pending("usage")
    store = sim.service.store
    if outcome == "retry":  # sent, but the answer was lost
        attempt = UploadAttempt(sim.clock.utc_now(), entry.report_id, 1, "retry", None, "timeout")
        store.outbox_record(attempt, attempts=1)
    else:
        store.outbox_mark_exported([entry.report_id], sim.clock.utc_now(), "delivered-by-export")
    assert sim.service.purge()["deletion_request"] is not None


def test_no_deletion_request_when_nothing_left(sim):
    sim.poll(3)
    old_user = sim.service.keeper.user_id
    result = sim.service.purge()
    assert result["deletion_request"] is None
    assert sim.service.store.outbox_pending() == []
    assert old_user.encode() not in sim.db_bytes()  # the old identity is gone entirely


def test_a_purge_under_uploading_restarts_the_period(sim):
    sim.set_status(S.CollectingAndUploading)
    sim.poll(3)
    sim.service.purge()
    assert sim.service.outbox.period_start() == sim.clock.utc_now()
    sim.poll(3)
    report = json.loads(sim.service.get_report())
    assert report["user_id"] == sim.service.keeper.user_id
    assert all(s["start"] >= iso(sim.service.outbox.period_start()) for s in report["sessions"])


def test_no_stale_copy_of_an_updated_row_is_left(tmp_path):
    # Rows updated in place (a message's count, a message cursor) leave their old bytes in
    # the page unless SQLite overwrites freed space, which depends on how it was built:
    # with that off, only rewriting the file (VACUUM) removes them.
    store = Store.open(tmp_path / "t.db")
    store._db.execute("PRAGMA secure_delete = OFF")  # as an upstream build of SQLite
    device_id, at = "ab" * 8, dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    for i in range(300):
        store.record_message(device_id, "warning", "stale-marker of the device", at, 1)
        store.set_setting(f"msg_cursor:{device_id}", {"boot": "b", "seq": i})
    store.purge_collected()
    path = store.path
    data = b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))
    assert b"stale-marker" not in data and device_id.encode() not in data
    assert store._pragma("secure_delete") == 0  # the connection's setting is restored
    store.close()
