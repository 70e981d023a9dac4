"""Simulated Time Taggers behind real libusb, through an umockdev testbed.

``UMockdevHarness(simulation)`` puts into the process's ``UMockdev.Testbed``
one ``usb_device`` per plugged simulated instrument (bus and device number,
speed, IDs, strings and the raw ``descriptors`` blob libusb parses), with the
hubs of its port path, and serves each ``/dev/bus/usb/BBB/DDD`` node with a
``DeviceIoctlHandler`` that answers libusb's usbdevfs ioctls from the model's
``control_transfer``. ``sync()`` follows plugs and unplugs with uevents, as
the kernel does. ``backend()`` is pyusb's libusb1 backend over Debian's
libusb, so pyusb and libusb run unchanged, as on a lab PC. The process must
run under ``umockdev-wrapper``; ``available()`` says why the tier cannot run
and what to do. ``docs/umockdev.md`` describes the tier and its limits.
"""

import logging
import os

from tagstat.drivers.sim import umockdev_usbdevfs as usbdevfs
from tagstat.drivers.sim.model import MANUFACTURER
from tagstat.drivers.sim.umockdev_handler import DeviceIoctlHandler, IoctlRecord
from tagstat.drivers.sim.umockdev_testbed import (
    SPEED_MBPS,
    SYSTEM_LIBUSB,
    ProcessTestbed,
    device_text,
    devnode,
    syspath,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install umockdev gir1.2-umockdev-1.0 python3-gi libusb-1.0-0"
RUN_HINT = "umockdev-wrapper .venv/bin/python -m pytest -m umockdev tests/drivers"
_process_testbed: ProcessTestbed | None = None


def _preloaded() -> bool:
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            return "libumockdev-preload" in maps.read()
    except OSError:
        return False


def _umockdev_module():
    import gi

    gi.require_version("UMockdev", "1.0")
    from gi.repository import UMockdev

    return UMockdev


def available() -> str | None:
    """None if the tier can run in this process; else what is missing and what to do."""
    if not usbdevfs.machine_supported():
        return f"usbdevfs layouts are defined for x86_64 only, this is {os.uname().machine}"
    try:
        import gi  # noqa: F401
    except ImportError:
        return (
            "python3-gi not importable: apt-get install python3-gi and create the venv from "
            "/usr/bin/python3 with --system-site-packages"
        )
    try:
        _umockdev_module()
    except (ImportError, ValueError) as e:
        return f"umockdev not installed ({e}): {INSTALL_HINT}"
    if not os.path.exists(SYSTEM_LIBUSB):
        return f"{SYSTEM_LIBUSB} missing: {INSTALL_HINT}"
    if not _preloaded():
        return f"not running under umockdev-wrapper: run `{RUN_HINT}`"
    return None


class UMockdevHarness:
    """Mirrors ``simulation.devices()`` as USB devices for real libusb; one open at a time."""

    def __init__(self, simulation):
        global _process_testbed
        reason = available()
        if reason:
            raise RuntimeError(reason)
        umockdev = _umockdev_module()
        if _process_testbed is None:
            _process_testbed = ProcessTestbed(umockdev)
        self._umockdev = umockdev
        self._bed = _process_testbed
        self._bed.acquire(self)
        self.simulation = simulation
        self.testbed = self._bed.testbed
        self.ioctl_log: list[IoctlRecord] = []
        self.handler_errors: list[Exception] = []
        self._devices: dict[tuple, tuple[str, DeviceIoctlHandler]] = {}  # key -> syspath, handler
        self._closed = False
        self.sync()

    def sync(self) -> None:
        """Add and remove testbed devices so they match ``simulation.devices()`` now."""
        wanted = {self._key(d): d for d in self.simulation.devices()}
        for key in [k for k in self._devices if k not in wanted]:
            self._remove(key)
        for key, device in wanted.items():
            if key not in self._devices:
                self._add(key, device)

    @staticmethod
    def _key(device) -> tuple:
        return (device.serial, device.bus, device.address, tuple(device.port_numbers))

    def _add(self, key: tuple, device) -> None:
        bus, address, ports = device.bus, device.address, tuple(device.port_numbers)
        self._bed.ensure_hubs(bus, ports, device.usb_speed)
        path = syspath(bus, ports)
        attrs = {
            "idVendor": f"{device.vendor_id:04x}",
            "idProduct": f"{device.product_id:04x}",
            "bcdDevice": f"{device.bcd_device:04x}",
            "manufacturer": MANUFACTURER,
            "product": device.model,
            "serial": device.serial,
            "speed": SPEED_MBPS[device.usb_speed],
            "bNumConfigurations": "1",
            # mirrors the model, which stays unconfigured unless someone configures it
            "bConfigurationValue": str(device.configuration_value or ""),
            "bDeviceClass": "ff",
            "bMaxPacketSize0": "9" if device.usb_speed == "super" else "64",
            "devpath": ".".join(str(p) for p in ports),
        }
        blob = device.device_descriptor() + device.configuration_descriptor()
        node = devnode(bus, address)
        handler = DeviceIoctlHandler(
            self._umockdev, device, node, self.ioctl_log, self.handler_errors
        )
        self._bed.add(path, device_text(path, bus, address, attrs, blob, True))
        self.testbed.attach_ioctl(node, handler.base)
        self._devices[key] = (path, handler)

    def _remove(self, key: tuple) -> None:
        path, handler = self._devices.pop(key)
        handler.removed = True  # open handles now see ENODEV, like after an unplug
        self.testbed.detach_ioctl(handler.devnode)
        self._bed.remove(path)

    def intrusive_ioctls(self) -> list[IoctlRecord]:
        """The recorded ioctls that change device state (claim, reset, set-configuration...)."""
        return [r for r in self.ioctl_log if r.intrusive]

    def backend(self):
        """pyusb's libusb1 backend (Debian's libusb) seeing this harness's devices."""
        return self._bed.backend()

    def close(self) -> None:
        """Unplug every device and give the process its real /sys and /dev back."""
        if self._closed:
            return
        self._closed = True
        for key in list(self._devices):
            self._remove(key)
        self._bed.release()
