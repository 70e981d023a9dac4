"""Reading a report's HTTP body: content type, encoding and size limits, before any parsing.

A request body is untrusted. Its size on the wire is capped before it is read
(``Content-Length``) and while it is read (chunked uploads have no length), and
a gzip body is inflated in bounded steps, so a small compressed body that
inflates to gigabytes (a "gzip bomb") is refused after at most ``decoded_bytes``
plus one step of output, never held in memory. Every refusal is a ``Rejected``
with the HTTP status and a reason that names the problem; nothing here echoes
the client's bytes, so reasons are safe to log.
"""

import dataclasses
import json
import zlib

from tagstat.collector.errors import Rejected

MIB = 1 << 20
READ_CHUNK_BYTES = 64 * 1024
INFLATE_STEP_BYTES = 256 * 1024
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, not raw deflate or zlib
_IDENTITY = {"", "identity"}
_GZIP = {"gzip", "x-gzip"}


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size limits of one report; the defaults are far above any real report."""

    wire_bytes: int = 1 * MIB  # as sent, compressed or not
    decoded_bytes: int = 16 * MIB  # after decompression

    def __post_init__(self):
        if self.wire_bytes < 1 or self.decoded_bytes < 1:
            raise ValueError("size limits must be at least 1 byte")


def read_body(request, limits: Limits) -> tuple[bytes, int]:
    """The decoded body of a werkzeug request and its size on the wire; raises Rejected."""
    if request.mimetype != "application/json":
        raise Rejected(415, "Content-Type must be application/json")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY | _GZIP:
        raise Rejected(415, "Content-Encoding must be gzip or identity")
    wire = read_limited(request, limits.wire_bytes)
    if encoding in _GZIP:
        return gunzip_limited(wire, limits.decoded_bytes), len(wire)
    if len(wire) > limits.decoded_bytes:
        raise Rejected(413, f"body is larger than {limits.decoded_bytes} bytes")
    return wire, len(wire)


def read_limited(request, limit_bytes: int) -> bytes:
    """At most ``limit_bytes`` of the request stream; refuses a longer body without keeping it."""
    declared = request.content_length
    if declared is not None and declared > limit_bytes:
        raise Rejected(413, f"body is larger than {limit_bytes} bytes on the wire")
    stream = request.stream  # bounded by Content-Length, or de-chunked until its end
    parts, total = [], 0
    while True:
        part = _read_some(stream, min(READ_CHUNK_BYTES, limit_bytes + 1 - total))
        if not part:
            return b"".join(parts)
        total += len(part)
        if total > limit_bytes:
            raise Rejected(413, f"body is larger than {limit_bytes} bytes on the wire")
        parts.append(part)


def _read_some(stream, size: int) -> bytes:
    """Up to ``size`` bytes, through ``readinto``: never ``read`` on werkzeug's de-chunker.

    A chunk that ends early (the client closed inside it) makes werkzeug's
    ``DechunkedInput.readinto`` shrink the buffer yet report it full; CPython's
    ``RawIOBase.read`` trusts that count and copies past the buffer, which
    crashed the process. Reading into our own buffer lets us see the lie.
    """
    buf = bytearray(size)
    try:
        count = stream.readinto(buf) or 0
    except OSError:  # werkzeug's de-chunker: a malformed chunk header or terminator
        raise Rejected(400, "body could not be read (bad chunked encoding)") from None
    if count > len(buf):
        raise Rejected(400, "body could not be read (it ends inside a chunk)")
    return bytes(buf[:count])


def gunzip_limited(data: bytes, limit_bytes: int) -> bytes:
    """Inflate gzip ``data`` (one or more members), refusing more than ``limit_bytes`` of output."""
    inflated = _Inflated(limit_bytes)
    rest = data
    while True:
        rest = _inflate_member(rest, inflated)
        if not rest:
            return b"".join(inflated.parts)


class _Inflated:
    """Output pieces and their total; a list, not a growing bytearray, whose resizing
    would briefly hold two copies of everything inflated so far."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.parts: list[bytes] = []
        self.total = 0

    def room(self) -> int:
        # Small steps, and never past one byte over the limit (that byte proves
        # "too large"): memory stays near the limit whatever the input claims.
        return min(INFLATE_STEP_BYTES, self.limit_bytes + 1 - self.total)

    def add(self, part: bytes) -> None:
        self.total += len(part)
        if self.total > self.limit_bytes:
            raise Rejected(413, f"body inflates to more than {self.limit_bytes} bytes")
        self.parts.append(part)


def _inflate_member(data: bytes, out: _Inflated) -> bytes:
    """Inflate one gzip member into ``out``; returns the bytes after it."""
    inflater = zlib.decompressobj(wbits=GZIP_WBITS)
    pending = data
    try:
        while not inflater.eof:
            part = inflater.decompress(pending, out.room())
            out.add(part)
            pending = inflater.unconsumed_tail
            if not part and not pending:
                break  # input used up before the member's end
    except zlib.error as exc:
        raise Rejected(400, f"body is not valid gzip ({exc})") from None
    if not inflater.eof:
        raise Rejected(400, "body is not valid gzip (truncated or empty)")
    return inflater.unused_data


def parse_json(data: bytes):
    """The JSON value of a UTF-8 body; NaN and Infinity are not JSON, so they are refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise Rejected(400, "body is not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError names the line and column, not the text
        raise Rejected(400, f"body is not valid JSON ({exc})") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")
