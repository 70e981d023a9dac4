"""The control server over a real Unix socket: dispatch, bad input, faults, lifecycle."""

import json
import logging
import os
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

from tagstat import wire
from tagstat.control import ControlServer
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


def test_silent_client_times_out_without_blocking_others(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.settimeout(5.0)
        silent.connect(str(server.socket_path))
        started = time.monotonic()
        assert_answers(server.socket_path)  # served while the silent one waits
        assert time.monotonic() - started < 0.4
        reply = json.loads(silent.recv(65536))
    kind, message = error_of(reply)
    assert kind == "BadRequest" and "timed out after 0.5 s" in message


def test_trickling_client_hits_the_overall_deadline(sock_dir, controller):
    with ControlServer(sock_dir / "c.sock", controller, timeout_s=0.3) as srv:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(str(srv.socket_path))
            started = time.monotonic()
            s.settimeout(0.05)
            reply = b""
            while not reply:  # one byte per 50 ms never finishes a line in time
                try:
                    s.sendall(b" ")
                    reply = s.recv(65536)
                except TimeoutError:
                    continue
            assert time.monotonic() - started < 1.0
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


def test_connections_beyond_the_bound_wait_for_a_slot(sock_dir, controller):
    with ControlServer(sock_dir / "c.sock", controller, max_connections=2, timeout_s=5) as srv:
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        for s in idle:
            s.connect(str(srv.socket_path))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as third:
            third.connect(str(srv.socket_path))
            third.sendall(wire.encode({"op": "get_status"}))
            third.settimeout(0.2)
            with pytest.raises(TimeoutError):
                third.recv(65536)  # both slots are held by the idle clients
            for s in idle:
                s.close()
            third.settimeout(5.0)
            assert json.loads(third.recv(65536))["result"]["status"] == 1


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
