"""The one place that builds every component, and the poll loop.

``build_service`` wires configuration, store, masking, status, host
information, the USB discovery (real libusb, or a simulated Time Tagger with
``--simulate``), the recorder, the outbox and the uploader; the process around
it (arguments, signals, the control socket) is ``tagstat.tagstatd``.
``Service`` runs the loop, which waits on a stop event so that SIGTERM and
SIGINT end it promptly, and implements the
controller that the control socket dispatches to (changing the status, with
its consent boundary, is ``tagstat.status_control``). Under systemd it reports
readiness after the first poll, a status line and watchdog pings (sd_notify);
SIGHUP reloads the configuration in the loop's own thread. The clock, the
paths and the USB backend are injectable.
"""

import dataclasses
import datetime as dt
import logging
import re
import threading
from collections.abc import Mapping

from tagstat import measurement_data, purge
from tagstat.clock import Clock, iso
from tagstat.config import FIELDS, Config, load_config
from tagstat.consent import ConsentKeeper
from tagstat.daemon_counters import DaemonCounters, LogCounter
from tagstat.errors import ConfigError, TagstatError
from tagstat.export import Exports
from tagstat.fields import current as current_schema
from tagstat.hostinfo import HostInfoCache
from tagstat.killswitch import daemon_switch
from tagstat.masking import Masker, load_or_create_secret
from tagstat.outbox import Outbox
from tagstat.paths import Paths
from tagstat.poller import Poller
from tagstat.recorder import Recorder
from tagstat.report import build_report, report_json, session_entry
from tagstat.sdnotify import Notifier
from tagstat.status import UsageStatisticsStatus
from tagstat.status_control import StatusControl
from tagstat.status_keeper import StatusKeeper
from tagstat.store import Store
from tagstat.store_writeback import WriteBack
from tagstat.uploader import Uploader

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0
UPLOADS_LISTED = 1000  # audit lines `tagstat uploads` shows, newest
_REPORT_ID = re.compile(r"[0-9a-fA-F-]{4,36}")
EX_CONFIG = 78  # sysexits: a configuration error; systemd must not restart-loop on it


class MessageCursors:
    """Where each device's message log was read up to, so a restart re-reads nothing."""

    def __init__(self, store):
        self._store = store

    def get(self, device_id: str, boot_tag: str) -> int:
        saved = self._store.get_setting(f"msg_cursor:{device_id}") or {}
        return saved.get("seq", 0) if saved.get("boot") == boot_tag else 0

    def put(self, device_id: str, boot_tag: str, seq: int) -> None:
        self._store.set_setting(f"msg_cursor:{device_id}", {"boot": boot_tag, "seq": seq})


