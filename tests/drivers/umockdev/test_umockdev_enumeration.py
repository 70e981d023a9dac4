"""Enumeration through real libusb: the testbed shows what the simulation has plugged."""

import pytest
import usb.core
import usb.util
from conftest import TT20, ULTRA, ManualClock, make_simulation

from tagstat.drivers.sim import umockdev

pytestmark = pytest.mark.umockdev

VID = 0x151F


def _taggers(backend) -> dict:
    return {d.serial_number: d for d in usb.core.find(find_all=True, idVendor=VID, backend=backend)}


def test_lists_each_plugged_device_with_its_identity(umockdev_env):
    env = umockdev_env(ULTRA, TT20)
    found = _taggers(env.backend)
    assert sorted(found) == sorted([ULTRA["serial"], TT20["serial"]])
    for serial, dev in found.items():
        model = env.simulation.device(serial)
        assert (dev.idVendor, dev.idProduct, dev.bcdDevice) == (
            model.vendor_id,
            model.product_id,
            model.bcd_device,
        )
        assert (dev.bus, dev.address) == (model.bus, model.address)
        assert dev.port_numbers == model.port_numbers


def test_speed_follows_the_link(umockdev_env):
    env = umockdev_env(ULTRA, TT20)
    found = _taggers(env.backend)
    assert found[ULTRA["serial"]].speed == usb.util.SPEED_SUPER
    assert found[TT20["serial"]].speed == usb.util.SPEED_HIGH


def test_string_descriptors_come_from_the_device(umockdev_env):
    env = umockdev_env(ULTRA)
    dev = usb.core.find(idVendor=VID, backend=env.backend)
    assert usb.util.get_string(dev, dev.iManufacturer) == "Swabian Instruments"
    assert usb.util.get_string(dev, dev.iProduct) == ULTRA["model"]
    assert usb.util.get_string(dev, dev.iSerialNumber) == ULTRA["serial"]
    # the strings travelled as GET_DESCRIPTOR control transfers to the model
    requests = {
        (bm, req, value >> 8) for bm, req, value, _ in env.simulation.device(ULTRA["serial"]).calls
    }
    assert (0x80, 0x06, 0x03) in requests


def test_configuration_descriptor_is_parsed_by_pyusb(umockdev_env):
    env = umockdev_env(ULTRA)
    dev = usb.core.find(idVendor=VID, backend=env.backend)
    config = dev[0]  # the descriptor only: nothing is configured or claimed
    endpoints = [ep.bEndpointAddress for ep in config[(0, 0)]]
    assert endpoints == [0x81]


def test_root_hub_sits_on_each_bus(umockdev_env):
    env = umockdev_env(ULTRA, TT20)
    hubs = list(usb.core.find(find_all=True, idVendor=0x1D6B, backend=env.backend))
    assert sorted((h.bus, h.address, h.idProduct) for h in hubs) == [(1, 1, 0x0002), (2, 1, 0x0003)]


def test_no_device_when_the_simulation_has_none_plugged(umockdev_env):
    env = umockdev_env(ULTRA)
    env.simulation.unplug(ULTRA["serial"])
    env.harness.sync()
    assert _taggers(env.backend) == {}


def test_port_path_through_an_external_hub(umockdev_env):
    if umockdev.available():
        pytest.skip(umockdev.available())
    simulation = make_simulation([ULTRA], ManualClock())
    simulation.device(ULTRA["serial"]).state.port_numbers = [3, 2]
    harness = umockdev.UMockdevHarness(simulation)
    try:
        dev = usb.core.find(idVendor=VID, backend=harness.backend())
        assert dev.port_numbers == (3, 2)
        hub = usb.core.find(
            idVendor=0x1D6B, bus=dev.bus, port_numbers=(3,), backend=harness.backend()
        )
        assert hub is not None and hub.address != dev.address
    finally:
        harness.close()
