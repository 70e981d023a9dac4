"""``tagstat-collector import FILE``: ingest a ``tagstat export`` file from an offline lab.

The file (format in docs/DATA.md, written by ``tagstat.export``) is JSON Lines:
a header naming the format and version, then one report body per line, the
exact bytes the daemon would have uploaded. Each body goes through the same
path as ``POST /v1/reports``: the size limit of a decoded body,
``intake.parse_json``, ``schema.parse_report`` and ``CollectorStore.ingest``,
so a report is stored once whichever way, and how often, it arrives (a
duplicate is counted, not stored again), and a deletion request is carried
out. A bad line is rejected with its line number and the reason and the rest
is still imported; a file that is not an export is refused before anything is
stored. The file is read line by line, so its size does not matter.
"""

import dataclasses
import datetime as dt
import json
from pathlib import Path

from tagstat.collector.errors import CollectorError, Rejected
from tagstat.collector.intake import Limits, parse_json
from tagstat.collector.schema import parse_report
from tagstat.collector.storage import CollectorStore

FORMAT = "tagstat-export"  # as tagstat.export writes it
VERSION = 1
MAX_HEADER_BYTES = 4096
_READ_STEP_BYTES = 1 << 20
DEFAULT_LIMITS = Limits()  # as POST /v1/reports


@dataclasses.dataclass
class ImportResult:
    """Counts per outcome, and each rejected line with its reason."""

    declared: int = 0  # how many reports the header says the file holds
    stored: int = 0
    duplicate: int = 0
    deleted: int = 0  # deletion requests carried out
    removed_reports: int = 0  # reports those deletion requests removed
    discarded: int = 0  # reports of a user deleted earlier
    rejected: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    @property
    def seen(self) -> int:
        return self.stored + self.duplicate + self.deleted + self.discarded + len(self.rejected)

    def to_json(self) -> dict:
        return {
            "declared": self.declared,
            "stored": self.stored,
            "duplicate": self.duplicate,
            "deleted": self.deleted,
            "removed_reports": self.removed_reports,
            "discarded": self.discarded,
            "rejected": [{"line": n, "reason": why} for n, why in self.rejected],
        }


def import_file(
    path: Path,
    store: CollectorStore,
    *,
    limits: Limits = DEFAULT_LIMITS,
    utc_now=lambda: dt.datetime.now(dt.UTC),
) -> ImportResult:
    """Ingest every report in the export file at ``path`` into ``store``."""
    result = ImportResult()
    try:
        with open(path, "rb") as f:
            result.declared = _read_header(f, path)
            for number, body in _bodies(f, limits.decoded_bytes):
                _ingest_line(store, number, body, result, utc_now())
    except OSError as exc:
        raise CollectorError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return result


def _read_header(f, path: Path) -> int:
    line = f.readline(MAX_HEADER_BYTES + 1)
    not_export = f"{path} is not a tagstat export file"
    try:
        header = json.loads(line.decode("utf-8"))
    except ValueError:
        raise CollectorError(f"{not_export} (its first line is not a JSON header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CollectorError(f'{not_export} (the header has no "format": "{FORMAT}")')
    if header.get("version") != VERSION:
        raise CollectorError(
            f"{path}: export version not supported (this collector reads version {VERSION})"
        )
    declared = header.get("reports")
    return declared if isinstance(declared, int) and not isinstance(declared, bool) else 0


def _bodies(f, limit_bytes: int):
    """(line number, body or None if too large) for each non-blank line after the header."""
    number = 1
    while True:
        line = f.readline(limit_bytes + 2)  # the body, its newline, one byte to see "too large"
        if not line:
            return
        number += 1
        if not line.endswith(b"\n") and len(line) > limit_bytes + 1:
            while (rest := f.readline(_READ_STEP_BYTES)) and not rest.endswith(b"\n"):
                pass  # skip the rest of an oversized line without holding it
            yield number, None
            continue
        body = line.rstrip(b"\r\n")  # a CRLF copy of the file still gives the exact bytes
        if len(body) > limit_bytes:
            yield number, None
        elif body.strip():
            yield number, body


def _ingest_line(store, number: int, body: bytes | None, result: ImportResult, now) -> None:
    try:
        if body is None:
            raise Rejected(413, "report is larger than the collector's body limit")
        report = parse_report(parse_json(body))
    except Rejected as exc:
        result.rejected.append((number, exc.reason))
        return
    outcome = store.ingest(report, body, len(body), now)
    if outcome.status == "stored":
        result.stored += 1
    elif outcome.status == "duplicate":
        result.duplicate += 1
    elif outcome.status == "discarded":
        result.discarded += 1
    else:  # "deleted"
        result.deleted += 1
        result.removed_reports += outcome.removed_reports


def format_result(path: Path, result: ImportResult) -> str:
    """What the CLI prints: counts, then one line per rejected report."""
    lines = [
        f"imported {path}: {result.stored} stored, {result.duplicate} duplicate, "
        f"{result.deleted} deletion request(s) carried out ({result.removed_reports} "
        f"report(s) removed), {result.discarded} discarded (user deleted), "
        f"{len(result.rejected)} rejected"
    ]
    if result.seen != result.declared:
        lines.append(
            f"warning: the header announces {result.declared} report(s), the file holds "
            f"{result.seen}: it may be cut short or edited"
        )
    lines += [f"line {n}: rejected: {why}" for n, why in result.rejected]
    return "\n".join(lines)
