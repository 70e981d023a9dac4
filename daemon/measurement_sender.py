"""The application side's background sender of measurement events.

An application's call only appends to a bounded in-process queue (the oldest
event goes when it is full, and is counted); one daemon thread, started with
the first event, minimises the events (``tagstat.measurement_schema``), packs
them into ``record_measurements`` requests under the control socket's 64 KiB
request limit and sends them to tagstatd, with short timeouts. When no daemon
answers it keeps the events and backs off, doubling the wait up to a minute,
instead of trying once per event. At interpreter exit an ``atexit`` hook waits
at most ``EXIT_WAIT_S`` for the queue to drain, and not at all once the daemon
has been found absent. A forked child starts with a fresh, empty sender.
"""

import atexit
import collections
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from tagstat import measurement_schema as schema
from tagstat import wire
from tagstat.clock import iso
from tagstat.paths import Paths

log = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 1000
MAX_BATCH_BYTES = wire.MAX_REQUEST_BYTES - 1024  # room for the op name and the framing
MAX_BATCH_EVENTS = 500  # below the daemon's per-request limit
LINGER_S = 0.05  # let a burst of events collect into one request
# Encoding is pure Python and holds the GIL: yield it this often, so that the
# application's threads wait at most a fraction of a millisecond for it.
_YIELD_EVERY = 16
CONNECT_TIMEOUT_S = 0.25
REPLY_TIMEOUT_S = 2.0
EXIT_WAIT_S = 0.5
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0

_OK, _ABSENT, _FAILED = "ok", "absent", "failed"


class Sender:
    """A queue of raw events and the thread that delivers them."""

    def __init__(self, socket_path: Path | None = None):
        self.socket_path = socket_path
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None
        self._busy = False  # a batch is on its way
        self._flushing = False
        self._flush_gave_up = False  # the daemon was absent while flushing
        self._retry_at = 0.0
        self._backoff_s = BACKOFF_MIN_S
        self.dead = False  # set in a forked child: this object belongs to the parent
        self.dropped = 0  # events pushed out of a full queue
        self.sent = 0
        self.failed = 0  # events in batches the daemon refused or did not answer

    def submit(self, event: tuple) -> None:
        """Queue one raw event; never blocks on I/O."""
        with self._cond:
            if len(self._queue) >= MAX_QUEUED_EVENTS:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            if self._thread is None:
                self._start()
            elif len(self._queue) == 1:
                self._cond.notify()  # the thread sleeps only while the queue is empty

    def flush(self, timeout_s: float = EXIT_WAIT_S) -> bool:
        """Wait up to ``timeout_s`` for queued events to be delivered; True if all were."""
        if self.dead:
            return False
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if self._thread is None:
                return not self._queue
            self._flushing, self._flush_gave_up = True, False
            self._cond.notify_all()
            while (self._queue or self._busy) and not self._flush_gave_up:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                self._cond.wait(remaining_s)
            self._flushing = False
            self._cond.notify_all()  # the thread may be waiting on the flush's terms
            return not (self._queue or self._busy)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tagstat-measurements", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            events = self._next_batch()
            try:
                outcome, unsent = self._deliver(events)
            except Exception:  # a bug here must not end the thread, nor reach the app
                log.debug("measurement sender failed", exc_info=True)
                outcome, unsent = _FAILED, []
            self._finish(len(events) - len(unsent), outcome, unsent)

    def _next_batch(self) -> list[tuple]:
        with self._cond:
            while not self._ready():
                self._cond.wait(self._wait_s())
            if not self._urgent():
                self._cond.wait(LINGER_S)  # only flush() notifies now, and it should not wait
            n = min(len(self._queue), MAX_BATCH_EVENTS)
            events = [self._queue.popleft() for _ in range(n)]
            self._busy = True
            return events

    def _ready(self) -> bool:
        if not self._queue:
            return False
        return self._urgent() or time.monotonic() >= self._retry_at

    def _urgent(self) -> bool:
        """flush() is waiting, and the daemon has not been found absent since it began."""
        return self._flushing and not self._flush_gave_up

    def _wait_s(self) -> float | None:
        if not self._queue:
            return None  # until submit() notifies
        return max(0.0, self._retry_at - time.monotonic())

    def _finish(self, n_tried: int, outcome: str, unsent: list[tuple]) -> None:
        with self._cond:
            self._busy = False
            # Keep what never reached a daemon, oldest first, within the bound.
            self._queue.extendleft(reversed(unsent))
            while len(self._queue) > MAX_QUEUED_EVENTS:
                self._queue.popleft()
                self.dropped += 1
            if outcome == _FAILED:
                self.failed += n_tried
            else:
                self.sent += n_tried
            if outcome == _OK:
                self._backoff_s = BACKOFF_MIN_S
            else:
                self._retry_at = time.monotonic() + self._backoff_s
                self._backoff_s = min(BACKOFF_MAX_S, self._backoff_s * 2)
                self._flush_gave_up = self._flushing
            self._cond.notify_all()

    def _deliver(self, events: list[tuple]) -> tuple[str, list[tuple]]:
        """Send ``events``, one request per connection, each within the size limit.

        Connects before encoding, so an absent daemon costs no work. Returns the
        outcome and the events that never reached a daemon.
        """
        outcome, done = _OK, 0
        while done < len(events):
            sock = self._connect()
            if sock is None:
                return (_ABSENT if outcome == _OK else outcome), events[done:]
            with sock:
                n, body = _request(events, done)
                result = self._exchange(sock, body) if body else _OK
            outcome = _FAILED if result == _FAILED else outcome
            done += n
        return outcome, []

    def _connect(self) -> socket.socket | None:
        path = self.socket_path or Paths.resolve().socket
        self.socket_path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(os.fspath(path))
        except OSError:  # missing, refused, no permission, backlog full: try later
            sock.close()
            return None
        return sock

    def _exchange(self, sock: socket.socket, request: bytes) -> str:
        try:
            sock.sendall(request)
            reply = wire.read_message(sock, None, REPLY_TIMEOUT_S)
        except (OSError, wire.BadRequest):
            return _FAILED  # it may have been stored; resending could count it twice
        return _OK if reply.get("ok") is True else _FAILED


