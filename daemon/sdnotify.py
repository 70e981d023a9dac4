"""sd_notify: tell systemd that tagstatd is ready, what it is doing, and that it is alive.

systemd's ``Type=notify`` protocol is one datagram per message, ``KEY=VALUE``
lines, sent to the ``AF_UNIX`` socket named in ``NOTIFY_SOCKET`` (a path, or
an abstract name written with a leading ``@``). ``WATCHDOG_USEC`` (with
``WATCHDOG_PID``, when set, naming us) asks for ``WATCHDOG=1`` at least that
often; we ping at half of it. Without ``NOTIFY_SOCKET`` every call is a no-op,
so the daemon runs the same outside systemd. Sending never raises: losing a
status line must not stop the service (a missed watchdog ping gets it
restarted, which is the point). The variables are taken out of the
environment so that child processes (py-cpuinfo runs one) never speak for us.
Only what systemd 252 (Debian 12) understands is sent.
"""

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify messages to ``address``; ``address`` None makes it a no-op."""

    def __init__(self, address: str | None = None, watchdog_usec: int = 0):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._last_status: str | None = None

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] = os.environ) -> "Notifier":
        """Read (and remove) NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID."""
        values = {key: env.pop(key, None) for key in _ENV_KEYS}
        address = values["NOTIFY_SOCKET"] or None
        if address and not (address.startswith("/") or address.startswith("@")):
            log.warning("ignoring NOTIFY_SOCKET %r: not a path or an abstract name", address)
            address = None
        return cls(address, _watchdog_usec(values["WATCHDOG_USEC"], values["WATCHDOG_PID"]))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half the timeout), or None if not asked to."""
        return self.watchdog_usec / 2e6 if self.enabled and self.watchdog_usec > 0 else None

    def ready(self, status: str | None = None) -> None:
        self._send("READY=1", status)

    def status(self, text: str) -> None:
        """STATUS=text, sent only when it differs from the last one."""
        if text != self._last_status:
            self._send(None, text)

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets newer systemd (253+) match the reload to its request;
        # 252 ignores the field and still shows the unit as "reloading".
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}", "reloading the configuration")

    def stopping(self) -> None:
        self._send("STOPPING=1", "stopping")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, line: str | None, status: str | None = None) -> None:
        if not self.enabled:
            return
        lines = [line] if line else []
        if status is not None:
            lines.append("STATUS=" + status.replace("\n", " "))
            self._last_status = status
        try:
            self._socket().sendto("\n".join(lines).encode("utf-8"), _sockaddr(self.address))
        except OSError as exc:  # systemd gone or the socket full: not our problem to die of
            log.debug("sd_notify to %s failed: %s", self.address, exc)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)  # never wait on systemd from the poll loop
        return self._sock


def _sockaddr(address: str) -> str | bytes:
    # Python maps a leading NUL byte to an abstract socket address.
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def _watchdog_usec(usec: str | None, pid: str | None) -> int:
    """The watchdog timeout in µs if it is meant for this process, else 0."""
    if not usec:
        return 0
    if pid and pid.strip() != str(os.getpid()):
        return 0  # meant for another process (we were started by a wrapper)
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC %r: not an integer", usec)
        return 0
    return max(value, 0)
