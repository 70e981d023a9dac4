"""The control server over a real Unix socket: dispatch, bad input, faults, lifecycle."""

import json
import logging
import os
import selectors
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagstat import cli, wire
from tagstat.client import Client
from tagstat.control import FIRST_BYTE_TIMEOUT_S, ControlServer
from tagstat.errors import TagstatError
from tagstat.status import UsageStatisticsStatus

ALLOWED = "Disabled (0), Collecting (1), CollectingAndUploading (2)"


class FakeController:
    """Keeps a status like the service does; ``fail`` makes every call raise it."""

    def __init__(self):
        self.status = UsageStatisticsStatus.Collecting
        self.persistent = True
        self.calls: list[tuple] = []
        self.fail: BaseException | None = None
        self.result_override = None

    def _enter(self, *call):
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def get_status(self):
        self._enter("get_status")
        if self.result_override is not None:
            return self.result_override
        return {
            "status": int(self.status),
            "name": self.status.name,
            "persistent": self.persistent,
            "since": "2024-01-02T03:04:05.000Z",
        }

    def set_status(self, status, persistent, origin="api"):
        self.origin = origin
        self._enter("set_status", status, persistent)
        self.status, self.persistent = status, persistent
        return self.get_status()

    def get_report(self):
        self._enter("get_report")
        return json.dumps({"status": int(self.status), "sessions": []})

    def list_devices(self, calibration=False):
        self.calibration_asked = calibration
        self._enter("devices")
        return [{"device_id": "ab" * 32, "model": "Time Tagger Ultra"}]

    def list_sessions(self):
        self._enter("sessions")
        return []

    def pending_report(self):
        self._enter("pending_report")
        return {"pending": False, "body": None, "endpoint": None, "status": "Collecting"}

    def list_uploads(self):
        self._enter("uploads")
        return []

    def upload_body(self, report_id):
        self._enter("upload_body", report_id)
        return {"report_id": report_id, "kind": "usage", "state": "pending", "body": "{}"}

    def purge(self):
        self._enter("purge")
        return {"removed": {}, "cancelled_reports": 0, "user_id": "u", "deletion_request": None}

    def export_begin(self):
        self._enter("export_begin")
        return {"token": "t", "exported_at": "2024-01-02T03:04:05.000Z", "reports": []}

    def export_commit(self, token):
        self._enter("export_commit", token)
        return {"exported": 0, "already_delivered": 0}


@pytest.fixture
def sock_dir():
    # tmp_path can exceed the 107-byte AF_UNIX limit; /tmp keeps it short.
    d = Path(tempfile.mkdtemp(prefix="tgs-", dir="/tmp"))  # noqa: S108
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def controller():
    return FakeController()


@pytest.fixture
def server(sock_dir, controller):
    srv = ControlServer(sock_dir / "control.sock", controller, timeout_s=0.5)
    srv.start()
    yield srv
    srv.stop()


