"""Simulator scenarios: which simulated Time Taggers exist and what they do over time.

A scenario is a TOML file with one ``[[device]]`` table per instrument: its
serial, model and USB speed, a step function of its data rate, scripted
warnings and errors, and scripted faults (unplug, stall, reset, ...). This
module turns such a file into frozen dataclasses and validates every key, so
a typo fails at start-up with a ``ScenarioError`` naming the file, the device
and the key instead of as a puzzling behaviour later. ``docs/simulator.md``
describes the format; ``default.toml`` is the scenario ``--simulate`` uses
when given none.
"""

import dataclasses
import math
import re
import tomllib
from importlib import resources
from pathlib import Path

from tagstat.errors import ScenarioError

MODELS = ("Time Tagger 20", "Time Tagger Ultra", "Time Tagger X")
USB_SPEEDS = ("super", "high")
LEVELS = ("info", "warning", "error")
FAULT_KINDS = ("unplug", "replug", "stall", "timeout", "busy", "garbage", "reset")
SERIAL_RE = re.compile(r"^\d{4}[0-9A-Z]{6}$")
DEVICE_KEYS = (
    "serial",
    "model",
    "usb_speed",
    "rate",
    "messages",
    "faults",
    "counter_bits",
    "counter_start",
    "loop_s",
    "product_id",
    "firmware",
)


@dataclasses.dataclass(frozen=True)
class DeviceScenario:
    """One simulated instrument; times are seconds since the simulation run started."""

    serial: str
    model: str
    usb_speed: str
    rate: tuple[tuple[float, float], ...] = ()  # (t_s, bytes_per_s) steps
    messages: tuple[tuple[float, str, str], ...] = ()  # (t_s, level, text)
    faults: tuple[tuple[float, str], ...] = ()  # (t_s, kind)
    counter_bits: int = 48
    counter_start: int = 0
    product_id: int | None = None  # None: the model's usual product ID
    firmware: str | None = None  # None: the model's usual firmware version string
    loop_s: float | None = None  # rate and messages repeat with this period


@dataclasses.dataclass(frozen=True)
class Scenario:
    devices: tuple[DeviceScenario, ...]
    source: str


def load_scenario(path) -> Scenario:
    """Read and validate a scenario file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{source}: cannot read scenario file: {e}") from None
    return _parse_text(text, source)


def default_scenario() -> Scenario:
    """The packaged default scenario: one Time Tagger Ultra with a varying rate."""
    text = resources.files(__package__).joinpath("default.toml").read_text(encoding="utf-8")
    return _parse_text(text, "default.toml")


def _parse_text(text: str, source: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: not valid TOML: {e}") from None
    return parse_scenario(data, source)


def parse_scenario(data, source: str) -> Scenario:
    """Validate a decoded scenario; every error names ``source``, the device and the key."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a table, got {type(data).__name__}")
    unknown = sorted(str(k) for k in set(data) - {"device"})
    if unknown:
        raise ScenarioError(f"{source}: {unknown[0]}: unknown key (expected [[device]] tables)")
    tables = data.get("device", [])
    if not isinstance(tables, list) or not tables:
        raise ScenarioError(f"{source}: device: at least one [[device]] table is needed")
    devices: list[DeviceScenario] = []
    for number, table in enumerate(tables, start=1):
        device = _Device(source, number, table).parse()
        if any(d.serial == device.serial for d in devices):
            raise ScenarioError(f"{source}: device {number} ({device.serial}): serial: duplicate")
        devices.append(device)
    return Scenario(tuple(devices), source)


