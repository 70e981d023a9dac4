"""Finding attached Time Taggers, and noticing which came and went.

A Time Tagger is a device with vendor ID 0x151f (Opal Kelly, whose FPGA
modules the instruments are built on) whose product string starts with "Time
Tagger", or whose product ID is in a configured list: the vendor does not
publish its product IDs, so none is hard-coded. ``Discovery.scan`` enumerates
the bus, reads the strings of new devices only, keeps the ``TimeTagger``
objects of devices still attached (same bus, address and port path), and
reports a device it cannot open in ``errors`` instead of raising, so one bad
device never hides the others.
"""

import dataclasses
import logging
from collections.abc import Iterable

from tagstat.drivers.errors import DeviceError
from tagstat.drivers.timetagger import DeviceIdentity, TimeTagger, firmware_from_bcd
from tagstat.drivers.transport import (
    UsbTransport,
    default_backend,
    enumerate_devices,
)

log = logging.getLogger(__name__)

DEFAULT_PRODUCT_PREFIX = "Time Tagger"

# (vendor id, product id or None for "any, matched by product string", description)
_MATCHES = [(0x151F, None, "Swabian Time Tagger on an Opal Kelly FPGA module")]
VENDOR_ID = _MATCHES[0][0]


@dataclasses.dataclass(frozen=True)
class ScanResult:
    present: tuple[TimeTagger, ...]
    added: tuple[TimeTagger, ...]
    removed: tuple[DeviceIdentity, ...]
    errors: tuple[DeviceError, ...]


class Discovery:
    """Repeated scans of the USB bus; remembers what the previous scan found."""

    def __init__(self, backend=None, product_ids: Iterable[int] = (), timeout_ms: int = 500):
        self._backend = backend if backend is not None else default_backend()
        self._product_ids = frozenset(product_ids)
        self._timeout_ms = timeout_ms
        self._known: dict[tuple[int, int, str], TimeTagger] = {}
        # Devices of our vendor that are not Time Taggers: not asked again.
        self._ignored: set[tuple[int, int, str]] = set()

    def reconfigure(self, product_ids: Iterable[int], timeout_ms: int) -> None:
        """Applies to devices opened from now on; ignored devices are asked again."""
        self._product_ids = frozenset(product_ids)
        self._timeout_ms = timeout_ms
        self._ignored.clear()

    def scan(self) -> ScanResult:
        """Enumerate once; raises only if the bus itself cannot be enumerated."""
        present, added, errors, seen = [], [], [], set()
        for dev in enumerate_devices(self._backend, VENDOR_ID):
            transport = UsbTransport(dev, self._timeout_ms)
            key = transport.key
            seen.add(key)
            if key in self._ignored:
                continue
            if key in self._known:
                present.append(self._known[key])
                continue
            try:
                tagger = self._open(transport)
            except DeviceError as e:
                # debug only: the caller reports errors, and this repeats every scan
                log.debug("cannot read usb device at %s: %s", transport.port_path, e)
                errors.append(e)
                continue
            if tagger is None:
                self._ignored.add(key)
                continue
            self._known[key] = tagger
            present.append(tagger)
            added.append(tagger)
        removed = self._forget(seen)
        self._ignored &= seen
        return ScanResult(tuple(present), tuple(added), tuple(removed), tuple(errors))

    def _open(self, transport: UsbTransport) -> TimeTagger | None:
        """A TimeTagger for a matching device, None for another product of the vendor."""
        try:
            model = transport.read_string(transport.product_index) or ""
            wanted = transport.product_id in self._product_ids
            if not (wanted or model.startswith(DEFAULT_PRODUCT_PREFIX)):
                transport.close()
                return None
            serial = transport.read_string(transport.serial_index) or ""
        except DeviceError:
            transport.close()
            raise
        identity = DeviceIdentity(
            model=model,
            serial=serial,
            vendor_id=transport.vendor_id,
            product_id=transport.product_id,
            firmware=firmware_from_bcd(transport.bcd_device),
            usb_speed=transport.usb_speed,
            bus=transport.bus,
            address=transport.address,
            port_path=transport.port_path,
        )
        log.info("found %s at %s (%s speed)", model, transport.port_path, transport.usb_speed)
        return TimeTagger(transport, identity)

    def _forget(self, seen: set) -> list[DeviceIdentity]:
        removed = []
        for key in [k for k in self._known if k not in seen]:
            tagger = self._known.pop(key)
            tagger.close()
            log.info("%s at %s is gone", tagger.identity.model, tagger.identity.port_path)
            removed.append(tagger.identity)
        return removed


def find_timetaggers(backend=None, product_ids=(), timeout_ms=500) -> list[TimeTagger]:
    """Every Time Tagger attached now; devices that cannot be read are logged and skipped."""
    result = Discovery(backend, product_ids, timeout_ms).scan()
    for e in result.errors:
        log.warning("skipping a usb device: %s", e)
    return list(result.present)
