"""The control socket's connection loop: accept, read, deadlines, limits, replies.

Part of the local API (``tagstat.control``, whose ``ControlServer`` owns the
limits and dispatches requests). One selector thread accepts all the time and
does every socket read and write without blocking, so a connection that sends
nothing costs a file descriptor, not a thread, and accepting never waits for a
slow client. Each connection is in one state at a time (reading, dispatching,
writing, draining) with its own deadline; complete request lines go to a small
pool of worker threads, which never touch a socket. A connection over a limit
(per uid, in all, or a full queue) gets a one-line ``Busy`` reply naming it.
"""

import heapq
import itertools
import logging
import queue
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from tagstat import wire
from tagstat.control_peer import PeerCred, peer_cred, peer_uid

if TYPE_CHECKING:
    from tagstat.control import ControlServer

log = logging.getLogger(__name__)

_DRAIN_MAX_BYTES = 1024 * 1024
_ACCEPT_BATCH = 64  # per wake-up, so a flood of connects cannot starve replies
_CHUNK_BYTES = 65536
_WARN_EVERY_S = 60.0  # one warning a minute per cause: a flood must not flood the journal
_STOP_WAIT_S = 0.5


def bad_request(exc: wire.BadRequest) -> dict:
    # Not the message: it can echo client text, and no log line may hold a serial.
    log.debug("rejected a malformed control request")
    return wire.error_reply("BadRequest", str(exc))


def _busy(message: str) -> dict:
    return wire.error_reply("Busy", f"tagstatd is busy: {message}")


def drain_blocking(sock: socket.socket, timeout_s: float) -> None:
    # Closing a Unix socket with unread input resets the connection, which can
    # discard the reply before the client reads it (say, after "too large"). So
    # read on to EOF, bounded in time and bytes.
    deadline = time.monotonic() + timeout_s
    left = _DRAIN_MAX_BYTES
    while left > 0 and (remaining_s := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining_s)
        chunk = sock.recv(min(left, _CHUNK_BYTES))
        if not chunk:
            return
        left -= len(chunk)


# Where a connection is in its life; each state has its own deadline (none while dispatching).
READING, DISPATCHING, WRITING, DRAINING, CLOSED = (
    "reading",
    "dispatching",
    "writing",
    "draining",
    "closed",
)


class _Conn:
    """One accepted connection; only the loop thread changes it (workers read line, peer)."""

    def __init__(self, sock: socket.socket, peer: PeerCred | None, server: "ControlServer"):
        self.sock = sock
        self.peer = peer
        self.uid = peer.uid if peer is not None else None  # None: one shared bucket
        self.opened = time.monotonic()
        # The client's time in all; the time spent in the controller is added back.
        self.deadline = self.opened + server.timeout_s
        self.buf = wire.LineBuffer(server.max_request_bytes)
        self.line = b""
        self.state = READING
        self.events = 0  # what the selector watches for
        self.due: float | None = None  # the current timer; older heap entries are stale
        self.bucket: Counter | None = None  # the per-uid count this connection is in
        self.out = memoryview(b"")
        self.drain_s = 0.0
        self.drain_left = _DRAIN_MAX_BYTES
        self.dispatched_at = 0.0


