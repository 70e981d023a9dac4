"""An example usage report, shown before anyone is asked to agree to uploads.

Built by the real report builder (``tagstat.report.build_report``) from a
small synthetic lab day: one Time Tagger Ultra whose serial goes through the
real ``Masker``, one usage session, two sensor readings, a device warning and
one measurement, in a throw-away SQLite store. So it has exactly the shape of
what would be uploaded, and its values are plausible but invented: nothing
about this computer is in it. ``Schema.filter`` trims it to the fields of the
schema version being asked about.
"""

import datetime as dt
import tempfile
import uuid
from pathlib import Path

from tagstat.fields import Schema
from tagstat.masking import Masker
from tagstat.measurement_data import MeasurementEvent
from tagstat.records import DeviceRecord, SessionRecord
from tagstat.report import build_report
from tagstat.status import UsageStatisticsStatus
from tagstat.store import Store

SERIAL = "1910000ABC"  # shaped like a real one, so the masking is seen at work
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
HOST = {
    "cpu": {
        "brand": "Intel(R) Core(TM) i7-12700",
        "flags": ["avx2", "sse4_2"],
        "cores": 20,
        "cores_physical": 12,
    },
    "ram_bytes": 34359738368,
    "os": "Linux 6.1.0-18-amd64 (Debian GNU/Linux 12 (bookworm))",
}
_UPLOADED = int(UsageStatisticsStatus.CollectingAndUploading)


def example_report(schema: Schema, version: int | None = None) -> dict:
    """The example as it would be uploaded with consent to ``version`` (default: all)."""
    with tempfile.TemporaryDirectory(prefix="tagstat-example-") as tmp:
        store = Store.open(Path(tmp) / "example.db")
        try:
            _seed(store, Masker(b"example-secret-0123456789", hostnames=(), usernames=()))
            report = build_report(
                store,
                user_id=str(uuid.uuid4()),
                status=UsageStatisticsStatus.CollectingAndUploading,
                host=HOST,
                now=START + dt.timedelta(hours=8),
                since=START,
                min_status=_UPLOADED,
            )
        finally:
            store.close()
    return schema.filter(report, version or schema.version)


def _seed(store: Store, masker: Masker) -> None:
    device_id = masker.device_id(SERIAL)
    at = START + dt.timedelta(minutes=5)
    config = masker.scrub({"serial": SERIAL, "resolution": "Standard", "channels": 18})
    store.upsert_device(
        DeviceRecord(
            device_id,
            "Time Tagger Ultra",
            masker.masked_serial(SERIAL),
            "super",
            "1.30",
            {"calibration_date": "2025-11-04"},
            config,
            START,
            at + dt.timedelta(hours=2),
        )
    )
    store.save_session(
        SessionRecord(
            str(uuid.uuid4()),
            device_id,
            _UPLOADED,
            at,
            at + dt.timedelta(minutes=42),
            2520.0,
            126_000_000_000,
            15_750_000_000,
            12_500_000.0,
            61_000_000.0,
            "super",
            {"fpga": {"temp": 48.5}},
            False,
            "idle",
            "-",
            0,
            0,
            0,
            at,
        )
    )
    store.record_sensors(device_id, at, _UPLOADED, {"fpga/temp": 48.5})
    store.record_sensors(device_id, at + dt.timedelta(hours=1), _UPLOADED, {"fpga/temp": 51.0})
    text = masker.scrub_text(f"TimeTagger {SERIAL}: data overflow on channel 3")
    store.record_message(device_id, "warning", text, at + dt.timedelta(minutes=7), _UPLOADED)
    event = MeasurementEvent(
        "Correlation",
        at,
        at + dt.timedelta(seconds=30),
        30.0,
        None,
        {"binwidth": 1000, "n_bins": 5000},
        {"events_processed": 9.1e8},
    )
    store.record_measurements([(event, _UPLOADED)], at + dt.timedelta(seconds=31))
