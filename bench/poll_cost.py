"""Host cost of one full poll of one simulated Time Tagger, in microseconds.

A full poll is what the daemon does per device and interval: counters,
sensors, calibration, configuration and messages (``info`` is read once and
cached, so it is outside the loop). The device is found with the real
``Discovery`` and read with the real driver over pyusb's own code; only the
backend under pyusb changes with ``--transport``: "pyusb" (default) is the
simulator's pure-Python backend, "umockdev" is pyusb's libusb1 backend, real
libusb, against the simulated device emulated by umockdev (run under
``umockdev-wrapper``). Prints the median, p10 and p90 over ``--polls`` polls,
after ``--warmup`` untimed ones, and the number of control transfers per poll.

    python bench/poll_cost.py [--polls 2000] [--model "Time Tagger Ultra"]
    umockdev-wrapper python bench/poll_cost.py --transport umockdev
"""

import argparse
import statistics
import sys
import time

from tagstat.drivers.discovery import Discovery
from tagstat.drivers.sim.model import Simulation
from tagstat.drivers.sim.pyusb_backend import SimBackend
from tagstat.drivers.sim.scenario import parse_scenario

SERIAL = "1740000JEH"


def make_backend(transport: str, simulation):
    """(pyusb backend, close function) for the chosen transport."""
    if transport == "pyusb":
        return SimBackend(simulation), lambda: None
    from tagstat.drivers.sim import umockdev

    reason = umockdev.available()
    if reason:
        sys.exit(f"umockdev transport unavailable: {reason}")
    harness = umockdev.UMockdevHarness(simulation)
    return harness.backend(), harness.close


def full_poll(tagger, start_seq: int) -> int:
    tagger.read_counters()
    tagger.read_sensors()
    tagger.read_calibration()
    tagger.read_configuration()
    _, nxt = tagger.read_messages(start_seq)
    return nxt


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["pyusb", "umockdev"], default="pyusb")
    parser.add_argument("--model", default="Time Tagger Ultra")
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()

    speed = "high" if args.model == "Time Tagger 20" else "super"
    device = {"serial": SERIAL, "model": args.model, "usb_speed": speed, "rate": [[0, 1e8]]}
    simulation = Simulation(parse_scenario({"device": [device]}, "poll_cost"), clock=time.time)
    backend, close = make_backend(args.transport, simulation)
    try:
        (tagger,) = Discovery(backend).scan().present
        tagger.info()
        seq = 0
        for _ in range(args.warmup):
            seq = full_poll(tagger, seq)
        calls_before = len(simulation.device(SERIAL).calls)
        samples_us = []
        for _ in range(args.polls):
            t0 = time.perf_counter_ns()
            seq = full_poll(tagger, seq)
            samples_us.append((time.perf_counter_ns() - t0) / 1000)
        transfers = (len(simulation.device(SERIAL).calls) - calls_before) / args.polls
        tagger.close()
    finally:
        close()
    samples_us.sort()
    print(f"transport {args.transport}, {args.model}, {args.polls} polls")
    print(f"control transfers per poll: {transfers:.1f}")
    print(f"full poll median: {statistics.median(samples_us):.0f} us")
    print(f"full poll p10: {percentile(samples_us, 0.10):.0f} us")
    print(f"full poll p90: {percentile(samples_us, 0.90):.0f} us")


if __name__ == "__main__":
    main()
