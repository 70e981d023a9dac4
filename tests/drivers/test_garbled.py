"""Arbitrary replies: the driver answers with a value or ProtocolError, nothing else."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tagstat.drivers import protocol
from tagstat.drivers.discovery import find_timetaggers
from tagstat.drivers.errors import ProtocolError

ULTRA = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super"}
SETTINGS = settings(max_examples=60, deadline=None)


class Replace:
    """A backend wrapper that answers one vendor request with ``reply`` instead."""

    def __init__(self, inner, request: int):
        self._inner, self.request, self.reply = inner, request, b""

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def ctrl_transfer(self, handle, bm, request, value, index, data, timeout):
        count = self._inner.ctrl_transfer(handle, bm, request, value, index, data, timeout)
        if bm != protocol.VENDOR_IN or request != self.request:
            return count
        reply = self.reply[: len(data)]
        data[: len(reply)] = type(data)("B", reply)
        return len(reply)


def _check_message(error: ProtocolError) -> None:
    message = str(error)
    assert ULTRA["serial"] not in message
    header = re.search(r"\(header ([0-9a-f ]+|\(empty\))\)", message)
    if header and header.group(1) != "(empty)":
        assert len(bytes.fromhex(header.group(1))) <= 16


def _tagger(env, request):
    backend = Replace(env.backend, request)
    (tagger,) = find_timetaggers(backend)
    tagger.info()
    return tagger, backend


def test_any_counters_reply(usb_env):
    tagger, backend = _tagger(usb_env({"device": [ULTRA]}), protocol.REQ_COUNTERS)

    @SETTINGS
    @given(reply=st.binary(max_size=64))
    def check(reply):
        backend.reply = reply
        try:
            counters = tagger.read_counters()
        except ProtocolError as e:
            _check_message(e)
        else:
            assert 0 <= counters.bytes_sent < 1 << counters.counter_bits

    check()


HEADERS = st.builds(
    protocol.CHUNK_HEADER.pack,
    st.sampled_from([protocol.CHUNK_MAGIC, b"XX"]),
    st.sampled_from([protocol.PROTOCOL_MAJOR, 2]),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 3),
    st.integers(0, 1 << 21),
    st.integers(0, 0xFFFFFFFF),
)


def test_any_document_reply(usb_env):
    tagger, backend = _tagger(usb_env({"device": [ULTRA]}), protocol.REQ_CONFIGURATION)

    @SETTINGS
    @given(header=HEADERS, payload=st.binary(max_size=64) | st.just(b'{"serial":"1740000JEH"}'))
    def check(header, payload):
        backend.reply = header + payload
        try:
            tagger.read_configuration()
        except ProtocolError as e:
            _check_message(e)

    check()
