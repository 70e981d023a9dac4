"""Discovery: which devices count as Time Taggers, their identity, hotplug, bad devices."""

import errno
import re
import types

import pytest
import usb.core

from tagstat.drivers.discovery import Discovery, find_timetaggers
from tagstat.drivers.errors import DeviceAccessDeniedError
from tagstat.drivers.sim.model import BCD_DEVICE

ULTRA = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super"}
TT20 = {"serial": "1809000LGG", "model": "Time Tagger 20", "usb_speed": "high"}
TTX = {"serial": "2023000TMV", "model": "Time Tagger X", "usb_speed": "super"}
THREE = {"device": [TT20, ULTRA, TTX]}


class _Foreign(types.SimpleNamespace):
    """A non-Time-Tagger device added by ``WithForeignDevices``."""


class WithForeignDevices:
    """A backend wrapper that adds devices which are not Time Taggers.

    They answer string-descriptor reads only and record every transfer, so a
    test can see whether discovery asked them anything.
    """

    def __init__(self, inner, *devices: tuple[int, int, str]):
        self._inner = inner
        self.foreign = [
            _Foreign(vid=vid, pid=pid, product=product, address=100 + i, requests=[])
            for i, (vid, pid, product) in enumerate(devices)
        ]

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def enumerate_devices(self):
        yield from self._inner.enumerate_devices()
        yield from self.foreign

    def get_device_descriptor(self, dev):
        if not isinstance(dev, _Foreign):
            return self._inner.get_device_descriptor(dev)
        return types.SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=dev.vid, idProduct=dev.pid,
            bcdDevice=0x0100, iManufacturer=1, iProduct=2, iSerialNumber=3,
            bNumConfigurations=1, bus=3, address=dev.address, port_number=dev.address - 99,
            port_numbers=(dev.address - 99,), speed=usb.util.SPEED_HIGH,
        )  # fmt: skip

    def open_device(self, dev):
        return dev if isinstance(dev, _Foreign) else self._inner.open_device(dev)

    def close_device(self, handle):
        if not isinstance(handle, _Foreign):
            self._inner.close_device(handle)

    def ctrl_transfer(self, handle, bm, request, value, index, data, timeout):
        if not isinstance(handle, _Foreign):
            return self._inner.ctrl_transfer(handle, bm, request, value, index, data, timeout)
        handle.requests.append((bm, request, value, index))
        strings = {0: b"\x04\x03\x09\x04", 2: _string(handle.product), 3: _string("XEM0001")}
        if (bm, request, value >> 8) != (0x80, 0x06, 0x03) or value & 0xFF not in strings:
            raise usb.core.USBError("Pipe error", -9, errno.EPIPE)
        reply = strings[value & 0xFF][: len(data)]
        data[: len(reply)] = type(data)("B", reply)
        return len(reply)


def _string(text: str) -> bytes:
    encoded = text.encode("utf-16-le")
    return bytes([2 + len(encoded), 3]) + encoded


class DenyOpen:
    """A backend wrapper: opening the device at ``where`` (bus, address) fails, as without
    udev rules; every device if ``where`` is None."""

    def __init__(self, inner, where: tuple[int, int] | None = None):
        self._inner = inner
        self.where = where

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def open_device(self, dev):
        desc = self._inner.get_device_descriptor(dev)
        if self.where in (None, (desc.bus, desc.address)):
            raise usb.core.USBError("Access denied (insufficient permissions)", -3, errno.EACCES)
        return self._inner.open_device(dev)


def _by_serial(taggers):
    return {t.identity.serial: t for t in taggers}


def test_finds_every_model_at_once(usb_env):
    env = usb_env(THREE)
    result = Discovery(env.backend).scan()
    found = {t.identity.serial: t.identity.model for t in result.present}
    assert found == {
        "1809000LGG": "Time Tagger 20",
        "1740000JEH": "Time Tagger Ultra",
        "2023000TMV": "Time Tagger X",
    }
    assert {t.identity.serial for t in result.added} == set(found)
    assert result.removed == () and result.errors == ()


def test_identity_fields_come_from_the_descriptors(usb_env):
    env = usb_env(THREE)
    taggers = _by_serial(find_timetaggers(env.backend))
    for serial, tagger in taggers.items():
        sim_device = env.simulation.device(serial)
        ident = tagger.identity
        assert (ident.vendor_id, ident.product_id) == (0x151F, sim_device.product_id)
        assert re.fullmatch(r"[0-9a-f]+\.[0-9a-f]{2}", ident.firmware)
        assert int(ident.firmware.replace(".", ""), 16) == BCD_DEVICE[ident.model]
        assert (ident.bus, ident.address) == (sim_device.bus, sim_device.address)
        ports = ".".join(str(p) for p in sim_device.port_numbers)
        assert ident.port_path == f"{sim_device.bus}-{ports}"
    assert taggers["1809000LGG"].identity.usb_speed == "high"
    assert taggers["1740000JEH"].identity.usb_speed == "super"


