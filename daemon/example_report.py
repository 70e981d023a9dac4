"""The example report shown before anyone is asked to agree to uploads: the real thing.

It is made the way an upload is made, by the real service (``build_service``:
poller, masking, recorder, store, outbox, consent) over a simulated Time
Tagger Ultra, in a throw-away home, with a hand-driven clock: the status is
switched to ``CollectingAndUploading``, the device is polled for a few
simulated minutes at the default intervals (a measurement runs, the
instrument warns once, the session ends when it goes idle), an application
reports a measurement, and the report the outbox would store for upload is
returned. So it has the keys, depth and sizes of what would be sent, for one
device and a short period. Only the host block is invented (by the real
``HostInfo``), so nothing about this computer is in it. ``Schema.filter``
trims it to the fields of the schema version being asked about.
"""

import dataclasses
import datetime as dt
import tempfile
from pathlib import Path

import tagstat
from tagstat.clock import ManualClock
from tagstat.config import Config
from tagstat.fields import Schema
from tagstat.hostinfo import ISA_FEATURES, HostInfo, HostInfoCache
from tagstat.paths import Paths
from tagstat.status import UsageStatisticsStatus

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
RUN_S = 11 * 60  # one measurement, then idle long enough for the session to end
SERIAL = "1910000ABC"  # shaped like a real one, so the masking is seen at work
DEVICE = {
    "serial": SERIAL,
    "model": "Time Tagger Ultra",
    "usb_speed": "super",
    "rate": [[0, 0], [20, 180e6], [140, 40e6], [300, 0]],
    "messages": [[60, "warning", "TimeTagger '{serial}': data overflow on channel 3"]],
}
HOST = HostInfo(
    cpu_vendor="GenuineIntel",
    cpu_brand="Intel(R) Core(TM) i7-12700",
    cpu_family=6,
    cpu_model=151,
    cpu_logical_processors=20,
    isa_features=tuple(name for name, _, _ in ISA_FEATURES if name not in ("avx512", "neon")),
    ram_gib=32,
    os_family="Linux",
    os_distribution="debian",
    os_version="12",
    python="3.11.2",
    tagstat=tagstat.__version__,
)
MEASUREMENT = {
    "type": "Correlation",
    "start": "2026-03-02T09:00:30.000Z",
    "end": "2026-03-02T09:02:00.000Z",
    "duration_s": 90.0,
    "error": None,
    "config": {"binwidth": 1000, "n_bins": 5000, "channel_count": 2},
    "indicators": {"events_processed": 9.1e8, "cpu_time_s": 41.0},
}


def example_report(schema: Schema, version: int | None = None) -> dict:
    """The example as it would be uploaded with consent to ``version`` (default: all)."""
    from tagstat.drivers.sim.model import Simulation
    from tagstat.drivers.sim.pyusb_backend import SimBackend
    from tagstat.drivers.sim.scenario import parse_scenario
    from tagstat.service import build_service

    clock = ManualClock(START)
    config = dataclasses.replace(Config(), upload_interval_s=RUN_S + 60.0)
    with tempfile.TemporaryDirectory(prefix="tagstat-example-") as home:
        sim = Simulation(parse_scenario({"device": [DEVICE]}, "example"), None, lambda: clock.t)
        hostinfo = HostInfoCache(Path(home) / "hostinfo.json", collect=lambda: HOST)
        service = build_service(
            Paths.for_home(home), config, clock=clock, backend=SimBackend(sim), environ={},
            hostinfo=hostinfo,
        )  # fmt: skip
        try:
            hostinfo.get(timeout_s=5.0)
            service.set_status(UsageStatisticsStatus.CollectingAndUploading, persistent=True)
            for _ in range(int(RUN_S / config.poll_interval_s)):
                clock.t += config.poll_interval_s
                service.poll_once()
                if clock.t - START.timestamp() == 150:
                    service.record_measurements([MEASUREMENT])
            service.checkpoint()
            report = service.outbox.usage_report(service.outbox.period_start(), clock.utc_now())
        finally:
            service.shutdown()
    return schema.filter(report, version or schema.version)
