"""Faults: each way a transfer can fail becomes the right DeviceError, never a crash."""

import errno

import pytest
import usb.core

from tagstat.drivers import protocol
from tagstat.drivers.discovery import Discovery, find_timetaggers
from tagstat.drivers.errors import (
    DeviceAccessDeniedError,
    DeviceBusyError,
    DeviceError,
    DeviceGoneError,
    DeviceNotFoundError,
    DeviceTimeoutError,
    ProtocolError,
)

ULTRA = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super"}
TT20 = {"serial": "1809000LGG", "model": "Time Tagger 20", "usb_speed": "high"}
TTX = {"serial": "2023000TMV", "model": "Time Tagger X", "usb_speed": "super"}
FORBIDDEN = {
    "claim_interface",
    "release_interface",
    "set_configuration",
    "set_interface_altsetting",
    "reset_device",
    "clear_halt",
    "detach_kernel_driver",
    "attach_kernel_driver",
    "bulk_read",
    "bulk_write",
    "intr_read",
    "intr_write",
    "iso_read",
    "iso_write",
}


class Intercept:
    """A backend wrapper around vendor requests: ``before`` runs ahead of each one and may
    raise; ``after(request, wValue, data, count)`` may rewrite the reply and returns its
    new length."""

    def __init__(self, inner, before=None, after=None):
        self._inner, self.before, self.after = inner, before, after

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def ctrl_transfer(self, handle, bm, request, value, index, data, timeout):
        vendor = bm == protocol.VENDOR_IN
        if vendor and self.before:
            self.before(request, value)
        count = self._inner.ctrl_transfer(handle, bm, request, value, index, data, timeout)
        if vendor and self.after:
            count = self.after(request, value, data, count)
        return count


def _one(env, backend=None):
    (tagger,) = find_timetaggers(backend or env.backend)
    return tagger


def _full_poll(tagger):
    tagger.read_counters()
    tagger.read_sensors()
    tagger.read_calibration()
    tagger.read_configuration()
    tagger.read_messages(0)


@pytest.mark.parametrize(
    "kind, error",
    [("stall", ProtocolError), ("timeout", DeviceTimeoutError), ("busy", DeviceBusyError)],
)
def test_injected_fault_maps_to_its_error_and_the_next_poll_recovers(usb_env, kind, error):
    env = usb_env({"device": [ULTRA]})
    tagger = _one(env)
    tagger.info()
    env.simulation.inject(ULTRA["serial"], kind)
    if kind == "busy" and env.transport == "umockdev":
        # real libusb reports any failed control URB other than a stall, a timeout
        # or a vanished device as LIBUSB_ERROR_IO: the busy status does not survive
        error = DeviceError
    with pytest.raises(error) as raised:
        tagger.read_counters()
    assert type(raised.value) is error
    assert "REQ_COUNTERS" in str(raised.value)
    assert tagger.read_counters().counter_bits == 48


@pytest.mark.parametrize("read", ["read_counters", "read_configuration", "read_sensors"])
def test_garbage_is_a_protocol_error_with_the_header_in_hex_and_no_serial(usb_env, read):
    env = usb_env({"device": [ULTRA]})
    tagger = _one(env)
    tagger.info()
    env.simulation.inject(ULTRA["serial"], "garbage")
    with pytest.raises(ProtocolError) as raised:
        getattr(tagger, read)()
    message = str(raised.value)
    header = message.rsplit("(header ", 1)[1].rstrip(")")
    assert 1 <= len(bytes.fromhex(header)) <= 16
    assert ULTRA["serial"] not in message
    getattr(tagger, read)()  # one bad reply, not a broken device


def test_a_checksum_error_shows_the_chunk_header_never_the_payload(usb_env):
    def flip_payload_byte(request, value, data, count):
        if request == protocol.REQ_CONFIGURATION and value == 0:
            data[protocol.CHUNK_HEADER.size + 3] ^= 0x01
        return count

    env = usb_env({"device": [ULTRA]})
    tagger = _one(env, Intercept(env.backend, after=flip_payload_byte))
    with pytest.raises(ProtocolError) as raised:
        tagger.read_configuration()
    message = str(raised.value)
    assert "checksum" in message and "REQ_CONFIGURATION" in message
    assert message.split("(header ")[1].startswith("54 44 01")  # "TD", version 1
    assert ULTRA["serial"] not in message and "serial" not in message


@pytest.mark.parametrize("delta, what", [(-1, "47 bytes"), (+1, "49 bytes")])
def test_short_and_oversized_fixed_replies(usb_env, delta, what):
    def resize(request, value, data, count):
        return count + delta if request == protocol.REQ_COUNTERS else count

    env = usb_env({"device": [ULTRA]})
    tagger = _one(env, Intercept(env.backend, after=resize))
    with pytest.raises(ProtocolError, match=what):
        tagger.read_counters()


def test_a_short_middle_chunk_is_a_protocol_error(usb_env):
    def cut(request, value, data, count):
        return count - 10 if request == protocol.REQ_CONFIGURATION and value == 0 else count

    env = usb_env({"device": [ULTRA]})
    tagger = _one(env, Intercept(env.backend, after=cut))
    with pytest.raises(ProtocolError, match="chunk 0 carries"):
        tagger.read_configuration()


