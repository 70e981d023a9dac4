"""Helpers shared by the simulator tests (a plain module: conftest is not importable)."""

START_S = 1_700_000_000.0  # an arbitrary wall-clock start, far from zero


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, t: float = START_S):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def device_table(serial="1740000JEH", model="Time Tagger Ultra", **extra) -> dict:
    return {"serial": serial, "model": model, **extra}
