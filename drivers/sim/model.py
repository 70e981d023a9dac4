"""A simulated Time Tagger that answers USB control transfers like the real protocol.

``SimulatedTimeTagger`` is one instrument: USB descriptors, the vendor
requests of ``tagstat.drivers.protocol``, traffic counters that follow the
scenario's rate exactly, a message ring, and one-shot faults. ``Simulation``
owns the devices of a scenario, applies its timeline of faults up to the
injected clock, and persists the physical truth (power-on time, boot id, plug
state, addresses) in ``state_dir`` so a restarted daemon finds the same
instruments with their counters advanced. The pyusb backend and the umockdev
transport both call ``control_transfer``; faults leave it as ``SimFault``
subclasses that each transport maps to its own error.
"""

import hashlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tagstat.drivers import protocol
from tagstat.drivers.sim import descriptors, documents
from tagstat.drivers.sim.scenario import DeviceScenario, Scenario
from tagstat.drivers.sim.state import DeviceState, StateFile
from tagstat.drivers.sim.timeline import Timeline

VENDOR_ID = 0x151F
# Inferred (no vendor document): the Opal Kelly module each model is built on.
PRODUCT_IDS = {"Time Tagger 20": 0x002D, "Time Tagger Ultra": 0x0121, "Time Tagger X": 0x0131}
BCD_DEVICE = {"Time Tagger 20": 0x0102, "Time Tagger Ultra": 0x0203, "Time Tagger X": 0x0105}
# Inferred: 4 bytes per tag on the wire makes the documented maximum tag rates
# (9 M/s, 80 M/s, 90 M/s) fit the practical throughput of USB 2 (~40 MB/s) and
# USB 3 (~400 MB/s).
BYTES_PER_TAG = {"Time Tagger 20": 4, "Time Tagger Ultra": 4, "Time Tagger X": 4}
MANUFACTURER = "Swabian Instruments"
MAX_TRANSFER = protocol.DEFAULT_TRANSFER
RING_SIZE = 256
USB2_WARNING = "The TimeTagger '{serial}' is not connected by USB 3.0, its performance will be low."
GET_STATUS, GET_DESCRIPTOR, GET_CONFIGURATION, SET_CONFIGURATION = 0x00, 0x06, 0x08, 0x09


class SimFault(Exception):
    """A transfer failed the way a real device can fail; ``kind`` says how."""

    kind = "fault"


class SimStall(SimFault):
    kind = "stall"


class SimTimeout(SimFault):
    kind = "timeout"


class SimBusy(SimFault):
    kind = "busy"


class SimGone(SimFault):
    kind = "gone"


_FAULTS = {"stall": SimStall, "timeout": SimTimeout, "busy": SimBusy}


