"""Simulated Time Taggers behind real libusb, through an umockdev testbed.

``UMockdevHarness(simulation)`` builds a ``UMockdev.Testbed`` whose sysfs
holds one ``usb_device`` per plugged simulated instrument (bus and device
number, speed, IDs, strings and the raw ``descriptors`` blob libusb parses),
plus the root hub and any intermediate hub of its port path, so libusb
computes the same port numbers the model reports. Each instrument's
``/dev/bus/usb/BBB/DDD`` node is served by a ``DeviceIoctlHandler`` that
answers libusb's usbdevfs ioctls from ``control_transfer``. ``backend()``
returns pyusb's libusb1 backend on a fresh libusb context, so pyusb and
libusb run unchanged, exactly as on a lab PC. The process must run under
``umockdev-wrapper``; ``available()`` says why the tier cannot run and what to
do. ``docs/umockdev.md`` describes the tier and its limits.
"""

import logging
import os
import struct

import usb.backend.libusb1

from tagstat.drivers.sim import umockdev_usbdevfs as usbdevfs
from tagstat.drivers.sim.umockdev_handler import DeviceIoctlHandler, IoctlRecord

log = logging.getLogger(__name__)

# Debian's libusb, not the libusb_package wheel's: Debian builds it with
# libudev, and umockdev is made to emulate libudev (enumeration and the
# uevent monitor that carries hotplug). The wheel's libusb is built without
# udev: it reads netlink uevents, which it drops unless they carry the
# kernel's sender credentials, so it would never see a hotplug here.
SYSTEM_LIBUSB = "/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0"
INSTALL_HINT = "apt-get install umockdev gir1.2-umockdev-1.0 python3-gi libusb-1.0-0"
RUN_HINT = "umockdev-wrapper .venv/bin/python -m pytest -m umockdev tests/drivers"
_SPEED_MBPS = {"super": "5000", "high": "480"}
_ROOT_HUB_PID = {"super": 0x0003, "high": 0x0002}  # Linux Foundation 3.0 / 2.0 root hub


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


def _load_libusb():
    """Debian's libusb, installed as pyusb's libusb1 library (see SYSTEM_LIBUSB).

    pyusb's libusb1 module calls one module-global library (``_lib``) from its
    device and handle wrappers, whatever library a backend object was made
    with, so the library is chosen for the whole process, once.
    """
    lib = usb.backend.libusb1._lib
    if lib is None:
        lib = usb.backend.libusb1._load_library(find_library=lambda _name: SYSTEM_LIBUSB)
        usb.backend.libusb1._setup_prototypes(lib)
        usb.backend.libusb1._lib = lib
    elif getattr(lib, "_name", None) != SYSTEM_LIBUSB:
        raise RuntimeError(
            f"pyusb already uses {lib._name}; the umockdev tier needs {SYSTEM_LIBUSB}: "
            "run the umockdev tests in a process of their own (pytest -m umockdev)"
        )
    return lib


def _hub_descriptors(speed: str, product_id: int) -> bytes:
    """Device + configuration descriptor of a hub: one interface, one interrupt IN endpoint."""
    super_speed = speed == "super"
    device = struct.pack(
        "<BBHBBBBHHHBBBB",
        *(18, 1, 0x0300 if super_speed else 0x0200, 9, 0, 3 if super_speed else 1),
        *(9 if super_speed else 64, 0x1D6B, product_id, 0x0601, 3, 2, 1, 1),
    )
    config = struct.pack("<BBHBBBBB", 9, 2, 25, 1, 1, 0, 0xE0, 0)
    interface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 1, 9, 0, 0, 0)
    endpoint = struct.pack("<BBBBHB", 7, 5, 0x81, 3, 4, 12)
    return device + config + interface + endpoint


def _escape(value: str) -> str:
    # umockdev's text format: backslash escapes, one line per attribute.
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _device_text(syspath: str, bus: int, address: int, attrs: dict, blob: bytes, node: bool):
    devname = f"bus/usb/{bus:03d}/{address:03d}"
    lines = [f"P: {syspath}"]
    if node:
        lines.append(f"N: {devname}")
    lines += [
        f"E: DEVNAME=/dev/{devname}",
        "E: DEVTYPE=usb_device",
        "E: SUBSYSTEM=usb",
        f"E: BUSNUM={bus:03d}",
        f"E: DEVNUM={address:03d}",
        f"A: busnum={bus}\\n",
        f"A: devnum={address}\\n",
    ]
    # Text attributes end in a newline like the kernel's, or libusb reads them cut short.
    lines += [f"A: {key}={_escape(value)}\\n" for key, value in attrs.items()]
    lines.append(f"H: descriptors={blob.hex().upper()}")
    return "\n".join(lines) + "\n"


