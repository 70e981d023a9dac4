"""The ioctl log, the usbdevfs layouts, the synchronous control ioctl and available()."""

import ctypes
import fcntl
import os
import subprocess
import sys

import pytest
import usb.core
import usb.util
from conftest import ULTRA

from tagstat.drivers import protocol
from tagstat.drivers.sim import umockdev_usbdevfs as fs

pytestmark = pytest.mark.umockdev


def test_control_transfers_alone_never_claim_configure_or_reset(umockdev_env):
    env = umockdev_env(ULTRA)
    dev = usb.core.find(idVendor=0x151F, backend=env.backend)
    assert dev.serial_number == ULTRA["serial"]
    for request in (protocol.REQ_INFO, protocol.REQ_COUNTERS, protocol.REQ_CONFIGURATION):
        dev.ctrl_transfer(protocol.VENDOR_IN, request, 0, 0, protocol.DEFAULT_TRANSFER, 500)
    assert env.harness.intrusive_ioctls() == []
    assert {"submiturb", "reapurbndelay"} <= {r.request for r in env.harness.ioctl_log}


def test_claim_and_set_configuration_are_recorded(umockdev_env):
    env = umockdev_env(ULTRA)
    dev = usb.core.find(idVendor=0x151F, backend=env.backend)
    dev.set_configuration()
    usb.util.claim_interface(dev, 0)
    usb.util.release_interface(dev, 0)
    recorded = [r.request for r in env.harness.intrusive_ioctls()]
    assert recorded == ["setconfiguration", "claiminterface", "releaseinterface"]
    # the kernel would have sent SET_CONFIGURATION to the device
    assert env.simulation.device(ULTRA["serial"]).configuration_value == 1


def test_request_numbers_are_the_x86_64_kernel_values():
    assert fs.USBDEVFS_CONTROL == 0xC0185500
    assert fs.USBDEVFS_SUBMITURB == 0x8038550A
    assert fs.USBDEVFS_REAPURBNDELAY == 0x4008550D
    assert fs.USBDEVFS_DISCARDURB == 0x550B
    assert fs.USBDEVFS_CLAIMINTERFACE == 0x8004550F
    assert fs.USBDEVFS_RESET == 0x5514
    assert fs.USBDEVFS_GET_CAPABILITIES == 0x8004551A
    assert ctypes.sizeof(fs.UsbdevfsUrb) == 56 and fs.URB_BUFFER_OFFSET == 16


def test_synchronous_control_ioctl_is_answered(umockdev_env):
    # libusb uses SUBMITURB; other programs use USBDEVFS_CONTROL, issued here by hand.
    env = umockdev_env(ULTRA)
    device = env.simulation.device(ULTRA["serial"])
    data = ctypes.create_string_buffer(protocol.INFO.size)
    ctrl = fs.UsbdevfsCtrlTransfer(
        protocol.VENDOR_IN, protocol.REQ_INFO, 0, 0, protocol.INFO.size, 500, ctypes.addressof(data)
    )
    fd = os.open(f"/dev/bus/usb/{device.bus:03d}/{device.address:03d}", os.O_RDWR)
    try:
        count = fcntl.ioctl(fd, fs.USBDEVFS_CONTROL, ctrl)
        env.simulation.inject(ULTRA["serial"], "stall")
        with pytest.raises(OSError) as caught:
            fcntl.ioctl(fd, fs.USBDEVFS_CONTROL, ctrl)
    finally:
        os.close(fd)
    assert count == protocol.INFO.size
    assert protocol.decode_info(data.raw).max_transfer == protocol.DEFAULT_TRANSFER
    assert caught.value.errno == 32


def test_available_names_the_wrapper_when_not_preloaded():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    code = "from tagstat.drivers.sim.umockdev import available; print(available())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    reason = out.stdout.strip()
    if "umockdev-wrapper" not in reason:  # a machine without umockdev says so first
        assert "apt-get install" in reason
