"""The only module that talks to pyusb: control transfers, strings, errors, logs.

Every request the driver makes goes through ``UsbTransport``: a vendor IN
control transfer to the device recipient (bmRequestType 0xC0) or one of
pyusb's own string-descriptor reads. Each carries a timeout, each pyusb or
libusb failure becomes one of the errors in ``tagstat.drivers.errors`` with a
message that says what to do, and debug logs show request codes, wValue,
wIndex, wLength and reply sizes in hex, never reply contents (documents hold
the serial). The transport never claims an interface, never sets a
configuration, never resets the device and never detaches a kernel driver:
the vendor's own software may be using the instrument at the same time.
"""

import errno
import logging

import usb.core
import usb.util

from tagstat.drivers import protocol
from tagstat.drivers.errors import (
    DeviceAccessDeniedError,
    DeviceBusyError,
    DeviceError,
    DeviceGoneError,
    DeviceNotFoundError,
    DeviceTimeoutError,
    ProtocolError,
)

log = logging.getLogger(__name__)

# 500 ms: a Time Tagger answers a control request from its FPGA in well under a
# millisecond, and the vendor's streaming traffic runs on bulk endpoints, so
# a reply this late means the device (or its hub) is wedged. Waiting longer
# would only stall the daemon's poll of every other attached device.
DEFAULT_TIMEOUT_MS = 500

# Fixed-size replies are asked for with room to spare, so a reply longer than
# the protocol allows shows up as a length mismatch instead of an overflow.
FIXED_REPLY_WLENGTH = 64

# At most this many bytes of a reply appear (as hex) in an error message: the
# header of a chunk is exactly this long, and a document payload never shows.
HEADER_HEX_BYTES = 16

ACCESS_FIX = "install systemd/60-tagstat.rules and add the user to group tagstat"

REQUEST_NAMES = {
    protocol.REQ_INFO: "REQ_INFO",
    protocol.REQ_COUNTERS: "REQ_COUNTERS",
    protocol.REQ_SENSORS: "REQ_SENSORS",
    protocol.REQ_CALIBRATION: "REQ_CALIBRATION",
    protocol.REQ_CONFIGURATION: "REQ_CONFIGURATION",
    protocol.REQ_MESSAGES: "REQ_MESSAGES",
}

SPEED_NAMES = {1: "low", 2: "full", 3: "high", 4: "super", 5: "super-plus"}


def request_name(request: int) -> str:
    return REQUEST_NAMES.get(request, f"request 0x{request:02x}")


def header_hex(data: bytes) -> str:
    """The first bytes of a reply as spaced hex, for error messages."""
    return bytes(data[:HEADER_HEX_BYTES]).hex(" ") or "(empty)"


def device_node(bus: int, address: int) -> str:
    return f"/dev/bus/usb/{bus:03d}/{address:03d}"


def port_path(dev) -> str:
    """The kernel's name for where the device sits, e.g. ``1-2.3``."""
    ports = getattr(dev, "port_numbers", None)
    if not ports:
        port = getattr(dev, "port_number", None)
        ports = (port,) if port else ()
    return f"{dev.bus}-" + ".".join(str(p) for p in ports) if ports else f"{dev.bus}-0"


def translate(e: Exception, what: str, node: str) -> DeviceError:
    """Turn a pyusb error during ``what`` on device node ``node`` into a DeviceError."""
    code = getattr(e, "errno", None)
    text = str(getattr(e, "strerror", None) or e)
    if isinstance(e, usb.core.USBTimeoutError) or code == errno.ETIMEDOUT:
        return DeviceTimeoutError(f"{what} on {node} timed out; the device may be wedged")
    if code == errno.ENODEV or "no such device" in text.lower():
        return DeviceGoneError(f"{what} on {node} failed: the device is gone (unplugged?)")
    if code in (errno.EACCES, errno.EPERM):
        return DeviceAccessDeniedError(f"permission denied on {node} ({what}): {ACCESS_FIX}")
    if code == errno.EBUSY:
        return DeviceBusyError(f"{what} on {node} failed: device busy; retrying at the next poll")
    if code == errno.ENOENT:
        return DeviceNotFoundError(f"{what} on {node} failed: the device was not found")
    if code == errno.EPIPE:
        return ProtocolError(f"device on {node} stalled {what}: it does not know the request")
    if code == errno.EOVERFLOW:
        return ProtocolError(f"{what} on {node}: the reply is longer than requested")
    return DeviceError(f"{what} on {node} failed: {text} (errno {code})")


