"""The Linux usbdevfs ioctl interface, as seen by the umockdev ioctl handler.

libusb talks to a device node ``/dev/bus/usb/BBB/DDD`` through the ioctls of
``<linux/usbdevice_fs.h>``. This module defines the request numbers and the
structures the harness needs to answer them, for **x86_64 only**: pointers
are 8 bytes, so ``struct usbdevfs_urb`` is 56 bytes with ``buffer`` at offset
16 and ``usercontext`` at 48, and the request numbers encode those sizes.
Other architectures (32-bit ones in particular) would need other layouts;
``available()`` refuses them rather than corrupt libusb's memory.
"""

import ctypes
import platform

SUPPORTED_MACHINES = ("x86_64",)

# <asm-generic/ioctl.h>: nr 8 bits, type 8 bits, size 14 bits, dir 2 bits.
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("U") << 8) | nr


class UsbdevfsCtrlTransfer(ctypes.Structure):
    """``struct usbdevfs_ctrltransfer``: 24 bytes on x86_64 (``data`` at 16)."""

    _fields_ = [
        ("bRequestType", ctypes.c_uint8),
        ("bRequest", ctypes.c_uint8),
        ("wValue", ctypes.c_uint16),
        ("wIndex", ctypes.c_uint16),
        ("wLength", ctypes.c_uint16),
        ("timeout", ctypes.c_uint32),  # milliseconds
        ("data", ctypes.c_uint64),  # user pointer
    ]