class _Device:
    """Validates one ``[[device]]`` table; ``where`` prefixes every error message."""

    def __init__(self, source: str, number: int, table):
        self.where = f"{source}: device {number}"
        if not isinstance(table, dict):
            raise ScenarioError(f"{self.where}: must be a table, got {type(table).__name__}")
        self.table = table

    def fail(self, key: str, message: str):
        raise ScenarioError(f"{self.where}: {key}: {message}")

    def parse(self) -> DeviceScenario:
        serial = self.string("serial", None)
        if not SERIAL_RE.fullmatch(serial):
            self.fail("serial", f"must be 4 digits then 6 of 0-9A-Z, got {serial!r}")
        self.where += f" ({serial})"
        unknown = sorted(str(k) for k in set(self.table) - set(DEVICE_KEYS))
        if unknown:
            self.fail(unknown[0], f"unknown key (known: {', '.join(DEVICE_KEYS)})")
        model = self.choice("model", MODELS, None)
        default_speed = "high" if model == "Time Tagger 20" else "super"
        usb_speed = self.choice("usb_speed", USB_SPEEDS, default_speed)
        if model == "Time Tagger 20" and usb_speed != "high":
            self.fail("usb_speed", "a Time Tagger 20 is a USB 2.0 device, use 'high'")
        bits = self.integer("counter_bits", 48, 16, 64)
        loop_s = self.loop()
        return DeviceScenario(
            serial=serial,
            model=model,
            usb_speed=usb_speed,
            rate=self.rate(loop_s),
            messages=self.messages(serial, loop_s),
            faults=self.faults(),
            counter_bits=bits,
            counter_start=self.integer("counter_start", 0, 0, (1 << bits) - 1),
            product_id=self.integer("product_id", None, 0, 0xFFFF),
            firmware=self.string("firmware", "") or None,
            loop_s=loop_s,
        )

    # -- scalars -----------------------------------------------------------

    def string(self, key: str, default):
        value = self.table.get(key, default)
        if value is None:
            self.fail(key, "missing")
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default):
        value = self.string(key, default)
        if value not in allowed:
            self.fail(key, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def integer(self, key: str, default, low: int, high: int):
        value = self.table.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(key, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def loop(self) -> float | None:
        value = self.table.get("loop_s")
        if value is None:
            return None
        if not _is_number(value) or value <= 0:
            self.fail("loop_s", f"must be a number of seconds > 0, got {value!r}")
        return float(value)

    # -- timelines ---------------------------------------------------------

    def entries(self, key: str, width: int, shape: str):
        """The entries of list ``key`` with their start times checked; yields (key[i], entry)."""
        value = self.table.get(key, [])
        if not isinstance(value, list):
            self.fail(key, f"must be a list of {shape}, got {value!r}")
        last = 0.0
        for i, entry in enumerate(value):
            name = f"{key}[{i}]"
            if not isinstance(entry, list) or len(entry) != width:
                self.fail(name, f"must be {shape}, got {entry!r}")
            t = entry[0]
            if not _is_number(t) or t < 0:
                self.fail(name, f"t_seconds must be a number >= 0, got {t!r}")
            if t < last:
                self.fail(name, f"times must not decrease, got {t!r} after {last!r}")
            last = float(t)
            yield name, entry

    def rate(self, loop_s) -> tuple[tuple[float, float], ...]:
        steps: list[tuple[float, float]] = []
        for name, (t, bps) in self.entries("rate", 2, "[t_seconds, bytes_per_second]"):
            if not _is_number(bps) or bps < 0:
                self.fail(name, f"bytes_per_second must be >= 0, got {bps!r}")
            if steps and t == steps[-1][0]:
                self.fail(name, f"two rate steps at t = {t!r}")
            self.within_loop(name, t, loop_s)
            steps.append((float(t), float(bps)))
        return tuple(steps)

    def messages(self, serial: str, loop_s) -> tuple[tuple[float, str, str], ...]:
        out = []
        for name, (t, level, text) in self.entries("messages", 3, "[t_seconds, level, text]"):
            if level not in LEVELS:
                self.fail(name, f"level must be one of {', '.join(LEVELS)}; got {level!r}")
            if not isinstance(text, str) or not text:
                self.fail(name, f"text must be a non-empty string, got {text!r}")
            self.within_loop(name, t, loop_s)
            out.append((float(t), level, text.replace("{serial}", serial)))
        return tuple(out)

    def faults(self) -> tuple[tuple[float, str], ...]:
        out = []
        for name, (t, kind) in self.entries("faults", 2, "[t_seconds, kind]"):
            if kind not in FAULT_KINDS:
                self.fail(name, f"kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
            out.append((float(t), kind))
        return tuple(out)

    def within_loop(self, name: str, t, loop_s) -> None:
        if loop_s is not None and t >= loop_s:
            self.fail(name, f"t_seconds {t!r} must be < loop_s {loop_s!r}")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
