"""The uploader against real HTTP servers on 127.0.0.1: the policy for each answer class,
network faults, proxies from the environment, backoff, and a schedule that survives a restart."""

import dataclasses
import datetime as dt
import email.utils
import gzip
import importlib.util
import json
import socket
import time
from pathlib import Path

import pytest
from werkzeug.wrappers import Response

from tagstat import uploader as uploader_module
from tagstat.clock import Clock
from tagstat.config import Config, load_config
from tagstat.errors import ConfigError, StoreError
from tagstat.records import OutboxEntry
from tagstat.store import Store
from tagstat.uploader import MAX_DETAIL_CHARS, Uploader, backoff_s, classify

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
INITIAL_S, MAX_S = 10.0, 300.0


def _load_faultproxy():
    path = Path(__file__).parents[1] / "e2e" / "faultproxy.py"
    spec = importlib.util.spec_from_file_location("faultproxy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


faultproxy = _load_faultproxy()


def config_for(url: str, **kw) -> Config:
    return dataclasses.replace(
        Config(), upload_url=url.rstrip("/"), upload_backoff_initial_s=INITIAL_S,
        upload_backoff_max_s=MAX_S, upload_connect_timeout_s=2, upload_read_timeout_s=2, **kw,
    )  # fmt: skip


def entry(report_id="11111111-2222-4333-8444-555555555555", kind="usage", at=T0) -> OutboxEntry:
    body = json.dumps({"kind": kind, "report_id": report_id, "user_id": "u"}).encode()
    return OutboxEntry(report_id, kind, "u", at, body, len(body), "pending", 0, at, None, None,
                       kind == "deletion")  # fmt: skip


def queued(store, *entries) -> None:
    for e in entries or (entry(),):
        store.outbox_add(e)


@pytest.fixture
def uploader(httpserver, store, clock):
    return Uploader(store, config_for(httpserver.url_for("/")), clock)


# -- the policy per answer ---------------------------------------------------------------


def test_2xx_delivers_the_exact_bytes_gzip_with_the_headers(httpserver, uploader, store, clock):
    httpserver.expect_oneshot_request("/v1/reports", method="POST").respond_with_json(
        {"status": "stored"}
    )
    queued(store)
    assert uploader.send_due() is True
    (request, _response) = httpserver.log[0]
    e = store.outbox_get(entry().report_id)
    assert gzip.decompress(request.get_data()) == e.body
    assert request.get_data()[4:8] == b"\0\0\0\0"  # mtime 0: the same bytes every time
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == e.report_id
    assert request.headers["User-Agent"].startswith("tagstat/")
    assert (e.state, e.attempts, e.delivered_at) == ("delivered", 1, clock.now)
    (a,) = store.upload_audit()
    assert (a.result, a.http_status, a.size_bytes) == ("delivered", 200, e.size_bytes)
    assert uploader.send_due() is False  # nothing left


def test_duplicate_answer_counts_as_delivered(httpserver, uploader, store):
    httpserver.expect_request("/v1/reports").respond_with_json({"status": "duplicate"})
    queued(store)
    uploader.send_due()
    assert store.outbox_get(entry().report_id).state == "delivered"
    assert store.upload_audit()[0].result == "duplicate"


@pytest.mark.parametrize("code", [400, 404, 413, 422])
def test_other_4xx_is_rejected_kept_and_never_retried(httpserver, uploader, store, clock, code):
    httpserver.expect_request("/v1/reports").respond_with_json({"error": "bad field"}, code)
    queued(store)
    uploader.send_due()
    e = store.outbox_get(entry().report_id)
    assert e.state == "rejected" and e.body and f"HTTP {code}: bad field" in e.last_error
    clock.advance(10 * MAX_S)
    assert uploader.send_due() is False
    assert len(httpserver.log) == 1


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503])
def test_408_429_and_5xx_are_retried_after_a_backoff(httpserver, uploader, store, clock, code):
    httpserver.expect_request("/v1/reports").respond_with_data("no", status=code)
    queued(store)
    uploader.send_due()
    e = store.outbox_get(entry().report_id)
    assert e.state == "pending" and e.attempts == 1
    delay = (e.next_attempt_at - clock.now).total_seconds()
    assert INITIAL_S <= delay <= 2 * INITIAL_S
    assert uploader.send_due() is False  # not due yet
    clock.advance(delay)
    assert uploader.send_due() is True
    assert store.upload_audit()[-1].result == "retry"


