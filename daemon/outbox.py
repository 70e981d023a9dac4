"""What gets uploaded and when: period reports, outbox limits and opting out.

Pure logic over the store; it never touches the network (``tagstat.uploader``
does, on its own thread). Under ``CollectingAndUploading`` time is cut into
upload periods: the first starts at the switch to that status, each lasts
``upload_interval_s``, and the last ends at a clean shutdown. Closing a period
builds its report with the same builder as ``getUsageStatisticsReport()``
(status-2 data since the period start only), stores its exact JSON bytes in
the outbox before anyone tries to send it, and starts the next period; an
empty period is skipped. Leaving status 2 cancels the waiting reports, queues
one deletion request for the current ``user_id`` if a report of it left the
machine (or may have: delivered, exported or attempted), and makes a new one. The
caller (the service) holds its lock around these calls, so they are cheap:
one set of SQLite queries, no I/O beyond the database.
"""

import datetime as dt
import logging
from collections.abc import Callable

from tagstat.clock import Clock, iso, parse_iso
from tagstat.config import Config
from tagstat.records import OutboxEntry
from tagstat.report import build_report, deletion_request, report_json
from tagstat.status import UsageStatisticsStatus

log = logging.getLogger(__name__)

PERIOD_KEY = "upload_period_start"  # in the store's settings: ISO stamp, or null
UPLOADING = UsageStatisticsStatus.CollectingAndUploading


