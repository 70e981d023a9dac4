"""Consent to upload, per report schema version: what the user agreed to, and when to ask.

The record lives in the store's settings (``consent``): the schema version
whose fields the user agreed to upload (``agreed_version``, None for "no"),
the newest schema version the last decision covered (``asked_version``), the
last answer, its time, and who gave it (``by``: ``prompt`` for ``tagstat
setup`` and the first interactive run, through the ``set_consent`` op;
``cli`` for ``tagstat status``; ``api`` for a program's
``setUsageStatisticsStatus``; ``policy`` for a site's ``max_status``). Status
changes count: switching to ``CollectingAndUploading`` agrees to the current
schema, leaving it withdraws. ``tagstat status``, ``explain`` and ``setup``
all word the record with ``tagstat.explain.consent_sentence``.

Rules: a question is never asked twice for the same schema version, whatever
the answer; after a "no" it is not asked again at all (nothing is uploaded,
so new fields need no consent); when the schema grows while uploading, only
the new fields are asked about, and until they are agreed to, uploads leave
them out (``tagstat.fields.Schema.filter``). An install that uploads without a
record (set before consent was versioned, or by a site's ``initial_status``)
counts as having agreed to version 1, the schema of that time.
"""

import dataclasses

from tagstat.clock import iso
from tagstat.fields import Schema
from tagstat.status import UsageStatisticsStatus

CONSENT_KEY = "consent"
# Who recorded a decision: the prompt, `tagstat status`, a program's API call, a site policy.
BY = ("prompt", "cli", "api", "policy")
LEGACY_VERSION = 1  # what an install uploading without a consent record agreed to
UPLOADING = UsageStatisticsStatus.CollectingAndUploading


@dataclasses.dataclass(frozen=True)
class Consent:
    agreed_version: int | None = None
    asked_version: int | None = None
    upload: bool = False
    at: str | None = None
    by: str | None = None  # one of BY; None in records written before it was kept

    @classmethod
    def from_setting(cls, raw) -> "Consent":
        if not isinstance(raw, dict):
            return cls()
        ints = {
            k: raw.get(k) if isinstance(raw.get(k), int) else None
            for k in ("agreed_version", "asked_version")
        }
        by = raw.get("by") if raw.get("by") in BY else None
        return cls(**ints, upload=raw.get("upload") is True, at=raw.get("at"), by=by)


class ConsentKeeper:
    def __init__(self, store, clock, schema: Schema):
        self._store = store
        self._clock = clock
        self.schema = schema

    def get(self) -> Consent:
        return Consent.from_setting(self._store.get_setting(CONSENT_KEY))

    def agreed(self, status: UsageStatisticsStatus) -> int | None:
        """The schema version whose fields may be uploaded under ``status`` (stored)."""
        consent = self.get()
        if consent.agreed_version is not None:
            return consent.agreed_version
        return LEGACY_VERSION if status == UPLOADING else None

    def shape_upload(self, report: dict, status: UsageStatisticsStatus) -> dict:
        """``report`` as it may be uploaded: only fields of the agreed schema version."""
        return self.schema.filter(report, self.agreed(status) or LEGACY_VERSION)

    def needs(self, status: UsageStatisticsStatus) -> str | None:
        """What to ask: "first_run", "new_fields", or None (nothing to ask)."""
        consent, version = self.get(), self.schema.version
        if consent.asked_version is not None and consent.asked_version >= version:
            return None  # never twice for the same version
        agreed = self.agreed(status)
        if status == UPLOADING and agreed is not None:
            return "new_fields" if agreed < version else None
        return "first_run" if consent.asked_version is None else None

    def record(self, *, agreed: int | None, asked: int, by: str, at=None) -> Consent:
        if by not in BY:
            raise ValueError(f"unknown consent source {by!r}; known: {', '.join(BY)}")
        old = self.get()
        consent = Consent(
            agreed_version=agreed,
            asked_version=max(asked, old.asked_version or 0),
            upload=agreed is not None,
            at=iso(at or self._clock.utc_now()),
            by=by,
        )
        self._store.set_setting(CONSENT_KEY, dataclasses.asdict(consent))
        return consent

    def status_changed(
        self, old: UsageStatisticsStatus, new: UsageStatisticsStatus, *, by: str, at=None
    ) -> None:
        """Switching to uploading agrees to the current schema; leaving it withdraws."""
        version = self.schema.version
        if new == UPLOADING and old != UPLOADING:
            self.record(agreed=version, asked=version, by=by, at=at)
        elif old == UPLOADING and new != UPLOADING:
            self.record(agreed=None, asked=version, by=by, at=at)

    def describe(self, status: UsageStatisticsStatus) -> dict:
        """For ``get_status``: the record, what to ask, and the fields that need consent."""
        consent, agreed = self.get(), self.agreed(status)
        return {
            "schema_version": self.schema.version,
            "agreed_version": agreed,
            "asked_version": consent.asked_version,
            "answered_at": consent.at,
            "answered_by": consent.by,
            "needs": self.needs(status),
            # newer than the agreed version: uploads leave these out
            "left_out": self.schema.new_fields(agreed) if agreed is not None else [],
        }