def test_another_protocol_major_version_is_refused(usb_env):
    def bump_major(request, value, data, count):
        if request == protocol.REQ_INFO:
            data[4] = protocol.PROTOCOL_MAJOR + 1
        return count

    env = usb_env({"device": [ULTRA]})
    tagger = _one(env, Intercept(env.backend, after=bump_major))
    with pytest.raises(ProtocolError, match="REQ_INFO.*protocol 2"):
        tagger.read_configuration()


def _many_messages(count: int, loop_s=None):
    text = "TimeTagger '{serial}': the data rate exceeds the USB transfer rate, tags were lost"
    device = dict(ULTRA, messages=[[t + 0.5, "warning", text] for t in range(count)])
    if loop_s:
        device["loop_s"] = loop_s
    return {"device": [device]}


def test_a_document_that_changes_mid_read_is_read_again(usb_env):
    env = usb_env(_many_messages(40))
    advances = []

    def one_more_message(request, value):
        if request == protocol.REQ_MESSAGES and value == 1 and not advances:
            advances.append(1)
            env.clock.advance(1)  # a new message: the device rebuilds the document

    env.clock.advance(20)
    tagger = _one(env, Intercept(env.backend, before=one_more_message))
    messages, nxt = tagger.read_messages(0)
    assert (len(messages), nxt) == (21, 21)
    firsts = [c for c in env.simulation.device(ULTRA["serial"]).calls if c[1] == 0xB5]
    assert [wValue for _, _, wValue, _ in firsts].count(0) == 2


def test_a_document_that_never_holds_still_gives_up(usb_env):
    env = usb_env(_many_messages(1, loop_s=1))

    def always_new(request, value):
        if request == protocol.REQ_MESSAGES and value == 1:
            env.clock.advance(1)

    env.clock.advance(30)
    tagger = _one(env, Intercept(env.backend, before=always_new))
    with pytest.raises(ProtocolError, match="changed 4 times"):
        tagger.read_messages(0)


def test_unplug_mid_read_is_device_gone(usb_env):
    env = usb_env({"device": [ULTRA]})

    def unplug(request, value):
        if request == protocol.REQ_CONFIGURATION and value == 1:
            env.simulation.unplug(ULTRA["serial"])
            env.sync()

    tagger = _one(env, Intercept(env.backend, before=unplug))
    with pytest.raises(DeviceGoneError):
        tagger.read_configuration()
    with pytest.raises(DeviceGoneError):
        tagger.read_counters()


def test_reset_changes_boot_id_and_restarts_counters(usb_env):
    env = usb_env({"device": [dict(ULTRA, rate=[[0, 1e6]])]})
    discovery = Discovery(env.backend)
    (old,) = discovery.scan().present
    env.clock.advance(10)
    before = old.read_counters()
    assert before.bytes_sent == 10_000_000
    env.simulation.reset(ULTRA["serial"])
    env.sync()
    with pytest.raises(DeviceGoneError):
        old.read_counters()  # a reset re-enumerates: the old handle is dead
    result = discovery.scan()
    assert [i.serial for i in result.removed] == [ULTRA["serial"]]
    (new,) = result.added
    after = new.read_counters()
    assert after.boot_id != before.boot_id
    assert after.bytes_sent == 0 and after.uptime_ms == 0


def _usb_error(number, text="error"):
    if number == errno.ETIMEDOUT:
        return usb.core.USBTimeoutError("Operation timed out", -7, number)
    return usb.core.USBError(text, -99, number)


@pytest.mark.parametrize(
    "number, text, error",
    [
        (errno.ENODEV, "No such device", DeviceGoneError),
        (None, "No such device (it may have been disconnected)", DeviceGoneError),
        (errno.EACCES, "Access denied", DeviceAccessDeniedError),
        (errno.EPERM, "Operation not permitted", DeviceAccessDeniedError),
        (errno.EBUSY, "Resource busy", DeviceBusyError),
        (errno.ETIMEDOUT, "Operation timed out", DeviceTimeoutError),
        (errno.ENOENT, "Entity not found", DeviceNotFoundError),
        (errno.EPIPE, "Pipe error", ProtocolError),
        (errno.EOVERFLOW, "Overflow", ProtocolError),
        (errno.EIO, "Input/Output Error", DeviceError),
    ],
)
def test_libusb_errors_map_to_device_errors(usb_env, number, text, error):
    def fail(request, value):
        raise _usb_error(number, text)

    env = usb_env({"device": [ULTRA]})
    tagger = _one(env, Intercept(env.backend, before=fail))
    with pytest.raises(error) as raised:
        tagger.read_counters()
    assert type(raised.value) is error
    assert "REQ_COUNTERS" in str(raised.value)
    if error is DeviceAccessDeniedError:
        assert "systemd/60-tagstat.rules" in str(raised.value)


def test_a_full_poll_only_uses_control_transfers_to_the_device(usb_env):
    env = usb_env({"device": [TT20, ULTRA, TTX]})
    taggers = find_timetaggers(env.backend)
    for tagger in taggers:
        _full_poll(tagger)
        tagger.close()
    for serial in (TT20["serial"], ULTRA["serial"], TTX["serial"]):
        types = {bm for bm, *_ in env.simulation.device(serial).calls}
        assert types <= {0x80, protocol.VENDOR_IN}  # standard GET_DESCRIPTOR, vendor IN
    calls = getattr(env.backend, "calls", None)
    if calls is not None:  # the pyusb simulator backend records every call
        assert "ctrl_transfer" in calls
        assert not FORBIDDEN & set(calls)
