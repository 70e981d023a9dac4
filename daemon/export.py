"""``tagstat export FILE``: the pending uploads in one file, for labs without a network.

The file is JSON Lines: a header line
``{"format":"tagstat-export","version":1,"exported_at":STAMP,"reports":N}``,
then N lines, each the exact bytes the uploader would send (before gzip) for
one waiting usage report or deletion request, oldest first. ``tagstat-collector
import`` reads it (``tagstat.collector.importer``). What is exported is what
would be uploaded: the outbox's pending entries of the kinds the consent
allows (usage reports only under ``CollectingAndUploading``; the current
upload period is closed first, so the file holds everything collected with
consent up to now).

Two steps, so a file that could not be written never costs a report: the
daemon hands out the entries with a token (``Exports.begin``); the CLI writes
them to a temporary file beside FILE (mode 0600: it holds the user id) and
flushes it; then ``Exports.commit`` marks them ``exported`` and audits each as
delivered-by-export, all or nothing, refusing when any was cancelled or purged
meanwhile (consent withdrawn: the file must not be used); only then is the
file moved into place (never over an existing file without ``--force``).
"""

import datetime as dt
import json
import os
import secrets
import threading
from pathlib import Path

from tagstat.clock import iso
from tagstat.errors import TagstatError
from tagstat.fsutil import fsync_dir

FORMAT = "tagstat-export"
VERSION = 1
AUDIT_DETAIL = "delivered-by-export"
MAX_OPEN_EXPORTS = 8  # begun and not yet committed; older ones are forgotten


class ExportError(TagstatError):
    """An export cannot be written or committed; the message says why and what to do."""


# -- in the daemon ------------------------------------------------------------------------


class Exports:
    """The daemon's half: hand out the pending uploads, then mark them exported."""

    def __init__(self, service):
        self._service = service
        self._lock = threading.Lock()
        self._open: dict[str, list[str]] = {}  # token -> report ids handed out

    def begin(self) -> dict:
        s = self._service
        with s.lock:
            s._save_pending()  # open sessions' latest totals and the daemon's counts go in
            s.outbox.close_period()
            kinds = s.outbox.sendable_kinds()
            entries = [e for e in s.store.outbox_pending() if e.kind in kinds]
            now = s.clock.utc_now()
        token = secrets.token_hex(16)
        with self._lock:
            self._open[token] = [e.report_id for e in entries]
            while len(self._open) > MAX_OPEN_EXPORTS:
                del self._open[next(iter(self._open))]
        return {
            "token": token,
            "exported_at": iso(now),
            "reports": [
                {"report_id": e.report_id, "kind": e.kind, "body": e.body.decode("utf-8")}
                for e in entries
            ],
        }

    def commit(self, token: str) -> dict:
        with self._lock:
            ids = self._open.pop(token, None)
        if ids is None:
            raise ExportError(
                "tagstatd does not know this export (it restarted, or the export was "
                "already committed); nothing was marked: export again"
            )
        s = self._service
        with s.lock:
            states = s.store.outbox_states(ids)
            gone = [i for i in ids if states.get(i, "cancelled") == "cancelled"]
            if gone:
                raise ExportError(
                    f"{len(gone)} of the {len(ids)} reports were cancelled or purged while "
                    "the file was written (upload consent withdrawn, or a purge); nothing "
                    "was marked: export again"
                )
            marked = s.store.outbox_mark_exported(ids, s.clock.utc_now(), AUDIT_DETAIL)
        return {"exported": marked, "already_delivered": len(ids) - marked}


# -- in the CLI -----------------------------------------------------------------------------


def check_target(path: Path, force: bool) -> None:
    """Refuse early what the final move would refuse: an existing file without --force."""
    if path.is_dir():
        raise ExportError(f"{path} is a directory; name a file")
    if path.exists() and not force:
        raise ExportError(f"{path} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise ExportError(f"directory {path.parent} does not exist")


def export_lines(begun: dict) -> list[bytes]:
    """The file's lines (each ending in a newline): the header, then each body as it is."""
    reports = begun.get("reports")
    if not isinstance(reports, list):
        raise ExportError("garbled answer from tagstatd: no list of reports")
    bodies = []
    for r in reports:
        body = r.get("body") if isinstance(r, dict) else None
        if not isinstance(body, str) or "\n" in body:
            raise ExportError("garbled answer from tagstatd: a report body is not one line")
        bodies.append(body.encode("utf-8"))
    exported_at = begun.get("exported_at")
    if not isinstance(exported_at, str):
        exported_at = iso(dt.datetime.now(dt.UTC))
    header = {"format": FORMAT, "version": VERSION, "exported_at": exported_at,
              "reports": len(bodies)}  # fmt: skip
    header_line = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return [line + b"\n" for line in [header_line, *bodies]]


def write_temporary(path: Path, lines: list[bytes]) -> Path:
    """Write ``lines`` to a new file beside ``path`` with mode 0600, flushed to disk."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: the file holds the user id
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def place(tmp: Path, path: Path, force: bool) -> None:
    """Move the finished file to ``path``: atomically, and never over a file without force."""
    try:
        if force:
            os.replace(tmp, path)
        else:
            _move_no_clobber(tmp, path)
    except OSError as exc:
        raise ExportError(
            f"the export is complete in {tmp} but could not be moved to {path}: "
            f"{exc.strerror or exc}; the reports are marked exported, so keep {tmp}"
        ) from exc
    fsync_dir(path.parent)


def _move_no_clobber(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # fails if path exists, unlike rename
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT on a USB stick)
        if path.exists():
            raise FileExistsError(17, "File exists", str(path)) from None
        os.rename(tmp, path)
        return
    tmp.unlink()