class UsbTransport:
    """One attached USB device, reached only through endpoint 0."""

    def __init__(self, dev: usb.core.Device, timeout_ms: int = DEFAULT_TIMEOUT_MS):
        self._dev = dev
        self.timeout_ms = timeout_ms
        # pyusb's string reads use the device's default timeout, not ours.
        dev.default_timeout = timeout_ms
        self.bus = int(dev.bus)
        self.address = int(dev.address)
        self.port_path = port_path(dev)
        self.node = device_node(self.bus, self.address)
        self.vendor_id = int(dev.idVendor)
        self.product_id = int(dev.idProduct)
        self.bcd_device = int(dev.bcdDevice)
        self.product_index = int(dev.iProduct)
        self.serial_index = int(dev.iSerialNumber)
        self.usb_speed = SPEED_NAMES.get(getattr(dev, "speed", None) or 0, "unknown")

    @property
    def key(self) -> tuple[int, int, str]:
        """What identifies this attachment between two scans."""
        return (self.bus, self.address, self.port_path)

    def vendor_in(self, request: int, value: int, index: int, length: int) -> bytes:
        """One vendor IN control transfer; the reply bytes (possibly fewer than ``length``)."""
        name = request_name(request)
        log.debug(
            "ctrl in %s bRequest=0x%02x wValue=0x%04x wIndex=0x%04x wLength=%d on %s",
            name, request, value, index, length, self.node,
        )  # fmt: skip
        try:
            reply = self._dev.ctrl_transfer(
                protocol.VENDOR_IN, request, value, index, length, timeout=self.timeout_ms
            )
        except (usb.core.USBError, NotImplementedError) as e:
            raise translate(e, name, self.node) from e
        data = bytes(reply)
        log.debug("ctrl in %s reply %d bytes", name, len(data))
        if len(data) > length:
            raise ProtocolError(
                f"{name} reply on {self.node} is oversized: {len(data)} bytes for wLength "
                f"{length} (header {header_hex(data)})"
            )
        return data

    def read_string(self, index: int) -> str | None:
        """A string descriptor in the device's first language, or None for index 0."""
        if not index:
            return None
        what = f"string descriptor {index}"
        log.debug("get string index=%d on %s", index, self.node)
        try:
            # Read the LANGID table ourselves: pyusb's ``langids`` property
            # swallows the error (say, access denied) and reports "no langid".
            langids = usb.util.get_langids(self._dev)
            if not langids:
                raise ProtocolError(f"device on {self.node} reports no string languages")
            return usb.util.get_string(self._dev, index, langids[0])
        except usb.core.USBError as e:
            raise translate(e, what, self.node) from e
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"{what} on {self.node} is garbled: {e}") from e

    def close(self) -> None:
        """Release pyusb's handle; nothing was claimed, so nothing else to undo."""
        try:
            usb.util.dispose_resources(self._dev)
        except usb.core.USBError as e:
            log.debug("dispose on %s failed: %s", self.node, e)


def default_backend():
    """libusb from the libusb-package wheel, else whatever pyusb finds (None)."""
    try:
        import libusb_package

        backend = libusb_package.get_libusb1_backend()
    except (ImportError, OSError) as e:  # the wheel is optional at run time
        log.debug("libusb_package unavailable: %s", e)
        backend = None
    return backend


def enumerate_devices(backend, vendor_id: int) -> list[usb.core.Device]:
    """Every attached device with ``vendor_id``; reads descriptors only, no transfers."""
    try:
        return list(usb.core.find(find_all=True, idVendor=vendor_id, backend=backend))
    except usb.core.NoBackendError as e:
        raise DeviceError(
            "no USB backend: install the libusb-package wheel or the system libusb-1.0"
        ) from e
    except usb.core.USBError as e:
        raise translate(e, "device enumeration", "the USB bus") from e