class UMockdevHarness:
    """A testbed that mirrors ``simulation.devices()`` as USB devices for real libusb."""

    def __init__(self, simulation):
        reason = available()
        if reason:
            raise RuntimeError(reason)
        self._umockdev = _umockdev_module()
        self.simulation = simulation
        self.testbed = self._umockdev.Testbed.new()
        self.ioctl_log: list[IoctlRecord] = []
        self.handler_errors: list[Exception] = []
        self._devices: dict[tuple, tuple[str, DeviceIoctlHandler]] = {}  # key -> syspath, handler
        self._hubs: dict[tuple[int, tuple[int, ...]], int] = {}  # (bus, ports) -> address
        self._backends: list = []
        self.sync()

    # -- the devices -----------------------------------------------------------

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

    def _syspath(self, bus: int, ports: tuple[int, ...]) -> str:
        path = f"/devices/pci0000:00/0000:00:14.0/usb{bus}"
        for depth in range(1, len(ports) + 1):
            path += f"/{bus}-{'.'.join(str(p) for p in ports[:depth])}"
        return path

    def _add(self, key: tuple, device) -> None:
        bus, address, ports = device.bus, device.address, tuple(device.port_numbers)
        self._ensure_hubs(bus, ports, device.usb_speed)
        syspath = self._syspath(bus, ports)
        attrs = {
            "idVendor": f"{device.vendor_id:04x}",
            "idProduct": f"{device.product_id:04x}",
            "bcdDevice": f"{device.bcd_device:04x}",
            "manufacturer": "Swabian Instruments",
            "product": device.model,
            "serial": device.serial,
            "speed": _SPEED_MBPS[device.usb_speed],
            "bNumConfigurations": "1",
            # mirrors the model, which stays unconfigured unless someone configures it
            "bConfigurationValue": str(getattr(device, "configuration_value", 1) or ""),
            "bDeviceClass": "ff",
            "bMaxPacketSize0": "9" if device.usb_speed == "super" else "64",
            "devpath": ".".join(str(p) for p in ports),
        }
        blob = device.device_descriptor() + device.configuration_descriptor()
        self.testbed.add_from_string(_device_text(syspath, bus, address, attrs, blob, True))
        devnode = f"/dev/bus/usb/{bus:03d}/{address:03d}"
        handler = DeviceIoctlHandler(
            self._umockdev, device, devnode, self.ioctl_log, self.handler_errors
        )
        self.testbed.attach_ioctl(devnode, handler.base)
        self._devices[key] = ("/sys" + syspath, handler)
        log.debug("added simulated device at bus %d address %d", bus, address)

    def _remove(self, key: tuple) -> None:
        syspath, handler = self._devices.pop(key)
        handler.removed = True  # open handles now see ENODEV, like after an unplug
        self.testbed.detach_ioctl(handler.devnode)
        # remove_device() alone sends no uevent; libusb's udev monitor needs one
        # to drop the device from its list, as the kernel sends on an unplug.
        self.testbed.uevent(syspath, "remove")
        self.testbed.remove_device(syspath)
        log.debug("removed simulated device %s", handler.devnode)

    def _ensure_hubs(self, bus: int, ports: tuple[int, ...], speed: str) -> None:
        """The root hub and every hub between it and the device, so port paths resolve."""
        for depth in range(len(ports)):
            hub = (bus, ports[:depth])
            if hub in self._hubs:
                continue
            address = 1 if depth == 0 else self._free_hub_address(bus)
            attrs = {"idVendor": "1d6b", "speed": _SPEED_MBPS[speed], "bDeviceClass": "09"}
            attrs["bConfigurationValue"] = "1"
            blob = _hub_descriptors(speed, _ROOT_HUB_PID[speed])
            text = _device_text(self._syspath(bus, ports[:depth]), bus, address, attrs, blob, False)
            self.testbed.add_from_string(text)
            self._hubs[hub] = address

    def _free_hub_address(self, bus: int) -> int:
        # Hubs count down from 127 so they stay clear of the model's addresses,
        # which count up from the bottom like the kernel's.
        used = {a for (b, _), a in self._hubs.items() if b == bus}
        return max(set(range(100, 128)) - used)

    def intrusive_ioctls(self) -> list[IoctlRecord]:
        """The recorded ioctls that change device state (claim, reset, set-configuration...)."""
        return [r for r in self.ioctl_log if r.intrusive]

    # -- libusb ----------------------------------------------------------------

    def backend(self):
        """pyusb's libusb1 backend on a new libusb context over this testbed.

        A new context per harness, not pyusb's cached ``get_backend()``: a
        context enumerates and subscribes to uevents when it is created, so
        one made for an earlier testbed would never see this one.
        """
        backend = usb.backend.libusb1._LibUSB(_load_libusb())
        self._backends.append(backend)
        return backend

    def close(self) -> None:
        """Unplug every device and empty the testbed.

        The libusb contexts are left to pyusb's finalizers: pyusb devices and
        handles still in use refer to them, and libusb_exit() under them would
        crash the process.
        """
        self._backends.clear()
        for key in list(self._devices):
            self._remove(key)
        self.testbed.clear()