def test_an_ultra_on_a_usb2_port_reports_high_speed(usb_env):
    env = usb_env({"device": [dict(ULTRA, usb_speed="high")]})
    (tagger,) = find_timetaggers(env.backend)
    assert tagger.identity.usb_speed == "high"
    assert tagger.identity.model == "Time Tagger Ultra"


def test_other_opal_kelly_products_and_other_vendors_are_ignored(usb_env):
    env = usb_env({"device": [ULTRA]})
    backend = WithForeignDevices(
        env.backend, (0x151F, 0x0121, "XEM6310-LX45"), (0x046D, 0xC077, "USB Optical Mouse")
    )
    discovery = Discovery(backend)
    result = discovery.scan()
    assert [t.identity.serial for t in result.present] == ["1740000JEH"]
    board, mouse = backend.foreign
    assert mouse.requests == []  # other vendors are filtered before any transfer
    assert board.requests  # its product string had to be read once
    asked = len(board.requests)
    discovery.scan()
    assert len(board.requests) == asked  # and is not asked again while attached


def test_configured_product_ids_match_without_the_product_string(usb_env):
    env = usb_env({"device": [ULTRA]})
    backend = WithForeignDevices(env.backend, (0x151F, 0x0131, "XEM7310-A75"))
    plain = {t.identity.model for t in find_timetaggers(backend)}
    assert plain == {"Time Tagger Ultra"}
    configured = {t.identity.model for t in find_timetaggers(backend, product_ids=[0x0131])}
    assert configured == {"Time Tagger Ultra", "XEM7310-A75"}


def test_devices_still_present_are_reused_without_reading_strings(usb_env):
    env = usb_env(THREE)
    discovery = Discovery(env.backend)
    first = discovery.scan()
    calls = [list(env.simulation.device(t.identity.serial).calls) for t in first.present]
    second = discovery.scan()
    assert second.added == () and second.removed == ()
    assert [id(t) for t in second.present] == [id(t) for t in first.present]
    after = [env.simulation.device(t.identity.serial).calls for t in second.present]
    assert after == calls  # no string descriptor read for known devices


def test_unplug_and_replug_between_scans(usb_env):
    env = usb_env({"device": [ULTRA, TT20]})
    discovery = Discovery(env.backend)
    before = _by_serial(discovery.scan().present)
    env.simulation.unplug("1740000JEH")
    env.sync()
    gone = discovery.scan()
    assert [i.serial for i in gone.removed] == ["1740000JEH"]
    assert [t.identity.serial for t in gone.present] == ["1809000LGG"]
    env.simulation.replug("1740000JEH")
    env.sync()
    back = discovery.scan()
    assert [t.identity.serial for t in back.added] == ["1740000JEH"]
    new = back.added[0]
    assert new is not before["1740000JEH"]
    assert new.identity.address != before["1740000JEH"].identity.address
    assert new.read_counters().counter_bits == 48


def test_access_denied_is_reported_per_device_with_the_fix(usb_env):
    env = usb_env({"device": [ULTRA, TT20]})
    denied = env.simulation.device("1740000JEH")
    result = Discovery(DenyOpen(env.backend, (denied.bus, denied.address))).scan()
    assert [t.identity.serial for t in result.present] == ["1809000LGG"]
    (error,) = result.errors
    assert isinstance(error, DeviceAccessDeniedError)
    message = str(error)
    assert f"/dev/bus/usb/{denied.bus:03d}/{denied.address:03d}" in message
    assert "systemd/60-tagstat.rules" in message and "group tagstat" in message


def test_a_device_that_cannot_be_opened_is_retried_at_the_next_scan(usb_env):
    env = usb_env({"device": [ULTRA]})
    deny = DenyOpen(env.backend)
    discovery = Discovery(deny)
    assert discovery.scan().errors
    deny.where = (-1, -1)  # udev rules installed meanwhile
    result = discovery.scan()
    assert [t.identity.serial for t in result.added] == ["1740000JEH"]
    assert result.errors == ()


def test_find_timetaggers_skips_bad_devices(usb_env):
    env = usb_env({"device": [ULTRA]})
    assert find_timetaggers(DenyOpen(env.backend)) == []


@pytest.mark.parametrize("product_ids", [(), (0x0121,)])
def test_matching_is_by_vendor_too(usb_env, product_ids):
    env = usb_env({"device": [ULTRA]})
    backend = WithForeignDevices(env.backend, (0x046D, 0x0121, "Time Tagger (not really)"))
    found = find_timetaggers(backend, product_ids=product_ids)
    assert [t.identity.serial for t in found] == ["1740000JEH"]
