"""The data model: what tagstat stores, as frozen dataclasses.

Everything here is already masked: these records are built behind the masking
boundary and never hold a serial number. Stamps are timezone-aware UTC
datetimes; rates are bytes per second. ``docs/DATA.md`` describes every field.
Each collected record carries ``status``: the UsageStatisticsStatus value in
force when it was collected, so that data collected before upload consent can
never be uploaded.
"""

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class DeviceRecord:
    device_id: str  # keyed pseudonym of the serial (HMAC-SHA256, hex)
    model: str
    serial_masked: str
    usb_speed: str  # "high", "super", ...
    firmware: str  # USB device release, e.g. "1.30"
    calibration: dict  # the raw (masked) table: shown locally, never reported
    configuration: dict
    first_seen: dt.datetime
    last_seen: dt.datetime
    # What the report carries instead of the raw calibration (tagstat.calibration).
    calibration_summary: dict = dataclasses.field(default_factory=dict)
    # The status in force when the calibration and the configuration were read: a
    # document read before consent to upload is never uploaded. None: not read yet.
    calibration_status: int | None = None
    configuration_status: int | None = None


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    session_id: str  # random UUID
    device_id: str
    status: int  # status in force for the whole session (a status change splits sessions)
    start: dt.datetime
    end: dt.datetime  # last time data was seen flowing (so far, while open)
    duration_s: float
    bytes_total: int
    tags_total: int
    rate_min_bytes_per_s: float
    rate_max_bytes_per_s: float
    usb_speed: str
    initial_sensors: dict
    open: bool
    end_reason: str | None  # "unplugged", "device_reset", "idle", "status_change", "stopped", ...
    # Resume state, so a daemon restart continues the session; never reported.
    boot_tag: str  # keyed hash of the device's boot id
    last_bytes: int  # raw device counter at the last checkpoint
    last_tags: int
    last_uptime_ms: int
    checkpoint_at: dt.datetime

    @property
    def rate_avg_bytes_per_s(self) -> float:
        return self.bytes_total / self.duration_s if self.duration_s > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class MessageRecord:
    source: str  # the device_id of the device that logged it
    level: str  # "info", "warning" or "error"
    text: str  # masked
    status: int
    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime


@dataclasses.dataclass(frozen=True)
class SensorStat:
    key: str  # path in the sensor dictionary, "/"-joined
    last: float
    min: float
    max: float
    last_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class StatusChange:
    at: dt.datetime
    old: int | None
    new: int
    persistent: bool
    reason: str  # "api", "install", "config", ...


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """One report or deletion request to upload, with its retry schedule (tagstat.outbox)."""

    report_id: str
    kind: str  # "usage" or "deletion"
    user_id: str
    created_at: dt.datetime
    body: bytes  # the exact JSON bytes sent (gzip-compressed on the wire)
    size_bytes: int
    state: str  # "pending", "delivered", "rejected", "dropped", "cancelled", "exported"
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    delivered_at: dt.datetime | None
    quota_exempt: bool


@dataclasses.dataclass(frozen=True)
class UploadAttempt:
    """One line of the upload audit log: an attempt and its result, or a drop or cancel."""

    at: dt.datetime
    report_id: str
    size_bytes: int
    result: str  # "delivered", "duplicate", "rejected", "retry", "dropped", "cancelled"
    http_status: int | None = None
    detail: str | None = None
