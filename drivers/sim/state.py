"""The physical truth of simulated instruments, persisted so they outlive the daemon.

Real instruments keep running while tagstatd restarts: same boot id, uptime
and counters still growing. This module keeps, per device, what cannot be
recomputed from the scenario and the clock (power-on time, boot id, resets,
plug state, bus address, bytes accumulated before the last unplug, the
message ring) plus the run start time that anchors scenario time, in one
JSON file ``state.json`` under ``state_dir``. With no ``state_dir`` it lives
in memory only. Writes are atomic (temporary file, then rename).

The file lies beside tagstat's own data (``--simulate`` keeps it in the
daemon's state directory), so it holds nothing that tagstat would mask: devices
are keyed by a hash of their serial, and the message ring holds references to
the scenario's texts, not the texts. A file of an older format is set aside
with a warning and the simulated run starts afresh.
"""

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from tagstat.errors import TagstatError

log = logging.getLogger(__name__)
STATE_FILE = "state.json"
STATE_VERSION = 2  # 2: devices keyed by a hash of the serial, ring entries refer to texts
FIRST_ADDRESS = 2  # address 1 is the root hub


@dataclasses.dataclass
class DeviceState:
    """Mutable per-device state; times are scenario seconds."""

    port_numbers: list[int]
    bus: int = 0
    address: int = 0
    plugged: bool = True
    boot_id: str = ""  # 32 hex digits
    power_on_s: float = 0.0
    resets: int = 0
    counter_start: int = 0
    bytes_acc: Fraction = Fraction(0)  # bytes sent from power-on to acc_since_s
    acc_since_s: float = 0.0
    msg_next: int = 0
    msg_cursor_s: float = 0.0  # scripted messages up to here were emitted
    ring: list = dataclasses.field(default_factory=list)  # [seq, uptime_ms, level, text ref]
    faults_done: int = 0  # scripted faults applied so far
    pending: list = dataclasses.field(default_factory=list)  # injected one-shot faults

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["bytes_acc"] = str(self.bytes_acc)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "DeviceState":
        fields = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in fields})
        state.bytes_acc = Fraction(state.bytes_acc)
        return state


def state_key(serial: str) -> str:
    """What the state file calls a device: not its serial."""
    return hashlib.sha256(b"tagstat-simulator:" + serial.encode()).hexdigest()[:16]


class SimulatorStateError(TagstatError):
    """The simulator state file is unreadable; delete it to start a fresh simulated run."""


class StateFile:
    def __init__(self, state_dir: Path | None, clock: Callable[[], float]):
        self.path = state_dir / STATE_FILE if state_dir is not None else None
        self._save_failed = False
        data = self._load()
        self.run_start_s: float = data.get("run_start_s", clock())
        self.addresses: dict[str, int] = data.get("next_address", {})
        self.devices = {s: DeviceState.from_json(d) for s, d in data.get("devices", {}).items()}

    def _load(self) -> dict:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION and isinstance(data.get("version"), int):
                log.warning("simulator state %s has format %s, not %d: starting a fresh "
                            "simulated run", self.path, data["version"], STATE_VERSION)  # fmt: skip
                return {}
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            for device in data.get("devices", {}).values():
                DeviceState.from_json(device)  # fail here, not later, on a bad entry
            return data
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise SimulatorStateError(
                f"cannot read simulator state {self.path}: {e}; delete it to start afresh"
            ) from None

    def device(self, serial: str, index: int, scenario) -> tuple[DeviceState, bool]:
        """The state of ``serial``, and whether it was just created."""
        key = state_key(serial)
        if key in self.devices:
            return self.devices[key], False
        state = DeviceState(port_numbers=[index + 1])
        self.devices[key] = state
        return state, True

    def next_address(self, bus: int) -> int:
        address = self.addresses.get(str(bus), FIRST_ADDRESS)
        self.addresses[str(bus)] = FIRST_ADDRESS + (address + 1 - FIRST_ADDRESS) % 126
        return address

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "version": STATE_VERSION,
            "run_start_s": self.run_start_s,
            "next_address": self.addresses,
            "devices": {s: d.to_json() for s, d in self.devices.items()},
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:  # a full disk: the instruments go on, their state in memory
            if not self._save_failed:
                log.warning("cannot save the simulator state %s (%s); it is kept in memory "
                            "until it can be", self.path, e.strerror or e)  # fmt: skip
            self._save_failed = True
            tmp.unlink(missing_ok=True)
            return
        self._save_failed = False
        log.debug("simulator state saved to %s", self.path)
