"""The control socket's framing, shared by the server and the client.

One JSON object per line (UTF-8, newline-terminated) over a Unix stream
socket, one request and one reply per connection. A request is
``{"op": NAME, ...args}``; a reply is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"type": ..., "message": ...}}``. Requests are
bounded in size and in time so a broken or hostile local client cannot hold
the daemon; replies are unbounded because a report can be large.
``BadRequest`` always names what was wrong with the bytes received.
"""

import json
import socket
import time

from tagstat.errors import TagstatError

MAX_REQUEST_BYTES = 65536
REQUEST_TIMEOUT_S = 2.0

# op -> {arg name: (accepted types, description)}. The status argument is
# checked by UsageStatisticsStatus.parse in the server so its ValueError can
# list the allowed values; here it only has to be present.
OPS: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "get_status": {},
    "set_status": {"status": ((object,), "a status"), "persistent": ((bool,), "a bool")},
    "get_report": {},
    "devices": {},
    "sessions": {},
    # Uploads (tagstat.outbox): the next body to send, the audit log, one stored body.
    "pending_report": {},
    "uploads": {},
    "upload_body": {"report_id": ((str,), "a report id")},
    # The answer to the consent question about one report schema version (tagstat.consent);
    # dry_run only checks that the caller may answer (an admin op).
    "set_consent": {
        "version": ((int,), "a report schema version"),
        "upload": ((bool,), "a bool"),
        "new_fields": ((bool,), "a bool"),
        "dry_run": ((bool,), "a bool"),
    },
    # Measurement events from an application (tagstat.measurements); each event is
    # checked by tagstat.measurement_data, and the request size limit bounds the list.
    "record_measurements": {"events": ((list,), "a list of measurement events")},
    # Purge and export (tagstat.purge, tagstat.export): admin ops.
    "purge": {},
    "export_begin": {},
    "export_commit": {"token": ((str,), "the token export_begin returned")},
}

# Arguments an op may leave out: op -> {arg name: (accepted types, description, allowed)}.
# ``allowed`` (a tuple of values, or None for any) is checked here too.
OPTIONAL: dict[str, dict[str, tuple[tuple[type, ...], str, tuple | None]]] = {
    # Who asks, for the consent record's wording (tagstat.consent); a program by default.
    "set_status": {"origin": ((str,), "'api' or 'cli'", ("api", "cli"))},
    # `tagstat devices --calibration`: each device's raw calibration table (local only).
    "devices": {"calibration": ((bool,), "a bool", None)},
}

_CHUNK_BYTES = 16384


class BadRequest(TagstatError):
    """The bytes received are not a well-formed message; the message says why."""


class MessageTimeout(BadRequest):
    """No complete line arrived within the timeout."""


def encode(obj: dict) -> bytes:
    """One message as a compact JSON line."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def ok_reply(result) -> dict:
    return {"ok": True, "result": result}


def error_reply(error_type: str, message: str) -> dict:
    return {"ok": False, "error": {"type": error_type, "message": message}}


def read_message(sock: socket.socket, limit: int | None, timeout_s: float) -> dict:
    """Read one newline-terminated JSON object from ``sock``.

    ``limit`` bounds the line in bytes (None: unbounded); ``timeout_s`` bounds
    the whole read, not each recv, so a client trickling bytes cannot stall us.
    """
    return decode(read_line(sock, limit, timeout_s))


def read_line(sock: socket.socket, limit: int | None, timeout_s: float) -> bytes:
    """Read one line (without its newline), bounded like ``read_message``; no parsing."""
    deadline = time.monotonic() + timeout_s
    buf = LineBuffer(limit)
    while True:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise buf.timeout(timeout_s)
        sock.settimeout(remaining_s)
        try:
            chunk = sock.recv(_CHUNK_BYTES)
        except TimeoutError:
            raise buf.timeout(timeout_s) from None
        if not chunk:
            raise buf.eof()
        line = buf.feed(chunk)
        if line is not None:
            return line


class LineBuffer:
    """One line assembled from chunks as they arrive, with ``read_line``'s size rule.

    For readers that must not block in recv (the server's selector loop), so they
    can give the same answers as the blocking reader.
    """

    def __init__(self, limit: int | None):
        self.limit = limit
        self._buf = bytearray()
        self._scanned = 0  # no newline before this offset; keeps a trickled line O(n)

    @property
    def received(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> bytes | None:
        """Add ``chunk``; the line once it is complete, else None. BadRequest if too large."""
        self._buf += chunk
        newline = self._buf.find(b"\n", self._scanned)
        if newline >= 0:
            _check_size(newline, self.limit)
            return bytes(self._buf[:newline])
        self._scanned = len(self._buf)
        _check_size(len(self._buf), self.limit)
        return None

    def eof(self) -> BadRequest:
        """The error for a connection closed before the line was complete."""
        return BadRequest(_eof_text(len(self._buf)))

    def timeout(self, timeout_s: float) -> MessageTimeout:
        """The error for a line not complete within ``timeout_s``."""
        return MessageTimeout(_timeout_text(timeout_s, len(self._buf)))


def decode(line: bytes) -> dict:
    """Parse one line (without its newline) into a JSON object."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"message is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise BadRequest("message is not JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, and int literals beyond Python's digit limit
        raise BadRequest(f"message is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"message is not a JSON object (got {type(obj).__name__})")
    return obj


def parse_request(msg: dict) -> tuple[str, dict]:
    """Check a request's op and argument names and types; return (op, args)."""
    op = msg.get("op")
    if op is None:
        raise BadRequest('request has no "op"; allowed: ' + ", ".join(OPS))
    if not isinstance(op, str) or op not in OPS:
        raise BadRequest(f"unknown op {op!r}; allowed: " + ", ".join(OPS))
    spec, optional = OPS[op], OPTIONAL.get(op, {})
    args = {k: v for k, v in msg.items() if k != "op"}
    unknown = sorted(set(args) - set(spec) - set(optional))
    if unknown:
        raise BadRequest(f"op {op!r} takes no argument {unknown[0]!r}")
    for name, (types, description) in spec.items():
        if name not in args:
            raise BadRequest(f"op {op!r} needs argument {name!r} ({description})")
        if not isinstance(args[name], types):
            got = type(args[name]).__name__
            raise BadRequest(f"argument {name!r} of op {op!r} must be {description}, got {got}")
    for name, (types, description, allowed) in optional.items():
        if name not in args:
            continue
        value = args[name]
        if not isinstance(value, types) or (allowed is not None and value not in allowed):
            raise BadRequest(f"argument {name!r} of op {op!r} must be {description}")
    return op, args


def _check_size(n_bytes: int, limit: int | None) -> None:
    if limit is not None and n_bytes > limit:
        raise BadRequest(f"request too large ({n_bytes} bytes > {limit})")


def _timeout_text(timeout_s: float, n_bytes: int) -> str:
    return f"timed out after {timeout_s:g} s waiting for a complete line ({n_bytes} bytes received)"


def _eof_text(n_bytes: int) -> str:
    if n_bytes == 0:
        return "connection closed before any message was sent"
    return f"connection closed in the middle of a message ({n_bytes} bytes, no newline)"
