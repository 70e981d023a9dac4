"""Export over a real service and simulated Time Taggers: what is exported is exactly what
would be uploaded, byte for byte; it is marked delivered-by-export and never sent; a
commit after consent was withdrawn or a purge marks nothing; the file is 0600, written
atomically, never over an existing one without force, and holds no serial; a round trip
through the collector's importer stores each report once, however often it is imported."""

import json
import os
import stat

import pytest
from service_sim import SERIAL, SimService

from tagstat import export
from tagstat.collector.importer import import_file
from tagstat.collector.storage import CollectorStore
from tagstat.export import ExportError
from tagstat.records import UploadAttempt
from tagstat.status import UsageStatisticsStatus as S


@pytest.fixture
def sim(tmp_path):
    s = SimService(tmp_path / "home")
    yield s
    s.close()


def queue_report(sim) -> None:
    sim.set_status(S.CollectingAndUploading)
    sim.poll(4)
    sim.clock.t += 3600
    sim.service.close_period_if_due()


def deliver_waiting(sim) -> None:
    """Mark every waiting usage report delivered, as the uploader does on a 2xx answer."""
    now = sim.clock.utc_now()
    for e in sim.service.store.outbox_pending("usage"):
        attempt = UploadAttempt(now, e.report_id, e.size_bytes, "delivered", 201)
        sim.service.store.outbox_record(attempt, "delivered", attempts=1, delivered_at=now)


def test_export_hands_out_the_exact_bodies_and_marks_them_exported(sim):
    queue_report(sim)
    (entry,) = sim.service.store.outbox_pending()
    begun = sim.service.export_begin()
    assert [r["body"].encode() for r in begun["reports"]] == [entry.body]
    assert sim.service.store.outbox_pending()[0].state == "pending"  # begin marks nothing
    assert sim.service.export_commit(begun["token"]) == {"exported": 1, "already_delivered": 0}
    stored = sim.service.store.outbox_get(entry.report_id)
    assert stored.state == "exported" and stored.delivered_at == sim.clock.utc_now()
    (line,) = [u for u in sim.service.list_uploads() if u["report_id"] == entry.report_id]
    assert (line["result"], line["detail"]) == ("exported", "delivered-by-export")
    # Not uploaded afterwards: the uploader takes only pending entries.
    assert sim.service.store.outbox_next_due(sim.clock.utc_now(), ("usage", "deletion")) is None
    assert sim.service.export_begin()["reports"] == []


def test_export_closes_the_current_period_first(sim):
    sim.set_status(S.CollectingAndUploading)
    sim.poll(4)
    sim.service.checkpoint()
    (session,) = sim.service.store.sessions(min_status=2)
    begun = sim.service.export_begin()
    (report,) = [json.loads(r["body"]) for r in begun["reports"]]
    assert [s["session_id"] for s in report["sessions"]] == [session.session_id]
    assert sim.service.outbox.period_start() == sim.clock.utc_now()


def test_export_honours_consent_like_uploads(sim):
    queue_report(sim)
    deliver_waiting(sim)
    queue_report(sim)
    sim.set_status(S.Collecting)  # opting out cancels the report and asks for deletion
    sim.poll(3)
    kinds = [r["kind"] for r in sim.service.export_begin()["reports"]]
    assert kinds == ["deletion"]
    sim.set_status(S.Disabled)
    assert [r["kind"] for r in sim.service.export_begin()["reports"]] == ["deletion"]


@pytest.mark.parametrize("between", ["opt-out", "purge"])
def test_a_commit_after_consent_was_withdrawn_marks_nothing(sim, between):
    queue_report(sim)
    begun = sim.service.export_begin()
    if between == "opt-out":
        sim.set_status(S.Collecting)
    else:
        sim.service.purge()
    with pytest.raises(ExportError, match="cancelled or purged"):
        sim.service.export_commit(begun["token"])
    states = {e.state for e in sim.service.store.outbox_pending()}
    assert "exported" not in states
    assert [a.result for a in sim.service.store.upload_audit() if a.result == "exported"] == []


