"""A scriptable TCP proxy that injects faults between tagstatd and a collector.

Threaded: one thread accepts, one thread serves each client connection, one
HTTP request at a time (keep-alive included). Each request takes the next
``Action`` from the script (``push``), or passes when the script is empty:

- ``pass``: forward the request upstream and return the answer;
- ``delay``: forward, then hold the answer ``seconds`` (a slow collector);
- ``reset``: reset the connection before forwarding anything;
- ``forward_reset``: forward, read the answer (the collector has stored it),
  then reset instead of returning it: the sender never hears;
- ``status``: answer ``code`` (with ``Retry-After`` if given) without forwarding;
- ``hang``: read the request and answer nothing until ``gate`` is set, then reset;
- ``split``: forward the headers and half the body, wait for ``gate``, then
  the rest (kill the collector in between: it dies mid-request);
- ``hold``: forward, read the answer, wait for ``gate``, then return it.

Every action sets ``reached`` at its key moment and ``done`` when finished,
so tests wait on events instead of sleeping. Every request's bytes are kept
in ``captured`` (``bodies()`` gunzips them). The upstream can be changed
while running (a restarted collector on a new port). Also usable as a plain
HTTP proxy: it forwards absolute-form requests unchanged to its upstream.
"""

import collections
import dataclasses
import gzip
import socket
import struct
import threading

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GATE_LIMIT_S = 60.0  # a forgotten gate never hangs the suite


@dataclasses.dataclass
class Action:
    kind: str = "pass"
    seconds: float = 0.0
    code: int = 503
    retry_after: str | None = None
    gate: threading.Event = dataclasses.field(default_factory=threading.Event)
    reached: threading.Event = dataclasses.field(default_factory=threading.Event)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    answer_status: int | None = None  # what upstream answered, if it did

    def release(self) -> None:
        self.gate.set()


class FaultProxy:
    def __init__(self, upstream: tuple[str, int] | None = None):
        self.upstream = upstream
        self.captured: list[bytes] = []
        self.actions_applied: list[Action] = []
        self._script: collections.deque[Action] = collections.deque()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closing = False
        self._clients: list[socket.socket] = []

    def start(self) -> "FaultProxy":
        threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing = True
        with self._lock:
            for action in self._script:
                action.release()
            clients = list(self._clients)
        for sock in clients:
            _reset(sock)
        self._listener.close()

    def push(self, *actions: Action) -> tuple[Action, ...]:
        with self._lock:
            self._script.extend(actions)
        return actions

    def bodies(self) -> list[bytes]:
        """Each captured request's body, gunzipped where it was gzip-encoded."""
        out = []
        for raw in list(self.captured):
            head, _, body = raw.partition(b"\r\n\r\n")
            if b"content-encoding: gzip" in head.lower():
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError):
                    pass
            out.append(body)
        return out

    # -- serving -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _next_action(self) -> Action:
        with self._lock:
            action = self._script.popleft() if self._script else Action("pass")
            self.actions_applied.append(action)
            return action

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while not self._closing:
                request = read_message(client, buf)
                if request is None:
                    return
                self.captured.append(request)
                action = self._next_action()
                try:
                    keep = self._apply(action, client, request)
                finally:
                    action.reached.set()
                    action.done.set()
                if not keep:
                    return
        except OSError:
            pass
        finally:
            client.close()

    def _apply(self, action: Action, client: socket.socket, request: bytes) -> bool:
        kind = action.kind
        if kind == "reset":
            _reset(client)
            return False
        if kind == "status":
            client.sendall(_status_answer(action.code, action.retry_after))
            return True
        if kind == "hang":
            action.reached.set()
            action.gate.wait(GATE_LIMIT_S)
            _reset(client)
            return False
        if kind == "split":
            answer = self._forward_split(action, request)
        else:
            answer = self._forward(request)
        if answer is None:  # upstream down or died mid-request
            _reset(client)
            return False
        action.answer_status = _status_of(answer)
        action.reached.set()
        if kind == "forward_reset":
            _reset(client)
            return False
        if kind == "delay":
            action.gate.wait(action.seconds)  # the slow answer itself (gate ends it early)
        if kind == "hold":
            action.gate.wait(GATE_LIMIT_S)
        client.sendall(answer)
        return b"connection: close" not in answer.partition(b"\r\n\r\n")[0].lower()

    def _connect_upstream(self) -> socket.socket | None:
        try:
            return socket.create_connection(self.upstream, timeout=30)
        except (OSError, TypeError):
            return None

    def _forward(self, request: bytes) -> bytes | None:
        upstream = self._connect_upstream()
        if upstream is None:
            return None
        with upstream:
            try:
                upstream.sendall(request)
                return read_message(upstream, bytearray(), until_eof_ok=True)
            except OSError:
                return None

    def _forward_split(self, action: Action, request: bytes) -> bytes | None:
        upstream = self._connect_upstream()
        if upstream is None:
            return None
        head_len = request.index(b"\r\n\r\n") + 4
        cut = head_len + (len(request) - head_len) // 2
        with upstream:
            try:
                upstream.sendall(request[:cut])
                action.reached.set()
                action.gate.wait(GATE_LIMIT_S)
                upstream.sendall(request[cut:])
                return read_message(upstream, bytearray(), until_eof_ok=True)
            except OSError:
                return None


def read_message(sock: socket.socket, buf: bytearray, until_eof_ok: bool = False) -> bytes | None:
    """One HTTP/1.1 message (head and Content-Length body) from ``sock``; None at EOF first."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            if not buf:
                return None
            raise ConnectionError("connection closed inside a message head")
        buf += chunk
    head_len = buf.index(b"\r\n\r\n") + 4
    length = _content_length(bytes(buf[:head_len]))
    if length is None and until_eof_ok:  # an answer without a length ends at EOF
        while chunk := sock.recv(65536):
            buf += chunk
        length = len(buf) - head_len
    length = length or 0
    if length > MAX_MESSAGE_BYTES:
        raise ConnectionError("message too large for the fault proxy")
    while len(buf) < head_len + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a message body")
        buf += chunk
    message = bytes(buf[: head_len + length])
    del buf[: head_len + length]
    return message


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def _status_of(answer: bytes) -> int | None:
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _status_answer(code: int, retry_after: str | None) -> bytes:
    body = b'{"error":"injected by the fault proxy"}'
    head = [f"HTTP/1.1 {code} Injected", "Content-Type: application/json"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN, as a crashed peer or a middlebox would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
