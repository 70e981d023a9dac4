"""The vendor control-request protocol on endpoint 0, both sides of it.

Every reading is one or more vendor IN control transfers to the device
recipient (bmRequestType 0xC0), so no interface is ever claimed. The layout of
each reply is defined here once; the driver decodes with these functions and
the simulated Time Tagger encodes with them. ``docs/protocol.md`` is the prose
version of this module.

Replies:

- ``REQ_INFO``: fixed 12 bytes, protocol version, capabilities, transfer size.
- ``REQ_COUNTERS``: fixed 48 bytes, traffic counters, uptime and boot id.
- ``REQ_SENSORS``, ``REQ_CALIBRATION``, ``REQ_CONFIGURATION``,
  ``REQ_MESSAGES``: a *document* (UTF-8 JSON) sent in chunks; wValue is the
  chunk number, each chunk starts with a 16-byte header.
"""

import dataclasses
import json
import struct
import zlib

VENDOR_IN = 0xC0  # device-to-host | vendor | device recipient

REQ_INFO = 0xB0
REQ_COUNTERS = 0xB1
REQ_SENSORS = 0xB2
REQ_CALIBRATION = 0xB3
REQ_CONFIGURATION = 0xB4
REQ_MESSAGES = 0xB5

DOCUMENT_REQUESTS = (REQ_SENSORS, REQ_CALIBRATION, REQ_CONFIGURATION, REQ_MESSAGES)

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0

CAP_SENSORS = 0x01  # the device has on-board sensors (not the Time Tagger 20)

INFO_MAGIC = b"TTSP"
INFO = struct.Struct("<4sBBHHH")  # magic, major, minor, capabilities, max_transfer, reserved

COUNTERS = struct.Struct("<BB6xQQQ16s")  # version, counter_bits, bytes, tags, uptime_ms, boot_id

CHUNK_MAGIC = b"TD"
CHUNK_LAST = 0x01
CHUNK_HEADER = struct.Struct("<2sBBHHII")  # magic, version, flags, generation, chunk, total, crc32

# The host asks for this many bytes per transfer; a device may answer less.
# Small enough for every USB controller's control path, large enough that a
# typical configuration document needs only a few transfers.
DEFAULT_TRANSFER = 1024
MAX_DOCUMENT_BYTES = 1 << 20  # nothing a Time Tagger says legitimately comes near this

MESSAGE_LEVELS = ("info", "warning", "error")
SEQ_MODULO = 1 << 16  # message sequence numbers travel in wIndex


class DecodeError(ValueError):
    """A reply does not follow the protocol; the driver turns it into ProtocolError."""

    def __init__(self, message: str, data: bytes = b""):
        super().__init__(message)
        self.data = bytes(data)


@dataclasses.dataclass(frozen=True)
class Info:
    major: int
    minor: int
    capabilities: int
    max_transfer: int

    @property
    def has_sensors(self) -> bool:
        return bool(self.capabilities & CAP_SENSORS)


@dataclasses.dataclass(frozen=True)
class Counters:
    """Cumulative traffic since power-on, sampled atomically on the device."""

    counter_bits: int
    bytes_sent: int
    tags_sent: int
    uptime_ms: int
    boot_id: bytes


@dataclasses.dataclass(frozen=True)
class ChunkHeader:
    generation: int
    chunk: int
    total_len: int
    crc32: int
    last: bool


# -- fixed replies ---------------------------------------------------------


def encode_info(info: Info) -> bytes:
    return INFO.pack(INFO_MAGIC, info.major, info.minor, info.capabilities, info.max_transfer, 0)


def decode_info(data: bytes) -> Info:
    if len(data) != INFO.size:
        raise DecodeError(f"info reply has {len(data)} bytes, expected {INFO.size}", data)
    magic, major, minor, caps, max_transfer, _ = INFO.unpack(data)
    if magic != INFO_MAGIC:
        raise DecodeError(f"info reply has bad magic {magic!r}", data)
    if major != PROTOCOL_MAJOR:
        raise DecodeError(
            f"device speaks protocol {major}.{minor}, driver {PROTOCOL_MAJOR}.x", data
        )
    if max_transfer <= CHUNK_HEADER.size:
        raise DecodeError(f"info reply has max_transfer {max_transfer}", data)
    return Info(major, minor, caps, max_transfer)