def exchange(path: Path, data: bytes, *, half_close: bool = True, timeout_s: float = 5.0):
    """Send raw bytes, then read until EOF; returns the reply object, or None if closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may reply and close before reading everything
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    return json.loads(raw) if raw else None


def request(path: Path, obj) -> dict:
    return exchange(path, wire.encode(obj))


def error_of(reply: dict) -> tuple[str, str]:
    assert reply["ok"] is False
    return reply["error"]["type"], reply["error"]["message"]


def assert_answers(path: Path) -> None:
    assert request(path, {"op": "get_status"})["ok"] is True


# --- dispatch --------------------------------------------------------------


def test_each_op_round_trips(server, controller):
    path = server.socket_path
    assert request(path, {"op": "get_status"})["result"]["name"] == "Collecting"
    reply = request(path, {"op": "set_status", "status": 2, "persistent": False})
    assert reply["result"]["status"] == 2 and reply["result"]["persistent"] is False
    assert json.loads(request(path, {"op": "get_report"})["result"])["status"] == 2
    assert request(path, {"op": "devices"})["result"][0]["model"] == "Time Tagger Ultra"
    assert request(path, {"op": "sessions"})["result"] == []
    assert controller.calls[1] == (
        "set_status",
        UsageStatisticsStatus.CollectingAndUploading,
        False,
    )


@pytest.mark.parametrize(
    "bad", [99, -1, "bogus", True, None, 1.5, [1], "-2", "+2", "2.0", "collecting and uploading"]
)
def test_invalid_status_is_a_value_error_listing_allowed_values(server, controller, bad):
    reply = request(server.socket_path, {"op": "set_status", "status": bad, "persistent": True})
    kind, message = error_of(reply)
    assert kind == "ValueError" and ALLOWED in message
    assert controller.calls == []


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (
            {"op": "set_status", "status": 1, "persistent": True, "origin": "prompt"},
            "argument 'origin' of op 'set_status' must be 'api' or 'cli'",
        ),
        (
            {"op": "set_status", "status": 1, "persistent": True, "origin": 1},
            "argument 'origin' of op 'set_status' must be 'api' or 'cli'",
        ),
        ({"op": "devices", "calibration": "yes"}, "argument 'calibration' of op 'devices'"),
        ({}, 'no "op"'),
        ({"op": "reboot"}, "unknown op 'reboot'"),
        ({"op": 5}, "unknown op 5"),
        ({"op": "get_status", "x": 1}, "takes no argument 'x'"),
        ({"op": "set_status", "status": 1}, "needs argument 'persistent'"),
        ({"op": "set_status", "persistent": True}, "needs argument 'status'"),
        ({"op": "set_status", "status": 1, "persistent": "yes"}, "must be a bool, got str"),
        ({"op": "set_status", "status": 1, "persistent": 1}, "must be a bool, got int"),
    ],
)
def test_bad_requests_name_the_problem(server, controller, msg, expected):
    kind, message = error_of(request(server.socket_path, msg))
    assert kind == "BadRequest" and expected in message
    assert controller.calls == []
    assert_answers(server.socket_path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"hello\n", "not JSON"),
        (b"\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object (got list)"),
        (b'"op"\n', "not a JSON object (got str)"),
        (b"\xff\xfe{}\n", "not UTF-8"),
        (b"[" * 100_000 + b"\n", "request too large"),
        (b"[" * 60_000 + b"\n", "nested too deeply"),
        (b'{"op":"set_status","status":' + b"9" * 5000 + b',"persistent":true}\n', "not JSON"),
        (b'{"op": "get_st', "closed in the middle of a message (14 bytes"),
        (b"", "closed before any message"),
    ],
)
def test_malformed_bytes_get_an_error_reply(server, data, expected):
    kind, message = error_of(exchange(server.socket_path, data))
    assert kind == "BadRequest" and expected in message
    assert_answers(server.socket_path)


def test_rejected_request_text_is_not_logged(server, caplog):
    with caplog.at_level(logging.DEBUG, logger="tagstat"):
        request(server.socket_path, {"op": "1740000JEH", "1809000LGG": 1})
        exchange(server.socket_path, b"1740000JEH\n")
    assert caplog.records and "1740000JEH" not in caplog.text and "1809000LGG" not in caplog.text


def test_only_the_first_line_counts(server, controller):
    data = wire.encode({"op": "get_status"}) + wire.encode({"op": "get_report"})
    assert exchange(server.socket_path, data)["result"]["status"] == 1
    assert controller.calls == [("get_status",)]


def test_request_size_limit_is_exact(sock_dir, controller):
    with ControlServer(sock_dir / "c.sock", controller, max_request_bytes=100) as srv:
        line = json.dumps({"op": "get_status"}).encode()
        fits = b"{" + b" " * (100 - len(line)) + line[1:]
        assert len(fits) == 100
        assert exchange(srv.socket_path, fits + b"\n")["ok"] is True
        kind, message = error_of(exchange(srv.socket_path, b" " + fits + b"\n"))
        assert message == "request too large (101 bytes > 100)"


def test_huge_request_without_newline_is_refused(server):
    kind, message = error_of(exchange(server.socket_path, b"x" * 1_000_000, half_close=False))
    assert kind == "BadRequest" and "request too large" in message and "> 65536" in message
    assert_answers(server.socket_path)


def test_silent_client_is_cut_off_at_the_first_byte_deadline_without_blocking_others(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.settimeout(5.0)
        silent.connect(str(server.socket_path))
        assert_answers(server.socket_path)  # served while the silent one waits
        reply = read_to_eof(silent, 5.0)
    assert error_of(json.loads(reply)) == (
        "BadRequest",
        f"timed out after {FIRST_BYTE_TIMEOUT_S:g} s waiting for a complete line "
        "(0 bytes received)",
    )


def test_trickling_client_hits_the_overall_deadline(sock_dir, controller):
    with ControlServer(sock_dir / "c.sock", controller, timeout_s=0.3) as srv:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(str(srv.socket_path))
            started = time.monotonic()
            s.settimeout(0.05)
            reply = b""
            while not reply:  # one byte per 50 ms never finishes a line in time
                assert time.monotonic() - started < 10.0, "the server never cut it off"
                try:
                    s.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):  # closed after its reply
                    s.settimeout(5.0)
                    reply = s.recv(65536)
                    break
                try:
                    reply = s.recv(65536)
                except TimeoutError:
                    continue
        assert "timed out" in error_of(json.loads(reply))[1]


def test_client_that_vanishes_mid_line_does_not_hurt(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(server.socket_path))
        s.sendall(b'{"op": "get_')
    assert_answers(server.socket_path)


# --- controller faults -----------------------------------------------------


def test_controller_value_error_and_tagstat_error_are_typed(server, controller):
    controller.fail = ValueError("no such thing")
    assert error_of(request(server.socket_path, {"op": "devices"})) == (
        "ValueError",
        "no such thing",
    )
    controller.fail = TagstatError("store is read-only; check the disk")
    assert error_of(request(server.socket_path, {"op": "get_report"})) == (
        "ApiError",
        "store is read-only; check the disk",
    )


def test_unexpected_controller_exception_is_logged_and_survived(server, controller, caplog):
    controller.fail = ZeroDivisionError("boom")
    with caplog.at_level(logging.ERROR, logger="tagstat.control"):
        reply = request(server.socket_path, {"op": "sessions"})
    assert error_of(reply) == ("InternalError", "internal error: ZeroDivisionError")
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    controller.fail = None
    assert_answers(server.socket_path)


def test_result_that_is_not_json_becomes_internal_error(server, controller):
    controller.result_override = {"since": object()}
    assert error_of(request(server.socket_path, {"op": "get_status"}))[0] == "InternalError"
    controller.result_override = None
    assert_answers(server.socket_path)


def test_authorize_hook_sees_peer_credentials_and_can_refuse(sock_dir, controller):
    seen = []

    def authorize(op, peer):
        seen.append((op, peer))
        return op != "set_status"

    with ControlServer(sock_dir / "c.sock", controller, authorize=authorize) as srv:
        reply = request(srv.socket_path, {"op": "set_status", "status": 0, "persistent": True})
        assert error_of(reply)[0] == "PermissionDenied"
        assert_answers(srv.socket_path)
    assert controller.calls == [("get_status",)]
    op, peer = seen[0]
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())


# --- limits and deadlines: silent, trickling and flooding clients -----------


def connect_silent(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    return s


def read_to_eof(s: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes; TimeoutError if it has not by then."""
    s.settimeout(max(timeout_s, 0.001))
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def busy_message(srv: ControlServer) -> str:
    with pytest.raises(TagstatError) as info:
        Client(srv.socket_path).status()
    return str(info.value)


