"""Exact arithmetic over a device's scripted rate and message timeline.

The rate is a step function of scenario time (seconds since the simulation
run started), optionally repeating with period ``loop_s``. Its integral is
piecewise linear, so it is computed exactly with ``Fraction`` rather than by
sampling: a driver test that knows the scenario can predict a byte counter to
the byte. Messages are the scripted ``(t, level, text)`` entries, repeated
every period when the timeline loops.
"""

import bisect
import math
from fractions import Fraction

from tagstat.drivers.sim.scenario import DeviceScenario


class Timeline:
    def __init__(self, device: DeviceScenario):
        self.times = [Fraction(t) for t, _ in device.rate]
        self.rates = [Fraction(r) for _, r in device.rate]
        self.messages = device.messages
        self.loop = Fraction(device.loop_s) if device.loop_s is not None else None
        # cumulative integral at each step start, so integral() is a lookup plus one product
        self.cumulative = [Fraction(0)] * len(self.times)
        for i in range(1, len(self.times)):
            span = self.times[i] - self.times[i - 1]
            self.cumulative[i] = self.cumulative[i - 1] + self.rates[i - 1] * span
        self.per_loop = self._within(self.loop) if self.loop is not None else Fraction(0)

    def rate_at(self, t: float) -> float:
        """Bytes per second at scenario time ``t``."""
        phase = self._phase(Fraction(t))[1]
        i = bisect.bisect_right(self.times, phase) - 1
        return float(self.rates[i]) if i >= 0 else 0.0

    def integral(self, t0: float, t1: float) -> Fraction:
        """Bytes sent from scenario time ``t0`` to ``t1`` at the scripted rate (exact)."""
        return self._from_zero(Fraction(t1)) - self._from_zero(Fraction(t0))

    def _from_zero(self, t: Fraction) -> Fraction:
        loops, phase = self._phase(t)
        return loops * self.per_loop + self._within(phase)

    def _phase(self, t: Fraction) -> tuple[int, Fraction]:
        if self.loop is None or t < 0:
            return 0, t
        loops = math.floor(t / self.loop)
        return loops, t - loops * self.loop

    def _within(self, t: Fraction) -> Fraction:
        """Integral from 0 to ``t`` of the un-looped step function."""
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return Fraction(0)
        return self.cumulative[i] + self.rates[i] * (t - self.times[i])

    def messages_between(self, t0: float, t1: float, keep: int) -> tuple[int, list]:
        """Scripted messages with ``t0 < t <= t1``: (how many were skipped, the last ``keep``).

        A looping timeline over a long gap (the daemon was down for a week)
        would produce thousands of messages a ring of ``keep`` cannot hold, so
        whole loops are skipped and only counted.
        """
        if not self.messages or t1 <= t0:
            return 0, []
        if self.loop is None:
            found = [m for m in self.messages if t0 < m[0] <= t1]
            return max(0, len(found) - keep), found[-keep:] if keep else []
        loop = float(self.loop)
        total = self._count_until(t1) - self._count_until(t0)
        # only the last few loops can contribute to the kept tail
        first = max(math.floor(t0 / loop), math.floor(t1 / loop) - keep // len(self.messages) - 2)
        found = []
        for k in range(first, math.floor(t1 / loop) + 1):
            for t, level, text in self.messages:
                at = k * loop + t
                if t0 < at <= t1:
                    found.append((at, level, text))
        kept = found[-keep:] if keep else []
        return max(0, total - len(kept)), kept

    def _count_until(self, t: float) -> int:
        """How many scripted messages a looping timeline has at or before ``t``."""
        loop = float(self.loop)
        loops = math.floor(t / loop)
        phase = t - loops * loop
        return loops * len(self.messages) + sum(1 for m in self.messages if m[0] <= phase)
