"""The application-side API and its sender, against a real control server on a real socket."""

import grp
import os
import shutil
import tempfile
import threading
import time
import types
from pathlib import Path

import pytest

from tagstat import measurement_sender, measurements, wire
from tagstat.access import AccessPolicy, PermissionDenied
from tagstat.control import ControlServer, PeerCred
from tagstat.measurement_sender import Sender


class Receiver:
    """A controller that keeps every record_measurements request it is sent."""

    def __init__(self):
        self.requests: list[list] = []
        self.arrived = threading.Condition()

    def record_measurements(self, events):
        with self.arrived:
            self.requests.append(events)
            self.arrived.notify_all()
        return {"stored": len(events), "rejected": 0}

    @property
    def events(self) -> list[dict]:
        return [e for request in self.requests for e in request]

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.events) >= n, timeout_s)
        return self.events


@pytest.fixture
def sock_path():
    d = Path(tempfile.mkdtemp(prefix="tm-", dir="/tmp"))  # AF_UNIX paths are short
    yield d / "control.sock"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def receiver(sock_path):
    r = Receiver()
    with ControlServer(sock_path, r):
        yield r


@pytest.fixture
def sender(sock_path, monkeypatch):
    """The module's sender, aimed at the test socket."""
    for name in ("TAGSTAT_DISABLE", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)
    s = Sender(sock_path)
    monkeypatch.setattr(measurements, "_sender", s)
    return s


def test_a_tracked_block_arrives_with_its_outcome(receiver, sender):
    with measurements.track_measurement("Correlation", config={"binwidth": 1000}) as m:
        m.add(events_processed=5000, dropped_events=0)
        m.configure(n_bins=100, file="/home/alice/x.ttbin")
    with pytest.raises(KeyError):  # the application's exception goes on unchanged
        with measurements.track_measurement("Counter"):
            raise KeyError("/home/alice")
    assert sender.flush(5.0)
    ok, failed = receiver.wait_for(2)
    assert ok["type"] == "Correlation" and ok["error"] is None
    assert ok["config"] == {"binwidth": 1000, "n_bins": 100}
    assert set(ok["indicators"]) == {"events_processed", "dropped_events", "cpu_time_s",
                                     "events_per_s"}  # fmt: skip
    assert failed["type"] == "Counter" and failed["error"] == "KeyError"
    assert "alice" not in repr(receiver.requests)


def test_record_measurement_takes_times_datetimes_and_error_forms(receiver, sender):
    import datetime as dt

    t = time.time()
    measurements.record_measurement("Histogram", t - 3, t, error=ValueError("secret"))
    measurements.record_measurement("Histogram", t - 1, t, error=TimeoutError)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    measurements.record_measurement("Histogram", start, start + dt.timedelta(seconds=2),
                                    error="MyError", indicators={"cpu_time_s": 1.5})  # fmt: skip
    measurements.record_measurement("Histogram", t, t - 1)  # ends before it starts: dropped
    sender.flush(5.0)
    events = receiver.wait_for(3)
    assert [e["error"] for e in events] == ["ValueError", "TimeoutError", "MyError"]
    assert [e["duration_s"] for e in events] == [3.0, 1.0, 2.0]
    assert len(events) == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda: measurements.track_measurement(42),
        lambda: measurements.track_measurement("Counter", config=["binwidth"]),
        lambda: measurements.record_measurement(b"Counter", 0, 1),
        lambda: measurements.record_measurement("Counter", "today", 1),
        lambda: measurements.record_measurement("Counter", 0, 1, indicators=5),
        lambda: measurements.record_measurement("Counter", 0, 1, error=404),
    ],
)
def test_arguments_of_the_wrong_kind_raise_type_error_even_when_switched_off(call, monkeypatch):
    monkeypatch.setenv("TAGSTAT_DISABLE", "1")
    with pytest.raises(TypeError):
        call()


def test_values_tagstat_does_not_take_never_raise(receiver, sender):
    with measurements.track_measurement("NoSuchThing", config={object(): object()}) as m:
        m.add(events_processed="lots", cpu_time_s=float("nan"))
    measurements.record_measurement("Counter", 1e300, 1e301)  # beyond any datetime
    sender.flush(5.0)
    (event,) = receiver.wait_for(1)
    assert event["type"] == "Other" and event["config"] == {}


