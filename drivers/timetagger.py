"""Reading one Time Tagger over the vendor control-request protocol.

Supports the Time Tagger 20, Ultra and X (and any 0x151f device that speaks
protocol major version 1): traffic counters, sensors (not on the Time Tagger
20, which has none: it answers ``{}`` without a transfer), calibration,
configuration and the message log. Fixed replies are one transfer; documents
are read chunk by chunk at the device's ``max_transfer`` and re-read from the
start if the device regenerates them mid-read. Every reply is decoded with
``tagstat.drivers.protocol``; anything off becomes ``ProtocolError`` whose
message names the request and shows at most the 16-byte reply header, never
document payload (it holds the serial). See ``docs/protocol.md``.
"""

import dataclasses
import logging

from tagstat.drivers import protocol
from tagstat.drivers.errors import ProtocolError
from tagstat.drivers.transport import (
    FIXED_REPLY_WLENGTH,
    UsbTransport,
    header_hex,
    request_name,
)

log = logging.getLogger(__name__)

# A document whose generation changes this many reads in a row is being
# rewritten faster than we can read it; give up until the next poll.
MAX_DOCUMENT_ATTEMPTS = 4
# 1 MiB in 1 KiB transfers is about a thousand chunks; more means a bad header.
MAX_CHUNKS = 2048


@dataclasses.dataclass(frozen=True)
class DeviceIdentity:
    model: str
    serial: str
    vendor_id: int
    product_id: int
    firmware: str
    usb_speed: str
    bus: int
    address: int
    port_path: str


@dataclasses.dataclass(frozen=True)
class DeviceMessage:
    seq: int
    uptime_ms: int
    level: str
    text: str


def firmware_from_bcd(bcd: int) -> str:
    """bcdDevice 0x0130 -> "1.30", as lsusb shows it."""
    return f"{bcd >> 8:x}.{bcd & 0xFF:02x}"


class _Restart(Exception):
    """The document changed generation mid-read."""


