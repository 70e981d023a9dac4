"""The public API functions and Client against a real control socket."""

import json
import os
import shutil
import socket
import tempfile
import threading
import types
from pathlib import Path

import pytest

import tagstat
from tagstat import client as client_mod
from tagstat.client import (
    Client,
    getUsageStatisticsReport,
    getUsageStatisticsStatus,
    setUsageStatisticsStatus,
)
from tagstat.control import ControlServer
from tagstat.errors import ApiError, DaemonNotRunningError, TagstatError
from tagstat.status import UsageStatisticsStatus as Status

ALLOWED = "Disabled (0), Collecting (1), CollectingAndUploading (2)"


class StatusController:
    """Holds a status and a report like the service; ``fail`` makes calls raise it."""

    def __init__(self):
        self.status, self.persistent = Status.Collecting, True
        self.calls: list[tuple] = []
        self.report = json.dumps({"sessions": [{"device": "Time Tagger 20"}]})
        self.fail: Exception | None = None

    def get_status(self):
        if self.fail:
            raise self.fail
        return {"status": int(self.status), "name": self.status.name, "persistent": self.persistent}

    def set_status(self, status, persistent, origin="api"):
        self.origin = origin
        self.calls.append((status, persistent))
        self.status, self.persistent = status, persistent
        return self.get_status()

    def get_report(self):
        return self.report

    def list_devices(self, calibration=False):
        self.calibration_asked = calibration
        return [{"device_id": "d1", "serial": "1740****EH"}]

    def list_sessions(self):
        return [{"session_id": "s1", "open": True}]


@pytest.fixture
def home(monkeypatch):
    d = Path(tempfile.mkdtemp(prefix="tgs-", dir="/tmp"))  # noqa: S108 - AF_UNIX path limit
    monkeypatch.setenv("TAGSTAT_HOME", str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def controller():
    return StatusController()


@pytest.fixture
def server(home, controller):
    with ControlServer(home / "control.sock", controller) as srv:
        yield srv


def test_status_round_trip_through_the_public_functions(server, controller):
    assert getUsageStatisticsStatus() is Status.Collecting
    setUsageStatisticsStatus(Status.CollectingAndUploading)
    assert getUsageStatisticsStatus() is Status.CollectingAndUploading
    setUsageStatisticsStatus(0, persistent_config=False)
    setUsageStatisticsStatus("collecting-and-uploading", False)
    assert controller.calls == [
        (Status.CollectingAndUploading, True),
        (Status.Disabled, False),
        (Status.CollectingAndUploading, False),
    ]
    assert all(type(p) is bool for _, p in controller.calls)


def test_report_is_returned_verbatim(server, controller):
    assert getUsageStatisticsReport() == controller.report


def test_large_report_is_not_truncated(server, controller):
    controller.report = json.dumps({"blob": "x" * 5_000_000})
    assert getUsageStatisticsReport() == controller.report


def test_package_reexports_the_calls(server):
    assert tagstat.getUsageStatisticsStatus() is Status.Collecting


def test_client_methods(server):
    c = Client(server.socket_path)
    assert c.status()["name"] == "Collecting"
    assert c.set_status("disabled", persistent=False) == {
        "status": 0,
        "name": "Disabled",
        "persistent": False,
    }
    assert c.devices() == [{"device_id": "d1", "serial": "1740****EH"}]
    assert c.sessions()[0]["open"] is True
    assert json.loads(c.report())["sessions"][0]["device"] == "Time Tagger 20"


def test_a_program_sets_the_status_as_the_api_and_the_cli_says_so(server, controller):
    setUsageStatisticsStatus(Status.Collecting)
    assert controller.origin == "api"
    Client(server.socket_path).set_status("disabled", origin="cli")
    assert controller.origin == "cli"


@pytest.mark.parametrize(
    "bad", [99, -1, "bogus", True, None, 1.5, 3, "-2", "collecting_and-uploading"]
)
def test_invalid_status_raises_before_any_socket_io(monkeypatch, home, bad):
    def no_connect(self):
        raise AssertionError("connected although the status was invalid")

    monkeypatch.setattr(Client, "_connect", no_connect)
    with pytest.raises(
        ValueError, match=r"allowed: " + ALLOWED.replace("(", r"\(").replace(")", r"\)")
    ):
        setUsageStatisticsStatus(bad)
    with pytest.raises(ValueError, match="allowed"):
        Client().set_status(bad)


def test_non_bool_persistent_is_refused_before_io(monkeypatch, home):
    monkeypatch.setattr(Client, "_connect", lambda self: pytest.fail("connected"))
    with pytest.raises(TypeError, match="True or False"):
        setUsageStatisticsStatus(1, persistent_config="no")


def test_no_daemon_names_the_socket_and_what_to_do(home):
    with pytest.raises(DaemonNotRunningError) as info:
        getUsageStatisticsStatus()
    message = str(info.value)
    assert str(home / "control.sock") in message
    assert "systemctl start tagstatd" in message and "tagstatd --home DIR" in message


def test_stale_socket_file_means_not_running(home):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(home / "control.sock"))
    dead.close()
    with pytest.raises(DaemonNotRunningError, match="is tagstatd running"):
        getUsageStatisticsReport()


