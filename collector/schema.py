"""The report schema as the collector checks it: docs/DATA.md, plus ``kind`` and ``session_id``.

``parse_report`` turns a decoded JSON value into a ``UsageReport`` or a
``DeletionRequest`` holding what the collector stores in columns, or raises
``Rejected(400, reason)`` where the reason names the field by its path
(``sessions[2].data_rate.avg must be a number, got string``). Every field the
schema documents is checked for its type; fields it does not know are
tolerated, so a newer daemon of the same major schema version is still
accepted. Schema versions 1 and 2 are read: a daemon uploads the fields of the
version the user agreed to, so a version-1 report from a newer daemon lacks
the version-1 fields that version 2 dropped (``host.cpu.flags``,
``host.ram_bytes``, ``host.os`` as text, ``messages[].source``); the host
block's fields are therefore checked when present. Device-defined subtrees
(calibration, configuration, sensors) are only checked to be objects. Values
are never echoed in a reason.
"""

import dataclasses
import datetime as dt
import math
import re
import uuid

from tagstat.collector.errors import Rejected

SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
DAEMON_COUNTERS = ("read_errors", "scan_errors", "log_warnings", "log_errors")
KINDS = ("usage", "deletion")
STATUSES = ("Disabled", "Collecting", "CollectingAndUploading")
MAX_ID_CHARS = 128  # device_id and session_id; real ones are 16 hex digits and a UUID
MAX_MODEL_CHARS = 200
MAX_INT = 2**63 - 1  # SQLite's INTEGER; no count or size comes near it
# A Time Tagger serial in clear (as the daemon's masking defines it): never accepted.
_CLEAR_SERIAL = re.compile(r"\b\d{4}[0-9A-Z]{6}\b")
_JSON_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


@dataclasses.dataclass(frozen=True)
class Session:
    session_id: str
    device_id: str
    avg_bytes_per_s: float
    duration_s: float
    bytes_total: int
    open: bool


@dataclasses.dataclass(frozen=True)
class UsageReport:
    report_id: str  # canonical UUID text
    user_id: str
    generated_at: dt.datetime  # UTC
    models: dict[str, str]  # device_id -> model, from devices[]
    sessions: tuple[Session, ...]
    kind: str = "usage"


@dataclasses.dataclass(frozen=True)
class DeletionRequest:
    report_id: str
    user_id: str
    generated_at: dt.datetime
    kind: str = "deletion"