# The flooding tests switch the per-uid limit off: the flood and the real requests share
# this test's uid, and the point is that the server holds every silent connection.


def test_64_silent_connections_neither_block_a_request_nor_stay_open(sock_dir, controller):
    with ControlServer(sock_dir / "c.sock", controller, max_connections_per_uid=None) as srv:
        held = [connect_silent(srv.socket_path) for _ in range(64)]
        try:
            closed_by = time.monotonic() + FIRST_BYTE_TIMEOUT_S + 1.0  # slack for a busy host
            assert Client(srv.socket_path).status()["name"] == "Collecting"
            for s in held:  # closed by the server: a timeout reply, then EOF
                reply = json.loads(read_to_eof(s, closed_by - time.monotonic()))
                assert error_of(reply)[1].startswith(f"timed out after {FIRST_BYTE_TIMEOUT_S:g} s")
        finally:
            for s in held:
                s.close()


def reopen_silent_connections(path: Path, n: int, stop: threading.Event, stats: dict) -> None:
    """Keep ``n`` silent connections open, reopening each as soon as the server closes it."""
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n):
            sel.register(connect_silent(path), selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select(timeout=1.0):
                if key.fileobj.recv(65536):
                    continue  # the server's timeout reply; its EOF follows
                sel.unregister(key.fileobj)
                key.fileobj.close()
                sel.register(connect_silent(path), selectors.EVENT_READ)
                stats["reopened"] += 1
    except OSError as exc:
        stats["errors"].append(exc)
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


def test_a_client_reopening_silent_connections_does_not_block_requests(sock_dir, controller):
    with ControlServer(
        sock_dir / "c.sock", controller, first_byte_timeout_s=0.05, max_connections_per_uid=None
    ) as srv:
        stop, stats = threading.Event(), {"reopened": 0, "errors": []}
        flooder = threading.Thread(
            target=reopen_silent_connections, args=(srv.socket_path, 64, stop, stats)
        )
        flooder.start()
        try:
            client = Client(srv.socket_path)
            statuses = [client.status()["status"] for _ in range(20)]
            give_up = time.monotonic() + 10.0
            while stats["reopened"] < 64 and time.monotonic() < give_up:  # a full round, at least
                statuses.append(client.status()["status"])
        finally:
            stop.set()
            flooder.join()
    assert stats["errors"] == [] and stats["reopened"] >= 64
    assert set(statuses) == {1}


def test_silent_connections_hold_no_worker(sock_dir, controller):
    with ControlServer(
        sock_dir / "c.sock", controller, max_connections=1, max_queued=0,
        first_byte_timeout_s=5.0, timeout_s=5.0, max_connections_per_uid=None,
    ) as srv:  # fmt: skip
        held = [connect_silent(srv.socket_path) for _ in range(8)]
        try:
            assert_answers(srv.socket_path)
        finally:
            for s in held:
                s.close()


def per_uid_server(sock_dir, controller, limit: int, **kwargs) -> ControlServer:
    """Silent connections keep their place (5 s deadlines); the limit applies to this uid."""
    kwargs = {"exempt_uids": (), "first_byte_timeout_s": 5.0, "timeout_s": 5.0} | kwargs
    return ControlServer(sock_dir / "c.sock", controller, max_connections_per_uid=limit, **kwargs)


def test_a_uid_over_its_connection_limit_gets_busy_until_one_closes(sock_dir, controller):
    with per_uid_server(sock_dir, controller, 2) as srv:
        held = [connect_silent(srv.socket_path) for _ in range(2)]
        try:
            assert busy_message(srv) == (
                f"tagstatd is busy: uid {os.geteuid()} already has 2 connections open, "
                "the limit per uid; close some and try again"
            )
            held[0].shutdown(socket.SHUT_WR)  # done: the server answers it and closes it
            read_to_eof(held[0], 5.0)
            assert Client(srv.socket_path).status()["status"] == 1
        finally:
            for s in held:
                s.close()
    assert controller.calls == [("get_status",)]


def test_the_cli_shows_the_busy_reply_as_an_error(sock_dir, controller, capsys):
    with per_uid_server(sock_dir, controller, 1) as srv:
        with connect_silent(srv.socket_path):
            code = cli.main(["--socket", str(srv.socket_path), "status"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"tagstat: error: tagstatd is busy: uid {os.geteuid()} already has 1 connections "
        "open, the limit per uid; close some and try again\n"
    )


def test_an_exempt_uid_has_no_per_uid_limit(sock_dir, controller):
    with per_uid_server(sock_dir, controller, 1, exempt_uids=(os.geteuid(),)) as srv:
        with connect_silent(srv.socket_path):
            assert_answers(srv.socket_path)


def test_past_twice_the_per_uid_limit_a_connection_is_closed_at_once(sock_dir, controller):
    with per_uid_server(sock_dir, controller, 1) as srv:
        held = [connect_silent(srv.socket_path) for _ in range(3)]
        try:  # the 2nd is refused but kept until it sends; the 3rd is not kept
            reply = json.loads(read_to_eof(held[2], 5.0))
            assert error_of(reply)[0] == "Busy"
            held[1].settimeout(5.0)
            assert error_of(json.loads(held[1].recv(65536)))[0] == "Busy"
        finally:
            for s in held:
                s.close()


def test_past_the_open_connection_limit_a_connection_is_refused(sock_dir, controller):
    with ControlServer(
        sock_dir / "c.sock", controller, max_open_connections=2, max_connections_per_uid=None,
        first_byte_timeout_s=5.0, timeout_s=5.0,
    ) as srv:  # fmt: skip
        held = [connect_silent(srv.socket_path) for _ in range(2)]
        try:
            with connect_silent(srv.socket_path) as third:
                reply = json.loads(read_to_eof(third, 5.0))
        finally:
            for s in held:
                s.close()
    assert error_of(reply) == (
        "Busy",
        "tagstatd is busy: the limit of 2 open connections is reached; try again shortly",
    )


def gate(controller):
    """Make get_status wait until released; returns (entered, release) events."""
    entered, release = threading.Event(), threading.Event()
    answer = controller.get_status

    def get_status():
        entered.set()
        release.wait(10)
        return answer()

    controller.get_status = get_status
    return entered, release


def asking(path: Path, replies: list) -> threading.Thread:
    """A thread (not started) that asks get_status and appends the reply to ``replies``."""
    return threading.Thread(target=lambda: replies.append(request(path, {"op": "get_status"})))


def test_a_request_waits_for_a_worker_and_one_past_the_queue_gets_busy(sock_dir, controller):
    entered, release = gate(controller)
    with ControlServer(sock_dir / "c.sock", controller, max_connections=1, max_queued=1) as srv:
        replies = []
        first = asking(srv.socket_path, replies)
        first.start()
        try:
            assert entered.wait(5)  # the only worker is in the controller
            with connect_silent(srv.socket_path) as queued:
                queued.sendall(wire.encode({"op": "get_status"}))  # waits for the worker
                refused = request(srv.socket_path, {"op": "sessions"})
                release.set()
                queued_reply = json.loads(read_to_eof(queued, 5.0))
        finally:
            release.set()
            first.join(5)
    assert error_of(refused) == (
        "Busy",
        "tagstatd is busy: the limit of 1 requests at once plus 1 waiting is reached; "
        "try again shortly",
    )
    assert replies[0]["ok"] is True and queued_reply["ok"] is True
    assert ("sessions",) not in controller.calls


def test_a_client_trickling_a_byte_every_tenth_of_a_second_is_cut_off(sock_dir, controller):
    with ControlServer(sock_dir / "c.sock", controller, timeout_s=0.5) as srv:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            started = time.monotonic()  # before connect: the server's clock starts after
            s.connect(str(srv.socket_path))
            s.settimeout(0.1)  # the pace: a byte, then up to 0.1 s for an answer
            got = None
            for _ in range(50):
                try:
                    s.sendall(b" ")
                    got = s.recv(65536)  # the reply, or b"" for EOF
                    break
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    got = b""  # closed by the server: EOF by another name
                    break
            elapsed_s = time.monotonic() - started
    assert got is not None, "the trickling client was never cut off"
    # not before its deadline; the upper bound only says "cut off", with room for a loaded
    # machine (no test may depend on the wall clock's speed)
    assert 0.5 <= elapsed_s < 5.0
    if got:
        kind, message = error_of(json.loads(got))
        assert kind == "BadRequest" and message.startswith("timed out after 0.5 s")


def test_the_drain_after_a_reply_is_bounded(sock_dir, controller):
    with ControlServer(sock_dir / "c.sock", controller, drain_timeout_s=0.2) as srv:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(srv.socket_path))
            s.sendall(wire.encode({"op": "get_status"}))
            assert json.loads(read_to_eof(s, 5.0))["ok"] is True
            s.settimeout(5.0)
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(100_000):  # keeps sending: the server stops listening
                    s.sendall(b"x" * 1024)


def test_time_in_the_controller_does_not_count_against_the_client(sock_dir, controller):
    answer = controller.get_status

    def slow_get_status():
        threading.Event().wait(0.4)  # a slow controller (a purge, say), not the client
        return answer()

    controller.get_status = slow_get_status
    with ControlServer(sock_dir / "c.sock", controller, timeout_s=0.2) as srv:
        assert_answers(srv.socket_path)


# --- random input ----------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_requests = st.fixed_dictionaries(
    {"op": st.sampled_from([*wire.OPS, "x"])},
    optional={"status": _json_values, "persistent": _json_values, "extra": _json_values},
)
_payloads = (
    st.binary(max_size=3000)
    | _requests.map(wire.encode)
    | _json_values.map(lambda v: json.dumps(v).encode() + b"\n")
)


