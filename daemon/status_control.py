"""Changing the status: the consent boundary, policy caps, kill switches and consent answers.

Part of the service (``tagstat.service.Service`` inherits it): every way the
status changes goes through ``_switch``, which reads every device once more
under the old status first, so the poll interval that spans the switch is
split at the switch and nothing measured before consent to upload (or after
leaving it) is ever uploaded (docs/DATA.md, "The consent boundary"). Then
the consent record, the recorder, the poller and the outbox learn of the
change. The caller's lock (the service's) is held throughout.
"""

import datetime as dt
import logging

from tagstat.errors import PolicyError
from tagstat.killswitch import daemon_switch, refusal
from tagstat.status import UsageStatisticsStatus

log = logging.getLogger("tagstat.service")


class StatusControl:
    """The status-changing half of the controller; the service provides its attributes."""

    def set_status(self, status, persistent: bool, origin: str = "api") -> dict:
        """Set the status; ``origin`` says who asked ("api", "cli", "prompt"), for the record."""
        status = UsageStatisticsStatus.parse(status)
        if self.keeper.forced_by is not None and status != UsageStatisticsStatus.Disabled:
            raise refusal(self.keeper.forced_by, status.name)  # stored, it would be a surprise
        cap = UsageStatisticsStatus.parse(self.config.max_status)
        if status > cap:
            raise PolicyError(
                f"status {status.name} is above this site's cap {cap.name} "
                f"(max_status in the tagstat configuration); ask the lab's admin"
            )
        with self.lock:
            self._switch(
                status, lambda at: self.keeper.set(status, persistent, reason=origin, at=at),
                origin,
            )  # fmt: skip
            return self.keeper.describe()

    def _switch(self, target, change, origin: str) -> None:
        """Change the stored status to ``target`` with ``change(at)`` at one instant ``at``.

        The consent boundary (docs/DATA.md): if tagstatd is collecting, every device is
        read first, under the status in force, so the poll interval that ends at the
        switch is counted under the status it was measured in; ``at`` is that reading's
        stamp, and what is measured from it on belongs to the new status. Before the
        first poll there is nothing to read (a status above ``max_status`` at start is
        lowered before anything is collected under it).
        """
        old = self.keeper.current
        since_mono = self.clock.monotonic()
        collecting = self.keeper.effective != UsageStatisticsStatus.Disabled
        if target != old and collecting and self.polls > 0:
            at = self.poll_once()
            self.counters.flush(self.writes, at)  # counts until now belong to the old status
        else:
            at = self.clock.utc_now()
        change(at)
        self._status_changed(old, self.keeper.current, at, since_mono, origin)

    def _status_changed(self, old, status, at: dt.datetime, since_mono: float, origin) -> None:
        if status == old:
            return
        log.info("status changed from %s to %s (%s)", old.name, status.name, origin)
        if self.consent is not None:
            self.consent.status_changed(old, status, by=origin, at=at)
        if status == UsageStatisticsStatus.Disabled:
            self.recorder.close_all("disabled", forget=True)
            self.poller.forget_all()
        else:
            # Baselines older than the switch reading are dropped (a device whose reading
            # failed just now), and sensors, calibration and configuration are read again
            # at the next poll: nothing measured before the switch goes into a session,
            # a sensor summary or a device document of the new status.
            self.recorder.status_changed("status_change", since_mono)
            self.poller.read_all_documents()
            self.hostinfo.start()
        if self.outbox is not None:  # after close_all: sessions end under the old status
            self.outbox.status_changed(old, status, at=at)
            self.uploader.wake()

    # -- kill switches and consent (tagstat.killswitch, tagstat.consent) -----

    def apply_kill_switches(self) -> None:
        """Look at the environment and allow_in_ci again (at start and on reload)."""
        with self.lock:
            before, was = self.keeper.effective, self.keeper.forced_by
            now = daemon_switch(self.environ, allow_in_ci=self.config.allow_in_ci)
            self.keeper.forced_by = now
            if now is not None and now != was:
                log.warning("status Disabled, %s; the stored status %s is kept", now.reason(),
                            self.keeper.current.name)  # fmt: skip
            elif was is not None and now is None:
                log.info("kill switch lifted: status %s again", self.keeper.current.name)
            if self.keeper.effective == before:
                return
            if self.keeper.effective == UsageStatisticsStatus.Disabled:
                self.recorder.close_all("disabled", forget=True)
                self.poller.forget_all()
            else:
                self.hostinfo.start()
                if self.outbox is not None:
                    self.outbox.start()
        if self.uploader is not None:
            self.uploader.wake()

    def consent_state(self) -> dict:
        state = self.consent.describe(self.keeper.current)
        cap = UsageStatisticsStatus.parse(self.config.max_status)
        state["upload_allowed"] = cap == UsageStatisticsStatus.CollectingAndUploading
        return state

    def set_consent(self, version: int, upload: bool, new_fields: bool, dry_run: bool) -> dict:
        """Record an answer to the consent question about report schema ``version``.

        "yes" agrees to upload that schema's fields and sets CollectingAndUploading;
        "no" to the whole question leaves (or keeps out of) it; "no" to new fields
        only keeps uploading the fields agreed before. ``dry_run`` checks, records nothing.
        """
        schema = self.consent.schema
        if isinstance(version, bool) or version != schema.version:
            raise ValueError(
                f"tagstatd's report schema is version {schema.version}, the answer was about "
                f"{version!r}; restart tagstatd after upgrading tagstat"
            )
        uploading = UsageStatisticsStatus.CollectingAndUploading
        with self.lock:
            if upload and self.keeper.forced_by is not None:
                raise refusal(self.keeper.forced_by, uploading.name)
            if dry_run:
                return self.get_status()
            if upload:
                if self.keeper.current != uploading or self.keeper.is_temporary:
                    self.set_status(uploading, persistent=True, origin="prompt")
                self.consent.record(agreed=version, asked=version, by="prompt")
            elif new_fields and self.keeper.current == uploading:
                agreed = self.consent.agreed(self.keeper.current)
                self.consent.record(agreed=agreed, asked=version, by="prompt")
            else:
                if self.keeper.current == uploading:
                    self.set_status(UsageStatisticsStatus.Collecting, persistent=True,
                                    origin="prompt")  # fmt: skip
                self.consent.record(agreed=None, asked=version, by="prompt")
            log.info("consent recorded for report schema %d: upload %s%s", version,
                     "yes" if upload else "no", " (new fields)" if new_fields else "")  # fmt: skip
            return self.get_status()

    # -- policy (max_status) ------------------------------------------------------

    def enforce_status_cap(self) -> None:
        """Lower a status above ``max_status`` to it (recorded with reason "policy")."""
        cap = UsageStatisticsStatus.parse(self.config.max_status)
        with self.lock:
            if self.keeper.current <= cap and not self.keeper.is_temporary:
                return
            old = self.keeper.current
            self._switch(min(old, cap), lambda at: self.keeper.lower_to(cap, "policy", at=at),
                         "policy")  # fmt: skip
            if self.keeper.current != old:
                log.warning("status lowered from %s to %s: max_status is %s",
                            old.name, self.keeper.current.name, cap.name)  # fmt: skip
