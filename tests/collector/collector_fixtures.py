"""Helpers of the collector tests: a served collector and valid reports to send."""

import copy
import gzip
import json
import uuid
from pathlib import Path

import requests

from tagstat.collector.app import create_app
from tagstat.collector.intake import Limits
from tagstat.collector.server import CollectorServer

USER = "0b9e4a52-8a1d-4d7e-9a52-3f0c2a9e1b11"
DEVICE = "ab" * 8
ULTRA = "Time Tagger Ultra"


class Collector:
    """The collector app on its threaded server, in a thread of the test process."""

    def __init__(self, db_path: Path, limits: Limits | None = None):
        self.db_path = db_path
        self.app = create_app(db_path, limits=limits or Limits())
        self._server = CollectorServer("127.0.0.1", 0, self.app)
        self.url = self._server.url
        self.port = self._server.port
        self._server.start(poll_interval_s=0.01)  # a prompt stop after each test

    def stop(self) -> None:
        assert self._server.stop(grace_s=5)
        self.app.store.close()

    def post(self, body, *, compress=True, headers=None, idempotency=True) -> requests.Response:
        """POST a report (dict, or bytes as they are) the way the daemon's uploader does."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if compress:
            data = gzip.compress(data)
            sent["Content-Encoding"] = "gzip"
        if idempotency and isinstance(body, dict) and isinstance(body.get("report_id"), str):
            sent["Idempotency-Key"] = body["report_id"]
        sent.update(headers or {})
        return requests.post(f"{self.url}/v1/reports", data=data, headers=sent, timeout=30)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=30)

    def reports(self) -> list[dict]:
        return self.get("/v1/reports").json()["reports"]

    def stats(self) -> dict:
        return self.get("/v1/stats").json()


def session(session_id: str, avg: float, *, device_id=DEVICE, open_=False) -> dict:
    return {
        "session_id": session_id,
        "device_id": device_id,
        "start": "2026-03-01T10:00:00.000Z",
        "end": "2026-03-01T10:01:40.000Z",
        "duration_s": 100.0,
        "bytes": int(avg * 100),
        "tags": 10**6,
        "data_rate": {"min": 0.0, "avg": avg, "max": avg * 2},
        "usb_speed": "super",
        "initial_sensors": {"fpga sensors": {"temp": 40.0}},
        "open": open_,
        "end_reason": None if open_ else "idle",
    }


def device(device_id=DEVICE, model=ULTRA) -> dict:
    return {
        "device_id": device_id,
        "model": model,
        "serial": f"[serial:{device_id[:8]}]",
        "usb_speed": "super",
        "firmware": "1.30",
        "calibration": {
            "status": "OK",
            "age_days": 90,
            "channels": 18,
            "quantities": {"delay ps": {"median": 1000}},
        },
        "configuration": {"resolution": "HighResA"},
        "sensors": {"fpga sensors/temp": {"last": 44.0, "min": 40.0, "max": 44.0}},
        "first_seen": "2026-03-01T10:00:00.000Z",
        "last_seen": "2026-03-01T10:01:40.000Z",
    }


BASE_REPORT = {
    "schema_version": 2,
    "kind": "usage",
    "report_id": None,
    "generated_at": "2026-03-02T00:00:00.000Z",
    "period": {"start": "2026-03-01T10:00:00.000Z", "end": "2026-03-02T00:00:00.000Z"},
    "user_id": USER,
    "status": "CollectingAndUploading",
    "software": {"tagstat": "0.1.0", "python": "3.11.2"},
    "host": {
        "cpu": {
            "vendor": "AuthenticAMD",
            "brand": "AMD EPYC",
            "family": 25,
            "model": 1,
            "logical_processors": 2,
            "isa_features": {"sse": True, "avx2": True},
        },
        "ram_gib": 24,
        "os": {"family": "Linux", "distribution": "debian", "version": "12"},
    },
    "devices": [device()],
    "sessions": [session("s1", 1e8)],
    "messages": [
        {
            "device_id": DEVICE,
            "level": "warning",
            "text": "overflow",
            "count": 2,
            "first_seen": "2026-03-01T10:00:00.000Z",
            "last_seen": "2026-03-01T10:01:00.000Z",
        }
    ],
    "measurements": [],
    "daemon": {"read_errors": 0, "scan_errors": 1, "log_warnings": 2, "log_errors": 0},
}

# What a tagstat of schema 1 sent, and what a newer one sends for a user who agreed to
# schema 1 only: the schema-1 fields that still exist.
V1_HOST_OLD = {
    "cpu": {"brand": "AMD EPYC", "flags": ["avx2"], "cores": 2, "cores_physical": 1},
    "ram_bytes": 24 * 2**30,
    "os": "Linux 6.1",
}
V1_HOST_NEW = {"cpu": {"brand": "AMD EPYC"}}


def usage_report(**fields) -> dict:
    """A valid usage report with a fresh report_id; keyword arguments replace top-level fields."""
    report = copy.deepcopy(BASE_REPORT)
    report["report_id"] = str(uuid.uuid4())
    report.update(fields)
    return report


def deletion_request(user_id: str = USER) -> dict:
    return {
        "schema_version": 1,
        "kind": "deletion",
        "report_id": str(uuid.uuid4()),
        "user_id": user_id,
        "generated_at": "2026-03-03T00:00:00.000Z",
    }