def test_random_bytes_leave_the_server_answering(sock_dir):
    controller = FakeController()
    with ControlServer(sock_dir / "c.sock", controller, timeout_s=0.5) as srv:

        @settings(max_examples=500, deadline=1000, suppress_health_check=list(HealthCheck))
        @given(_payloads)
        def one(data):
            reply = exchange(srv.socket_path, data)
            assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
            if not reply["ok"]:
                assert reply["error"]["type"] in {"BadRequest", "ValueError"}

        one()
        assert_answers(srv.socket_path)


# --- lifecycle -------------------------------------------------------------


def test_socket_mode_is_0660(server):
    mode = server.socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_stop_is_prompt_and_removes_the_socket(sock_dir, controller):
    srv = ControlServer(sock_dir / "c.sock", controller)
    srv.start()
    assert_answers(srv.socket_path)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 1.0
    assert not srv.socket_path.exists()
    srv.stop()  # twice is harmless


def test_stop_is_prompt_with_a_silent_client_connected(sock_dir, controller):
    srv = ControlServer(sock_dir / "c.sock", controller, timeout_s=5.0)
    srv.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(srv.socket_path))
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 1.0


def test_stop_is_prompt_when_every_slot_is_taken(sock_dir, controller):
    srv = ControlServer(sock_dir / "c.sock", controller, max_connections=1, timeout_s=5.0)
    srv.start()
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for s in clients:
            s.connect(str(srv.socket_path))
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 1.0
    finally:
        for s in clients:
            s.close()


