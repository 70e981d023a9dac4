"""A pyusb backend over a ``Simulation``, so pyusb's own code runs against simulated devices.

``usb.core.find(backend=SimBackend(simulation))`` lists the plugged-in
simulated Time Taggers; descriptors are parsed from the bytes the device
sends, control transfers go to ``SimulatedTimeTagger.control_transfer``, and
faults come back the way the libusb1 backend reports them (stall is errno
32 / LIBUSB_ERROR_PIPE, timeout ``USBTimeoutError``, busy EBUSY, gone
ENODEV). A handle opened before an unplug, replug or reset stays dead, as a
real one does. Every backend call is recorded by name in ``calls`` so tests
can prove the driver never claims, configures or resets anything.
"""

import errno
import types

import usb.backend
import usb.core
import usb.util

from tagstat.drivers.sim import descriptors
from tagstat.drivers.sim.model import (
    SimBusy,
    SimFault,
    SimGone,
    SimStall,
    SimTimeout,
    SimulatedTimeTagger,
    Simulation,
)

# libusb error codes, as the libusb1 backend puts them in backend_error_code
LIBUSB_ERROR_IO = -1
LIBUSB_ERROR_NO_DEVICE = -4
LIBUSB_ERROR_BUSY = -6
LIBUSB_ERROR_TIMEOUT = -7
LIBUSB_ERROR_PIPE = -9

_ERRORS = {  # fault -> (exception class, message, errno, libusb code)
    SimStall: (usb.core.USBError, "Pipe error", errno.EPIPE, LIBUSB_ERROR_PIPE),
    SimTimeout: (
        usb.core.USBTimeoutError,
        "Operation timed out",
        errno.ETIMEDOUT,
        LIBUSB_ERROR_TIMEOUT,
    ),
    SimBusy: (usb.core.USBError, "Resource busy", errno.EBUSY, LIBUSB_ERROR_BUSY),
    SimGone: (
        usb.core.USBError,
        "No such device (it may have been disconnected)",
        errno.ENODEV,
        LIBUSB_ERROR_NO_DEVICE,
    ),
}
_SPEEDS = {"super": usb.util.SPEED_SUPER, "high": usb.util.SPEED_HIGH}


def usb_error(fault: SimFault) -> usb.core.USBError:
    """The exception libusb1's backend would raise for ``fault``."""
    cls, message, number, code = _ERRORS.get(type(fault), _ERRORS[SimStall])
    return cls(message, code, number)


class _DevId(types.SimpleNamespace):
    """What enumerate_devices yields: a device as it was when enumerated."""


class _Handle(types.SimpleNamespace):
    pass


class SimBackend(usb.backend.IBackend):
    def __init__(self, simulation: Simulation):
        super().__init__()
        self.simulation = simulation
        self.calls: list[str] = []

    def _device(self, dev) -> SimulatedTimeTagger:
        return self.simulation.device(dev.serial)

    def _live(self, ref) -> SimulatedTimeTagger:
        """The device behind ``ref``, or ENODEV if it left the bus since ``ref`` was made."""
        device = self._device(ref)
        self.simulation.advance()
        if not device.plugged or (device.bus, device.address) != (ref.bus, ref.address):
            raise usb_error(SimGone())
        return device

    # -- enumeration and descriptors -------------------------------------------

    def enumerate_devices(self):
        self.calls.append("enumerate_devices")
        for device in self.simulation.devices():
            yield _DevId(serial=device.serial, bus=device.bus, address=device.address)

    def get_parent(self, dev):
        return None

    def get_device_descriptor(self, dev):
        self.calls.append("get_device_descriptor")
        device = self._device(dev)
        return descriptors.parse_device(
            device.device_descriptor(),
            bus=dev.bus,
            address=dev.address,
            port_number=device.port_numbers[-1],
            port_numbers=device.port_numbers,
            speed=_SPEEDS[device.usb_speed],
        )

    def _config(self, dev, config: int):
        if config != 0:
            raise IndexError(f"configuration index {config} out of range")
        return descriptors.parse_configuration(self._device(dev).configuration_descriptor())

    def get_configuration_descriptor(self, dev, config):
        self.calls.append("get_configuration_descriptor")
        return self._config(dev, config)

    def get_interface_descriptor(self, dev, intf, alt, config):
        self.calls.append("get_interface_descriptor")
        if alt != 0:
            raise IndexError(f"alternate setting {alt} out of range")
        return self._config(dev, config).interfaces[intf]

    def get_endpoint_descriptor(self, dev, ep, intf, alt, config):
        self.calls.append("get_endpoint_descriptor")
        return self.get_interface_descriptor(dev, intf, alt, config).endpoints[ep]

    # -- handles ---------------------------------------------------------------

    def open_device(self, dev):
        self.calls.append("open_device")
        self._live(dev)
        return _Handle(serial=dev.serial, bus=dev.bus, address=dev.address)

    def close_device(self, dev_handle):
        self.calls.append("close_device")

    def get_configuration(self, dev_handle):
        self.calls.append("get_configuration")
        return self._live(dev_handle).configuration_value

    def set_configuration(self, dev_handle, config_value):
        self.calls.append("set_configuration")
        self._live(dev_handle).configuration_value = config_value

    def set_interface_altsetting(self, dev_handle, intf, altsetting):
        self.calls.append("set_interface_altsetting")
        self._live(dev_handle)

    def claim_interface(self, dev_handle, intf):
        self.calls.append("claim_interface")
        self._live(dev_handle)

    def release_interface(self, dev_handle, intf):
        self.calls.append("release_interface")

    # -- transfers -------------------------------------------------------------

    def ctrl_transfer(self, dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout):
        self.calls.append("ctrl_transfer")
        device = self._live(dev_handle)
        try:
            if bmRequestType & 0x80:
                reply = device.control_transfer(bmRequestType, bRequest, wValue, wIndex, len(data))
                data[: len(reply)] = type(data)(data.typecode, reply)
                return len(reply)
            return device.control_transfer(bmRequestType, bRequest, wValue, wIndex, data.tobytes())
        except SimFault as fault:
            raise usb_error(fault) from None

    def bulk_read(self, dev_handle, ep, intf, buff, timeout):
        self.calls.append("bulk_read")
        self._live(dev_handle)
        # the stream belongs to the vendor software; nothing arrives for us
        raise usb_error(SimTimeout())

    def bulk_write(self, dev_handle, ep, intf, data, timeout):
        self.calls.append("bulk_write")
        raise usb_error(SimStall())

    def intr_read(self, dev_handle, ep, intf, size, timeout):
        self.calls.append("intr_read")
        raise usb_error(SimStall())

    def intr_write(self, dev_handle, ep, intf, data, timeout):
        self.calls.append("intr_write")
        raise usb_error(SimStall())

    def clear_halt(self, dev_handle, ep):
        self.calls.append("clear_halt")

    def reset_device(self, dev_handle):
        self.calls.append("reset_device")
        self._live(dev_handle)

    def is_kernel_driver_active(self, dev_handle, intf):
        self.calls.append("is_kernel_driver_active")
        return False

    def detach_kernel_driver(self, dev_handle, intf):
        self.calls.append("detach_kernel_driver")

    def attach_kernel_driver(self, dev_handle, intf):
        self.calls.append("attach_kernel_driver")


def get_backend(simulation: Simulation) -> SimBackend:
    return SimBackend(simulation)