def test_429_retry_after_seconds_is_honoured(httpserver, uploader, store, clock):
    httpserver.expect_request("/v1/reports").respond_with_data(
        "", status=429, headers={"Retry-After": "120"}
    )
    queued(store)
    uploader.send_due()
    e = store.outbox_get(entry().report_id)
    assert (e.next_attempt_at - clock.now).total_seconds() == pytest.approx(120, abs=0.01)


def test_503_retry_after_http_date_is_honoured_and_capped(httpserver, uploader, store, clock):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=200)
    httpserver.expect_request("/v1/reports").respond_with_data(
        "", status=503, headers={"Retry-After": email.utils.format_datetime(later, usegmt=True)}
    )
    queued(store, entry("a1111111-2222-4333-8444-555555555555"))
    uploader.send_due()
    e = store.outbox_get("a1111111-2222-4333-8444-555555555555")
    assert 190 <= (e.next_attempt_at - clock.now).total_seconds() <= 201
    # A Retry-After beyond the cap waits only the cap.
    httpserver.clear()
    httpserver.expect_request("/v1/reports").respond_with_data(
        "", status=503, headers={"Retry-After": "999999"}
    )
    queued(store, entry("b1111111-2222-4333-8444-555555555555"))
    uploader.send_due()
    e = store.outbox_get("b1111111-2222-4333-8444-555555555555")
    assert (e.next_attempt_at - clock.now).total_seconds() == pytest.approx(MAX_S)


def test_garbled_answers_never_crash_the_policy():
    assert classify(200, {}, b"\xff not json").result == "delivered"
    assert classify(503, {"Retry-After": "soon"}, b"").retry_after_s is None
    long = classify(500, {}, json.dumps({"error": "x\n" * 10_000}).encode())
    assert long.result == "retry" and len(long.detail) <= MAX_DETAIL_CHARS + 20
    assert "\n" not in long.detail
    assert classify(302, {}, b"").result == "retry"  # redirects are not followed


def test_redirect_is_not_followed(httpserver, uploader, store):
    httpserver.expect_request("/v1/reports").respond_with_data(
        "", status=307, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    queued(store)
    uploader.send_due()
    assert [r.path for r, _ in httpserver.log] == ["/v1/reports"]
    assert "redirects are not followed" in store.outbox_get(entry().report_id).last_error


# -- network faults ------------------------------------------------------------------------


def test_connection_refused_is_retried(store, clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    up = Uploader(store, config_for(f"http://127.0.0.1:{port}"), clock)
    queued(store)
    up.send_due()
    e = store.outbox_get(entry().report_id)
    assert e.state == "pending" and "ConnectionError" in e.last_error
    assert store.upload_audit()[0].http_status is None


def test_read_timeout_is_retried(store, clock):
    # A server that accepts (the kernel completes the handshake) and never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        cfg = dataclasses.replace(config_for(f"http://127.0.0.1:{silent.getsockname()[1]}"),
                                  upload_read_timeout_s=0.3)  # fmt: skip
        queued(store)
        started = time.monotonic()
        Uploader(store, cfg, clock).send_due()
        assert time.monotonic() - started < 5
    e = store.outbox_get(entry().report_id)
    assert e.state == "pending" and "Timeout" in e.last_error


def test_reset_mid_answer_is_retried(httpserver, store, clock):
    proxy = faultproxy.FaultProxy(("127.0.0.1", httpserver.port)).start()
    try:
        (action,) = proxy.push(faultproxy.Action("forward_reset"))
        httpserver.expect_request("/v1/reports").respond_with_json({"status": "stored"})
        queued(store)
        Uploader(store, config_for(proxy.url), clock).send_due()
        assert action.answer_status == 200  # the server stored it; the sender never heard
        assert store.outbox_get(entry().report_id).state == "pending"
    finally:
        proxy.stop()


def test_proxy_from_the_environment_is_used(httpserver, store, clock, monkeypatch):
    proxy = faultproxy.FaultProxy(("127.0.0.1", httpserver.port)).start()
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]  # only reachable through the proxy, which ignores it
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        httpserver.expect_request("/v1/reports").respond_with_json({"status": "stored"})
        queued(store)
        Uploader(store, config_for(f"http://127.0.0.1:{dead}"), clock).send_due()
        assert store.outbox_get(entry().report_id).state == "delivered"
        assert proxy.captured[0].startswith(f"POST http://127.0.0.1:{dead}/v1/reports ".encode())
    finally:
        proxy.stop()


