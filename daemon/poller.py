"""The boundary where device data enters tagstat, masked on the way in.

``Poller`` scans for Time Taggers, reads each one on its own schedule and
hands back only masked observations: the serial is learned from the USB
descriptor and replaced, and every string of sensor data, configuration,
calibration and messages is scrubbed, before anything leaves this module.
Nothing behind it (sessions, store, report, logs) ever sees a serial.

Schedules: counters and messages every poll, sensors every
``sensor_interval_s``, calibration and configuration when a device appears,
every ``config_interval_s`` and after a status change (``read_all_documents``:
a document read before consent to upload is never uploaded). The calibration
table is summarised here too (``tagstat.calibration``), with a keyed offset
for its age. One failed reading is logged and counted, never fatal.
"""

import dataclasses
import hashlib
import hmac
import logging
import re

from tagstat import calibration as calibration_summary
from tagstat.drivers.errors import DeviceError, DeviceGoneError
from tagstat.drivers.protocol import Counters
from tagstat.drivers.timetagger import DeviceMessage, TimeTagger
from tagstat.masking import Masker

log = logging.getLogger(__name__)

RETRY_FAILED_READ_S = 10.0  # a document read that failed is tried again this soon

# Models that are built for a USB 3 link and slow down on USB 2.
USB3_MODELS = ("Time Tagger Ultra", "Time Tagger X")

# Configuration keys whose values identify one unit as well as its serial does
# ("PCB UID", "FPGA ID", a MAC or DNA value): replaced by a keyed hash, so a
# change stays visible but the value cannot be linked to the hardware.
IDENTIFYING_KEY = re.compile(r"(?i)\b(serial|s/n|uid|uuid|guid|fpga id|device id|dna|mac)\b")


