"""Tell tagstat which Time Tagger measurements an application runs: fire and forget.

``track_measurement`` is a context manager that times a measurement (wall
time, and process CPU time with ``time.process_time``) and records its
outcome; ``record_measurement`` records one that the application timed
itself. Both only queue the event in memory (``tagstat.measurement_sender``
delivers it in the background), so a call costs microseconds and never
raises because tagstat is missing, stopped, busy or disabled. Arguments of
the wrong kind (a measurement type that is not a str, a config that is not a
mapping, ...) are programming errors and raise ``TypeError`` at once, in
every environment; values tagstat does not accept are dropped silently. With
a kill switch set (``TAGSTAT_DISABLE``, ``DO_NOT_TRACK``; see
``tagstat.killswitch``) the calls do nothing. What is kept of an event is
defined in ``tagstat.measurement_schema`` and ``docs/DATA.md``.
"""

import datetime as dt
import os
import threading
import time
from collections.abc import Mapping

from tagstat import killswitch

_sender = None
_sender_lock = threading.Lock()


class Measurement:
    """One tracked measurement; ``add`` and ``configure`` may be called inside the block."""

    __slots__ = ("type", "config", "indicators", "_on", "_start_s", "_t0", "_cpu0")

    def __init__(self, measurement_type: str, config: Mapping | None = None):
        _check_type(measurement_type)
        _check_mapping("config", config)
        self.type = measurement_type
        self.config = dict(config) if config else {}
        self.indicators: dict = {}
        self._on = killswitch.active() is None

    def add(self, **indicators) -> None:
        """Performance indicators, e.g. ``add(events_processed=n, dropped_events=k)``."""
        self.indicators.update(indicators)

    def configure(self, **config) -> None:
        """More configuration, known only once the measurement has been set up."""
        self.config.update(config)

    def __enter__(self) -> "Measurement":
        self._start_s = time.time()
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        cpu_s = time.process_time() - self._cpu0
        duration_s = time.perf_counter() - self._t0
        if self._on:
            indicators = self.indicators
            if "cpu_time_s" not in indicators:
                indicators = {**indicators, "cpu_time_s": cpu_s}
            error = None if exc_type is None else exc_type.__name__
            _submit((self.type, self._start_s, duration_s, error, dict(self.config), indicators))
        return False  # the application's exception, if any, goes on unchanged


def track_measurement(measurement_type: str, config: Mapping | None = None) -> Measurement:
    """``with track_measurement("Correlation", config={"binwidth": 1000}) as m: ...``

    Records type, start, end, duration, success or the exception's class name,
    the allowlisted configuration, the indicators given to ``m.add`` and the
    process CPU time spent in the block (``cpu_time_s``, unless given).
    """
    return Measurement(measurement_type, config)


def record_measurement(
    measurement_type: str,
    start,
    end,
    *,
    error=None,
    config: Mapping | None = None,
    indicators: Mapping | None = None,
) -> None:
    """Record a measurement the application timed itself.

    ``start`` and ``end`` are POSIX times in seconds (``time.time()``) or
    datetimes (a naive one is local time); ``error`` is None for success, or an
    exception, an exception class or a class name. An ``end`` before ``start``
    is dropped.
    """
    _check_type(measurement_type)
    start_s, end_s = _posix_time("start", start), _posix_time("end", end)
    _check_mapping("config", config)
    _check_mapping("indicators", indicators)
    error_name = _error_name(error)
    if killswitch.active() is not None or end_s < start_s:
        return
    event = (measurement_type, start_s, end_s - start_s, error_name,
             dict(config or {}), dict(indicators or {}))  # fmt: skip
    _submit(event)


def flush(timeout_s: float = 0.5) -> bool:
    """Wait up to ``timeout_s`` for queued events to reach the daemon; True if all did.

    Not needed before exit (an exit hook does the same); useful in tests.
    """
    sender = _sender
    return True if sender is None else sender.flush(timeout_s)


def _submit(event: tuple) -> None:
    global _sender
    try:
        sender = _sender
        if sender is None:
            with _sender_lock:
                if _sender is None:
                    from tagstat.measurement_sender import Sender

                    _sender = Sender()
                sender = _sender
        sender.submit(event)
    except Exception:  # tagstat must never break the application
        pass


def _check_type(measurement_type) -> None:
    if not isinstance(measurement_type, str):
        raise TypeError(
            f"measurement type must be a str (a Time Tagger measurement class name), "
            f"not {type(measurement_type).__name__}"
        )


def _check_mapping(name: str, value) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping or None, not {type(value).__name__}")


def _posix_time(name: str, value) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(
        f"{name} must be a POSIX time in seconds or a datetime, not {type(value).__name__}"
    )


def _error_name(error) -> str | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        return type(error).__name__
    if isinstance(error, type) and issubclass(error, BaseException):
        return error.__name__
    if isinstance(error, str):
        return error
    raise TypeError(
        f"error must be None, an exception, an exception class or a class name, "
        f"not {type(error).__name__}"
    )


def _forget_after_fork() -> None:
    # The parent's queue, lock and thread are not ours: start afresh, and keep the
    # parent's exit hook (inherited by the child) from waiting on a thread that is gone.
    global _sender, _sender_lock
    if _sender is not None:
        _sender.dead = True
    _sender, _sender_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
