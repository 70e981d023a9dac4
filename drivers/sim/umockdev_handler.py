"""The usbdevfs ioctl handler that puts a simulated Time Tagger behind a device node.

umockdev forwards every ioctl a process issues on an emulated
``/dev/bus/usb/BBB/DDD`` to a ``UMockdev.IoctlBase`` over a socket, and runs
the handler on its own worker thread. This handler answers the ioctls libusb
uses, the way the kernel would: a control URB (``SUBMITURB``) is answered at
once from the simulation's ``control_transfer`` and queued for reaping
(``REAPURBNDELAY``), and a fault of the simulation becomes what the kernel would
report: ``SimStall`` the URB status ``-EPIPE``, ``SimBusy`` ``-EBUSY``,
``SimGone`` the ioctl failing with ``ENODEV``, and ``SimTimeout`` a URB that
never completes until libusb's own timeout discards it (``DISCARDURB``, reaped
with ``-ENOENT``). Ioctls that change the device (claim, release,
set-configuration, reset ...) succeed but are recorded, so tests can prove the
daemon never issues them. Structure layouts are in ``umockdev_usbdevfs``.
"""

import collections
import ctypes
import dataclasses
import errno
import logging
import struct
import threading

from tagstat.drivers.sim import umockdev_usbdevfs as fs
from tagstat.drivers.sim.model import SimBusy, SimGone, SimStall, SimTimeout

log = logging.getLogger(__name__)

_SETUP = struct.Struct("<BBHHH")  # bmRequestType, bRequest, wValue, wIndex, wLength
_USB_SPEED = {"high": 3, "super": 5}  # enum usb_device_speed, for USBDEVFS_GET_SPEED


@dataclasses.dataclass(frozen=True)
class IoctlRecord:
    """One ioctl a client issued on an emulated node, for tests to inspect."""

    devnode: str
    request: str  # short name, e.g. "submiturb", "claiminterface"
    intrusive: bool  # changes device state: the daemon must never issue it