def test_default_path_without_home_is_the_system_socket(monkeypatch):
    monkeypatch.delenv("TAGSTAT_HOME", raising=False)
    assert Client().socket_path == Path("/run/tagstat/control.sock")


def test_permission_denied_names_the_group(monkeypatch, home):
    class DeniedSocket(socket.socket):
        def connect(self, address):
            raise PermissionError(13, "Permission denied")

    fake = types.SimpleNamespace(
        socket=DeniedSocket, AF_UNIX=socket.AF_UNIX, SOCK_STREAM=socket.SOCK_STREAM,
        SOL_SOCKET=socket.SOL_SOCKET, SO_SNDTIMEO=socket.SO_SNDTIMEO,
    )  # fmt: skip
    monkeypatch.setattr(client_mod, "socket", fake)
    with pytest.raises(TagstatError, match="permission denied on .*group tagstat") as info:
        getUsageStatisticsStatus()
    assert not isinstance(info.value, DaemonNotRunningError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores socket permissions")
def test_permission_denied_on_a_real_socket(server):
    os.chmod(server.socket_path, 0o000)
    with pytest.raises(TagstatError, match="permission denied"):
        getUsageStatisticsStatus()


def test_server_value_error_and_api_error_come_back_typed(server, controller):
    controller.fail = ValueError("bad thing")
    with pytest.raises(ValueError, match="bad thing"):
        getUsageStatisticsStatus()
    controller.fail = TagstatError("store is read-only")
    with pytest.raises(ApiError, match="store is read-only"):
        Client().status()


# --- a daemon that misbehaves ----------------------------------------------


def one_shot_server(path: Path, reply: bytes | None) -> threading.Thread:
    """Accept one connection, read its request, send ``reply`` (None: say nothing)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    done = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn, listener:
            conn.recv(65536)
            if reply is not None:
                conn.sendall(reply)
            else:
                done.wait(5.0)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.done = done
    return thread


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"<html>\n", "not JSON"),
        (b"[1]\n", "not a JSON object"),
        (b'{"ok": true}\n', "garbled reply"),
        (b'{"ok": false, "error": "x"}\n', "garbled reply"),
        (b'{"ok": true, "result": [1]}\n', "status is a list, expected a dict"),
        (b'{"ok": true, "result": {"status": 7}}\n', "status 7"),
        (b"", "closed before any message"),
        (b'{"ok": tr', "closed in the middle"),
    ],
)
def test_garbled_replies_are_api_errors(home, reply, expected):
    thread = one_shot_server(home / "control.sock", reply)
    with pytest.raises(ApiError, match=expected) as info:
        getUsageStatisticsStatus()
    assert str(home / "control.sock") in str(info.value)
    thread.join(5.0)


def test_rows_that_are_not_objects_are_api_errors(home):
    thread = one_shot_server(home / "control.sock", b'{"ok": true, "result": [1, 2]}\n')
    with pytest.raises(ApiError, match="entry of the device list"):
        Client().devices()
    thread.join(5.0)


def test_silent_daemon_times_out(home):
    thread = one_shot_server(home / "control.sock", None)
    with pytest.raises(TagstatError, match=r"did not answer within 0\.2 s"):
        Client(timeout_s=0.2).status()
    thread.done.set()
    thread.join(5.0)
