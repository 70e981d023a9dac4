"""Faults and hotplug through real libusb: each model fault arrives as the kernel reports it."""

import errno

import pytest
import usb.core
from conftest import ULTRA

from tagstat.drivers import protocol

pytestmark = pytest.mark.umockdev
SERIAL = ULTRA["serial"]


def _info(dev, timeout_ms=500) -> bytes:
    return bytes(dev.ctrl_transfer(protocol.VENDOR_IN, protocol.REQ_INFO, 0, 0, 12, timeout_ms))


def _setup(umockdev_env):
    env = umockdev_env(ULTRA)
    return env, usb.core.find(idVendor=0x151F, backend=env.backend)


def test_stall_is_a_pipe_error_and_the_next_transfer_works(umockdev_env):
    env, dev = _setup(umockdev_env)
    env.simulation.inject(SERIAL, "stall")
    with pytest.raises(usb.core.USBError) as caught:
        _info(dev)
    assert caught.value.errno == errno.EPIPE
    assert _info(dev)[:4] == protocol.INFO_MAGIC


def test_timeout_is_libusbs_own_and_discards_the_urb(umockdev_env):
    env, dev = _setup(umockdev_env)
    env.simulation.inject(SERIAL, "timeout")
    with pytest.raises(usb.core.USBTimeoutError):
        _info(dev, timeout_ms=50)
    assert "discardurb" in [r.request for r in env.harness.ioctl_log]
    assert _info(dev)[:4] == protocol.INFO_MAGIC  # the discarded URB left nothing behind


def test_busy_reaches_pyusb_as_an_io_error(umockdev_env):
    # libusb maps every URB status it does not know (-EBUSY included) to
    # LIBUSB_ERROR_IO: on Linux a control transfer can never report "busy".
    env, dev = _setup(umockdev_env)
    env.simulation.inject(SERIAL, "busy")
    with pytest.raises(usb.core.USBError) as caught:
        _info(dev)
    assert caught.value.errno == errno.EIO


def test_unplugged_device_reports_no_device(umockdev_env):
    env, dev = _setup(umockdev_env)
    env.simulation.unplug(SERIAL)
    with pytest.raises(usb.core.USBError) as caught:
        _info(dev)  # before sync: the node is still there, the device answers ENODEV
    assert caught.value.errno == errno.ENODEV
    env.harness.sync()
    with pytest.raises(usb.core.USBError) as caught:
        _info(dev)  # after sync: the node is gone
    assert caught.value.errno == errno.ENODEV


def test_replug_comes_back_at_a_new_address(umockdev_env):
    env, dev = _setup(umockdev_env)
    old_address = dev.address
    env.simulation.unplug(SERIAL)
    env.harness.sync()
    assert usb.core.find(idVendor=0x151F, backend=env.backend) is None
    env.simulation.replug(SERIAL)
    env.harness.sync()
    again = list(usb.core.find(find_all=True, idVendor=0x151F, backend=env.backend))
    assert [d.address for d in again] == [env.simulation.device(SERIAL).address]
    assert again[0].address != old_address
    assert again[0].serial_number == SERIAL
    assert _info(again[0])[:4] == protocol.INFO_MAGIC


def test_sync_without_changes_keeps_the_device(umockdev_env):
    env, dev = _setup(umockdev_env)
    env.harness.sync()
    assert [
        d.address for d in usb.core.find(find_all=True, idVendor=0x151F, backend=env.backend)
    ] == [dev.address]
