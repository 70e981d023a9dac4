"""Vendor control transfers through real libusb return exactly the model's bytes.

Each test reads through libusb from one simulation and asks a twin
simulation (same scenario, same clock) directly, so the comparison is with
what the model itself answers, byte for byte.
"""

import pytest
import usb.core
from conftest import TT20, ULTRA, make_simulation

from tagstat.drivers import protocol

pytestmark = pytest.mark.umockdev
TIMEOUT_MS = 500


def _setup(umockdev_env, device=ULTRA):
    env = umockdev_env(device)
    twin = make_simulation([device], env.clock).device(device["serial"])
    dev = usb.core.find(idVendor=0x151F, backend=env.backend)
    return env, twin, dev


def _read(dev, request, value, index, length) -> bytes:
    return bytes(dev.ctrl_transfer(protocol.VENDOR_IN, request, value, index, length, TIMEOUT_MS))


def test_info_is_the_models_reply(umockdev_env):
    _, twin, dev = _setup(umockdev_env)
    got = _read(dev, protocol.REQ_INFO, 0, 0, protocol.INFO.size)
    assert got == twin.control_transfer(protocol.VENDOR_IN, protocol.REQ_INFO, 0, 0, 12)
    assert protocol.decode_info(got).has_sensors


def test_counters_follow_the_clock(umockdev_env):
    env, twin, dev = _setup(umockdev_env)
    env.clock.t += 90.0
    got = _read(dev, protocol.REQ_COUNTERS, 0, 0, protocol.COUNTERS.size)
    assert got == twin.control_transfer(protocol.VENDOR_IN, protocol.REQ_COUNTERS, 0, 0, 48)
    assert protocol.decode_counters(got).uptime_ms == 90_000


@pytest.mark.parametrize("request_", [protocol.REQ_CONFIGURATION, protocol.REQ_CALIBRATION])
def test_chunked_document_is_the_models_bytes(umockdev_env, request_):
    _, twin, dev = _setup(umockdev_env)
    chunks, header = [], None
    while header is None or not header.last:
        got = _read(dev, request_, len(chunks), 0, protocol.DEFAULT_TRANSFER)
        want = twin.control_transfer(protocol.VENDOR_IN, request_, len(chunks), 0, 1024)
        assert got == want
        header, payload = protocol.decode_chunk(got)
        chunks.append(payload)
    assert len(chunks) > 1  # the document really was chunked
    document = protocol.decode_document(b"".join(chunks), header.crc32)
    assert isinstance(document, dict) and document


def test_short_read_returns_only_what_was_asked(umockdev_env):
    _, twin, dev = _setup(umockdev_env)
    got = _read(dev, protocol.REQ_INFO, 0, 0, 5)
    assert got == twin.control_transfer(protocol.VENDOR_IN, protocol.REQ_INFO, 0, 0, 5)
    assert len(got) == 5


def test_time_tagger_20_stalls_on_sensors(umockdev_env):
    _, _, dev = _setup(umockdev_env, TT20)
    with pytest.raises(usb.core.USBError) as caught:
        _read(dev, protocol.REQ_SENSORS, 0, 0, protocol.DEFAULT_TRANSFER)
    assert caught.value.errno == 32
