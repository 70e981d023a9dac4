"""Logging for tagstatd: readable lines, masked, and the daemon's own warnings kept.

Every handler carries the masking filter, the last line of defence against a
serial reaching a log. Warnings and errors of tagstat's loggers are also
queued (bounded) for the store, so that they appear in the report; the poll
loop drains the queue, so logging never writes to SQLite from another thread.
"""

import collections
import logging
import sys
import threading

from tagstat.masking import MaskingLogFilter

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DaemonMessageQueue(logging.Handler):
    """Keeps WARNING and above for the store; drops the oldest past ``maxlen``."""

    def __init__(self, maxlen: int = 1000):
        super().__init__(level=logging.WARNING)
        self._items: collections.deque = collections.deque(maxlen=maxlen)
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warning"
        with self._lock2:
            self._items.append((level, record.getMessage(), record.created))

    def drain(self) -> list[tuple[str, str, float]]:
        with self._lock2:
            items = list(self._items)
            self._items.clear()
        return items


def setup_logging(masker, level: str = "INFO", stream=None) -> DaemonMessageQueue:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(HUMAN_FORMAT))
    mask = MaskingLogFilter(masker)
    handler.addFilter(mask)
    root.addHandler(handler)
    root.setLevel(level.upper())
    queue = DaemonMessageQueue()
    queue.addFilter(mask)
    logging.getLogger("tagstat").addHandler(queue)
    return queue