class Loop:
    """The selector thread: accepts, reads request lines, writes replies, keeps deadlines."""

    def __init__(self, server: "ControlServer", listener: socket.socket):
        self.s = server
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, self._accept)
        self.sel.register(self.wake_r, selectors.EVENT_READ, self._on_wake)
        self.conns: set[_Conn] = set()
        self.per_uid: Counter = Counter()  # connections being served, per uid
        self.refusing: Counter = Counter()  # refused ones held until their request is in
        self.timers: list[tuple[float, int, _Conn]] = []
        self.seq = itertools.count()
        self.done: queue.SimpleQueue = queue.SimpleQueue()  # (conn, reply bytes) from workers
        self.in_pool = 0  # handed to the pool and not yet answered
        self.warned: dict = {}
        self.busy_lines: dict[tuple, bytes] = {}  # encoded once: refusing must stay cheap
        self.stopping = threading.Event()
        self.pool = _Pool(server.max_connections, self._work)
        self.thread = threading.Thread(target=self._run, name="tagstat-control", daemon=True)

    def start(self) -> None:
        self.pool.start()
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._wake()
        self.thread.join(timeout=_STOP_WAIT_S)
        self.pool.stop(_STOP_WAIT_S)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                for key, _ in self.sel.select(self._timeout()):
                    if isinstance(key.data, _Conn):
                        self._on_conn(key.data)
                    else:
                        key.data()
                self._expire()
        except Exception:  # a bug here would silently end the local API: say so loudly
            log.exception("control socket loop failed; the local API is down")
        finally:
            self._close_all()

    def _close_all(self) -> None:
        for conn in list(self.conns):
            self._close(conn)
        for sock in (self.listener, self.wake_r, self.wake_w):
            sock.close()
        self.sel.close()

    # -- accepting ---------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: keep serving the open ones
                self._warn("accept", "cannot accept a control connection: %s", exc.strerror)
                return
            uid = peer_uid(sock)
            refusal = self._refusal(uid)
            if refusal is not None and not refusal[1]:
                self._shed(sock, uid, refusal[0])
                continue
            sock.setblocking(False)
            conn = _Conn(sock, peer_cred(sock), self.s)
            try:
                self._admit(conn, refusal)
            except Exception:  # one connection lost, not the loop
                log.exception("control connection failed unexpectedly")
                self._close(conn)

    def _admit(self, conn: _Conn, refusal: tuple[str, bool] | None) -> None:
        self.conns.add(conn)
        if refusal is not None:  # refused, but held until its request is in
            self._warn_refused(conn.uid, refusal[0])
            self._count(conn, self.refusing)
            self._reply(conn, self._busy_line(conn.uid, refusal[0]), self.s.first_byte_timeout_s)
            return
        self._count(conn, self.per_uid)
        self._watch(conn, selectors.EVENT_READ)
        self._schedule(conn, conn.opened + self.s.first_byte_timeout_s)

    def _refusal(self, uid: int | None) -> tuple[str, bool] | None:
        """Why ``uid`` may not open another connection now, and whether to hold it."""
        s = self.s
        if len(self.conns) >= s.max_open_connections:
            return (f"the limit of {s.max_open_connections} open connections is reached; "
                    "try again shortly", False)  # fmt: skip
        limit = s.max_connections_per_uid
        if limit is not None and uid not in s.exempt_uids and self.per_uid[uid] >= limit:
            message = (f"uid {uid} already has {limit} connections open, the limit per uid; "
                       "close some and try again")  # fmt: skip
            # Closing before the client has sent its request fails its send (EPIPE) and
            # loses the reply, so up to ``limit`` refused ones wait for their request.
            return message, self.refusing[uid] < limit
        return None

    def _shed(self, sock: socket.socket, uid: int | None, message: str) -> None:
        """Refuse at the least cost: under a connect() flood this path is the accept rate."""
        self._warn_refused(uid, message)
        try:
            sock.send(self._busy_line(uid, message), socket.MSG_DONTWAIT)  # best effort
        except OSError:
            pass
        sock.close()

    def _busy_line(self, uid: int | None, message: str) -> bytes:
        line = self.busy_lines.get((uid, message))
        if line is None:
            if len(self.busy_lines) > 1024:  # one per uid and limit; bound it anyway
                self.busy_lines.clear()
            line = self.busy_lines[uid, message] = wire.encode(_busy(message))
        return line

    def _warn_refused(self, uid: int | None, message: str) -> None:
        self._warn(("busy", uid), "refused a control connection from uid %s: %s", uid, message)

    # -- reading and dispatching ---------------------------------------------------

    def _on_conn(self, conn: _Conn) -> None:
        try:
            if conn.state == READING:
                self._read(conn)
            elif conn.state == WRITING:
                self._write(conn)
            elif conn.state == DRAINING:
                self._drain(conn)
        except OSError:  # reset, broken pipe: the client's loss, nobody else's
            self._close(conn)
        except Exception:
            log.exception("control connection failed unexpectedly")
            self._close(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        if not chunk:
            self._reply_error(conn, conn.buf.eof(), drain=False)
            return
        first = conn.buf.received == 0
        try:
            line = conn.buf.feed(chunk)
        except wire.BadRequest as exc:  # too large: the client may still be sending
            self._reply_error(conn, exc, drain=True)
            return
        if line is not None:
            self._submit(conn, line)
        elif first:
            self._schedule(conn, conn.deadline)

    def _submit(self, conn: _Conn, line: bytes) -> None:
        s = self.s
        if self.in_pool >= s.max_connections + s.max_queued:
            message = (f"the limit of {s.max_connections} requests at once plus {s.max_queued} "
                       "waiting is reached; try again shortly")  # fmt: skip
            self._warn("queue", "refused a control request: %s", message)
            self._reply(conn, wire.encode(_busy(message)), s.drain_timeout_s)
            return
        conn.line, conn.state, conn.due = line, DISPATCHING, None
        conn.dispatched_at = time.monotonic()
        self._watch(conn, 0)  # what else the client sends waits for the drain
        self.in_pool += 1
        self.pool.submit(conn)

    def _work(self, conn: _Conn) -> None:
        """In a worker thread: the controller's answer, handed back to the loop."""
        if self.stopping.is_set():
            return
        try:
            data = self.s._encode(self.s._reply_for_line(conn.line, conn.peer))
        except Exception:  # a connection not handed back would never be answered or closed
            log.exception("control request failed unexpectedly")
            data = wire.encode(wire.error_reply("InternalError", "internal error"))
        self.done.put((conn, data))
        self._wake()

    def _on_wake(self) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                conn, data = self.done.get_nowait()
            except queue.Empty:
                return
            self.in_pool -= 1
            if conn.state == DISPATCHING:
                conn.deadline += time.monotonic() - conn.dispatched_at
                self._reply(conn, data, self.s.drain_timeout_s)

    def _wake(self) -> None:
        try:
            self.wake_w.send(b"\0")
        except OSError:  # full: a wake-up is pending anyway; closed: the loop has stopped
            pass

    # -- replying, draining, closing -----------------------------------------------

    def _reply_error(self, conn: _Conn, exc: wire.BadRequest, drain: bool) -> None:
        self._reply(conn, wire.encode(bad_request(exc)), self.s.drain_timeout_s if drain else 0)

    def _reply(self, conn: _Conn, data: bytes, drain_s: float) -> None:
        conn.out, conn.drain_s, conn.state = memoryview(data), drain_s, WRITING
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            while conn.out:
                conn.out = conn.out[conn.sock.send(conn.out) :]
        except (BlockingIOError, InterruptedError):
            if conn.events != selectors.EVENT_WRITE:
                self._watch(conn, selectors.EVENT_WRITE)
                self._schedule(conn, conn.deadline)
            return
        except OSError as exc:  # the client went away or stopped reading; its loss
            log.debug("could not send control reply: %s", exc)
            self._close(conn)
            return
        self._replied(conn)

    def _replied(self, conn: _Conn) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # EOF for a client that reads to the end
        except OSError:
            pass
        now = time.monotonic()
        until = min(conn.deadline, now + conn.drain_s)
        if until <= now:
            self._close(conn)
            return
        conn.state = DRAINING
        self._watch(conn, selectors.EVENT_READ)
        self._schedule(conn, until)

    def _drain(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(min(conn.drain_left, _CHUNK_BYTES))
        except (BlockingIOError, InterruptedError):
            return
        conn.drain_left -= len(chunk)
        if not chunk or conn.drain_left <= 0:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.state == CLOSED:
            return
        conn.state = CLOSED
        self.conns.discard(conn)
        if conn.bucket is not None:
            conn.bucket[conn.uid] -= 1
            if conn.bucket[conn.uid] <= 0:
                del conn.bucket[conn.uid]
        if conn.events:
            self.sel.unregister(conn.sock)
        _sweep(conn)
        conn.sock.close()

    # -- bookkeeping ---------------------------------------------------------------

    def _count(self, conn: _Conn, bucket: Counter) -> None:
        conn.bucket = bucket
        bucket[conn.uid] += 1

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if not conn.events:
            self.sel.register(conn.sock, events, conn)
        elif not events:
            self.sel.unregister(conn.sock)
        else:
            self.sel.modify(conn.sock, events, conn)
        conn.events = events

    def _schedule(self, conn: _Conn, when: float) -> None:
        conn.due = when
        heapq.heappush(self.timers, (when, next(self.seq), conn))

    def _timeout(self) -> float | None:
        return max(0.0, self.timers[0][0] - time.monotonic()) if self.timers else None

    def _expire(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            when, _, conn = heapq.heappop(self.timers)
            if conn.due == when and conn.state != CLOSED:
                conn.due = None
                self._on_deadline(conn)

    def _on_deadline(self, conn: _Conn) -> None:
        if conn.state != READING:
            self._close(conn)  # writing or draining: the client's time is up
            return
        limit_s = self.s.timeout_s if conn.buf.received else self.s.first_byte_timeout_s
        self._reply_error(conn, conn.buf.timeout(limit_s), drain=False)

    def _warn(self, key, message: str, *args) -> None:
        now = time.monotonic()
        if now - self.warned.get(key, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self.warned[key] = now
            log.warning(message, *args)


def _sweep(conn: _Conn) -> None:
    """Read what the client has already sent, so closing does not reset the connection."""
    try:
        while conn.drain_left > 0:
            chunk = conn.sock.recv(min(conn.drain_left, _CHUNK_BYTES))
            if not chunk:
                return
            conn.drain_left -= len(chunk)
    except OSError:  # nothing more there (EAGAIN), or the client is gone
        pass


class _Pool:
    """Worker threads that run complete requests; the loop bounds how many wait."""

    def __init__(self, size: int, work: Callable[[_Conn], None]):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._work = work
        self._threads = [
            threading.Thread(target=self._run, name=f"tagstat-control-{i}", daemon=True)
            for i in range(size)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, conn: _Conn) -> None:
        self._queue.put(conn)

    def stop(self, timeout_s: float) -> None:
        """End the idle workers; one still in the controller is left to finish (daemon)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (conn := self._queue.get()) is not None:
            self._work(conn)