class Outbox:
    def __init__(
        self,
        store,
        keeper,
        clock: Clock,
        config: Config,
        host: Callable[[], dict | None] = lambda: None,
        shape: Callable[[dict], dict] = lambda report: report,
    ):
        self._store = store
        self._keeper = keeper
        self._clock = clock
        self._config = config
        self._host = host  # must not block: it runs on the poll thread
        # Leaves out the fields the user did not agree to upload (tagstat.consent).
        self._shape = shape
        # Whether an uploader is configured that may be sending a due report right now
        # (it takes no lock of ours); the service wires it to the uploader.
        self.sending_configured: Callable[[], bool] = lambda: False

    def reconfigure(self, config: Config) -> None:
        self._config = config  # a new interval applies to the period in progress

    # -- state -------------------------------------------------------------------------

    def uploading(self) -> bool:
        return self._keeper.effective == UPLOADING  # never while a kill switch is in force

    def sendable_kinds(self) -> tuple[str, ...]:
        """Deletion requests go out whatever the status; usage reports only with consent.

        A kill switch (tagstat.killswitch) stops every upload: nothing leaves the machine.
        """
        if self._keeper.forced_by is not None:
            return ()
        return ("usage", "deletion") if self.uploading() else ("deletion",)

    def period_start(self) -> dt.datetime | None:
        stamp = self._store.get_setting(PERIOD_KEY)
        return parse_iso(stamp) if stamp else None

    def _set_period_start(self, at: dt.datetime | None) -> None:
        self._store.set_setting(PERIOD_KEY, iso(at) if at else None)

    def seconds_to_period_end(self) -> float | None:
        """How long until the current period closes; None outside status 2."""
        start = self.period_start()
        if not self.uploading() or start is None:
            return None
        end = start + dt.timedelta(seconds=self._config.upload_interval_s)
        return max(0.0, (end - self._clock.utc_now()).total_seconds())

    def start(self) -> None:
        """Bring the outbox in line with the status after a (re)start."""
        if self._keeper.forced_by is not None:
            return  # a kill switch pauses uploads; it withdraws no consent and cancels nothing
        if self.uploading():
            if self.period_start() is None:
                self._set_period_start(self._clock.utc_now())
            return
        # A crash between a status change and its opt-out leaves reports waiting
        # that the user no longer agrees to send: they go, and so does the period.
        self._cancel_usage("status is not CollectingAndUploading")
        if self.period_start() is not None:  # no write when none is needed (a full disk)
            self._set_period_start(None)

    # -- periods -----------------------------------------------------------------------

    def tick(self) -> None:
        """Close the period if it is over (called from the poll loop)."""
        left = self.seconds_to_period_end()
        if left is not None and left <= 0:
            self.close_period()

    def close_period(self) -> str | None:
        """Store the period's report and start the next; the report id, or None if empty."""
        start, now = self.period_start(), self._clock.utc_now()
        if not self.uploading() or start is None:
            return None
        report = self.usage_report(start, now)
        if not any(report.get(k) for k in ("sessions", "messages", "devices", "measurements")):
            self._set_period_start(now)
            log.debug("upload period from %s is empty; nothing to send", iso(start))
            return None
        # The report and the next period's start in one transaction: if the disk is full,
        # neither is written and the period closes again later, whole.
        self._enqueue("usage", report, quota_exempt=False, next_period=now)
        log.info("queued report %s for upload (period from %s)", report["report_id"], iso(start))
        return report["report_id"]

    def usage_report(self, since: dt.datetime, now: dt.datetime, host: dict | None = None) -> dict:
        """The report of status-2 data since ``since``: what the next upload would hold."""
        return self._shape(build_report(
            self._store,
            user_id=self._keeper.user_id,
            status=self._keeper.current,
            host=host if host is not None else self._host(),
            now=now,
            since=since,
            min_status=int(UPLOADING),
        ))  # fmt: skip

    # -- status changes ------------------------------------------------------------------

    def status_changed(
        self, old: UsageStatisticsStatus, new: UsageStatisticsStatus, at: dt.datetime | None = None
    ) -> None:
        """``at``: the instant of the switch (the service's last reading before it)."""
        if new == UPLOADING and old != UPLOADING:
            # Data from before this moment is never uploaded: the period starts now.
            self._set_period_start(at or self._clock.utc_now())
        elif old == UPLOADING and new != UPLOADING:
            self.opt_out()

    def restart_period(self) -> None:
        """Start the upload period now (after a purge: nothing before it is left)."""
        if self.uploading():
            self._set_period_start(self._clock.utc_now())

    def opt_out(self) -> None:
        """Cancel waiting reports, ask for deletion of this user's if any left the machine,
        and make a new user id."""
        user_id = self._keeper.user_id
        left = self.reports_left(user_id)  # before cancelling: a due one may be on the wire
        cancelled = self._cancel_usage("consent withdrawn")
        report_id = self.request_deletion(user_id) if left else None
        self._keeper.rotate_user_id()
        self._set_period_start(None)
        log.info(
            "upload consent withdrawn: %d waiting reports cancelled, %s, new user id made",
            cancelled,
            f"deletion request {report_id} queued"
            if report_id
            else "no deletion request (no report of this user id left the computer)",
        )

    def reports_left(self, user_id: str) -> bool:
        """Whether a usage report of ``user_id`` reached, or may be reaching, a collector:
        delivered, exported, attempted (an answer can be lost), or due while an uploader
        is configured (it may be on the wire now)."""
        if self._store.outbox_usage_left(user_id):
            return True
        if not self.sending_configured():
            return False
        due = self._store.outbox_next_due(self._clock.utc_now(), ("usage",))
        return due is not None and due.user_id == user_id

    def request_deletion(self, user_id: str) -> str:
        """Queue a request that the collector delete every report of ``user_id``; its id.

        Sent whatever the status (it carries ids and a time only), never dropped by
        the outbox limits. Also used by a purge (``tagstat.purge``).
        """
        request = deletion_request(user_id=user_id, now=self._clock.utc_now())
        self._enqueue("deletion", request, quota_exempt=True)
        return request["report_id"]

    def cancel_waiting(self, why: str) -> int:
        """Cancel (and audit) the usage reports still waiting to be sent; how many."""
        return self._cancel_usage(why)

    def _cancel_usage(self, why: str) -> int:
        ids = [e.report_id for e in self._store.outbox_pending("usage")]
        return self._store.outbox_retire(ids, "cancelled", self._clock.utc_now(), why) if ids else 0

    # -- the queue -----------------------------------------------------------------------

    def _enqueue(self, kind: str, report: dict, *, quota_exempt: bool, next_period=None) -> None:
        body = report_json(report).encode("utf-8")
        now = self._clock.utc_now()
        settings = {PERIOD_KEY: iso(next_period)} if next_period is not None else None
        self._store.outbox_add(
            OutboxEntry(
                report_id=report["report_id"],
                kind=kind,
                user_id=report["user_id"],
                created_at=now,
                body=body,
                size_bytes=len(body),
                state="pending",
                attempts=0,
                next_attempt_at=now,
                last_error=None,
                delivered_at=None,
                quota_exempt=quota_exempt,
            ),
            settings=settings,
        )
        if not quota_exempt:
            self.enforce_limits()

    def enforce_limits(self) -> int:
        """Drop the oldest waiting usage reports beyond the count and byte limits."""
        waiting = [e for e in self._store.outbox_pending("usage") if not e.quota_exempt]
        count, size = len(waiting), sum(e.size_bytes for e in waiting)
        drop = []
        for entry in waiting:  # oldest first
            if count <= self._config.outbox_max_reports and size <= self._config.outbox_max_bytes:
                break
            drop.append(entry.report_id)
            count, size = count - 1, size - entry.size_bytes
        if not drop:
            return 0
        why = (
            f"outbox limit ({self._config.outbox_max_reports} reports, "
            f"{self._config.outbox_max_bytes} bytes)"
        )
        dropped = self._store.outbox_retire(drop, "dropped", self._clock.utc_now(), why)
        log.warning("dropped %d unsent reports, oldest first: %s", dropped, why)
        return dropped

    def next_to_send(self) -> OutboxEntry | None:
        """The entry the uploader will send next: the oldest due one, else the soonest."""
        kinds = self.sendable_kinds()
        due = self._store.outbox_next_due(self._clock.utc_now(), kinds)
        if due is not None:
            return due
        waiting = [e for e in self._store.outbox_pending() if e.kind in kinds]
        return min(waiting, key=lambda e: (e.next_attempt_at, e.created_at), default=None)

    def summary(self) -> dict:
        """For ``tagstat status``: the endpoint, what waits, and the last delivery."""
        pending = self._store.outbox_pending()
        last = self._store.outbox_last_delivered()
        return {
            "endpoint": self._config.upload_url or None,
            "pending": len(pending),
            "pending_deletions": sum(e.kind == "deletion" for e in pending),
            "last_delivery": iso(last) if last else None,
            "period_start": iso(p) if (p := self.period_start()) else None,
        }
