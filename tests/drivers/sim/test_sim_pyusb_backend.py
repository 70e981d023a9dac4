"""The simulator seen through pyusb's own code, as the driver sees it."""

import errno

import pytest
import usb.core
import usb.util
from simhelpers import device_table

from tagstat.drivers import protocol
from tagstat.drivers.sim.pyusb_backend import SimBackend, get_backend

SERIAL = "1740000JEH"


def find(backend):
    return list(usb.core.find(find_all=True, backend=backend))


def test_descriptors_and_strings_parse(make_sim):
    backend = get_backend(make_sim(device_table()))
    (dev,) = find(backend)
    assert (dev.idVendor, dev.idProduct, dev.bcdUSB) == (0x151F, 0x0121, 0x0300)
    assert dev.speed == usb.util.SPEED_SUPER
    assert usb.util.get_string(dev, dev.iSerialNumber) == SERIAL
    assert (dev.manufacturer, dev.product) == ("Swabian Instruments", "Time Tagger Ultra")
    (config,) = dev.configurations()
    (intf,) = config.interfaces()
    (ep,) = intf.endpoints()
    assert (ep.bEndpointAddress, usb.util.endpoint_type(ep.bmAttributes)) == (0x81, 2)
    assert ep.wMaxPacketSize == 1024 and len(ep.extra_descriptors) == 6  # SS companion


def test_high_speed_device_looks_like_usb2(make_sim):
    backend = SimBackend(make_sim(device_table(usb_speed="high")))
    (dev,) = find(backend)
    assert (dev.bcdUSB, dev.speed) == (0x0200, usb.util.SPEED_HIGH)
    assert dev[0][(0, 0)][0].extra_descriptors == []


def test_find_lists_several_devices_at_distinct_places(make_sim):
    sim = make_sim(device_table(), device_table(serial="1948000SAE", model="Time Tagger X"))
    devs = find(SimBackend(sim))
    assert {d.serial_number for d in devs} == {SERIAL, "1948000SAE"}
    assert len({(d.bus, d.address) for d in devs}) == 2
    assert all(d.port_numbers and d.port_number == d.port_numbers[-1] for d in devs)


def test_vendor_transfers_decode(make_sim, clock):
    (dev,) = find(SimBackend(make_sim(device_table(rate=[[0, 1_000_000]]))))
    info = protocol.decode_info(bytes(dev.ctrl_transfer(0xC0, protocol.REQ_INFO, 0, 0, 64)))
    assert info.has_sensors and info.max_transfer == 1024
    clock.advance(1.5)
    reply = bytes(dev.ctrl_transfer(0xC0, protocol.REQ_COUNTERS, 0, 0, 64, timeout=200))
    assert protocol.decode_counters(reply).bytes_sent == 1_500_000


def test_unconfigured_until_someone_configures(make_sim):
    backend = SimBackend(make_sim(device_table()))
    (dev,) = find(backend)
    with pytest.raises(usb.core.USBError, match="Configuration not set"):
        dev.get_active_configuration()
    dev.set_configuration()
    assert dev.get_active_configuration().bConfigurationValue == 1
    assert "set_configuration" in backend.calls


def test_reading_as_the_driver_does_never_claims_configures_or_resets(make_sim):
    backend = SimBackend(make_sim(device_table()))
    (dev,) = find(backend)
    usb.util.get_string(dev, dev.iSerialNumber)
    for request in (protocol.REQ_INFO, protocol.REQ_COUNTERS, protocol.REQ_SENSORS):
        dev.ctrl_transfer(0xC0, request, 0, 0, 1024, timeout=500)
    forbidden = {"claim_interface", "set_configuration", "reset_device", "detach_kernel_driver"}
    assert forbidden.isdisjoint(backend.calls)
    assert backend.calls.count("ctrl_transfer") >= 3


def test_claiming_and_bulk_reads_are_recorded(make_sim):
    backend = SimBackend(make_sim(device_table()))
    (dev,) = find(backend)
    dev.set_configuration()
    with pytest.raises(usb.core.USBTimeoutError):
        dev.read(0x81, 512, timeout=10)
    dev.reset()
    assert {"claim_interface", "bulk_read", "reset_device"} <= set(backend.calls)


@pytest.mark.parametrize(
    ("kind", "exc", "number", "code"),
    [
        ("stall", usb.core.USBError, errno.EPIPE, -9),
        ("timeout", usb.core.USBTimeoutError, errno.ETIMEDOUT, -7),
        ("busy", usb.core.USBError, errno.EBUSY, -6),
    ],
)
def test_injected_faults_map_like_libusb(make_sim, kind, exc, number, code):
    sim = make_sim(device_table())
    (dev,) = find(SimBackend(sim))
    sim.inject(SERIAL, kind)
    with pytest.raises(exc) as caught:
        dev.ctrl_transfer(0xC0, protocol.REQ_COUNTERS, 0, 0, 64)
    assert type(caught.value) is exc
    assert (caught.value.errno, caught.value.backend_error_code) == (number, code)
    dev.ctrl_transfer(0xC0, protocol.REQ_COUNTERS, 0, 0, 64)  # one shot: works again


def test_garbage_fails_to_decode(make_sim):
    sim = make_sim(device_table())
    (dev,) = find(SimBackend(sim))
    sim.inject(SERIAL, "garbage")
    reply = bytes(dev.ctrl_transfer(0xC0, protocol.REQ_INFO, 0, 0, 64))
    with pytest.raises(protocol.DecodeError):
        protocol.decode_info(reply)


def test_unknown_request_stalls(make_sim):
    (dev,) = find(SimBackend(make_sim(device_table())))
    with pytest.raises(usb.core.USBError) as caught:
        dev.ctrl_transfer(0xC0, 0x42, 0, 0, 8)
    assert caught.value.errno == errno.EPIPE


def test_unplugged_device_is_gone_and_stays_gone_after_replug(make_sim):
    sim = make_sim(device_table())
    backend = SimBackend(sim)
    (dev,) = find(backend)
    old_address = dev.address
    dev.ctrl_transfer(0xC0, protocol.REQ_INFO, 0, 0, 64)
    sim.unplug(SERIAL)
    assert find(backend) == []
    with pytest.raises(usb.core.USBError) as caught:
        dev.ctrl_transfer(0xC0, protocol.REQ_INFO, 0, 0, 64)
    assert (caught.value.errno, caught.value.backend_error_code) == (errno.ENODEV, -4)
    sim.replug(SERIAL)
    with pytest.raises(usb.core.USBError):  # the old handle belongs to the old address
        dev.ctrl_transfer(0xC0, protocol.REQ_INFO, 0, 0, 64)
    (fresh,) = find(backend)
    assert fresh.address != old_address
    assert len(fresh.ctrl_transfer(0xC0, protocol.REQ_INFO, 0, 0, 64)) == protocol.INFO.size
