"""Uploading end to end: the real tagstatd, the real collector (a subprocess) on loopback,
and the fault proxy between them.

Short periods and backoffs come from the environment. Shown here: exactly-once
delivery under every injected fault, counted on both sides; nothing recorded
before the switch to CollectingAndUploading in any upload; no serial in any
byte sent or stored; the API and the poll loop answering while the collector
hangs (latencies printed); a deletion request delivered and carried out; and
`tagstat report --pending` showing the bytes that are later sent.
"""

import json
import re
import signal
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for
from faultproxy import Action

from tagstat.clock import parse_iso

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SERIAL = "1740000JEH"
FAST = {
    "TAGSTAT_UPLOAD_INTERVAL_S": "1",
    "TAGSTAT_UPLOAD_BACKOFF_INITIAL_S": "0.2",
    "TAGSTAT_UPLOAD_BACKOFF_MAX_S": "1",
    "TAGSTAT_UPLOAD_CONNECT_TIMEOUT_S": "1",
    "TAGSTAT_UPLOAD_READ_TIMEOUT_S": "2",
    "TAGSTAT_CHECKPOINT_S": "0.5",
}


@pytest.fixture
def scenario(home, write_scenario):
    return write_scenario(home / "s.toml", [{
        "serial": SERIAL, "model": "Time Tagger Ultra", "usb_speed": "super",
        "rate": [[0, 40e6]],
        "messages": [[0.2, "warning", f"TimeTagger '{SERIAL}': overflow in /home/alice/x.ttbin"]],
    }])  # fmt: skip


def audit(daemon) -> list[dict]:
    return daemon.client.uploads()


def delivered_ids(daemon) -> set[str]:
    return {a["report_id"] for a in audit(daemon) if a["result"] in ("delivered", "duplicate")}


def key_of(request: bytes) -> str:
    return re.search(rb"Idempotency-Key: ([0-9a-f-]+)", request).group(1).decode()


def outbox_rows(home: Path) -> list[tuple]:
    conn = sqlite3.connect(f"{(home / 'tagstat.db').as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT report_id, kind, state, user_id, body FROM outbox").fetchall()
    finally:
        conn.close()


def uploading(daemon) -> None:
    daemon.client.set_status("CollectingAndUploading")


# -- exactly once ----------------------------------------------------------------------------


def test_exactly_once_delivery_under_injected_faults(home, daemons, scenario, collector, proxy):
    env = {**FAST, "TAGSTAT_UPLOAD_URL": proxy.url}
    d = daemons(scenario, env).start()
    uploading(d)
    wait_for(lambda: delivered_ids(d), "a first delivery")

    def through(action: Action, then=None) -> str:
        """Apply one fault to the next upload; wait until that report is delivered anyway."""
        proxy.push(action)
        wait_for(action.reached.is_set, f"the {action.kind} fault")
        if then:
            then(action)
        wait_for(action.done.is_set, f"the end of the {action.kind} fault")
        report_id = key_of(proxy.captured[proxy.actions_applied.index(action)])
        wait_for(lambda: report_id in delivered_ids(d), f"delivery after {action.kind}")
        return report_id

    through(Action("status", code=503, retry_after="1"))
    through(Action("reset"))
    through(Action("forward_reset"))  # stored, the daemon never hears: resent, duplicate
    through(Action("delay", seconds=1.0))  # slow, within the read timeout
    through(Action("delay", seconds=3.0))  # beyond it: a timeout, stored anyway

    def kill_collector(action):  # it has half the body when it dies
        collector.kill()
        action.release()
        collector.start()
        proxy.upstream = ("127.0.0.1", collector.port)

    through(Action("split"), kill_collector)

    # kill -9 of the daemon after the collector stored the report, before the daemon knew.
    held = Action("hold")
    proxy.push(held)
    wait_for(held.reached.is_set, "a held answer")
    assert held.answer_status == 200
    d.stop(signal.SIGKILL)
    held.release()
    held_id = key_of(proxy.captured[proxy.actions_applied.index(held)])
    assert held_id not in {r[0] for r in outbox_rows(home) if r[2] == "delivered"}
    d = daemons(scenario, env).start()
    wait_for(lambda: held_id in delivered_ids(d), "the resend after kill -9")

    assert d.stop() == 0  # a clean stop queues a final report and sends it
    rows = outbox_rows(home)
    assert [r for r in rows if r[2] != "delivered"] == []
    ours = {r[0] for r in rows}
    theirs = [r["report_id"] for r in collector.reports() if r["kind"] == "usage"]
    sent = [key_of(raw) for raw in proxy.captured]
    print(
        f"\nreports: daemon delivered {len(ours)}, collector stored {len(theirs)} "
        f"({len(set(theirs))} distinct), requests sent {len(sent)} ({len(set(sent))} distinct)"
    )
    assert len(theirs) == len(set(theirs)) and set(theirs) == ours
    assert len(sent) > len(set(sent))  # resends happened, and the collector kept one of each
    assert set(sent) == ours


# -- consent, privacy ------------------------------------------------------------------------