def test_an_unknown_or_used_token_is_refused(sim):
    queue_report(sim)
    with pytest.raises(ExportError, match="does not know this export"):
        sim.service.export_commit("nonsense")
    begun = sim.service.export_begin()
    sim.service.export_commit(begun["token"])
    with pytest.raises(ExportError, match="does not know this export"):
        sim.service.export_commit(begun["token"])


def test_a_report_delivered_meanwhile_stays_delivered(sim):
    queue_report(sim)
    begun = sim.service.export_begin()
    (entry,) = sim.service.store.outbox_pending()
    attempt = UploadAttempt(sim.clock.utc_now(), entry.report_id, entry.size_bytes, "delivered")
    sim.service.store.outbox_record(attempt, "delivered", attempts=1)
    assert sim.service.export_commit(begun["token"]) == {"exported": 0, "already_delivered": 1}
    assert sim.service.store.outbox_get(entry.report_id).state == "delivered"


# -- the file ------------------------------------------------------------------------------


def write_export(sim, path, force=False):
    """What `tagstat export` does, without the socket."""
    export.check_target(path, force)
    begun = sim.service.export_begin()
    tmp = export.write_temporary(path, export.export_lines(begun))
    sim.service.export_commit(begun["token"])
    export.place(tmp, path, force)
    return begun


def test_the_file_is_the_header_then_the_exact_bodies(sim, tmp_path):
    queue_report(sim)
    deliver_waiting(sim)
    sim.set_status(S.Collecting)  # a deletion request too
    sim.set_status(S.CollectingAndUploading)
    queue_report(sim)
    bodies = [e.body for e in sim.service.store.outbox_pending()]
    assert len(bodies) == 2
    path = tmp_path / "out.jsonl"
    write_export(sim, path)
    header, *lines = path.read_bytes().split(b"\n")[:-1]
    head = json.loads(header)
    assert head["format"] == "tagstat-export" and head["version"] == 1
    assert head["reports"] == 2 and head["exported_at"].endswith("Z")
    assert lines == bodies
    assert SERIAL.encode() not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out.jsonl"]  # no temporary


def test_the_file_is_0600_whatever_the_umask(sim, tmp_path):
    queue_report(sim)
    old = os.umask(0)
    try:
        path = tmp_path / "out.jsonl"
        write_export(sim, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_file_is_kept_unless_forced(sim, tmp_path):
    queue_report(sim)
    path = tmp_path / "out.jsonl"
    path.write_text("precious")
    with pytest.raises(ExportError, match="exists; pass --force"):
        write_export(sim, path)
    assert path.read_text() == "precious"
    assert sim.service.store.outbox_pending()[0].state == "pending"  # nothing marked
    write_export(sim, path, force=True)
    assert path.read_bytes().startswith(b'{"format":"tagstat-export"')
    with pytest.raises(ExportError, match="is a directory"):
        export.check_target(tmp_path, True)
    with pytest.raises(ExportError, match="does not exist"):
        export.check_target(tmp_path / "nowhere" / "x.jsonl", False)


def test_a_file_that_appears_meanwhile_is_not_overwritten(tmp_path):
    target = tmp_path / "out.jsonl"
    tmp = export.write_temporary(target, [b"new\n"])
    target.write_text("arrived first")
    with pytest.raises(ExportError, match="complete in"):
        export.place(tmp, target, force=False)
    assert target.read_text() == "arrived first" and tmp.read_bytes() == b"new\n"


def test_a_round_trip_stores_each_report_once_however_often_imported(sim, tmp_path):
    queue_report(sim)
    write_export(sim, tmp_path / "first.jsonl")  # exported: it left the computer
    sim.set_status(S.Collecting)
    sim.set_status(S.CollectingAndUploading)
    queue_report(sim)
    path = tmp_path / "out.jsonl"
    write_export(sim, path)
    store = CollectorStore(tmp_path / "collector.db")
    first, second = import_file(path, store), import_file(path, store)
    assert (first.stored, first.deleted, first.rejected) == (1, 1, [])
    assert (second.stored, second.duplicate, second.deleted) == (0, 1, 1)
    kinds = sorted(r["kind"] for r in store.list_reports())
    assert kinds == ["deletion", "usage"]  # the first user's report was deleted, as asked
    store.close()