@dataclasses.dataclass(frozen=True)
class DeviceView:
    """A device as tagstat may know it: masked identity."""

    device_id: str
    model: str
    serial_masked: str
    usb_speed: str
    firmware: str


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one poll of one device gave, masked."""

    device: DeviceView
    counters: Counters | None
    boot_tag: str
    sensors: dict | None  # flat {"path/to/key": value}; None if not read this poll
    sensors_raw: dict | None  # the masked nested dictionary, for the session's start
    calibration: dict | None
    configuration: dict | None
    messages: list[tuple[str, str]]  # (level, masked text)
    errors: list[str]  # masked descriptions of failed readings
    calibration_summary: dict | None = None  # what the report shows of ``calibration``


@dataclasses.dataclass
class _Attached:
    tt: TimeTagger
    view: DeviceView
    next_sensors: float = 0.0
    next_config: float = 0.0
    msg_seq: int | None = None
    msg_boot: str = ""  # message sequence numbers restart when the device reboots


class Poller:
    """Reads every attached Time Tagger and masks what it reads."""

    def __init__(
        self, discovery, masker: Masker, secret: bytes, config, cursor_store=None,
        on_new_serial=lambda serial: None,
    ):  # fmt: skip
        self._discovery = discovery
        self._on_new_serial = on_new_serial  # a serial this process had not seen: remember it
        self._masker = masker
        self._secret = secret
        self._config = config
        self._cursors = cursor_store  # get(device_id, boot_tag) / put(device_id, boot_tag, seq)
        self._attached: dict[int, _Attached] = {}

    def attached(self) -> list[DeviceView]:
        return [a.view for a in self._attached.values()]

    def reconfigure(self, config) -> None:
        """A reloaded configuration: schedules apply from the next reading on."""
        self._config = config
        self._discovery.reconfigure(config.product_ids, config.usb_timeout_ms)

    def poll(self, mono_s: float) -> tuple[list[Observation], list[DeviceView], list[str]]:
        """One poll: (observations, devices that went away, scan errors)."""
        scan = self._discovery.scan()
        gone = []
        for ident in scan.removed:
            for key, a in list(self._attached.items()):
                if a.tt.identity == ident:
                    gone.append(self._attached.pop(key).view)
        for tt in scan.added:
            self._attached[id(tt)] = _Attached(tt, self._view(tt))
        observations = []
        for key, a in list(self._attached.items()):
            obs = self._read(a, mono_s)
            if obs is None:  # vanished mid-read
                gone.append(self._attached.pop(key).view)
            else:
                observations.append(obs)
        errors = [self._masker.scrub_text(str(e)) for e in scan.errors]
        return observations, gone, errors

    def read_all_documents(self) -> None:
        """Read sensors, calibration and configuration of every device at the next poll."""
        for a in self._attached.values():
            a.next_sensors = a.next_config = float("-inf")

    def forget_all(self) -> list[DeviceView]:
        views = [a.view for a in self._attached.values()]
        for a in self._attached.values():
            a.tt.close()
        self._attached.clear()
        return views

    # -- internals ---------------------------------------------------------

    def _view(self, tt: TimeTagger) -> DeviceView:
        ident = tt.identity
        if self._masker.learn(ident.serial):
            self._on_new_serial(ident.serial)
        return DeviceView(
            device_id=self._masker.device_id(ident.serial),
            model=self._masker.scrub_text(ident.model),
            serial_masked=self._masker.masked_serial(ident.serial),
            usb_speed=ident.usb_speed,
            firmware=self._masker.scrub_text(ident.firmware),
        )

    def boot_tag(self, boot_id: bytes) -> str:
        # The boot id is device data; store only a keyed hash of it.
        return hmac.new(self._secret, b"boot:" + boot_id, hashlib.sha256).hexdigest()[:16]

    def _read(self, a: _Attached, mono_s: float) -> Observation | None:
        errors: list[str] = []
        m = self._masker

        def attempt(what, fn):
            try:
                return fn()
            except DeviceGoneError:
                raise
            except DeviceError as e:
                errors.append(f"{what}: {m.scrub_text(str(e))}")
                return None

        try:
            counters = attempt("counters", a.tt.read_counters)
            boot_tag = self.boot_tag(counters.boot_id) if counters else ""
            sensors = sensors_raw = calibration = configuration = None
            if mono_s >= a.next_sensors:
                raw = attempt("sensors", a.tt.read_sensors)
                a.next_sensors = mono_s + self._next_in(self._config.sensor_interval_s, raw)
                if raw is not None:
                    sensors_raw = m.scrub(raw)
                    sensors = flatten_numbers(sensors_raw)
            if mono_s >= a.next_config:
                calibration = attempt("calibration", a.tt.read_calibration)
                configuration = attempt("configuration", a.tt.read_configuration)
                both = calibration if configuration is not None else None
                a.next_config = mono_s + self._next_in(self._config.config_interval_s, both)
                calibration = self._mask(calibration)
                configuration = self._mask(configuration)
            messages = self._messages(a, boot_tag, attempt) if counters else []
        except DeviceGoneError:
            a.tt.close()
            return None
        summary = None
        if calibration is not None:
            summary = calibration_summary.summarize(calibration, self._age_offset(a.view))
        return Observation(
            a.view, counters, boot_tag, sensors, sensors_raw,
            calibration, configuration, messages, errors, summary,
        )  # fmt: skip

    @staticmethod
    def _next_in(interval_s: float, got) -> float:
        """When to read a document again: after its interval, or soon if this read failed
        (after a status switch, a document of the new status is wanted)."""
        return interval_s if got is not None else min(interval_s, RETRY_FAILED_READ_S)

    def _age_offset(self, view: DeviceView) -> int:
        # Keyed, so neither the report's device_id nor another install can undo it.
        mac = hmac.new(self._secret, b"calibration-age:" + view.device_id.encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:4], "big") % calibration_summary.AGE_STEP_DAYS

    def _mask(self, doc):
        if doc is None:
            return None
        return self._masker.scrub(self._hash_identifiers(doc))

    def _hash_identifiers(self, obj):
        if isinstance(obj, dict):
            return {
                k: self._keyed(v) if IDENTIFYING_KEY.search(str(k)) and _scalar(v)
                else self._hash_identifiers(v)
                for k, v in obj.items()
            }  # fmt: skip
        if isinstance(obj, list):
            return [self._hash_identifiers(v) for v in obj]
        return obj

    def _keyed(self, value) -> str:
        digest = hmac.new(self._secret, b"id:" + str(value).encode(), hashlib.sha256)
        return f"[id:{digest.hexdigest()[:8]}]"

    def _messages(self, a: _Attached, boot_tag: str, attempt) -> list[tuple[str, str]]:
        if a.msg_seq is None or a.msg_boot != boot_tag:
            a.msg_boot = boot_tag
            a.msg_seq = self._cursors.get(a.view.device_id, boot_tag) if self._cursors else 0
        got = attempt("messages", lambda: a.tt.read_messages(a.msg_seq))
        if got is None:
            return []
        msgs, nxt = got
        if nxt != a.msg_seq and self._cursors:
            self._cursors.put(a.view.device_id, boot_tag, nxt)
        a.msg_seq = nxt
        return [(msg.level, self._masker.scrub_text(msg.text)) for msg in msgs]


def _scalar(value) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def flatten_numbers(tree, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dictionary as {"a/b/c": value}."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten_numbers(v, f"{prefix}{k}/"))
    elif isinstance(tree, bool):
        pass
    elif isinstance(tree, int | float):
        out[prefix.rstrip("/")] = float(tree)
    return out


__all__ = ["Poller", "DeviceMessage", "DeviceView", "Observation", "flatten_numbers"]
