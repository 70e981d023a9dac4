"""Latency of a `get_status` through the control socket while other clients misbehave.

Starts a ``ControlServer`` (default limits) over a trivial controller on a socket in a
temporary directory, then times ``--requests`` (default 200) ``Client.status()`` calls,
each on a fresh connection as ``tagstat status`` makes them, in each scenario:

- no other connections;
- N silent connections held open (64, 256): connected, never written to, each one
  reopened as soon as the server closes it, so N stay open all along;
- a connect loop: one client connecting silent connections back to back as fast as it
  can, keeping the last 32 open.

The misbehaving client is another process, as an attacker would be. It runs as this
process's uid, which the server exempts from its per-uid limit as it does tagstatd's own
user, so every silent connection is held: the worst case for the server. Run as root, the
scenarios are repeated with the misbehaving client as uid ``nobody``, whom the per-uid
limit (8) applies to. Prints one row per scenario: requests, failed, median and max in ms.

A connect loop keeps the listen backlog full; the kernel would fail a non-blocking
connect() at once with EAGAIN, so ``Client`` connects blocking, bounded by SO_SNDTIMEO,
and the kernel queues it for room in the backlog.

    python bench/socket_latency.py [--requests 200]
"""

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tagstat.client import Client
from tagstat.control import ControlServer
from tagstat.errors import TagstatError

# The misbehaving client: stdlib only, so it runs as any uid with `python -I`.
ATTACKER = r"""
import collections, selectors, socket, sys
mode, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
if mode == "hold":
    sel = selectors.DefaultSelector()
    for _ in range(n):
        sel.register(connect(), selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if not key.fileobj.recv(65536):
                sel.unregister(key.fileobj)
                key.fileobj.close()
                sel.register(connect(), selectors.EVENT_READ)
else:
    held = collections.deque()
    print("ready", flush=True)
    while True:
        held.append(connect())
        if len(held) > n:
            held.popleft().close()
"""


class Controller:
    def get_status(self) -> dict:
        return {"status": 1, "name": "Collecting", "persistent": True, "since": None}


def attacker(mode: str, n: int, path: Path, user: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-I", "-c", ATTACKER, mode, str(n), str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, user=user, cwd="/")
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise SystemExit(f"the {mode} client did not start")
    return proc


def measure(path: Path, requests: int) -> tuple[int, list[float]]:
    """(failed, latencies in ms of the answered ones)."""
    client, failed, times_ms = Client(path), 0, []
    for _ in range(requests):
        started = time.perf_counter()
        try:
            client.status()
        except TagstatError:
            failed += 1
            continue
        times_ms.append((time.perf_counter() - started) * 1000)
    return failed, times_ms


def row(name: str, requests: int, failed: int, times_ms: list[float]) -> str:
    median = f"{statistics.median(times_ms):9.2f}" if times_ms else "        -"
    worst = f"{max(times_ms):9.2f}" if times_ms else "        -"
    return f"{name:<44} {requests:>8} {failed:>6} {median} {worst}"


def scenarios(user: str | None) -> list[tuple[str, str | None, int]]:
    who = f" (uid {user})" if user else ""
    return [
        (f"64 silent connections held open{who}", "hold", 64),
        (f"256 silent connections held open{who}", "hold", 256),
        (f"connect loop, 32 kept open{who}", "loop", 32),
    ]


def run(path: Path, requests: int) -> None:
    print(f"{'scenario':<44} {'requests':>8} {'failed':>6} {'median_ms':>9} {'max_ms':>9}")
    print(row("no other connections", requests, *measure(path, requests)))
    users = [None] + (["nobody"] if os.geteuid() == 0 and _has_user("nobody") else [])
    for user in users:
        for name, mode, n in scenarios(user):
            proc = attacker(mode, n, path, user)
            try:
                print(row(name, requests, *measure(path, requests)))
            finally:
                proc.kill()
                proc.wait()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    # /tmp keeps the path under the AF_UNIX limit; 0755 and 0666 let uid nobody connect.
    home = Path(tempfile.mkdtemp(prefix="ts-sock-", dir="/tmp"))  # noqa: S108
    home.chmod(0o755)
    try:
        with ControlServer(home / "c.sock", Controller(), socket_mode=0o666) as server:
            run(server.socket_path, args.requests)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