def encode(event: tuple) -> dict:
    """A raw queued event as the minimised dict sent to the daemon."""
    type_name, start_s, duration_s, error, config, indicators = event
    start = dt.datetime.fromtimestamp(start_s, dt.UTC)
    kept = schema.indicators(indicators)
    if "events_per_s" not in kept and "events_processed" in kept and duration_s > 0:
        rate = schema.number(kept["events_processed"] / duration_s)
        if rate is not None:
            kept["events_per_s"] = rate
    return {
        "type": schema.measurement_type(type_name),
        "start": iso(start),
        "end": iso(start + dt.timedelta(seconds=duration_s)),
        "duration_s": schema.duration(duration_s),
        "error": None if error is None else schema.error_class(error),
        "config": schema.config(config),
        "indicators": kept,
    }


def _encoded(event: tuple) -> bytes | None:
    try:
        return json.dumps(encode(event), separators=(",", ":")).encode("utf-8")
    except (OverflowError, OSError, ValueError):  # a stamp beyond what datetime can hold
        return None


def _request(events: list[tuple], first: int) -> tuple[int, bytes | None]:
    """One request with as many events from ``events[first:]`` as fit the size limit.

    Returns how many events it used up (an event that cannot be encoded is used
    up, and dropped) and the request, or None when none of them could be encoded.
    """
    parts: list[bytes] = []
    size, i = 0, first
    while i < len(events):
        if (i - first) % _YIELD_EVERY == _YIELD_EVERY - 1:
            time.sleep(0.0001)  # let the application's threads have the GIL between chunks
        data = _encoded(events[i])
        if data is not None and parts and size + len(data) + 1 > MAX_BATCH_BYTES:
            break  # it goes into the next request
        if data is not None and len(data) < MAX_BATCH_BYTES:
            parts.append(data)
            size += len(data) + 1
        i += 1
    if not parts:
        return i - first, None
    return i - first, b'{"op":"record_measurements","events":[%s]}\n' % b",".join(parts)