def encode_counters(c: Counters) -> bytes:
    mask = (1 << c.counter_bits) - 1
    return COUNTERS.pack(
        1, c.counter_bits, c.bytes_sent & mask, c.tags_sent & mask, c.uptime_ms, c.boot_id
    )


def decode_counters(data: bytes) -> Counters:
    if len(data) != COUNTERS.size:
        raise DecodeError(f"counters reply has {len(data)} bytes, expected {COUNTERS.size}", data)
    version, bits, nbytes, tags, uptime_ms, boot_id = COUNTERS.unpack(data)
    if version != 1:
        raise DecodeError(f"counters reply has unknown version {version}", data)
    if not 16 <= bits <= 64:
        raise DecodeError(f"counters reply has counter width {bits} bits", data)
    if nbytes >> bits or tags >> bits:
        raise DecodeError("counters reply has a counter wider than its width", data)
    return Counters(bits, nbytes, tags, uptime_ms, boot_id)


# -- documents -------------------------------------------------------------


def encode_chunk(document: bytes, chunk: int, transfer: int, generation: int) -> bytes:
    """The reply to chunk number ``chunk`` of ``document`` for a transfer of ``transfer`` bytes."""
    payload = transfer - CHUNK_HEADER.size
    start = chunk * payload
    if payload <= 0 or start > len(document) or (start == len(document) and chunk > 0):
        raise ValueError("chunk out of range")
    part = document[start : start + payload]
    last = start + len(part) >= len(document)
    header = CHUNK_HEADER.pack(
        CHUNK_MAGIC,
        PROTOCOL_MAJOR,
        CHUNK_LAST if last else 0,
        generation & 0xFFFF,
        chunk,
        len(document),
        zlib.crc32(document),
    )
    return header + part


def decode_chunk(data: bytes) -> tuple[ChunkHeader, bytes]:
    if len(data) < CHUNK_HEADER.size:
        raise DecodeError(f"document chunk has only {len(data)} bytes", data)
    magic, version, flags, generation, chunk, total, crc = CHUNK_HEADER.unpack_from(data)
    if magic != CHUNK_MAGIC or version != PROTOCOL_MAJOR:
        raise DecodeError("document chunk has a bad header", data[: CHUNK_HEADER.size])
    if total > MAX_DOCUMENT_BYTES:
        raise DecodeError(f"document claims {total} bytes", data[: CHUNK_HEADER.size])
    header = ChunkHeader(generation, chunk, total, crc, bool(flags & CHUNK_LAST))
    return header, bytes(data[CHUNK_HEADER.size :])


def chunk_count(total_len: int, transfer: int) -> int:
    payload = transfer - CHUNK_HEADER.size
    return max(1, -(-total_len // payload))


def encode_document(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def decode_document(data: bytes, crc32: int):
    if zlib.crc32(data) != crc32:
        raise DecodeError("document checksum mismatch")  # no bytes: payload holds the serial
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecodeError(f"document is not UTF-8 JSON: {e}") from None


def decode_messages(obj, start_seq: int) -> tuple[list[dict], int]:
    """Validate a messages document; return (messages, next_seq)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise DecodeError("messages document is not an object with a list 'messages'")
    nxt = obj.get("next")
    if not isinstance(nxt, int) or not 0 <= nxt < SEQ_MODULO:
        raise DecodeError(f"messages document has bad 'next' {nxt!r}")
    out = []
    for m in obj["messages"]:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("seq"), int)
            or m.get("level") not in MESSAGE_LEVELS
            or not isinstance(m.get("text"), str)
            or not isinstance(m.get("uptime_ms"), int)
        ):
            # no excerpt: an entry's text may hold the serial
            raise DecodeError("messages document has a malformed entry")
        out.append(m)
    return out, nxt