class SimulatedTimeTagger:
    """One instrument. Its mutable physical state lives in ``self.state`` (persisted)."""

    vendor_id = VENDOR_ID

    def __init__(self, sim: "Simulation", scenario: DeviceScenario, state: DeviceState):
        self._sim = sim
        self.scenario = scenario
        self.state = state
        self.serial = scenario.serial
        self.model = scenario.model
        self.usb_speed = scenario.usb_speed
        self.product_id = scenario.product_id or PRODUCT_IDS[self.model]
        self.bcd_device = BCD_DEVICE[self.model]
        self.timeline = Timeline(scenario)
        self.calls: list[tuple[int, int, int, int]] = []
        self.configuration_value = 0  # unconfigured until someone sets it (nobody should)
        self._rng = random.Random(self.serial)  # garbage is reproducible run to run
        self._generations: dict[tuple[int, int], tuple[bytes, int]] = {}
        # Everything it can say; the persisted ring refers to these by index (state.py).
        self._texts = [text for _, _, text in scenario.messages]
        self._texts.append(USB2_WARNING.format(serial=self.serial))

    # -- identity ------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self.state.plugged

    @property
    def bus(self) -> int:
        return self.state.bus

    @property
    def address(self) -> int:
        return self.state.address

    @property
    def port_numbers(self) -> tuple[int, ...]:
        return tuple(self.state.port_numbers)

    def device_descriptor(self) -> bytes:
        return descriptors.device_descriptor(
            self.usb_speed == "super", self.vendor_id, self.product_id, self.bcd_device
        )

    def configuration_descriptor(self) -> bytes:
        return descriptors.configuration_descriptor(self.usb_speed == "super")

    # -- physics -------------------------------------------------------------

    def counters(self, t: float) -> protocol.Counters:
        """Traffic since power-on at scenario time ``t``: exact integral of the rate."""
        s = self.state
        sent = s.bytes_acc
        if s.plugged:
            sent += self.timeline.integral(s.acc_since_s, t)
        mask = (1 << self.scenario.counter_bits) - 1
        nbytes = (s.counter_start + int(sent)) & mask
        tags = (s.counter_start + int(sent / BYTES_PER_TAG[self.model])) & mask
        uptime_ms = max(0, int((t - s.power_on_s) * 1000))
        boot_id = bytes.fromhex(s.boot_id)
        return protocol.Counters(self.scenario.counter_bits, nbytes, tags, uptime_ms, boot_id)

    def rate_at(self, t: float) -> float:
        return self.timeline.rate_at(t) if self.state.plugged else 0.0

    # -- the wire --------------------------------------------------------------

    def control_transfer(self, bmRequestType, bRequest, wValue, wIndex, data_or_wLength):
        """One control transfer: bytes for IN (at most wLength), the count for OUT."""
        self.calls.append((bmRequestType, bRequest, wValue, wIndex))
        with self._sim.lock:
            t = self._sim.advance()
            if not self.state.plugged:
                raise SimGone(f"device {self.serial} is unplugged")
            if bmRequestType & 0x60 == 0x40:
                return self._vendor(t, bmRequestType, bRequest, wValue, wIndex, data_or_wLength)
            if bmRequestType & 0x80:
                return self._standard_in(bmRequestType, bRequest, wValue, int(data_or_wLength))
            return self._standard_out(bmRequestType, bRequest, wValue, bytes(data_or_wLength))

    def _standard_in(self, bm: int, request: int, wValue: int, length: int) -> bytes:
        if bm == 0x80 and request == GET_DESCRIPTOR:
            reply = self._descriptor(wValue >> 8, wValue & 0xFF)
        elif bm == 0x80 and request == GET_STATUS:
            reply = b"\x00\x00"  # bus-powered, no remote wakeup
        elif bm == 0x80 and request == GET_CONFIGURATION:
            reply = bytes([self.configuration_value])
        else:
            raise SimStall(f"standard request {request:#04x} not supported")
        return reply[:length]

    def _descriptor(self, kind: int, index: int) -> bytes:
        strings = {1: MANUFACTURER, 2: self.model, 3: self.serial}
        if kind == descriptors.DT_DEVICE:
            return self.device_descriptor()
        if kind == descriptors.DT_CONFIG and index == 0:
            return self.configuration_descriptor()
        if kind == descriptors.DT_STRING and index == 0:
            return descriptors.langid_table()
        if kind == descriptors.DT_STRING and index in strings:
            return descriptors.string_descriptor(strings[index])
        raise SimStall(f"no descriptor type {kind} index {index}")

    def _standard_out(self, bm: int, request: int, wValue: int, data: bytes) -> int:
        if bm == 0x00 and request == SET_CONFIGURATION:
            self.configuration_value = wValue & 0xFF
        return len(data)

    def _vendor(self, t: float, bm: int, request: int, wValue: int, wIndex: int, data) -> bytes:
        injected = self.state.pending.pop(0) if self.state.pending else None
        if injected is not None:
            self._sim.save()
        if injected in _FAULTS:
            raise _FAULTS[injected](f"injected {injected}")
        if bm != protocol.VENDOR_IN:  # only device-recipient IN requests exist
            raise SimStall(f"vendor request {request:#04x} with bmRequestType {bm:#04x}")
        reply = self._vendor_reply(t, request, wValue, wIndex, int(data))
        if injected == "garbage":
            return self._rng.randbytes(len(reply))
        return reply

    def _vendor_reply(self, t: float, request: int, chunk: int, wIndex: int, length: int):
        if request == protocol.REQ_INFO:
            caps = 0 if self.model == "Time Tagger 20" else protocol.CAP_SENSORS
            info = protocol.Info(1, 0, caps, MAX_TRANSFER)
            return protocol.encode_info(info)[:length]
        if request == protocol.REQ_COUNTERS:
            return protocol.encode_counters(self.counters(t))[:length]
        if request in protocol.DOCUMENT_REQUESTS:
            document = protocol.encode_document(self._document(t, request, wIndex))
            key = (request, wIndex if request == protocol.REQ_MESSAGES else 0)
            generation = self._generation(key, document)
            try:
                # a device never sends more than the max_transfer it announced
                return protocol.encode_chunk(document, chunk, min(length, MAX_TRANSFER), generation)
            except ValueError:
                raise SimStall(f"chunk {chunk} out of range") from None
        raise SimStall(f"unknown vendor request {request:#04x}")

    def _generation(self, key: tuple[int, int], document: bytes) -> int:
        previous, generation = self._generations.get(key, (None, 0))
        if previous != document:
            generation = (generation + 1) & 0xFFFF
            self._generations[key] = (document, generation)
        return generation

    def _document(self, t: float, request: int, start_seq: int):
        if request == protocol.REQ_SENSORS:
            if self.model == "Time Tagger 20":
                raise SimStall("the Time Tagger 20 has no sensors")
            uptime_s = t - self.state.power_on_s
            return documents.sensors(self.model, t, uptime_s, self.rate_at(t))
        if request == protocol.REQ_CALIBRATION:
            return documents.calibration(self.model, self.serial)
        if request == protocol.REQ_CONFIGURATION:
            return documents.configuration(self.model, self.serial, self.scenario.firmware)
        return self._messages_document(start_seq)

    def _messages_document(self, start: int) -> dict:
        ring, nxt = self.state.ring, self.state.msg_next % protocol.SEQ_MODULO
        behind = (nxt - start) % protocol.SEQ_MODULO
        if behind > protocol.SEQ_MODULO // 2:
            behind = 0  # start lies ahead of the device (e.g. it was reset): nothing to send
        held = ring[len(ring) - min(behind, len(ring)) :] if behind else []
        return {
            "next": nxt,
            "dropped": max(0, behind - len(ring)),
            "messages": [
                {"seq": seq, "uptime_ms": uptime_ms, "level": level, "text": self._text(ref)}
                for seq, uptime_ms, level, ref in held
            ],
        }

    # -- events (called by Simulation with the lock held) --------------------

    def _text(self, ref) -> str:
        ok = isinstance(ref, int) and 0 <= ref < len(self._texts)
        return self._texts[ref] if ok else "(a message of another scenario)"

    def emit(self, t: float, level: str, text: str) -> None:
        s = self.state
        uptime_ms = max(0, int((t - s.power_on_s) * 1000))
        ref = self._texts.index(text) if text in self._texts else len(self._texts)
        if ref == len(self._texts):
            self._texts.append(text)  # said once, not in the scenario: kept in memory only
        s.ring.append([s.msg_next % protocol.SEQ_MODULO, uptime_ms, level, ref])
        del s.ring[:-RING_SIZE]
        s.msg_next = (s.msg_next + 1) % protocol.SEQ_MODULO

    def emit_until(self, t: float) -> bool:
        """Emit the scripted messages up to ``t``; True if any were emitted."""
        skipped, found = self.timeline.messages_between(self.state.msg_cursor_s, t, RING_SIZE)
        self.state.msg_cursor_s = max(self.state.msg_cursor_s, t)
        self.state.msg_next = (self.state.msg_next + skipped) % protocol.SEQ_MODULO
        for at, level, text in found:
            self.emit(at, level, text)
        return bool(skipped or found)

    def power_on(self, t: float) -> None:
        """Boot (first creation or reset): new boot id, counters and message ring from zero."""
        s = self.state
        s.resets += 1 if s.boot_id else 0
        digest = hashlib.sha256(f"{self.serial}:{self._sim.run_start_s}:{s.resets}:{t}".encode())
        s.boot_id = digest.hexdigest()[:32]
        s.power_on_s, s.acc_since_s = t, t
        s.bytes_acc = 0
        s.counter_start = self.scenario.counter_start if s.resets == 0 else 0
        s.ring, s.msg_next = [], 0
        self._generations.clear()
        if self.usb_speed == "high":
            self.emit(t, "warning", USB2_WARNING.format(serial=self.serial))

    def unplug(self, t: float) -> None:
        s = self.state
        if s.plugged:
            s.bytes_acc += self.timeline.integral(s.acc_since_s, t)
            s.plugged = False

    def replug(self, t: float) -> None:
        s = self.state
        if not s.plugged:
            s.plugged, s.acc_since_s = True, t
            s.address = self._sim.next_address(s.bus)
            self.configuration_value = 0

    def inject(self, kind: str) -> None:
        if kind not in (*_FAULTS, "garbage"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self.state.pending.append(kind)


class Simulation:
    """The scenario's instruments, their timeline applied up to ``clock()``."""

    def __init__(
        self,
        scenario: Scenario,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.scenario = scenario
        self.clock = clock
        self.lock = threading.RLock()
        self._file = StateFile(Path(state_dir) if state_dir is not None else None, clock)
        self.run_start_s = self._file.run_start_s
        self._devices: dict[str, SimulatedTimeTagger] = {}
        t = self.now()
        for index, device_scenario in enumerate(scenario.devices):
            state, new = self._file.device(device_scenario.serial, index, device_scenario)
            device = SimulatedTimeTagger(self, device_scenario, state)
            self._devices[device.serial] = device
            if new:
                state.bus = 2 if device.usb_speed == "super" else 1
                state.address = self.next_address(state.bus)
                state.faults_done = sum(1 for f in device_scenario.faults if f[0] < t)
                state.msg_cursor_s = t
                device.power_on(t)
        self.advance()
        self.save()

    def now(self) -> float:
        """Scenario time: seconds since the run started (kept across restarts)."""
        return self.clock() - self.run_start_s

    def next_address(self, bus: int) -> int:
        return self._file.next_address(bus)

    def save(self) -> None:
        self._file.save()

    def advance(self) -> float:
        """Apply scripted faults and messages up to now; returns the scenario time."""
        with self.lock:
            t = self.now()
            due = []
            for index, device in enumerate(self._devices.values()):
                faults = device.scenario.faults
                for n in range(device.state.faults_done, len(faults)):
                    if faults[n][0] <= t:
                        due.append((faults[n][0], index, n, device))
            changed = bool(due)
            for at, _, n, device in sorted(due, key=lambda d: d[:3]):
                device.emit_until(at)
                self._apply(device, device.scenario.faults[n][1], at)
                device.state.faults_done = n + 1
            for device in self._devices.values():
                changed |= device.emit_until(t)
            if changed:
                self.save()
            return t

    def _apply(self, device: SimulatedTimeTagger, kind: str, t: float) -> None:
        if kind == "unplug":
            device.unplug(t)
        elif kind == "replug":
            device.replug(t)
        elif kind == "reset":
            self._reset(device, t)
        else:
            device.inject(kind)

    def _reset(self, device: SimulatedTimeTagger, t: float) -> None:
        # a reboot re-enumerates: the host sees the device leave and return at a new address
        plugged = device.state.plugged
        device.unplug(t)
        device.power_on(t)
        if plugged:
            device.replug(t)

    # -- the public view -------------------------------------------------------

    def devices(self) -> list[SimulatedTimeTagger]:
        self.advance()
        return [d for d in self._devices.values() if d.state.plugged]

    def device(self, serial: str) -> SimulatedTimeTagger:
        try:
            return self._devices[serial]
        except KeyError:
            raise KeyError(f"no simulated device {serial!r} in {self.scenario.source}") from None

    def _control(self, serial: str, action: Callable[[SimulatedTimeTagger, float], None]):
        with self.lock:
            t = self.advance()
            action(self.device(serial), t)
            self.save()

    def unplug(self, serial: str) -> None:
        self._control(serial, lambda d, t: d.unplug(t))

    def replug(self, serial: str) -> None:
        self._control(serial, lambda d, t: d.replug(t))

    def reset(self, serial: str) -> None:
        self._control(serial, self._reset)

    def inject(self, serial: str, kind: str) -> None:
        """The next vendor request to ``serial`` fails as ``kind`` (one shot)."""
        self._control(serial, lambda d, t: d.inject(kind))