def test_nothing_from_before_the_switch_and_no_serial_in_any_byte_sent(
    home, daemons, scenario, collector, proxy
):
    d = daemons(scenario, {**FAST, "TAGSTAT_UPLOAD_URL": proxy.url}).start()
    before = d.wait_until(
        lambda: (r := d.report())["sessions"] and r["messages"] and r, what="local data"
    )
    early_sessions = {s["session_id"] for s in before["sessions"]}
    switch_at = parse_iso(d.client.set_status("CollectingAndUploading")["since"])
    wait_for(lambda: len([r for r in collector.reports() if r["kind"] == "usage"]) >= 3,
             "three reports at the collector")  # fmt: skip
    assert d.stop() == 0
    stored = [collector.body(r["report_id"]) for r in collector.reports()]
    for body in stored:
        report = json.loads(body)
        assert report["kind"] == "usage" and report["status"] == "CollectingAndUploading"
        assert not {s["session_id"] for s in report["sessions"]} & early_sessions
        assert all(parse_iso(m["first_seen"]) >= switch_at for m in report["messages"])
        assert parse_iso(report["period"]["start"]) >= switch_at
    assert any(json.loads(b)["sessions"] for b in stored)
    collector.stop()
    sent = proxy.captured + proxy.bodies()
    files = [p.read_bytes() for p in collector.db.parent.glob("collector.db*")]
    for blob in sent + stored + files:
        for form in (SERIAL.encode(), SERIAL.lower().encode(), SERIAL.encode("utf-16-le")):
            assert form not in blob


def test_deletion_request_is_delivered_and_carried_out(home, daemons, scenario, collector):
    d = daemons(scenario, {**FAST, "TAGSTAT_UPLOAD_URL": collector.url}).start()
    uploading(d)
    old_user = d.report()["user_id"]
    wait_for(lambda: [r for r in collector.reports() if r["user_id"] == old_user],
             "a report of the first user")  # fmt: skip
    d.client.set_status("Collecting")
    new_user = d.report()["user_id"]
    assert new_user != old_user

    def deleted():
        kinds = {(r["kind"], r["user_id"]) for r in collector.reports()}
        return ("deletion", old_user) in kinds and ("usage", old_user) not in kinds

    wait_for(deleted, "the deletion at the collector")
    rows = outbox_rows(home)
    (deletion,) = [r for r in rows if r[1] == "deletion"]
    assert deletion[2] == "delivered" and deletion[3] == old_user
    assert all(r[2] in ("delivered", "cancelled") for r in rows)
    assert d.client.status()["upload"]["pending"] == 0
    assert d.stop() == 0


# -- never in the way ------------------------------------------------------------------------


def test_api_and_poll_loop_answer_while_the_collector_hangs(home, daemons, scenario, proxy):
    env = {**FAST, "TAGSTAT_UPLOAD_URL": proxy.url, "TAGSTAT_UPLOAD_READ_TIMEOUT_S": "30"}
    d = daemons(scenario, env).start()
    hang = proxy.push(Action("hang"))[0]
    uploading(d)
    wait_for(hang.reached.is_set, "an upload to hang")
    status_ms, report_ms, ends = [], [], []
    until = time.monotonic() + 3.0
    while time.monotonic() < until:
        t0 = time.monotonic()
        d.client.status()
        t1 = time.monotonic()
        report = json.loads(d.client.report())
        t2 = time.monotonic()
        status_ms.append((t1 - t0) * 1000)
        report_ms.append((t2 - t1) * 1000)
        ends += [s["end"] for s in report["sessions"] if s["open"]]
    pending = d.client.pending_report()
    hang.release()
    print(f"\nwhile the collector hangs: status median {statistics.median(status_ms):.1f} ms, "
          f"max {max(status_ms):.1f} ms; report median {statistics.median(report_ms):.1f} ms, "
          f"max {max(report_ms):.1f} ms; {len(set(ends))} poll updates in 3 s")  # fmt: skip
    assert max(status_ms) < 1000 and max(report_ms) < 1000
    assert len(set(ends)) >= 4  # the poll loop went on (0.25 s polls, 0.5 s checkpoints)
    assert pending["pending"] is True  # periods closed and queued meanwhile
    assert d.stop() == 0


def test_pending_report_is_byte_for_byte_what_is_sent(home, daemons, scenario, collector,
                                                      run_cli):  # fmt: skip
    d = daemons(scenario, {**FAST, "TAGSTAT_UPLOAD_URL": ""}).start()
    uploading(d)
    assert "none configured" in run_cli(home, "status").stdout
    wait_for(lambda: d.client.pending_report()["pending"], "a queued report")
    shown = run_cli(home, "report", "--pending").stdout
    report_id = json.loads(shown)["report_id"]
    assert run_cli(home, "uploads", "show", report_id[:8]).stdout == shown
    assert d.stop() == 0
    d = daemons(scenario, {**FAST, "TAGSTAT_UPLOAD_URL": collector.url}).start()
    wait_for(lambda: report_id in delivered_ids(d), "delivery of the shown report")
    assert collector.body(report_id) == shown.encode()
    listing = run_cli(home, "uploads").stdout
    assert report_id in listing and "delivered" in listing
    rows = json.loads(run_cli(home, "uploads", "--json").stdout)
    assert {"at", "report_id", "size_bytes", "result"} <= set(rows[0])
    assert "last delivered" in run_cli(home, "status").stdout
    assert d.stop() == 0


def test_no_upload_before_consent_even_with_an_endpoint(home, daemons, scenario, collector):
    d = daemons(scenario, {**FAST, "TAGSTAT_UPLOAD_URL": collector.url}).start()
    d.wait_until(lambda: d.report()["sessions"], what="a session")
    time.sleep(2.5)  # nothing to wait on when nothing may happen: > two upload intervals
    assert d.stop() == 0
    assert collector.reports() == [] and outbox_rows(home) == []


def test_bad_upload_url_is_a_config_error_naming_the_key(home, daemons):
    d = daemons(None, {"TAGSTAT_UPLOAD_URL": "http://collector.example.org"})
    d.start(wait=False)
    assert d.proc.wait(20) == 78
    assert "upload_url" in d.stderr() and "https://" in d.stderr()
