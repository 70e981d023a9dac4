"""A real Service (store, recorder, outbox, poller) in the test process, over simulated
Time Taggers, with one hand-driven clock for the daemon and the simulator: nothing sleeps."""

import dataclasses
import datetime as dt
from pathlib import Path

from tagstat.clock import ManualClock
from tagstat.config import Config
from tagstat.drivers.sim.model import Simulation
from tagstat.drivers.sim.pyusb_backend import SimBackend
from tagstat.drivers.sim.scenario import parse_scenario
from tagstat.paths import Paths
from tagstat.service import build_service
from tagstat.status import UsageStatisticsStatus as S

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SERIAL = "1740000JEH"
MESSAGE = "coolant purple-elephant warning"
DEVICE = {
    "serial": SERIAL,
    "model": "Time Tagger Ultra",
    "rate": [[0, 50e6]],
    "messages": [[1, "warning", MESSAGE]],
}


class HandClock(ManualClock):
    def __init__(self):
        super().__init__(T0)


class SimService:
    """``service`` over ``home``; ``poll(n)`` advances the clock a poll interval and polls."""

    def __init__(self, home: Path, device: dict | None = None, hostinfo=None, **config):
        self.home = home
        self.closed = False
        self.clock = HandClock()
        scenario = parse_scenario({"device": [device or DEVICE]}, "test")
        self.sim = Simulation(scenario, state_dir=None, clock=self.clock.wall)
        defaults = {"poll_interval_s": 1.0, "sensor_interval_s": 1.0, "upload_interval_s": 3600.0}
        cfg = dataclasses.replace(Config(), **(defaults | config))
        self.service = build_service(
            Paths.for_home(home), cfg, clock=self.clock, backend=SimBackend(self.sim),
            hostinfo=hostinfo,
        )  # fmt: skip

    def poll(self, n: int = 1, step_s: float = 1.0) -> None:
        for _ in range(n):
            self.clock.t += step_s
            self.service.poll_once()

    def set_status(self, status: S) -> None:
        self.service.set_status(status, persistent=True)

    def db_bytes(self) -> bytes:
        """The database file, its WAL and its SHM, as they are on disk now."""
        db = self.service.store.path
        parts = [Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm")]
        return b"".join(p.read_bytes() for p in parts if p.exists())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.service.shutdown()


def poll(service, n=8):
    """n polls, then a checkpoint, so what they saw is in the store."""
    for _ in range(n):
        service.poll_once()
    service.checkpoint()