def parse_report(value) -> UsageReport | DeletionRequest:
    """The checked report; raises Rejected(400) naming the first problem found."""
    top = _Obj(value, "")
    version = top.integer("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise Rejected(400, "unsupported schema_version (this collector reads 1 and 2)")
    kind = top.text("kind")
    if kind not in KINDS:
        raise Rejected(400, "kind must be 'usage' or 'deletion'")
    report_id, user_id = top.uuid("report_id"), top.uuid("user_id")
    generated_at = top.time("generated_at")
    if kind == "deletion":
        return DeletionRequest(report_id, user_id, generated_at)
    _check_usage_header(top)
    devices = top.objs("devices")
    models = {d.text("device_id", max_chars=MAX_ID_CHARS): _device_model(d) for d in devices}
    sessions = tuple(_session(s) for s in top.objs("sessions"))
    for m in top.objs("messages"):
        _check_message(m)
    counters = top.obj("daemon", nullable=True) if "daemon" in top.value else None
    for name in DAEMON_COUNTERS if counters is not None else ():
        if name in counters.value:
            counters.integer(name, minimum=0)
    return UsageReport(report_id, user_id, generated_at, models, sessions)


def canonical_uuid(text) -> str | None:
    """``text`` as lower-case hyphenated UUID text, or None if it is not a UUID."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _check_usage_header(top: "_Obj") -> None:
    period = top.obj("period")
    period.time("start", nullable=True)
    period.time("end")
    if top.text("status") not in STATUSES:
        raise Rejected(400, "status must be one of " + ", ".join(STATUSES))
    software = top.obj("software")
    software.text("tagstat")
    software.text("python")
    host = top.obj("host", nullable=True)
    if host is not None:
        _check_host(host)


def _check_host(host: "_Obj") -> None:
    """Each field the report schema has (version 1 or 2), checked when present."""
    cpu = host.obj("cpu") if "cpu" in host.value else None
    if cpu is not None:
        for key in ("vendor", "brand"):
            _if_present(cpu, key, cpu.text)
        for key in ("family", "model"):
            _if_present(cpu, key, lambda k: cpu.integer(k, minimum=0, nullable=True))
        for key in ("cores", "logical_processors"):
            _if_present(cpu, key, lambda k: cpu.integer(k, minimum=0))
        _if_present(cpu, "cores_physical", lambda k: cpu.integer(k, minimum=0, nullable=True))
        if "isa_features" in cpu.value:
            features = cpu.obj("isa_features")
            for name in features.value:
                features.boolean(name)
        if "flags" in cpu.value:
            for i, flag in enumerate(cpu.array("flags")):
                if not isinstance(flag, str):
                    raise Rejected(400, f"host.cpu.flags[{i}] must be a string, got "
                                   f"{_json_name(flag)}")  # fmt: skip
    for key in ("ram_gib", "ram_bytes"):
        _if_present(host, key, lambda k: host.integer(k, minimum=0))
    if isinstance(host.value.get("os"), dict):
        os_ = host.obj("os")
        for key in ("family", "distribution", "version"):
            _if_present(os_, key, lambda k: os_.text(k, nullable=True))
    else:
        _if_present(host, "os", host.text)


def _if_present(obj: "_Obj", key: str, check) -> None:
    if key in obj.value:
        check(key)


def _device_model(d: "_Obj") -> str:
    model = d.text("model", max_chars=MAX_MODEL_CHARS)
    if _CLEAR_SERIAL.search(d.text("serial")):
        raise Rejected(400, f"{d.path}.serial holds a serial number in clear; it must be masked")
    d.text("usb_speed", nullable=True)
    d.text("firmware", nullable=True)
    d.obj("calibration", nullable=True)
    d.obj("configuration", nullable=True)
    d.obj("sensors")
    d.time("first_seen")
    d.time("last_seen")
    return model


def _session(s: "_Obj") -> Session:
    rate = s.obj("data_rate")
    for key in ("min", "max"):
        rate.number(key)
    s.time("start")
    s.time("end")
    s.integer("tags", minimum=0)
    s.text("usb_speed", nullable=True)
    s.obj("initial_sensors", nullable=True)
    s.text("end_reason", nullable=True)
    return Session(
        session_id=s.text("session_id", max_chars=MAX_ID_CHARS),
        device_id=s.text("device_id", max_chars=MAX_ID_CHARS),
        avg_bytes_per_s=rate.number("avg"),
        duration_s=s.number("duration_s"),
        bytes_total=s.integer("bytes", minimum=0),
        open=s.boolean("open"),
    )


def _check_message(m: "_Obj") -> None:
    for key in ("level", "text"):
        m.text(key)
    _if_present(m, "source", m.text)  # schema 1 only
    m.text("device_id", nullable=True)
    m.integer("count", minimum=0)
    m.time("first_seen")
    m.time("last_seen")


def _json_name(value) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return _JSON_NAMES.get(type(value), type(value).__name__)


class _Obj:
    """A JSON object at a path, with typed getters that raise Rejected naming the field."""

    def __init__(self, value, path: str):
        if not isinstance(value, dict):
            raise Rejected(400, f"{path or 'body'} must be a JSON object, got {_json_name(value)}")
        self.value = value
        self.path = path

    def _get(self, key: str, ok, what: str, nullable: bool):
        where = f"{self.path}.{key}" if self.path else key
        if key not in self.value:
            raise Rejected(400, f"missing field {where}")
        found = self.value[key]
        if found is None and nullable:
            return None, where
        if not ok(found):
            also = " or null" if nullable else ""
            raise Rejected(400, f"{where} must be {what}{also}, got {_json_name(found)}")
        return found, where

    def text(self, key, *, nullable=False, max_chars=None):
        found, where = self._get(key, lambda v: isinstance(v, str), "a string", nullable)
        if found is not None:
            if max_chars is not None and not 0 < len(found) <= max_chars:
                raise Rejected(400, f"{where} must have 1 to {max_chars} characters")
            try:
                found.encode("utf-8")  # a lone surrogate escape (\ud800) cannot be stored
            except UnicodeEncodeError:
                raise Rejected(400, f"{where} is not valid Unicode text") from None
        return found

    def integer(self, key, *, minimum=None, nullable=False):
        found, where = self._get(key, _is_int, "an integer", nullable)
        if found is not None and minimum is not None and found < minimum:
            raise Rejected(400, f"{where} must be at least {minimum}")
        if found is not None and abs(found) > MAX_INT:
            raise Rejected(400, f"{where} must be at most {MAX_INT}")
        return found

    def number(self, key, *, nullable=False):
        """A finite, non-negative number (every number the schema has is a size, rate or time)."""
        found, where = self._get(key, _is_number, "a number", nullable)
        if found is None:
            return None
        try:
            value = float(found)
        except OverflowError:  # an integer beyond any float
            value = math.inf
        if not (math.isfinite(value) and value >= 0):
            raise Rejected(400, f"{where} must be a finite number of at least 0")
        return value

    def boolean(self, key):
        return self._get(key, lambda v: isinstance(v, bool), "true or false", False)[0]

    def obj(self, key, *, nullable=False):
        found, where = self._get(key, lambda v: isinstance(v, dict), "an object", nullable)
        return None if found is None else _Obj(found, where)

    def array(self, key):
        return self._get(key, lambda v: isinstance(v, list), "an array", False)[0]

    def objs(self, key):
        """The items of an array of objects, each an _Obj with its index in the path."""
        where = f"{self.path}.{key}" if self.path else key
        return [_Obj(item, f"{where}[{i}]") for i, item in enumerate(self.array(key))]

    def uuid(self, key):
        found, where = self._get(key, lambda v: isinstance(v, str), "a UUID string", False)
        canonical = canonical_uuid(found)
        if canonical is None:
            raise Rejected(400, f"{where} is not a UUID")
        return canonical

    def time(self, key, *, nullable=False):
        found, where = self._get(key, lambda v: isinstance(v, str), "an ISO 8601 time", nullable)
        return None if found is None else _parse_time(found, where)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _parse_time(text: str, where: str) -> dt.datetime:
    try:
        stamp = dt.datetime.fromisoformat(text)
        if stamp.tzinfo is None:
            raise ValueError("no UTC offset")
        return stamp.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 with a positive offset
        raise Rejected(400, f"{where} must be an ISO 8601 time with a UTC offset or Z") from None