@pytest.mark.parametrize("switch", ["TAGSTAT_DISABLE", "DO_NOT_TRACK"])
def test_a_kill_switch_sends_nothing_and_starts_no_thread(switch, monkeypatch):
    monkeypatch.setenv(switch, "1")
    monkeypatch.setattr(measurements, "_sender", None)
    with measurements.track_measurement("Counter"):
        pass
    measurements.record_measurement("Counter", 0, 1)
    assert measurements._sender is None
    monkeypatch.setenv(switch, "0")  # "0" and "" do not switch tagstat off
    monkeypatch.setattr(measurements, "_sender", Sender(Path("/nonexistent/control.sock")))
    measurements.record_measurement("Counter", 0, 1)
    assert measurements._sender._thread is not None


def test_requests_stay_under_the_socket_size_limit(receiver, sender):
    config = {key: 1.234 for key in ("binwidth", "n_bins", "n_values", "exp_start")}
    for i in range(measurement_sender.MAX_QUEUED_EVENTS):
        measurements.record_measurement("TimeDifferences", i, i + 1, error=f"Error{i}",
                                        config=config)  # fmt: skip
    assert sender.flush(10.0)
    assert len(receiver.wait_for(measurement_sender.MAX_QUEUED_EVENTS)) == 1000
    assert len(receiver.requests) > 1  # the server refuses anything over 64 KiB, so it split
    assert sender.failed == 0 and sender.dropped == 0


def test_without_a_daemon_events_wait_bounded_and_arrive_once_it_starts(sock_path, monkeypatch):
    monkeypatch.setattr(measurement_sender, "BACKOFF_MIN_S", 0.05)
    sender = Sender(sock_path)
    for i in range(measurement_sender.MAX_QUEUED_EVENTS + 500):
        sender.submit(("Counter", float(i), 1.0, None, {}, {}))
    assert sender.flush(5.0) is False  # gives up at once: nobody is listening
    assert sender.dropped == 500  # the oldest went
    receiver = Receiver()
    with ControlServer(sock_path, receiver):
        events = receiver.wait_for(measurement_sender.MAX_QUEUED_EVENTS)
    assert len(events) == measurement_sender.MAX_QUEUED_EVENTS
    assert events[0]["start"] == "1970-01-01T00:08:20.000Z"  # event 500, the oldest kept


def test_a_refused_batch_is_counted_not_retried(sock_path):
    sender = Sender(sock_path)

    def refuse(op, peer):
        raise PermissionDenied("permission denied: record_measurements needs group tagstat")

    with ControlServer(sock_path, Receiver(), authorize=refuse):
        sender.submit(("Counter", 0.0, 1.0, None, {}, {}))
        assert sender.flush(5.0)
    assert sender.failed == 1 and sender.sent == 0


def test_a_forked_child_starts_with_a_fresh_sender(receiver, sender):
    measurements.record_measurement("Counter", 0, 1)
    sender.flush(5.0)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running exit hooks
        fresh = measurements._sender is None and sender.dead and not sender.flush(5.0)
        os.write(write_fd, b"1" if fresh else b"0")
        os._exit(0)
    os.close(write_fd)
    assert os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert not sender.dead  # the parent's sender goes on
    measurements.record_measurement("Counter", 1, 2)
    sender.flush(5.0)
    assert len(receiver.wait_for(2)) == 2


def test_any_reader_may_send_measurements_but_not_change_settings():
    groups = [g for g in grp.getgrall()][:2]
    if len(groups) < 2:
        pytest.skip("needs two groups in the group database")
    reader, admin = groups
    config = types.SimpleNamespace(reader_group=reader.gr_name, admin_group=admin.gr_name)
    policy = AccessPolicy(lambda: config, daemon_uid=0)
    peer = PeerCred(pid=1, uid=54321, gid=54321, groups=frozenset({reader.gr_gid}))
    assert policy.authorize("record_measurements", peer)
    with pytest.raises(PermissionDenied):
        policy.authorize("set_status", peer)
    assert "record_measurements" in wire.OPS
