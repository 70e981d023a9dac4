"""Usage sessions of one device, computed from its traffic counters.

A *usage session* is a stretch of time in which a device sends data to the
host. It starts at the beginning of the first poll interval in which the
device's byte counter advanced, and ends at the end of the last interval with
data when one of these happens:

- ``idle``: no data for ``idle_timeout_s``;
- ``unplugged``: the device disappeared;
- ``device_reset``: the boot id changed or the uptime went backwards;
- ``status_change`` / ``disabled``: the usage-statistics status changed, so
  that every session is collected under one status only.

A daemon restart does not end a session: it is checkpointed and resumed when
the device shows the same boot id again (see ``resume``).

Interval rates use the device's own uptime, which is sampled atomically with
its counters, so host scheduling jitter does not distort them; the host's
monotonic clock is the fallback when the uptime does not advance. Counters
wrap at ``counter_bits``. This module does no I/O.
"""

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable

from tagstat.drivers.protocol import Counters
from tagstat.records import SessionRecord

# Faster than any USB link a Time Tagger has (USB 3.2 Gen 2 moves ~1.2 GB/s):
# a larger delta means the counters were reset without a visible boot change.
MAX_PLAUSIBLE_RATE_BYTES_PER_S = 2.5e9


@dataclasses.dataclass
class _Sample:
    counters: Counters
    boot_tag: str
    mono_s: float
    utc: dt.datetime


@dataclasses.dataclass
class _Open:
    session_id: str
    status: int
    start: dt.datetime
    end: dt.datetime
    initial_sensors: dict
    duration_s: float = 0.0
    bytes_total: int = 0
    tags_total: int = 0
    rate_min: float = float("inf")
    rate_max: float = 0.0
    idle_s: float = 0.0  # zero-data time since the last data; joins the session if data resumes


