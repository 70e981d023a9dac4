"""Turns masked observations into stored sessions, devices, sensors and messages.

The recorder owns one ``SessionTracker`` per device and is the only writer of
collected data. It resumes sessions checkpointed by an earlier run of the
daemon, checkpoints open ones on request, and closes them when a device goes
away or the status changes. It is not thread-safe: the service calls it under
its lock.
"""

import dataclasses
import datetime as dt
import logging

from tagstat.poller import USB3_MODELS, DeviceView, Observation
from tagstat.records import DeviceRecord, SessionRecord
from tagstat.sessions import SessionTracker

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, store, idle_timeout_s: float):
        self._store = store
        self._idle_timeout_s = idle_timeout_s
        self._trackers: dict[str, SessionTracker] = {}
        self._devices: dict[str, DeviceRecord] = {}
        self._sensors_raw: dict[str, dict] = {}
        # Sessions left open by an earlier run, waiting for their device.
        self._resumable = {s.device_id: s for s in store.open_sessions()}

    def record(self, obs: Observation, utc: dt.datetime, mono_s: float, status: int) -> None:
        dev = obs.device
        self._remember_device(obs, utc, status)
        if obs.sensors_raw is not None:
            self._sensors_raw[dev.device_id] = obs.sensors_raw
        if obs.sensors:
            self._store.record_sensors(dev.device_id, utc, status, obs.sensors)
        for level, text in obs.messages:
            self._store.record_message(dev.device_id, level, text, utc, status)
        for err in obs.errors:
            log.warning("reading %s failed: %s", dev.serial_masked, err)
        if obs.counters is not None:
            self._count(obs, utc, mono_s, status)

    def device_gone(self, view: DeviceView) -> None:
        tracker = self._trackers.pop(view.device_id, None)
        if tracker:
            self._save_closed(tracker.forget("unplugged"))

    def end_unclaimed_resumes(self) -> None:
        """After the first poll: sessions whose device did not come back are over."""
        for rec in self._resumable.values():
            self._save_closed(dataclasses.replace(rec, open=False, end_reason="unplugged"))
        self._resumable.clear()

    def close_all(self, reason: str, forget: bool = False) -> None:
        for device_id, tracker in list(self._trackers.items()):
            self._save_closed(tracker.forget(reason) if forget else tracker.close(reason))
            if forget:
                del self._trackers[device_id]
        for rec in self._resumable.values():
            self._save_closed(dataclasses.replace(rec, open=False, end_reason=reason))
        self._resumable.clear()

    def status_changed(self, reason: str, since_mono: float) -> None:
        """The status changed: end every session, and keep nothing measured before the
        switch for the sessions to come. A baseline older than the switch reading (taken
        at ``since_mono`` or later) is dropped, and so are the sensor readings kept for
        the start of the next session."""
        self.close_all(reason)
        for tracker in self._trackers.values():
            tracker.drop_baseline_before(since_mono)
        self._sensors_raw.clear()

    def checkpoint(self) -> None:
        recs = [r for t in self._trackers.values() if (r := t.checkpoint()) is not None]
        if recs:
            self._store.save_sessions(recs)
        for rec in self._devices.values():
            self._store.upsert_device(rec)

    def reconfigure(self, idle_timeout_s: float) -> None:
        """A reloaded idle timeout applies to sessions started from now on."""
        self._idle_timeout_s = idle_timeout_s

    def attached_ids(self) -> set[str]:
        return set(self._trackers)

    def open_sessions(self) -> list[SessionRecord]:
        return [r for t in self._trackers.values() if (r := t.checkpoint()) is not None]

    # -- internals ---------------------------------------------------------

    def _count(self, obs: Observation, utc, mono_s, status) -> None:
        dev = obs.device
        tracker = self._trackers.get(dev.device_id)
        if tracker is None:
            tracker = self._trackers[dev.device_id] = SessionTracker(
                dev.device_id, dev.usb_speed, self._idle_timeout_s
            )
            self._try_resume(tracker, obs, status)
        sensors = self._sensors_raw.get(dev.device_id, {})
        for rec in tracker.observe(obs.counters, obs.boot_tag, mono_s, utc, status, sensors):
            self._save_closed(rec)

    def _try_resume(self, tracker: SessionTracker, obs: Observation, status: int) -> None:
        rec = self._resumable.pop(obs.device.device_id, None)
        if rec is None:
            return
        if rec.status == status and tracker.resume(rec, obs.counters, obs.boot_tag):
            log.info("resumed session %s of %s", rec.session_id, obs.device.serial_masked)
            return
        reason = "status_change" if rec.status != status else "device_reset"
        self._save_closed(dataclasses.replace(rec, open=False, end_reason=reason))

    def _save_closed(self, rec: SessionRecord | None) -> None:
        if rec is not None:
            self._store.save_session(rec)

    def _remember_device(self, obs: Observation, utc: dt.datetime, status: int) -> None:
        dev = obs.device
        first = dev.device_id not in self._devices
        known = self._devices.get(dev.device_id)
        if first:
            self._warn_slow_link(dev)
            stored = [d for d in self._store.devices() if d.device_id == dev.device_id]
            known = stored[0] if stored else DeviceRecord(
                dev.device_id, dev.model, dev.serial_masked, dev.usb_speed, dev.firmware,
                {}, {}, utc, utc,
            )  # fmt: skip
        rec = dataclasses.replace(known, model=dev.model, usb_speed=dev.usb_speed,
                                  firmware=dev.firmware, last_seen=utc)  # fmt: skip
        if obs.calibration is not None:  # with the status it was read under
            rec = dataclasses.replace(
                rec, calibration=obs.calibration, calibration_status=status,
                calibration_summary=obs.calibration_summary or {},
            )  # fmt: skip
        if obs.configuration is not None:
            rec = dataclasses.replace(
                rec, configuration=obs.configuration, configuration_status=status
            )
        self._devices[dev.device_id] = rec
        if first or obs.calibration is not None or obs.configuration is not None:
            self._store.upsert_device(rec)

    def _warn_slow_link(self, dev: DeviceView) -> None:
        if dev.model in USB3_MODELS and dev.usb_speed not in ("super", "super-plus"):
            log.warning(
                "%s %s is connected at USB %s speed, not USB 3: its data rate will be low",
                dev.model, dev.serial_masked, dev.usb_speed,
            )  # fmt: skip
