"""Session boundaries and data-rate statistics from counter samples."""

import datetime as dt

import pytest

from tagstat.drivers.protocol import Counters
from tagstat.sessions import SessionTracker

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BOOT = b"\x01" * 16


class Device:
    """Counters of a device whose rate we script, sampled once per poll."""

    def __init__(self, bits=48, start=0):
        self.bits, self.bytes, self.uptime_ms, self.t = bits, start, 1000, 0.0

    def run(self, seconds, rate):
        self.bytes = (self.bytes + int(rate * seconds)) % (1 << self.bits)
        self.uptime_ms += int(seconds * 1000)
        self.t += seconds

    def counters(self):
        return Counters(self.bits, self.bytes, self.bytes // 8, self.uptime_ms, BOOT)


def feed(tracker, dev, steps, status=1, boot="b1"):
    """steps: [(seconds, rate)] in 1 s polls; returns closed sessions."""
    closed = []
    for seconds, rate in steps:
        for _ in range(int(seconds)):
            dev.run(1.0, rate)
            utc = T0 + dt.timedelta(seconds=dev.t)
            closed += tracker.observe(dev.counters(), boot, dev.t, utc, status, {"t": 40.0})
    return closed


def start(tracker, dev, boot="b1"):
    tracker.observe(dev.counters(), boot, dev.t, T0 + dt.timedelta(seconds=dev.t), 1, {})


def test_min_avg_max_over_rate_steps():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    feed(tr, dev, [(10, 100e6), (10, 300e6), (5, 50e6)])
    rec = tr.checkpoint()
    assert rec.open and rec.duration_s == pytest.approx(25)
    assert rec.rate_min_bytes_per_s == pytest.approx(50e6)
    assert rec.rate_max_bytes_per_s == pytest.approx(300e6)
    assert rec.rate_avg_bytes_per_s == pytest.approx((1000e6 + 3000e6 + 250e6) / 25)
    assert rec.bytes_total == 4250_000_000 and rec.tags_total > 0
    assert rec.start == T0 and rec.end == T0 + dt.timedelta(seconds=25)
    assert rec.initial_sensors == {"t": 40.0}


def test_idle_timeout_ends_session_at_last_data():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    closed = feed(tr, dev, [(3, 10e6), (10, 0)])
    assert len(closed) == 1 and closed[0].end_reason == "idle"
    assert closed[0].end == T0 + dt.timedelta(seconds=3)
    assert closed[0].duration_s == pytest.approx(3)
    feed(tr, dev, [(2, 20e6)])
    assert tr.checkpoint().session_id != closed[0].session_id


def test_short_pause_joins_session_and_sets_min_to_zero():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    assert feed(tr, dev, [(3, 10e6), (2, 0), (3, 10e6)]) == []
    rec = tr.checkpoint()
    assert rec.duration_s == pytest.approx(8) and rec.rate_min_bytes_per_s == 0
    assert rec.rate_avg_bytes_per_s == pytest.approx(60e6 / 8)


def test_counter_wrap_is_not_a_reset():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device(bits=32, start=(1 << 32) - 5)
    start(tr, dev)
    assert feed(tr, dev, [(4, 400e6)]) == []  # wraps 32 bits within the first second
    rec = tr.checkpoint()
    assert rec.bytes_total == 1600_000_000
    assert rec.rate_min_bytes_per_s == pytest.approx(400e6)


def test_device_reset_ends_session():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    feed(tr, dev, [(3, 10e6)])
    dev.bytes, dev.uptime_ms = 0, 500
    closed = feed(tr, dev, [(1, 10e6)], boot="b2")
    assert [c.end_reason for c in closed] == ["device_reset"]
    assert closed[0].bytes_total == 30e6


def test_missed_polls_use_device_uptime():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=30), Device()
    start(tr, dev)
    feed(tr, dev, [(2, 10e6)])
    dev.run(10.0, 20e6)  # ten polls missed: one 10 s interval
    tr.observe(dev.counters(), "b1", dev.t, T0 + dt.timedelta(seconds=dev.t), 1, {})
    rec = tr.checkpoint()
    assert rec.duration_s == pytest.approx(12)
    assert rec.rate_max_bytes_per_s == pytest.approx(20e6)


def test_implausible_jump_is_treated_as_reset():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    feed(tr, dev, [(2, 10e6)])
    closed = feed(tr, dev, [(1, 1e12)])
    assert [c.end_reason for c in closed] == ["device_reset"]


def test_resume_after_restart_continues_the_session():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    feed(tr, dev, [(5, 100e6)])
    saved = tr.checkpoint()
    dev.run(3.0, 100e6)  # the daemon was down for 3 s
    fresh = SessionTracker("d", "super", idle_timeout_s=5)
    assert fresh.resume(saved, dev.counters(), "b1")
    fresh.observe(dev.counters(), "b1", 0.0, T0 + dt.timedelta(seconds=dev.t), 1, {})
    rec = fresh.checkpoint()
    assert rec.session_id == saved.session_id
    assert rec.bytes_total == 800e6 and rec.duration_s == pytest.approx(8)


def test_resume_refused_after_device_reset():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    feed(tr, dev, [(5, 100e6)])
    saved = tr.checkpoint()
    assert not SessionTracker("d", "super", 5).resume(saved, dev.counters(), "other-boot")


def test_status_change_splits_sessions():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    feed(tr, dev, [(3, 10e6)], status=1)
    first = tr.close("status_change")
    feed(tr, dev, [(3, 10e6)], status=2)
    second = tr.checkpoint()
    assert first.status == 1 and second.status == 2
    assert second.start == first.end


def test_no_session_without_data():
    tr, dev = SessionTracker("d", "super", idle_timeout_s=5), Device()
    start(tr, dev)
    assert feed(tr, dev, [(20, 0)]) == [] and tr.checkpoint() is None
