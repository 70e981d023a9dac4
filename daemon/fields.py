"""The report's fields and the schema version that introduced each: versioned consent.

``REPORT_FIELDS`` maps every field path of a usage report (as written in the
"since" column of ``docs/DATA.md``: ``devices[].model``, ``host.cpu.brand``)
to the report schema version that introduced it; a test checks the two agree
in both directions, and that every field the builder makes is listed. A user
agrees to upload the fields of one schema version (``tagstat.consent``);
``Schema.filter`` leaves out every field newer than that before a report is
stored for upload, and every field not listed at all, so a field added to the
builder but not here is never uploaded. A new field is added here with
``SCHEMA_VERSION + 1`` (and ``tagstat.report.SCHEMA_VERSION`` bumped): users who
agreed earlier keep uploading the older fields, and are asked about the new
ones only.

Tests need a schema newer than the real one without changing it:
``TAGSTAT_TEST_SCHEMA`` (JSON ``{"version": 2, "since": {"measurements[]": 2}}``)
raises the version and the ``since`` of listed fields, in tagstatd and the CLI
alike. It can only make fields newer, so it can only leave more out.
"""

import dataclasses
import json
import os
from collections.abc import Mapping

from tagstat.errors import ConfigError
from tagstat.report import SCHEMA_VERSION

TEST_SCHEMA_ENV = "TAGSTAT_TEST_SCHEMA"

# path -> the schema version that introduced it, in docs/DATA.md's order.
REPORT_FIELDS: dict[str, int] = {
    "schema_version": 1, "kind": 1, "report_id": 1, "generated_at": 1,
    "period": 1, "period.start": 1, "period.end": 1,
    "user_id": 1, "status": 1,
    "software": 1, "software.tagstat": 1, "software.python": 1,
    "host": 1, "host.cpu": 1, "host.cpu.vendor": 2, "host.cpu.brand": 1, "host.cpu.family": 2,
    "host.cpu.model": 2, "host.cpu.logical_processors": 2, "host.cpu.isa_features": 2,
    "host.ram_gib": 2, "host.os": 2, "host.os.family": 2, "host.os.distribution": 2,
    "host.os.version": 2,
    "devices[]": 1, "devices[].device_id": 1, "devices[].model": 1, "devices[].serial": 1,
    "devices[].usb_speed": 1, "devices[].firmware": 1, "devices[].calibration": 2,
    "devices[].calibration.status": 2, "devices[].calibration.age_days": 2,
    "devices[].calibration.channels": 2, "devices[].calibration.quantities": 2,
    "devices[].configuration": 1, "devices[].sensors": 1, "devices[].first_seen": 1,
    "devices[].last_seen": 1,
    "sessions[]": 1, "sessions[].session_id": 1, "sessions[].device_id": 1,
    "sessions[].start": 1, "sessions[].end": 1, "sessions[].duration_s": 1,
    "sessions[].bytes": 1, "sessions[].tags": 1, "sessions[].data_rate": 1,
    "sessions[].data_rate.min": 1, "sessions[].data_rate.avg": 1,
    "sessions[].data_rate.max": 1, "sessions[].usb_speed": 1,
    "sessions[].initial_sensors": 1, "sessions[].open": 1, "sessions[].end_reason": 1,
    "messages[]": 1, "messages[].device_id": 1,
    "messages[].level": 1, "messages[].text": 1, "messages[].count": 1,
    "messages[].first_seen": 1, "messages[].last_seen": 1,
    "measurements[]": 1, "measurements[].type": 1, "measurements[].count": 1,
    "measurements[].total_duration_s": 1, "measurements[].errors": 1,
    "measurements[].indicators": 1, "measurements[].config": 1,
    "daemon": 2, "daemon.read_errors": 2, "daemon.scan_errors": 2, "daemon.log_warnings": 2,
    "daemon.log_errors": 2,
}  # fmt: skip

# Subtrees whose keys the device (or the measurement lists, or tagstat.hostinfo's fixed
# feature table) define: one field each, kept or left out whole.
OPAQUE = frozenset(
    {
        "host.cpu.isa_features",
        "devices[].calibration.quantities",
        "devices[].configuration",
        "devices[].sensors",
        "sessions[].initial_sensors",
        "measurements[].errors",
        "measurements[].indicators",
        "measurements[].config",
    }
)


def parent(path: str) -> str | None:
    """``devices[].model`` -> ``devices[]``; ``host.cpu`` -> ``host``; top level -> None."""
    head, dot, _ = path.rpartition(".")
    return head if dot else None


@dataclasses.dataclass(frozen=True)
class Schema:
    """One report schema: its version and each field's ``since`` (raised to its parent's)."""

    version: int
    since: Mapping[str, int]

    def __post_init__(self):
        effective = {}
        for path, since in self.since.items():  # parents come before their children
            up = parent(path)
            effective[path] = max(since, effective.get(up, 0)) if up else since
        object.__setattr__(self, "since", effective)

    def new_fields(self, agreed: int | None) -> list[str]:
        """The fields newer than ``agreed`` (all of them for None), in document order."""
        return [p for p, v in self.since.items() if agreed is None or v > agreed]

    def filter(self, report: dict, agreed: int) -> dict:
        """``report`` without the fields newer than ``agreed`` or not listed at all."""
        out = self._walk(report, "", agreed)
        if "schema_version" in out:  # the report says which fields it may hold
            out["schema_version"] = min(self.version, agreed)
        return out

    def _walk(self, obj, prefix: str, agreed: int):
        if isinstance(obj, list):
            return [self._walk(item, prefix, agreed) for item in obj]
        if not isinstance(obj, dict):
            return obj
        out = {}
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, list) and path + "[]" in self.since:
                path += "[]"
            since = self.since.get(path)
            if since is None or since > agreed:
                continue  # newer than the consent, or unknown: never uploaded
            out[key] = value if path in OPAQUE else self._walk(value, path, agreed)
        return out


REAL = Schema(SCHEMA_VERSION, REPORT_FIELDS)


def current(env: Mapping[str, str] | None = None) -> Schema:
    """The schema in force: the real one, or the test overlay of ``TAGSTAT_TEST_SCHEMA``."""
    raw = (os.environ if env is None else env).get(TEST_SCHEMA_ENV)
    return REAL if not raw else _overlay(raw)


def _overlay(raw: str) -> Schema:
    bad = f"{TEST_SCHEMA_ENV} must be JSON "
    bad += '{"version": N, "since": {"field path": N, ...}} that only makes fields newer'
    try:
        spec = json.loads(raw)
        version, since = int(spec["version"]), dict(spec.get("since", {}))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ConfigError(bad) from None
    merged = dict(REPORT_FIELDS)
    for path, v in since.items():
        if path not in merged or not isinstance(v, int) or not merged[path] <= v <= version:
            raise ConfigError(f"{bad}; got {path!r}: {v!r}")
        merged[path] = v
    if version < SCHEMA_VERSION:
        raise ConfigError(f"{bad}; version {version} is older than {SCHEMA_VERSION}")
    return Schema(version, merged)
