"""``tagstat purge``: delete what was collected, keep the settings, start a new identity.

Runs in the daemon under the service's lock, so no poll, checkpoint, period
close or status change interleaves. In order: note whether any usage report of
the current ``user_id`` left this computer (delivered, exported, or attempted:
an answer can be lost); cancel the reports still waiting (audited); drop the
sessions open in memory without saving them, so the next checkpoint cannot
write a purged session back, and start a fresh recorder (new baselines, new
session ids); make a new ``user_id``; if reports did leave, queue a deletion
request for the old ``user_id`` through the outbox, exactly as an opt-out does;
and last delete the collected rows and rewrite the database file
(``Store.purge_collected``), so no copy of them is left in it, its WAL or SHM.
Settings, consent, the status and its history stay.
"""

import logging

from tagstat.recorder import Recorder

log = logging.getLogger(__name__)

WHY = "purged"  # the audit detail of reports a purge cancels


def purge(service) -> dict:
    """Purge the collected data of ``service`` (a ``tagstat.service.Service``); what it did."""
    with service.lock:
        old_user = service.keeper.user_id
        left = service.outbox.reports_left(old_user) if service.outbox else False
        cancelled = service.outbox.cancel_waiting(WHY) if service.outbox else 0
        service.counters.clear()  # counts from before the purge
        service.writes.clear()  # and what a full disk held back
        new_user = service.keeper.rotate_user_id()
        deletion = service.outbox.request_deletion(old_user) if left else None
        if service.outbox is not None:
            service.outbox.restart_period()
        try:
            removed = service.store.purge_collected()
        finally:
            # The trackers hold open sessions and the recorder a device cache that every
            # checkpoint writes: replace them unsaved, after the rows are gone (a new
            # recorder resumes the open sessions it finds). The poller keeps its devices
            # open, and its message positions, so nothing already read is read again.
            service.recorder = Recorder(service.writes, service.config.idle_timeout_s)
    if deletion and service.uploader is not None:
        service.uploader.wake()
    log.info("purge: %d waiting reports cancelled, new user id made%s", cancelled,
             f", deletion request {deletion} queued" if deletion else "")  # fmt: skip
    return {
        "removed": removed,
        "cancelled_reports": cancelled,
        "user_id": new_user,
        "deletion_request": deletion,
    }
