"""The one umockdev testbed of the process, and the sysfs entries of USB devices in it.

umockdev redirects ``/sys`` and ``/dev`` through one process-wide environment
variable, and libusb (built with udev) starts one process-wide uevent monitor
at its first ``libusb_init``, bound inside the testbed that exists then. So a
process gets one ``UMockdev.Testbed`` and one libusb context, made on first
use and kept: a harness *enables* the testbed while it is open and *disables*
it on close, so the rest of the process sees the real ``/sys`` again. This
module writes the sysfs entries libusb reads for a device (busnum, devnum,
speed, IDs, strings, the ``descriptors`` blob) in umockdev's text format, and
adds the root hub and intermediate hubs of a port path so libusb's port
numbers match the model's.
"""

import logging
import struct

import usb.backend.libusb1

log = logging.getLogger(__name__)

# Debian's libusb, not the libusb_package wheel's: Debian builds it with
# libudev, and umockdev is made to emulate libudev (enumeration and the
# uevent monitor that carries hotplug). The wheel's libusb is built without
# udev: it reads netlink uevents, which it drops unless they carry the
# kernel's sender credentials, so it would not see a hotplug here.
SYSTEM_LIBUSB = "/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0"
SPEED_MBPS = {"super": "5000", "high": "480"}
_ROOT_HUB_PID = {"super": 0x0003, "high": 0x0002}  # Linux Foundation 3.0 / 2.0 root hub
_FIRST_HUB_ADDRESS = 100  # external hubs count down from 127, clear of the model's addresses


def syspath(bus: int, ports: tuple[int, ...]) -> str:
    """The sysfs path of the device at ``ports`` on ``bus`` (the root hub for no ports)."""
    path = f"/sys/devices/pci0000:00/0000:00:14.0/usb{bus}"
    for depth in range(1, len(ports) + 1):
        path += f"/{bus}-{'.'.join(str(p) for p in ports[:depth])}"
    return path


def devnode(bus: int, address: int) -> str:
    return f"/dev/bus/usb/{bus:03d}/{address:03d}"


def _escape(value: str) -> str:
    # umockdev's text format: backslash escapes, one line per attribute.
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def device_text(path: str, bus: int, address: int, attrs: dict, blob: bytes, node: bool) -> str:
    """A device in umockdev's text format; ``node`` creates its /dev node."""
    devname = devnode(bus, address).removeprefix("/dev/")
    lines = [f"P: {path.removeprefix('/sys')}"]
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


def hub_descriptors(speed: str) -> bytes:
    """Device + configuration descriptor of a hub: one interface, one interrupt IN endpoint."""
    ss = speed == "super"
    device = struct.pack(
        "<BBHBBBBHHHBBBB",
        *(18, 1, 0x0300 if ss else 0x0200, 9, 0, 3 if ss else 1, 9 if ss else 64),
        *(0x1D6B, _ROOT_HUB_PID[speed], 0x0601, 3, 2, 1, 1),
    )
    config = struct.pack("<BBHBBBBB", 9, 2, 25, 1, 1, 0, 0xE0, 0)
    interface = struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 1, 9, 0, 0, 0)
    endpoint = struct.pack("<BBBBHB", 7, 5, 0x81, 3, 4, 12)
    return device + config + interface + endpoint


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


class ProcessTestbed:
    """The process's testbed, its hubs and its libusb context; one harness at a time."""

    def __init__(self, umockdev_module):
        self.testbed = umockdev_module.Testbed.new()
        self.owner = None  # the open harness
        self._backend = None
        self._hubs: dict[tuple[int, tuple[int, ...]], int] = {}  # (bus, ports) -> address

    def acquire(self, owner) -> None:
        if self.owner is not None:
            raise RuntimeError(
                "another UMockdevHarness is open: close it first "
                "(umockdev redirects /sys and /dev for the whole process)"
            )
        self.owner = owner
        self.testbed.enable()

    def release(self) -> None:
        # External hubs go, leaves first; root hubs stay, as on a real host
        # (and adding them again would cost each harness tens of milliseconds).
        for hub in sorted(self._hubs, key=lambda h: -len(h[1])):
            if hub[1]:
                self.remove(syspath(*hub))
                del self._hubs[hub]
        self.testbed.disable()
        self.owner = None

    def backend(self):
        """pyusb's libusb1 backend on the process's libusb context (made on first use).

        Never exited: pyusb frees devices and contexts in weakref finalizers
        that the garbage collector runs in any order, on any thread, and a
        device unreferenced after its context is gone crashes libusb.
        """
        if self._backend is None:
            self._backend = usb.backend.libusb1._LibUSB(_load_libusb())
        return self._backend

    def add(self, path: str, text: str) -> None:
        self.testbed.add_from_string(text)  # sends the "add" uevent itself
        log.debug("testbed added %s", path)

    def remove(self, path: str) -> None:
        # remove_device() alone sends no uevent; libusb's udev monitor needs one
        # to drop the device from its list, as the kernel sends on an unplug.
        self.testbed.uevent(path, "remove")
        self.testbed.remove_device(path)
        log.debug("testbed removed %s", path)

    def ensure_hubs(self, bus: int, ports: tuple[int, ...], speed: str) -> None:
        """The root hub and every hub between it and the device, so port paths resolve."""
        for depth in range(len(ports)):
            hub = (bus, ports[:depth])
            if hub in self._hubs:
                continue
            address = 1 if depth == 0 else self._free_hub_address(bus)
            attrs = {"idVendor": "1d6b", "idProduct": f"{_ROOT_HUB_PID[speed]:04x}"}
            attrs |= {"speed": SPEED_MBPS[speed], "bDeviceClass": "09", "bConfigurationValue": "1"}
            path = syspath(bus, ports[:depth])
            self.add(path, device_text(path, bus, address, attrs, hub_descriptors(speed), False))
            self._hubs[hub] = address

    def _free_hub_address(self, bus: int) -> int:
        used = {a for (b, _), a in self._hubs.items() if b == bus}
        return max(set(range(_FIRST_HUB_ADDRESS, 128)) - used)