# -- the URL rule, backoff, schedule, thread -----------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://collector.example.org", "http://10.0.0.1:8080", "http://127.evil.example",
            "ftp://127.0.0.1", "https://", "https://user:pw@example.org"],
)  # fmt: skip
def test_plain_http_only_to_loopback_and_only_http_urls(url):
    with pytest.raises(ConfigError, match="upload_url in environment variable TAGSTAT_UPLOAD_URL"):
        load_config(None, env={"TAGSTAT_UPLOAD_URL": url})


@pytest.mark.parametrize(
    "url", ["https://collector.example.org/", "http://127.0.0.1:9", "http://[::1]:80",
            "http://localhost:8080", "http://127.1.2.3", ""],
)  # fmt: skip
def test_https_anywhere_and_http_to_loopback_are_accepted(url):
    assert load_config(None, env={"TAGSTAT_UPLOAD_URL": url}).upload_url == url.rstrip("/")


def test_backoff_grows_doubles_is_capped_and_jittered():
    for attempts in range(1, 12):
        base = min(INITIAL_S * 2 ** (attempts - 1), MAX_S)
        delays = [backoff_s(attempts, INITIAL_S, MAX_S) for _ in range(50)]
        assert all(base <= d <= min(base + INITIAL_S, MAX_S) for d in delays), attempts
        if base + INITIAL_S <= MAX_S:
            assert len(set(delays)) > 40  # jittered: retries of many installs spread out
    assert backoff_s(10_000, INITIAL_S, MAX_S) == MAX_S  # no overflow, the cap
    assert backoff_s(1, INITIAL_S, MAX_S, retry_after_s=100) >= 100
    assert backoff_s(1, INITIAL_S, MAX_S, retry_after_s=0) >= INITIAL_S  # no tight loop


def test_schedule_survives_a_store_reopen(httpserver, tmp_path, clock):
    httpserver.expect_request("/v1/reports").respond_with_data("", status=503)
    s = Store.open(tmp_path / "s.db")
    queued(s)
    Uploader(s, config_for(httpserver.url_for("/")), clock).send_due()
    due_at = s.outbox_get(entry().report_id).next_attempt_at
    s.close()
    s = Store.open(tmp_path / "s.db")
    try:
        e = s.outbox_get(entry().report_id)
        assert (e.attempts, e.next_attempt_at, e.state) == (1, due_at, "pending")
        assert s.outbox_next_due(clock.now, ["usage"]) is None
        clock.now = due_at
        assert s.outbox_next_due(clock.now, ["usage"]).report_id == e.report_id
    finally:
        s.close()


