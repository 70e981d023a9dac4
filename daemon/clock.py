"""The clock, injectable so tests can drive time.

Rates use monotonic time; stamps use UTC. ``utc_at`` converts a monotonic
reading taken in this process into a UTC stamp.
"""

import datetime as dt
import time


class Clock:
    """The system clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def utc_now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def utc_at(self, monotonic_s: float) -> dt.datetime:
        now_mono = self.monotonic()
        return self.utc_now() - dt.timedelta(seconds=now_mono - monotonic_s)


class ManualClock(Clock):
    """Time that moves only when told: ``t`` is POSIX seconds, for both clocks. The
    example report's simulated run uses it, and so do tests and benchmarks."""

    def __init__(self, start: dt.datetime):
        self.t = start.timestamp()

    def monotonic(self) -> float:
        return self.t

    def utc_now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.t, dt.UTC)

    def wall(self) -> float:
        return self.t


def iso(stamp: dt.datetime) -> str:
    """A UTC stamp as ISO 8601 with millisecond precision and a Z suffix."""
    return stamp.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
