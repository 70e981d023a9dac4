"""sd_notify against a real datagram socket: messages, addresses, watchdog and faults."""

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from tagstat.sdnotify import Notifier


@pytest.fixture
def listener():
    """A bound AF_UNIX datagram socket standing in for systemd: (address, receive())."""
    d = Path(tempfile.mkdtemp(prefix="tsn-", dir="/tmp"))  # noqa: S108 - short AF_UNIX path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = d / "notify"
    sock.bind(str(path))
    sock.settimeout(2.0)

    def receive() -> str:
        return sock.recv(4096).decode()

    yield str(path), receive
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


def test_ready_status_watchdog_stopping_arrive_as_datagrams(listener):
    address, receive = listener
    n = Notifier(address, watchdog_usec=400_000)
    n.ready("polling 1 Time Tagger, status Collecting")
    assert receive() == "READY=1\nSTATUS=polling 1 Time Tagger, status Collecting"
    n.watchdog()
    assert receive() == "WATCHDOG=1"
    n.stopping()
    assert receive() == "STOPPING=1\nSTATUS=stopping"
    assert n.watchdog_interval_s == pytest.approx(0.2)


def test_reloading_carries_the_monotonic_time(listener):
    address, receive = listener
    Notifier(address).reloading()
    lines = receive().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0


def test_status_is_sent_only_when_it_changes(listener):
    address, receive = listener
    n = Notifier(address)
    n.status("a")
    n.status("a")
    n.status("b")
    assert [receive(), receive()] == ["STATUS=a", "STATUS=b"]


def test_abstract_socket_address():
    name = f"tagstat-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"


def test_from_env_reads_and_removes_the_variables(listener):
    address, _ = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_env(env)
    assert env == {}  # children (py-cpuinfo's) must not notify on our behalf
    assert (n.address, n.watchdog_interval_s) == (address, 15.0)


@pytest.mark.parametrize(
    "env",
    [
        {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"},  # another process's watchdog
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "-5"},
        {},
    ],
)
def test_watchdog_only_when_meant_for_us(listener, env):
    assert Notifier.from_env({"NOTIFY_SOCKET": listener[0], **env}).watchdog_interval_s is None


def test_without_notify_socket_everything_is_a_no_op():
    n = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_interval_s is None
    n.ready("x")
    n.watchdog()
    n.stopping()


def test_relative_notify_socket_is_ignored():
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).enabled


def test_a_missing_listener_never_raises():
    n = Notifier("/nonexistent/tagstat/notify")
    n.ready("x")
    n.watchdog()
    n.close()