def test_only_the_allowed_kinds_are_sent_oldest_first(httpserver, store, clock):
    httpserver.expect_request("/v1/reports").respond_with_json({"status": "stored"})
    a = entry("a1111111-2222-4333-8444-555555555555", at=T0)
    b = entry("b1111111-2222-4333-8444-555555555555", "deletion", at=T0 + dt.timedelta(1))
    c = entry("c1111111-2222-4333-8444-555555555555", at=T0 + dt.timedelta(2))
    queued(store, c, b, a)
    clock.advance(3 * 86400)
    kinds = ["deletion"]
    up = Uploader(store, config_for(httpserver.url_for("/")), clock, kinds=lambda: tuple(kinds))
    while up.send_due():
        pass
    assert [r.headers["Idempotency-Key"] for r, _ in httpserver.log] == [b.report_id]
    kinds.append("usage")
    while up.send_due():
        pass
    sent = [r.headers["Idempotency-Key"] for r, _ in httpserver.log]
    assert sent == [b.report_id, a.report_id, c.report_id]


def test_thread_sends_when_woken_and_stop_abandons_a_hung_upload(httpserver, store):
    httpserver.expect_request("/v1/reports").respond_with_json({"status": "stored"})
    up = Uploader(store, config_for(httpserver.url_for("/")), Clock())
    up.start()
    try:
        queued(store, entry(at=dt.datetime.now(dt.UTC)))
        up.wake()
        deadline = time.monotonic() + 10
        while store.outbox_get(entry().report_id).state != "delivered":
            assert time.monotonic() < deadline, "not delivered"
            time.sleep(0.02)
    finally:
        assert up.stop(wait_s=2) is True
    # A collector that never answers: stop gives up after its wait, the entry stays pending.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        cfg = dataclasses.replace(config_for(f"http://127.0.0.1:{silent.getsockname()[1]}"),
                                  upload_read_timeout_s=30)  # fmt: skip
        hung = Uploader(store, cfg, Clock())
        queued(store, entry("d1111111-2222-4333-8444-555555555555", at=dt.datetime.now(dt.UTC)))
        hung.start()
        deadline = time.monotonic() + 10
        while hung.in_flight is None:
            assert time.monotonic() < deadline, "upload never started"
            time.sleep(0.02)
        started = time.monotonic()
        assert hung.stop(wait_s=0.3) is False
        assert time.monotonic() - started < 1.0
        assert store.outbox_get("d1111111-2222-4333-8444-555555555555").state == "pending"


def test_no_endpoint_sends_nothing(store, clock):
    up = Uploader(store, dataclasses.replace(Config(), upload_url=""), clock)
    queued(store)
    up.start()
    assert up.configured is False and up.send_due() is False
    assert up.stop() is True
    assert store.outbox_get(entry().report_id).state == "pending"


def test_a_huge_answer_is_not_read_whole(httpserver, uploader, store):
    httpserver.expect_request("/v1/reports").respond_with_response(
        Response(b"x" * (8 * 1024 * 1024), status=500)
    )
    queued(store)
    uploader.send_due()
    e = store.outbox_get(entry().report_id)
    assert e.state == "pending" and e.last_error == "HTTP 500"


def test_thread_survives_a_database_error(httpserver, store, monkeypatch):
    httpserver.expect_request("/v1/reports").respond_with_json({"status": "stored"})
    monkeypatch.setattr(uploader_module, "ERROR_PAUSE_S", 0.05)
    real, failures = store.outbox_next_due, []

    def flaky(*args):
        if not failures:
            failures.append(1)
            raise StoreError("database t.db: outbox_next_due failed: disk I/O error")
        return real(*args)

    monkeypatch.setattr(store, "outbox_next_due", flaky)
    queued(store, entry(at=dt.datetime.now(dt.UTC)))
    up = Uploader(store, config_for(httpserver.url_for("/")), Clock())
    up.start()
    try:
        deadline = time.monotonic() + 10
        while store.outbox_get(entry().report_id).state != "delivered":
            assert time.monotonic() < deadline, "the thread did not recover"
            time.sleep(0.02)
    finally:
        up.stop(wait_s=2)
    assert failures == [1]