def test_stale_socket_file_is_replaced(sock_dir, controller):
    path = sock_dir / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a daemon that died without unlinking
    dead.close()
    assert path.exists()
    with ControlServer(path, controller):
        assert_answers(path)


def test_second_server_on_a_live_socket_is_refused(server, sock_dir):
    other = ControlServer(server.socket_path, FakeController())
    with pytest.raises(TagstatError, match="another tagstatd is already answering on .*c"):
        other.start()
    assert_answers(server.socket_path)


def test_non_socket_file_in_the_way_is_refused(sock_dir, controller):
    path = sock_dir / "c.sock"
    path.write_text("not a socket")
    with pytest.raises(TagstatError, match="exists and is not a socket"):
        ControlServer(path, controller).start()
    assert path.read_text() == "not a socket"


def test_missing_directory_is_a_clear_error(sock_dir, controller):
    with pytest.raises(TagstatError, match="cannot listen on .*nodir"):
        ControlServer(sock_dir / "nodir" / "c.sock", controller).start()


# --- wire framing on a socketpair ------------------------------------------


def test_read_message_reads_across_chunks():
    a, b = socket.socketpair()
    with a, b:
        writer = threading.Thread(target=lambda: [b.sendall(p) for p in (b'{"op"', b':"x"}\n')])
        writer.start()
        assert wire.read_message(a, 100, 2.0) == {"op": "x"}
        writer.join()


def test_encode_is_one_utf8_line():
    data = wire.encode({"name": "Zürich\nline"})
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert wire.decode(data[:-1]) == {"name": "Zürich\nline"}
