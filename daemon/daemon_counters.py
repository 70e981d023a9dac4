"""tagstatd's own problems, counted: all the report says about the daemon itself.

The daemon's warnings and errors (a USB read that failed, a group that does not
exist, a full disk) belong in the journal, where the admin reads them with
their details. They are not the instrument's messages, and their texts name
local things (groups, paths, hex dumps of replies), so the report never holds
them. It holds counts only, under ``daemon``: failed device readings, polls
whose USB scan found a device it could not open, and the daemon's warning and
error log records. Counts are kept in memory per status and written to the
store by the poll thread (``flush``), at each checkpoint and before a status
change, so each count is stored under the status in force when it happened and
a report of status-2 data counts only what happened under status 2. Under
``Disabled`` nothing is counted.
"""

import collections
import logging
import threading
from collections.abc import Callable

NAMES = ("read_errors", "scan_errors", "log_warnings", "log_errors")


class DaemonCounters:
    """Counts per (status, name), added from any thread, flushed by the poll thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, name: str, status: int, n: int = 1) -> None:
        if name not in NAMES:
            raise ValueError(f"unknown daemon counter {name!r}; known: {', '.join(NAMES)}")
        if status and n > 0:  # status 0 is Disabled: nothing new is collected
            with self._lock:
                self._counts[int(status)][name] += n

    def take(self) -> dict[int, dict[str, int]]:
        """The counts so far, per status; they are cleared."""
        with self._lock:
            counts, self._counts = self._counts, collections.defaultdict(collections.Counter)
        return {status: dict(c) for status, c in counts.items() if c}

    def flush(self, store, at) -> None:
        for status, counts in self.take().items():
            store.record_daemon_counts(at, status, counts)

    def clear(self) -> None:
        self.take()


def report_block(counts: dict[str, int]) -> dict[str, int]:
    """The report's ``daemon`` object: every name, 0 when nothing happened."""
    return {name: int(counts.get(name, 0)) for name in NAMES}


class LogCounter(logging.Handler):
    """Counts the WARNING and ERROR records of tagstat's loggers, never their text."""

    def __init__(self, counters: DaemonCounters, status: Callable[[], int]):
        super().__init__(level=logging.WARNING)
        self._counters = counters
        self._status = status  # the effective status, read without a lock

    def emit(self, record: logging.LogRecord) -> None:
        name = "log_errors" if record.levelno >= logging.ERROR else "log_warnings"
        self._counters.add(name, int(self._status()))