class SessionTracker:
    """Turns successive counter samples of one device into usage sessions."""

    def __init__(
        self,
        device_id: str,
        usb_speed: str,
        idle_timeout_s: float,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ):
        self.device_id = device_id
        self.usb_speed = usb_speed
        self.idle_timeout_s = idle_timeout_s
        self._new_id = new_id
        self._last: _Sample | None = None
        self._open: _Open | None = None

    @property
    def has_baseline(self) -> bool:
        return self._last is not None

    def observe(
        self,
        counters: Counters,
        boot_tag: str,
        mono_s: float,
        utc: dt.datetime,
        status: int,
        sensors: dict,
    ) -> list[SessionRecord]:
        """Feed one poll's counters; return the sessions this sample closed."""
        sample = _Sample(counters, boot_tag, mono_s, utc)
        prev, self._last = self._last, sample
        if prev is None:
            return []
        if boot_tag != prev.boot_tag or counters.uptime_ms < prev.counters.uptime_ms:
            return self._close_list("device_reset")
        interval_s = self._interval_s(prev, sample)
        if interval_s <= 0:
            return []
        nbytes = _delta(prev.counters.bytes_sent, counters.bytes_sent, counters.counter_bits)
        ntags = _delta(prev.counters.tags_sent, counters.tags_sent, counters.counter_bits)
        if nbytes / interval_s > MAX_PLAUSIBLE_RATE_BYTES_PER_S:
            return self._close_list("device_reset")
        if nbytes == 0:
            return self._idle(interval_s)
        self._data(prev.utc, sample.utc, interval_s, nbytes, ntags, status, sensors)
        return []

    def close(self, reason: str) -> SessionRecord | None:
        """End the open session (if any); the baseline stays for the next one."""
        if self._open is None:
            return None
        rec = self._record(self._open, open_=False, reason=reason)
        self._open = None
        return rec

    def forget(self, reason: str) -> SessionRecord | None:
        """Close and drop the baseline: the device is gone or collection stopped."""
        rec = self.close(reason)
        self._last = None
        return rec

    def drop_baseline_before(self, mono_s: float) -> None:
        """Forget the last sample unless it was taken at or after ``mono_s`` (a reading at a
        status switch failed: the next interval would span the switch)."""
        if self._last is not None and not self._last.mono_s >= mono_s:  # NaN: a resumed one
            self._last = None

    def checkpoint(self) -> SessionRecord | None:
        """The open session as it stands, with the counters needed to resume it."""
        return self._record(self._open, open_=True, reason=None) if self._open else None

    def resume(self, rec: SessionRecord, counters: Counters, boot_tag: str) -> bool:
        """Continue a checkpointed session if the device did not reset since.

        Called with the first sample of the device in this process, before
        ``observe``. The checkpoint becomes the baseline, so the interval from
        the checkpoint to now (measured by the device's uptime) joins the session.
        """
        if rec.boot_tag != boot_tag or counters.uptime_ms < rec.last_uptime_ms:
            return False
        base = Counters(
            counters.counter_bits, rec.last_bytes, rec.last_tags, rec.last_uptime_ms, b""
        )
        self._last = _Sample(base, boot_tag, float("nan"), rec.checkpoint_at)
        self._open = _Open(
            session_id=rec.session_id,
            status=rec.status,
            start=rec.start,
            end=rec.end,
            initial_sensors=rec.initial_sensors,
            duration_s=rec.duration_s,
            bytes_total=rec.bytes_total,
            tags_total=rec.tags_total,
            rate_min=rec.rate_min_bytes_per_s,
            rate_max=rec.rate_max_bytes_per_s,
            idle_s=max(0.0, (rec.checkpoint_at - rec.end).total_seconds()),
        )
        return True

    # -- internals ---------------------------------------------------------

    @staticmethod
    def _interval_s(prev: _Sample, cur: _Sample) -> float:
        device_s = (cur.counters.uptime_ms - prev.counters.uptime_ms) / 1000.0
        if device_s > 0:
            return device_s
        host_s = cur.mono_s - prev.mono_s  # NaN after a resume: no interval then
        return host_s if host_s > 0 else 0.0

    def _idle(self, interval_s: float) -> list[SessionRecord]:
        if self._open is None:
            return []
        self._open.idle_s += interval_s
        if self._open.idle_s >= self.idle_timeout_s:
            return self._close_list("idle")
        return []

    def _data(self, start, end, interval_s, nbytes, ntags, status, sensors) -> None:
        s = self._open
        if s is not None and s.status != status:
            # The caller closes sessions on a status change; this guards the rule.
            self.close("status_change")
            s = None
        if s is None:
            s = self._open = _Open(self._new_id(), status, start, end, dict(sensors))
        if s.idle_s > 0:
            s.duration_s += s.idle_s
            s.rate_min = 0.0
            s.idle_s = 0.0
        rate = nbytes / interval_s
        s.duration_s += interval_s
        s.bytes_total += nbytes
        s.tags_total += ntags
        s.rate_min = min(s.rate_min, rate)
        s.rate_max = max(s.rate_max, rate)
        s.end = end

    def _close_list(self, reason: str) -> list[SessionRecord]:
        rec = self.close(reason)
        return [rec] if rec else []

    def _record(self, s: _Open, open_: bool, reason: str | None) -> SessionRecord:
        last = self._last
        return SessionRecord(
            session_id=s.session_id,
            device_id=self.device_id,
            status=s.status,
            start=s.start,
            end=s.end,
            duration_s=s.duration_s,
            bytes_total=s.bytes_total,
            tags_total=s.tags_total,
            rate_min_bytes_per_s=s.rate_min if s.bytes_total else 0.0,
            rate_max_bytes_per_s=s.rate_max,
            usb_speed=self.usb_speed,
            initial_sensors=s.initial_sensors,
            open=open_,
            end_reason=reason,
            boot_tag=last.boot_tag if last else "",
            last_bytes=last.counters.bytes_sent if last else 0,
            last_tags=last.counters.tags_sent if last else 0,
            last_uptime_ms=last.counters.uptime_ms if last else 0,
            checkpoint_at=last.utc if last else s.end,
        )


def _delta(old: int, new: int, bits: int) -> int:
    """Counter difference allowing for one wrap at ``bits``."""
    return (new - old) % (1 << bits)