@dataclasses.dataclass
class Service(StatusControl):
    config: Config
    paths: Paths
    clock: Clock
    store: Store
    masker: Masker
    keeper: StatusKeeper
    hostinfo: HostInfoCache
    poller: Poller
    recorder: Recorder
    # Collected data on its way to the store; held in memory while the disk is full.
    writes: WriteBack | None = None
    # tagstatd's own problems, counted for the report (tagstat.daemon_counters)
    counters: DaemonCounters = dataclasses.field(default_factory=DaemonCounters)
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    polls: int = 0
    scan_errors: set = dataclasses.field(default_factory=set)
    loop_errors: set = dataclasses.field(default_factory=set)  # (step, error type) logged
    notifier: Notifier = dataclasses.field(default_factory=Notifier)
    # The loop sleeps on this doorbell: ring it after setting stop or reload_requested.
    wake: threading.Event = dataclasses.field(default_factory=threading.Event)
    reload_requested: bool = False
    # Called as hook(old_config, new_config) after a reload applied new_config.
    on_reconfigure: list = dataclasses.field(default_factory=list)
    log_level_override: str | None = None  # --log-level wins over the config's log_level
    consent: ConsentKeeper | None = None  # which report fields may be uploaded (tagstat.consent)
    outbox: Outbox | None = None  # period reports and opting out (None: no uploads at all)
    uploader: Uploader | None = None  # the thread that sends the outbox
    exports: Exports | None = None  # `tagstat export` (tagstat.export)
    environ: Mapping[str, str] | None = None  # where kill switches are read; None: os.environ

    # -- the loop ----------------------------------------------------------

    def run(self, stop: threading.Event, on_poll=None) -> None:
        next_poll = self.clock.monotonic()
        next_checkpoint = next_poll + self.config.checkpoint_s
        next_prune = next_ping = next_poll
        while not stop.is_set():
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
                soon = self.clock.monotonic() + self.config.poll_interval_s
                next_poll, next_checkpoint = min(next_poll, soon), min(next_checkpoint, soon)
            interval = self.config.poll_interval_s
            now = self.clock.monotonic()
            if now >= next_ping:  # from the loop itself, so a stuck loop gets restarted
                self.notifier.watchdog()
                next_ping = now + (self.notifier.watchdog_interval_s or float("inf"))
            if now >= next_poll:
                self._survive(self.poll_once)
                # Stay on the grid; after a stall skip the missed polls, don't burst.
                next_poll += interval * max(1, int((now - next_poll) // interval) + 1)
                if on_poll:
                    on_poll(self)
            if now >= next_checkpoint:
                self._survive(self.checkpoint)
                next_checkpoint = now + self.config.checkpoint_s
            if now >= next_prune:
                self._survive(self.prune)
                next_prune = now + PRUNE_INTERVAL_S
            self._survive(self.flush_writes)
            self._survive(self.close_period_if_due)
            wake_at = min(next_poll, next_checkpoint, next_ping)
            self.wake.wait(max(0.0, wake_at - self.clock.monotonic()))
            self.wake.clear()

    def _survive(self, step) -> None:
        """One round of ``step``; an unexpected error is logged (once per kind) and the
        loop goes on: a crash would only become a restart loop under systemd."""
        try:
            step()
        except Exception as e:
            kind = (step.__name__, type(e).__name__)
            if kind not in self.loop_errors:
                self.loop_errors.add(kind)
                log.exception("%s failed (%s); tagstatd goes on", step.__name__, e)

    def poll_once(self) -> dt.datetime:
        """Read every device once and record it under the status in force; the UTC stamp
        of the reading (when it was taken: after the last transfer)."""
        with self.lock:
            status = self.keeper.effective  # Disabled while a kill switch is in force
            if status == UsageStatisticsStatus.Disabled:
                self.counters.clear()
                return self.clock.utc_now()
            mono = self.clock.monotonic()
            try:
                observations, gone, errors = self.poller.poll(mono)
            except TagstatError as e:
                log.warning("usb scan failed: %s", e)
                observations, gone, errors = [], [], [str(e)]
            utc = self.clock.utc_now()
            for err in errors:
                if err not in self.scan_errors:  # once per problem, not once per poll
                    log.warning("cannot open a time tagger: %s", err)
            self.scan_errors = set(errors)
            self.counters.add("scan_errors", int(status), 1 if errors else 0)
            for view in gone:
                log.info("%s %s detached", view.model, view.serial_masked)
                self.recorder.device_gone(view)
            for obs in observations:
                self.counters.add("read_errors", int(status), len(obs.errors))
                self.recorder.record(obs, utc, mono, int(status))
            if self.polls == 0:
                self.recorder.end_unclaimed_resumes()
            self.polls += 1
            return utc

    def checkpoint(self) -> None:
        with self.lock:
            self._save_pending()

    def _save_pending(self) -> None:
        """Open sessions' latest totals, devices and the daemon's counts into the store."""
        self.recorder.checkpoint()
        self.counters.flush(self.writes, self.clock.utc_now())

    def flush_writes(self, force: bool = False) -> bool:
        """Write what a full disk made us hold, when a retry is due; True if nothing is held."""
        if not self.writes.holding:
            return True
        with self.lock:
            return self.writes.flush(force)

    def count_log_records(self) -> None:
        """Count tagstat's warning and error log records for the report (the process's
        logging; in-process test services leave the global loggers alone)."""
        handler = LogCounter(self.counters, lambda: int(self.keeper.effective))
        logging.getLogger("tagstat").addHandler(handler)

    def prune(self) -> None:
        with self.lock:
            c = self.config
            try:
                removed = self.store.prune(
                    self.clock.utc_now(), c.retention_days * 86400, c.retention_max_bytes,
                    c.max_messages,
                )  # fmt: skip
                cutoff = self.clock.utc_now() - dt.timedelta(days=c.retention_days)
                removed |= self.store.prune_uploads(cutoff)  # sent reports and the audit log
            except TagstatError as e:  # a full disk: the next prune tries again
                log.warning("retention could not prune the database: %s", e)
                return
            if any(removed.values()):
                log.info("retention removed %s", removed)

    def shutdown(self) -> None:
        """Checkpoint open sessions (they resume after a restart), queue the last period's
        report, give the uploader a few seconds, and close the store."""
        with self.lock:
            self._save_pending()
            if not self.writes.flush(force=True):
                log.error("stopping with %d writes held in memory, which are lost: the "
                          "database %s still cannot be written (%s)", self.writes.held(),
                          self.store.path, self.writes.episode.error)  # fmt: skip
            elif self.outbox is not None:
                try:
                    self.outbox.close_period()
                except TagstatError as e:
                    log.error("the last upload period could not be queued: %s", e)
        if self.uploader is not None:
            self.uploader.stop()  # outside the lock: it may wait for the network a little
        with self.lock:
            self.poller.forget_all()
            self.store.close()

    # -- the controller (called from control-socket threads) ---------------

    def get_status(self) -> dict:
        result = self.keeper.describe()
        result["storage"] = self.writes.describe()  # None, or a full-disk episode
        if self.outbox is not None:
            result["upload"] = self.outbox.summary()
        if self.consent is not None:
            result["consent"] = self.consent_state()
        return result

    def get_report(self) -> str:
        host = self.hostinfo.get(timeout_s=2.0)
        with self.lock:
            self._save_pending()
            if self.outbox is not None and self.outbox.uploading():
                # Exactly what the next upload would hold (status-2 data of this period).
                now = self.clock.utc_now()
                since = self.outbox.period_start() or now
                report = self.outbox.usage_report(since, now, host.to_report() if host else None)
                return report_json(report)
            report = build_report(
                self.store,
                user_id=self.keeper.user_id,
                status=self.keeper.effective,
                host=host.to_report() if host else None,
                now=self.clock.utc_now(),
            )
        return report_json(report)

    def list_devices(self, calibration: bool = False) -> list[dict]:
        """The devices seen; with ``calibration``, each one's raw calibration table too
        (masked, local only: the report carries a summary)."""
        with self.lock:
            attached = {v.device_id for v in self.poller.attached()}
            rows = []
            for d in self.store.devices():
                row = {
                    "device_id": d.device_id,
                    "model": d.model,
                    "serial": d.serial_masked,
                    "usb_speed": d.usb_speed,
                    "firmware": d.firmware,
                    "attached": d.device_id in attached,
                    "last_seen": iso(d.last_seen),
                }
                if calibration:
                    row["calibration"] = d.calibration
                rows.append(row)
            return rows

    def list_sessions(self) -> list[dict]:
        with self.lock:
            self._save_pending()
            models = {d.device_id: d.model for d in self.store.devices()}
            out = []
            for s in self.writes.sessions_with_held():
                entry = session_entry(s)
                entry.pop("initial_sensors")
                out.append({"session_id": s.session_id, "model": models.get(s.device_id), **entry})
            return out

    def record_measurements(self, events: list) -> dict:
        """Store an application's measurement events; under Disabled, nothing.

        Each event is stored under the lowest status in force between its start
        and now, so one that ran before consent to upload is never uploaded.
        """
        accepted, rejected = measurement_data.validate(events, self.clock.utc_now())
        accepted = [self._masked_event(e) for e in accepted]
        with self.lock:
            current = self.keeper.effective
            if current == UsageStatisticsStatus.Disabled or not accepted:
                return {"stored": 0, "rejected": rejected}
            changes = self.store.status_changes()
            statuses = [measurement_data.lowest_status(e.start, changes, current) for e in accepted]
            kept = [(e, s) for e, s in zip(accepted, statuses, strict=True) if s > 0]
            stored = self.writes.record_measurements(kept, self.clock.utc_now())
        return {"stored": stored, "rejected": rejected}

    def _masked_event(self, event: measurement_data.MeasurementEvent):
        """The masking every device text gets, on what an application named: an error class
        or a configuration name that holds a serial, a host or a file name is dropped."""

        def clean(text: str) -> bool:
            return self.masker.scrub_text(text) == text

        error = event.error if event.error is None or clean(event.error) else "Exception"
        config = {k: v for k, v in event.config.items() if not isinstance(v, str) or clean(v)}
        return dataclasses.replace(event, error=error, config=config)

    # -- uploads (tagstat.outbox decides, tagstat.uploader sends) ------------

    def close_period_if_due(self) -> None:
        if self.outbox is None or (self.outbox.seconds_to_period_end() or 0) > 0:
            return
        with self.lock:
            self._save_pending()  # open sessions' latest totals go into the report
            if not self.writes.flush():  # at its back-off, not once per loop round
                return  # the period closes, with everything, once the database can be written
            try:
                report_id = self.outbox.close_period()
            except TagstatError as e:  # nothing changed: the next loop tries again
                log.warning("could not queue the upload period's report: %s", e)
                return
            if report_id:
                self.uploader.wake()

    def pending_report(self) -> dict:
        """The body the next upload will send, byte for byte; or what this period would."""
        entry = self.outbox.next_to_send()
        if entry is not None:
            return {
                "pending": True, "report_id": entry.report_id, "kind": entry.kind,
                "attempts": entry.attempts, "next_attempt_at": iso(entry.next_attempt_at),
                "body": entry.body.decode("utf-8"), "endpoint": self.config.upload_url or None,
            }  # fmt: skip
        uploading = self.outbox.uploading()
        return {
            "pending": False,
            "body": self.get_report() if uploading else None,
            "endpoint": self.config.upload_url or None,
            "status": self.keeper.effective.name,
        }

    def list_uploads(self) -> list[dict]:
        return [
            {"at": iso(a.at), "report_id": a.report_id, "size_bytes": a.size_bytes,
             "result": a.result, "http_status": a.http_status, "detail": a.detail}
            for a in self.store.upload_audit(limit=UPLOADS_LISTED)
        ]  # fmt: skip

    def upload_body(self, report_id: str) -> dict:
        if not _REPORT_ID.fullmatch(report_id):
            raise ValueError(f"not a report id: {report_id[:40]!r} (hex digits and dashes)")
        entry = self.store.outbox_get(report_id)
        if entry is None:
            raise TagstatError(
                f"no report {report_id} in the outbox: never made, deleted after "
                "retention_days, purged, or an id prefix that matches several"
            )
        return {"report_id": entry.report_id, "kind": entry.kind, "state": entry.state,
                "body": entry.body.decode("utf-8")}  # fmt: skip

    # -- purge and export (tagstat.purge, tagstat.export) -------------------

    def purge(self) -> dict:
        return purge.purge(self)

    def export_begin(self) -> dict:
        return self.exports.begin()

    def export_commit(self, token: str) -> dict:
        return self.exports.commit(token)

    def _reconfigure_uploads(self, old: Config, new: Config) -> None:
        self.outbox.reconfigure(new)
        self.uploader.reconfigure(new)

    # -- reload (systemd's ExecReload sends SIGHUP) ---------------------------

    def reload(self) -> bool:
        """Re-read the configuration and apply it; an invalid one is logged and ignored."""
        self.notifier.reloading()
        try:
            new = load_config(self.paths.config_file)
        except ConfigError as e:
            log.error("configuration not reloaded, the running one stays: %s", e)
            self.notifier.ready(self.status_line())
            return False
        with self.lock:
            old, self.config = self.config, new
            self.poller.reconfigure(new)
            self.recorder.reconfigure(new.idle_timeout_s)
            logging.getLogger().setLevel(self.log_level_override or new.log_level)
            self.enforce_status_cap()
            self.apply_kill_switches()  # allow_in_ci may have changed
        for hook in self.on_reconfigure:
            try:
                hook(old, new)
            except Exception:  # one part failing to reconfigure must not stop the daemon
                log.exception("applying the reloaded configuration failed in %r", hook)
        log.info("configuration reloaded: %s", config_changes(old, new) or "nothing changed")
        self.notifier.ready(self.status_line())
        return True

    def status_line(self) -> str:
        """What the daemon is doing, for systemctl status (STATUS=)."""
        status = self.keeper.effective
        if self.keeper.forced_by is not None:
            return f"status Disabled, {self.keeper.forced_by.reason()}: collecting nothing"
        if status == UsageStatisticsStatus.Disabled:
            return "status Disabled: collecting nothing"
        n = len(self.poller.attached())
        line = f"polling {n} Time Tagger{'' if n == 1 else 's'}, status {status.name}"
        if self.writes.holding:
            line += f"; the database cannot be written, {self.writes.held()} writes held"
        return line


def config_changes(old: Config, new: Config) -> str:
    """'key old -> new' for each changed key, comma-separated."""
    return ", ".join(
        f"{key} {getattr(old, key)!r} -> {getattr(new, key)!r}"
        for key in FIELDS
        if getattr(old, key) != getattr(new, key)
    )


SERIAL_LENGTHS_KEY = "serial_lengths"  # settings: the lengths of the serials seen, no more


def build_service(
    paths: Paths,
    config: Config,
    *,
    clock: Clock | None = None,
    backend=None,
    environ: Mapping[str, str] | None = None,
    hostinfo: HostInfoCache | None = None,
) -> Service:
    """Every component, wired. ``environ`` is where kill switches are looked for (this
    process's environment by default); ``hostinfo`` replaces this computer's."""
    from tagstat.drivers.discovery import Discovery

    clock = clock or Clock()
    paths.ensure()
    # The store first: an install whose secret exists but whose database is empty or
    # missing has lost data, and the store says so; a secret made first would hide that.
    store = Store.open(paths.database, clock=clock, install_marker=paths.secret_file)
    secret = load_or_create_secret(paths.secret_file)
    masker = Masker(secret, known_serials=_known_serials(store))
    keeper = StatusKeeper(store, clock, UsageStatisticsStatus.parse(config.initial_status))
    keeper.forced_by = daemon_switch(environ, allow_in_ci=config.allow_in_ci)  # before collecting
    hostinfo = hostinfo or HostInfoCache(paths.hostinfo_cache)
    if keeper.effective != UsageStatisticsStatus.Disabled:
        hostinfo.start()  # Disabled collects nothing, host information included
    discovery = Discovery(
        backend=backend, product_ids=config.product_ids, timeout_ms=config.usb_timeout_ms
    )
    writes = WriteBack(store, clock)
    poller = Poller(discovery, masker, secret, config, MessageCursors(writes),
                    on_new_serial=lambda serial: _remember_length(writes, serial))  # fmt: skip
    recorder = Recorder(writes, config.idle_timeout_s)
    service = Service(config, paths, clock, store, masker, keeper, hostinfo, poller, recorder,
                      writes)  # fmt: skip
    service.environ = environ
    service.consent = ConsentKeeper(store, clock, current_schema())
    if keeper.forced_by is not None:
        log.warning("status Disabled, %s; the stored status %s is kept",
                    keeper.forced_by.reason(), keeper.current.name)  # fmt: skip
    _wire_uploads(service)
    service.enforce_status_cap()  # before the first poll: no session mixes two statuses
    return service


def _known_serials(store: Store) -> list[tuple[int, str]]:
    """The serials seen on this install, as the masker may know them: (length, device id)
    pairs. Serials are never stored; their keyed pseudonyms and lengths are."""
    lengths = store.get_setting(SERIAL_LENGTHS_KEY) or []
    ids = [d.device_id for d in store.devices()]
    return [(n, device_id) for n in lengths if isinstance(n, int) for device_id in ids]


def _remember_length(store, serial: str) -> None:
    lengths = set(store.get_setting(SERIAL_LENGTHS_KEY) or [])
    if len(serial.strip()) not in lengths:
        store.set_setting(SERIAL_LENGTHS_KEY, sorted(lengths | {len(serial.strip())}))


def _wire_uploads(service: Service) -> None:
    def host() -> dict | None:  # never waits: the poll thread builds period reports
        info = service.hostinfo.get()
        return info.to_report() if info else None

    s = service

    def shape(report: dict) -> dict:  # only the fields the user agreed to upload
        return s.consent.shape_upload(report, s.keeper.current)

    s.outbox = Outbox(s.store, s.keeper, s.clock, s.config, host, shape=shape)
    s.outbox.start()
    s.uploader = Uploader(s.store, s.config, s.clock, kinds=s.outbox.sendable_kinds)
    s.outbox.sending_configured = lambda: s.uploader.configured
    s.on_reconfigure.append(s._reconfigure_uploads)
    s.exports = Exports(s)