class UsbdevfsUrb(ctypes.Structure):
    """``struct usbdevfs_urb`` without its trailing iso descriptors: 56 bytes."""

    _fields_ = [
        ("type", ctypes.c_uint8),
        ("endpoint", ctypes.c_uint8),
        ("status", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("buffer", ctypes.c_uint64),  # user pointer
        ("buffer_length", ctypes.c_int32),
        ("actual_length", ctypes.c_int32),
        ("start_frame", ctypes.c_int32),
        ("number_of_packets", ctypes.c_int32),  # union with stream_id
        ("error_count", ctypes.c_int32),
        ("signr", ctypes.c_uint32),
        ("usercontext", ctypes.c_uint64),  # user pointer
    ]


URB_BUFFER_OFFSET = UsbdevfsUrb.buffer.offset
URB_STATUS_OFFSET = UsbdevfsUrb.status.offset
URB_ACTUAL_LENGTH_OFFSET = UsbdevfsUrb.actual_length.offset
CTRL_DATA_OFFSET = UsbdevfsCtrlTransfer.data.offset
SETUP_SIZE = 8  # a control URB's buffer starts with the 8-byte setup packet

USBDEVFS_URB_TYPE_ISO = 0
USBDEVFS_URB_TYPE_INTERRUPT = 1
USBDEVFS_URB_TYPE_CONTROL = 2
USBDEVFS_URB_TYPE_BULK = 3

_UINT = ctypes.sizeof(ctypes.c_uint)
_PTR = 8

USBDEVFS_CONTROL = _ioc(_IOC_READ | _IOC_WRITE, 0, ctypes.sizeof(UsbdevfsCtrlTransfer))
USBDEVFS_RESETEP = _ioc(_IOC_READ, 3, _UINT)
USBDEVFS_SETINTERFACE = _ioc(_IOC_READ, 4, 8)
USBDEVFS_SETCONFIGURATION = _ioc(_IOC_READ, 5, _UINT)
USBDEVFS_GETDRIVER = _ioc(_IOC_WRITE, 8, 4 + 256)
USBDEVFS_SUBMITURB = _ioc(_IOC_READ, 10, ctypes.sizeof(UsbdevfsUrb))
USBDEVFS_DISCARDURB = _ioc(_IOC_NONE, 11, 0)
USBDEVFS_REAPURB = _ioc(_IOC_WRITE, 12, _PTR)
USBDEVFS_REAPURBNDELAY = _ioc(_IOC_WRITE, 13, _PTR)
USBDEVFS_CLAIMINTERFACE = _ioc(_IOC_READ, 15, _UINT)
USBDEVFS_RELEASEINTERFACE = _ioc(_IOC_READ, 16, _UINT)
USBDEVFS_CONNECTINFO = _ioc(_IOC_WRITE, 17, 8)
USBDEVFS_IOCTL = _ioc(_IOC_READ | _IOC_WRITE, 18, 16)
USBDEVFS_RESET = _ioc(_IOC_NONE, 20, 0)
USBDEVFS_CLEAR_HALT = _ioc(_IOC_READ, 21, _UINT)
USBDEVFS_DISCONNECT = _ioc(_IOC_NONE, 22, 0)
USBDEVFS_CONNECT = _ioc(_IOC_NONE, 23, 0)
USBDEVFS_GET_CAPABILITIES = _ioc(_IOC_READ, 26, 4)
USBDEVFS_DISCONNECT_CLAIM = _ioc(_IOC_READ, 27, 4 + 4 + 256)
USBDEVFS_DROP_PRIVILEGES = _ioc(_IOC_WRITE, 30, 4)
USBDEVFS_GET_SPEED = _ioc(_IOC_NONE, 31, 0)

# What a modern xHCI host reports; libusb only needs to know it may submit
# control transfers of any length in one URB and reap after a disconnect.
USBDEVFS_CAP_ZERO_PACKET = 0x01
USBDEVFS_CAP_BULK_CONTINUATION = 0x02
USBDEVFS_CAP_NO_PACKET_SIZE_LIM = 0x04
USBDEVFS_CAP_BULK_SCATTER_GATHER = 0x08
USBDEVFS_CAP_REAP_AFTER_DISCONNECT = 0x10
CAPABILITIES = (
    USBDEVFS_CAP_ZERO_PACKET
    | USBDEVFS_CAP_BULK_CONTINUATION
    | USBDEVFS_CAP_NO_PACKET_SIZE_LIM
    | USBDEVFS_CAP_REAP_AFTER_DISCONNECT
)

# The ioctls that change device state; the harness records them so tests can
# prove the daemon never issues them.
INTRUSIVE = {
    USBDEVFS_SETINTERFACE: "setinterface",
    USBDEVFS_SETCONFIGURATION: "setconfiguration",
    USBDEVFS_CLAIMINTERFACE: "claiminterface",
    USBDEVFS_RELEASEINTERFACE: "releaseinterface",
    USBDEVFS_RESET: "reset",
    USBDEVFS_RESETEP: "resetep",
    USBDEVFS_CLEAR_HALT: "clear_halt",
    USBDEVFS_DISCONNECT: "disconnect",
    USBDEVFS_CONNECT: "connect",
    USBDEVFS_DISCONNECT_CLAIM: "disconnect_claim",
    USBDEVFS_IOCTL: "ioctl",
}

NAMES = {
    USBDEVFS_CONTROL: "control",
    USBDEVFS_GETDRIVER: "getdriver",
    USBDEVFS_SUBMITURB: "submiturb",
    USBDEVFS_DISCARDURB: "discardurb",
    USBDEVFS_REAPURB: "reapurb",
    USBDEVFS_REAPURBNDELAY: "reapurbndelay",
    USBDEVFS_CONNECTINFO: "connectinfo",
    USBDEVFS_GET_CAPABILITIES: "get_capabilities",
    USBDEVFS_DROP_PRIVILEGES: "drop_privileges",
    USBDEVFS_GET_SPEED: "get_speed",
    **INTRUSIVE,
}


def name(request: int) -> str:
    """A short name for an ioctl request, or its hex value if unknown."""
    return NAMES.get(request, f"0x{request:08x}")


def machine_supported() -> bool:
    return platform.machine() in SUPPORTED_MACHINES


def unpack(struct_type, data: bytes):
    """Copy ``data`` (at least sizeof(struct_type) bytes) into a new structure."""
    return struct_type.from_buffer_copy(bytes(data[: ctypes.sizeof(struct_type)]))


def int32(value: int) -> list[int]:
    """A little-endian int32 as the list of byte values IoctlData.update() takes."""
    return list(int(value).to_bytes(4, "little", signed=True))