class TimeTagger:
    """One attached Time Tagger; every method is one or a few control transfers."""

    def __init__(self, transport: UsbTransport, identity: DeviceIdentity):
        self._transport = transport
        self.identity = identity
        self._info: protocol.Info | None = None

    def __repr__(self) -> str:
        # No serial here: reprs end up in logs and tracebacks.
        return f"<TimeTagger {self.identity.model!r} at {self.identity.port_path}>"

    @property
    def key(self) -> tuple[int, int, str]:
        return self._transport.key

    def info(self) -> protocol.Info:
        """Protocol version, capabilities and transfer size; read once, then cached."""
        if self._info is None:
            data = self._fixed(protocol.REQ_INFO)
            self._info = self._decode(protocol.REQ_INFO, protocol.decode_info, data)
            log.debug(
                "%s speaks protocol %d.%d, max_transfer %d",
                self._transport.node, self._info.major, self._info.minor,
                self._info.max_transfer,
            )  # fmt: skip
        return self._info

    def read_counters(self) -> protocol.Counters:
        data = self._fixed(protocol.REQ_COUNTERS)
        return self._decode(protocol.REQ_COUNTERS, protocol.decode_counters, data)

    def read_sensors(self) -> dict:
        if not self.info().has_sensors:
            return {}
        return self._dict_document(protocol.REQ_SENSORS)

    def read_calibration(self) -> dict:
        return self._dict_document(protocol.REQ_CALIBRATION)

    def read_configuration(self) -> dict:
        return self._dict_document(protocol.REQ_CONFIGURATION)

    def read_messages(self, start_seq: int) -> tuple[list[DeviceMessage], int]:
        """Messages with seq from ``start_seq`` (modulo 2**16) on, and the next seq to ask."""
        start = start_seq % protocol.SEQ_MODULO
        obj = self._document(protocol.REQ_MESSAGES, index=start)
        try:
            entries, nxt = protocol.decode_messages(obj, start)
        except protocol.DecodeError:
            # decode_messages quotes the entry, which may hold a serial.
            raise ProtocolError(f"REQ_MESSAGES reply on {self._node} is malformed") from None
        window = (nxt - start) % protocol.SEQ_MODULO
        messages = [
            DeviceMessage(m["seq"] % protocol.SEQ_MODULO, m["uptime_ms"], m["level"], m["text"])
            for m in entries
            if (m["seq"] - start) % protocol.SEQ_MODULO < window
        ]
        if len(messages) != len(entries):
            log.debug("dropped %d messages outside [start, next)", len(entries) - len(messages))
        return messages, nxt

    def close(self) -> None:
        self._transport.close()

    # -- helpers ------------------------------------------------------------

    @property
    def _node(self) -> str:
        return self._transport.node

    def _fixed(self, request: int) -> bytes:
        return self._transport.vendor_in(request, 0, 0, FIXED_REPLY_WLENGTH)

    def _decode(self, request: int, decode, data: bytes):
        try:
            return decode(data)
        except protocol.DecodeError as e:
            raise self._protocol_error(request, str(e), data) from None

    def _protocol_error(self, request: int, what: str, data: bytes) -> ProtocolError:
        return ProtocolError(
            f"{request_name(request)} reply on {self._node}: {what} (header {header_hex(data)})"
        )

    def _dict_document(self, request: int) -> dict:
        obj = self._document(request)
        if not isinstance(obj, dict):
            raise ProtocolError(f"{request_name(request)} reply on {self._node} is not an object")
        return obj

    def _document(self, request: int, index: int = 0):
        """Read every chunk of a document at one generation; decode its JSON."""
        transfer = self.info().max_transfer
        for attempt in range(1, MAX_DOCUMENT_ATTEMPTS + 1):
            try:
                first, data = self._read_chunks(request, index, transfer)
            except _Restart:
                log.debug("%s changed mid-read (attempt %d)", request_name(request), attempt)
                continue
            try:
                return protocol.decode_document(data, first.header.crc32)
            except protocol.DecodeError as e:
                # e.data is the document's start: show the chunk header instead.
                raise self._protocol_error(request, str(e), first.raw) from None
        raise ProtocolError(
            f"{request_name(request)} on {self._node} changed {MAX_DOCUMENT_ATTEMPTS} times "
            "while being read; trying again at the next poll"
        )

    def _read_chunks(self, request: int, index: int, transfer: int):
        first, parts = self._chunk(request, index, 0, transfer), []
        count = protocol.chunk_count(first.header.total_len, transfer)
        if count > MAX_CHUNKS:
            raise self._protocol_error(request, f"document needs {count} chunks", first.raw)
        parts.append(first.payload)
        self._check_chunk(request, first, first, 0, count, transfer)
        for n in range(1, count):
            chunk = self._chunk(request, index, n, transfer)
            if chunk.header.generation != first.header.generation:
                raise _Restart
            self._check_chunk(request, chunk, first, n, count, transfer)
            parts.append(chunk.payload)
        return first, b"".join(parts)

    def _chunk(self, request: int, index: int, n: int, transfer: int) -> "_Chunk":
        data = self._transport.vendor_in(request, n, index, transfer)
        try:
            header, payload = protocol.decode_chunk(data)
        except protocol.DecodeError as e:
            raise self._protocol_error(request, str(e), data) from None
        return _Chunk(header, payload, data[: protocol.CHUNK_HEADER.size])

    def _check_chunk(self, request, chunk, first, n: int, count: int, transfer: int) -> None:
        """The chunk is number ``n`` of ``count`` of the same document, sized as it should be."""
        got, want = chunk.header, first.header
        room = transfer - protocol.CHUNK_HEADER.size
        last = n == count - 1
        expected = want.total_len - n * room if last else room
        problem = None
        if got.chunk != n:
            problem = f"chunk {got.chunk} where {n} was asked"
        elif got.total_len != want.total_len or got.crc32 != want.crc32:
            problem = "document length or checksum changed within one generation"
        elif len(chunk.payload) != expected:
            problem = f"chunk {n} carries {len(chunk.payload)} bytes, expected {expected}"
        elif got.last != last:
            problem = f"chunk {n} of {count} has a wrong last-chunk flag"
        if problem:
            raise self._protocol_error(request, problem, chunk.raw)


@dataclasses.dataclass(frozen=True)
class _Chunk:
    header: protocol.ChunkHeader
    payload: bytes
    raw: bytes  # the 16 header bytes as received, for error messages