class DeviceIoctlHandler:
    """Answers usbdevfs ioctls on one device node from one simulated device."""

    def __init__(self, umockdev, device, devnode: str, ioctl_log: list, errors: list):
        self.device = device
        self.devnode = devnode
        self.removed = False  # set by the harness when the device is unplugged
        self._log = ioctl_log
        self._errors = errors
        self._lock = threading.Lock()
        # Per client (open file descriptor): URBs waiting for their reap, and
        # URBs submitted but never completed (a simulated timeout).
        self._done: dict = collections.defaultdict(collections.deque)
        self._pending: dict = collections.defaultdict(dict)
        self.base = umockdev.IoctlBase()
        self.base.connect("handle-ioctl", self._on_ioctl)

    def _on_ioctl(self, _base, client) -> bool:
        request = client.get_request()
        name = fs.name(request)
        self._log.append(IoctlRecord(self.devnode, name, request in fs.INTRUSIVE))
        try:
            with self._lock:
                self._dispatch(client, request)
        except Exception as e:  # the client must get an answer, or libusb hangs
            log.exception("ioctl handler failed on %s", name)
            self._errors.append(e)
            client.complete(-1, errno.EIO)
        return True

    def _dispatch(self, client, request: int) -> None:
        if self.removed and request not in (fs.USBDEVFS_REAPURBNDELAY, fs.USBDEVFS_REAPURB):
            client.complete(-1, errno.ENODEV)
        elif request == fs.USBDEVFS_SUBMITURB:
            self._submit(client)
        elif request in (fs.USBDEVFS_REAPURB, fs.USBDEVFS_REAPURBNDELAY):
            self._reap(client)
        elif request == fs.USBDEVFS_DISCARDURB:
            self._discard(client)
        elif request == fs.USBDEVFS_CONTROL:
            self._control(client)
        elif request == fs.USBDEVFS_GET_CAPABILITIES:
            client.get_arg().resolve(0, 4).update(0, list(struct.pack("<I", fs.CAPABILITIES)))
            client.complete(0, 0)
        elif request == fs.USBDEVFS_GETDRIVER:
            client.complete(-1, errno.ENODATA)  # no kernel driver bound: usbfs says so
        elif request == fs.USBDEVFS_GET_SPEED:
            client.complete(_USB_SPEED.get(self.device.usb_speed, 0), 0)
        elif request == fs.USBDEVFS_SETCONFIGURATION:
            self._set_configuration(client)
        elif request in fs.INTRUSIVE or request == fs.USBDEVFS_DROP_PRIVILEGES:
            client.complete(0, 0)  # recorded above; answered as the kernel would
        else:
            log.debug("unhandled ioctl %s on %s", fs.name(request), self.devnode)
            client.complete(-1, errno.ENOTTY)

    # -- asynchronous URBs (what libusb 1.0 uses on Linux) ------------------

    def _submit(self, client) -> None:
        urb_data = client.get_arg().resolve(0, ctypes.sizeof(fs.UsbdevfsUrb))
        urb = fs.unpack(fs.UsbdevfsUrb, urb_data.retrieve())
        if urb.type != fs.USBDEVFS_URB_TYPE_CONTROL or urb.endpoint & 0x7F:
            client.complete(-1, errno.ENOENT)  # the simulated device has only ep0
            return
        if urb.buffer_length < fs.SETUP_SIZE:
            client.complete(-1, errno.EINVAL)
            return
        buffer = urb_data.resolve(fs.URB_BUFFER_OFFSET, urb.buffer_length)
        setup = bytes(buffer.retrieve())
        outcome = self._transfer(setup)
        if outcome is None:  # timeout: the URB stays in flight until discarded
            self._pending[client][urb_data.client_addr] = urb_data
        elif outcome == -errno.ENODEV:
            client.complete(-1, errno.ENODEV)
            return
        else:
            status, reply = outcome
            if reply:
                buffer.update(fs.SETUP_SIZE, list(reply))
            self._finish(client, urb_data, status, len(reply))
        client.complete(0, 0)

    def _finish(self, client, urb_data, status: int, actual_length: int) -> None:
        urb_data.update(fs.URB_STATUS_OFFSET, fs.int32(status))
        urb_data.update(fs.URB_ACTUAL_LENGTH_OFFSET, fs.int32(actual_length))
        self._done[client].append(urb_data)

    def _reap(self, client) -> None:
        done = self._done[client]
        if not done:
            # REAPURB would block in the kernel; libusb polls and uses NDELAY,
            # so a blocking reap with nothing to reap is answered like NDELAY.
            client.complete(-1, errno.ENODEV if self.removed else errno.EAGAIN)
            return
        client.get_arg().resolve(0, 8).set_ptr(0, done.popleft())
        client.complete(0, 0)

    def _discard(self, client) -> None:
        # The argument is the URB's address in the client, not a pointer to it.
        addr = int.from_bytes(bytes(client.get_arg().retrieve())[:8], "little")
        urb_data = self._pending[client].pop(addr, None)
        if urb_data is None:
            client.complete(-1, errno.EINVAL)  # already completed: libusb reaps it
            return
        self._finish(client, urb_data, -errno.ENOENT, 0)
        client.complete(0, 0)

    # -- the synchronous control ioctl (older libusb, other tools) ------------

    def _control(self, client) -> None:
        ctrl_data = client.get_arg().resolve(0, ctypes.sizeof(fs.UsbdevfsCtrlTransfer))
        ctrl = fs.unpack(fs.UsbdevfsCtrlTransfer, ctrl_data.retrieve())
        setup = _SETUP.pack(
            ctrl.bRequestType, ctrl.bRequest, ctrl.wValue, ctrl.wIndex, ctrl.wLength
        )
        data = b""
        if ctrl.wLength:
            data_ref = ctrl_data.resolve(fs.CTRL_DATA_OFFSET, ctrl.wLength)
            data = bytes(data_ref.retrieve())
        outcome = self._transfer(setup + data)
        if outcome is None or outcome == -errno.ENODEV or outcome[0]:
            client.complete(-1, self._sync_errno(outcome))
            return
        if outcome[1]:
            data_ref.update(0, list(outcome[1]))
        client.complete(len(outcome[1]) if ctrl.bRequestType & 0x80 else ctrl.wLength, 0)

    def _set_configuration(self, client) -> None:
        # The kernel sends SET_CONFIGURATION to the device, so the model sees it too.
        value = int.from_bytes(bytes(client.get_arg().resolve(0, 4).retrieve()), "little")
        outcome = self._transfer(_SETUP.pack(0x00, 0x09, value & 0xFFFF, 0, 0))
        if outcome is None or outcome == -errno.ENODEV or outcome[0]:
            client.complete(-1, self._sync_errno(outcome))
        else:
            client.complete(0, 0)

    @staticmethod
    def _sync_errno(outcome) -> int:
        if outcome is None:
            return errno.ETIMEDOUT  # the kernel times out a synchronous transfer itself
        return errno.ENODEV if outcome == -errno.ENODEV else -outcome[0]

    # -- the simulation -------------------------------------------------------

    def _transfer(self, buffer: bytes):
        """Run one control transfer on the simulation.

        Returns None for a timeout, -ENODEV for a vanished device, else
        (urb_status, reply_bytes) where reply_bytes is empty for OUT transfers.
        """
        bm, req, value, index, length = _SETUP.unpack_from(buffer)
        try:
            if bm & 0x80:
                reply = bytes(self.device.control_transfer(bm, req, value, index, length))
                return 0, reply[:length]
            self.device.control_transfer(bm, req, value, index, bytes(buffer[8 : 8 + length]))
            return 0, b""
        except SimTimeout:
            return None
        except SimGone:
            return -errno.ENODEV
        except SimStall:
            return -errno.EPIPE, b""
        except SimBusy:
            return -errno.EBUSY, b""
