"""The control socket server: the daemon's local API.

``ControlServer`` listens on a Unix stream socket, reads one request per
connection (see ``tagstat.wire``), checks it, hands it to a ``Controller``
(implemented by ``tagstat.service``) and writes one reply. Each connection
runs in its own daemon thread with a read deadline, and the number of
connections served at once is bounded (later ones wait in the listen
backlog), so a slow or hostile client can neither block others nor exhaust
the daemon. No single request can take the
server down: every failure becomes an error reply. ``authorize`` is the seam
for peer-credential checks (the daemon passes ``tagstat.access.AccessPolicy``;
the default allows everything). The socket is mode 0660 and, when
``socket_group`` exists, owned by that group.
"""

import dataclasses
import errno
import logging
import os
import socket
import socketserver
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tagstat import wire
from tagstat.access import PermissionDenied, group_gid
from tagstat.errors import TagstatError
from tagstat.status import UsageStatisticsStatus

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
# How often the idle accept loop wakes; stop() pokes it awake, so this is not its latency.
_POLL_INTERVAL_S = 0.5
# While every slot is taken, the accept loop checks this often whether to stop.
_SLOT_WAIT_S = 0.05
_DRAIN_MAX_BYTES = 4 * 1024 * 1024


class Controller(Protocol):
    """What the server dispatches to; implemented by the service."""

    def get_status(self) -> dict: ...
    def set_status(
        self, status: UsageStatisticsStatus, persistent: bool, origin: str = "api"
    ) -> dict: ...
    def get_report(self) -> str: ...
    def list_devices(self, calibration: bool = False) -> list[dict]: ...
    def list_sessions(self) -> list[dict]: ...
    def pending_report(self) -> dict: ...
    def list_uploads(self) -> list[dict]: ...
    def upload_body(self, report_id: str) -> dict: ...
    def set_consent(self, version: int, upload: bool, new_fields: bool, dry_run: bool) -> dict: ...
    def record_measurements(self, events: list) -> dict: ...
    def purge(self) -> dict: ...
    def export_begin(self) -> dict: ...
    def export_commit(self, token: str) -> dict: ...


@dataclasses.dataclass(frozen=True)
class PeerCred:
    """Who is on the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] | None = None  # supplementary gids (SO_PEERGROUPS), if known


def allow_all(op: str, peer: PeerCred | None) -> bool:
    """The default authorization: any local user who can open the socket may call any op."""
    return True


def peer_cred(sock: socket.socket) -> PeerCred | None:
    """The peer's pid/uid/gid via SO_PEERCRED (Linux); None where unsupported."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return PeerCred(*struct.unpack("3i", raw), groups=_peer_groups(sock))


# SO_PEERGROUPS (Linux 4.13+): the peer's supplementary groups as of connect(),
# race-free unlike /proc/<pid>. Python may not name the constant.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


def _peer_groups(sock: socket.socket) -> frozenset[int] | None:
    for count in (256, 65536):  # few groups first; NGROUPS_MAX if they do not fit
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, count * 4)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            return None
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return None


class ControlServer:
    """Serves the local API on ``socket_path`` until ``stop()``."""

    def __init__(
        self,
        socket_path: Path,
        controller: Controller,
        *,
        max_request_bytes: int = wire.MAX_REQUEST_BYTES,
        timeout_s: float = wire.REQUEST_TIMEOUT_S,
        socket_mode: int = 0o660,
        socket_group: str | None = None,
        max_connections: int = MAX_CONNECTIONS,
        authorize: Callable[[str, PeerCred | None], bool] = allow_all,
    ):
        self.socket_path = Path(socket_path)
        self.controller = controller
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self.authorize = authorize
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the socket (replacing a stale one), set its mode and serve in the background."""
        _clear_stale_socket(self.socket_path)
        server = _Server(str(self.socket_path), _Handler, bind_and_activate=False)
        server.control = self
        try:
            server.server_bind()
            # Set the mode before listen() so nobody connects through a wider one.
            os.chmod(self.socket_path, self.socket_mode)
            self.set_socket_group(self.socket_group)
            server.server_activate()
        except OSError as exc:
            server.server_close()
            raise TagstatError(f"cannot listen on {self.socket_path}: {exc.strerror}") from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="tagstat-control",
            daemon=True,
        )
        self._thread.start()
        log.info("control socket listening on %s", self.socket_path)

    def set_socket_group(self, name: str | None) -> None:
        """Give the socket to group ``name`` (if it exists), so its members can connect."""
        self.socket_group = name
        gid = group_gid(name) if name else None
        if gid is None:
            if name:
                log.warning("group %s does not exist: only root and tagstatd's own user "
                            "can use %s", name, self.socket_path)  # fmt: skip
            return
        try:
            if os.stat(self.socket_path).st_gid != gid:
                os.chown(self.socket_path, -1, gid)
        except OSError as exc:  # not a member of it, or chown filtered out (SystemCallFilter)
            log.warning("cannot give %s to group %s: %s", self.socket_path, name, exc.strerror)

    def stop(self) -> None:
        """Stop accepting, close and unlink the socket. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        stopper = threading.Thread(target=server.shutdown, name="tagstat-control-stop")
        stopper.start()
        while stopper.is_alive():  # wake the accept loop now instead of at its next poll
            self._poke()
            stopper.join(timeout=0.01)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        log.info("control socket closed")

    def _poke(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.1)
            try:
                s.connect(str(self.socket_path))
            except OSError:
                pass

    def __enter__(self) -> "ControlServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def handle(self, sock: socket.socket) -> None:
        """Serve one connection: read, dispatch, reply. Never raises."""
        try:
            reply = self._reply_for(sock)
        except Exception:  # the server must survive any single request
            log.exception("control request failed unexpectedly")
            reply = wire.error_reply("InternalError", "internal error")
        self._send(sock, reply)
        self._drain(sock)

    def _reply_for(self, sock: socket.socket) -> dict:
        try:
            msg = wire.read_message(sock, self.max_request_bytes, self.timeout_s)
            op, args = wire.parse_request(msg)
        except wire.BadRequest as exc:
            # Not the message: it can echo client text, and no log line may hold a serial.
            log.debug("rejected a malformed control request")
            return wire.error_reply("BadRequest", str(exc))
        try:
            allowed = self.authorize(op, peer_cred(sock))
        except PermissionDenied as exc:  # the policy says why (op, group needed, uid)
            log.info("%s", exc)
            return wire.error_reply("PermissionDenied", str(exc))
        if not allowed:
            return wire.error_reply("PermissionDenied", f"not allowed to call {op!r}")
        return self.dispatch(op, args)

    def dispatch(self, op: str, args: dict) -> dict:
        """Validate ``args`` for ``op``, call the controller and build the reply."""
        try:
            return wire.ok_reply(self._call(op, args))
        except ValueError as exc:
            return wire.error_reply("ValueError", str(exc))
        except TagstatError as exc:
            return wire.error_reply("ApiError", str(exc))
        except Exception as exc:
            log.exception("controller failed on op %s", op)
            return wire.error_reply("InternalError", f"internal error: {type(exc).__name__}")

    def _call(self, op: str, args: dict):
        c = self.controller
        if op == "get_status":
            return c.get_status()
        if op == "set_status":
            status = UsageStatisticsStatus.parse(args["status"])
            return c.set_status(status, args["persistent"], args.get("origin", "api"))
        if op == "get_report":
            return c.get_report()
        if op == "devices":
            return c.list_devices(args.get("calibration", False))
        if op == "sessions":
            return c.list_sessions()
        if op == "pending_report":
            return c.pending_report()
        if op == "uploads":
            return c.list_uploads()
        if op == "upload_body":
            return c.upload_body(args["report_id"])
        if op == "set_consent":  # tagstat.consent; an admin op (tagstat.access)
            return c.set_consent(args["version"], args["upload"], args["new_fields"],
                                 args["dry_run"])  # fmt: skip
        if op == "record_measurements":
            return c.record_measurements(args["events"])
        if op in ("purge", "export_begin"):  # tagstat.purge, tagstat.export
            return getattr(c, op)()
        if op == "export_commit":
            return c.export_commit(args["token"])
        raise wire.BadRequest(f"unknown op {op!r}")  # parse_request already refused it

    def _send(self, sock: socket.socket, reply: dict) -> None:
        try:
            data = wire.encode(reply)
        except (TypeError, ValueError) as exc:  # the controller returned something not JSON
            log.error("control reply is not JSON-serializable: %s", exc)
            data = wire.encode(wire.error_reply("InternalError", "internal error: bad reply"))
        try:
            sock.settimeout(self.timeout_s)
            sock.sendall(data)
        except OSError as exc:  # the client went away or stopped reading; its loss
            log.debug("could not send control reply: %s", exc)

    def _drain(self, sock: socket.socket) -> None:
        # Closing a Unix socket with unread input resets the connection, which can
        # discard the reply before the client reads it (say, after "too large"). So
        # read on to EOF, bounded in time and bytes.
        deadline = time.monotonic() + self.timeout_s
        left = _DRAIN_MAX_BYTES
        try:
            sock.shutdown(socket.SHUT_WR)
            while left > 0 and (remaining_s := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining_s)
                chunk = sock.recv(min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:
            pass

    def _release_slot(self) -> None:
        self._slots.release()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    control: ControlServer

    def process_request(self, request, client_address):
        # Wait for a free slot; meanwhile later clients queue in the listen backlog.
        while not self.control._slots.acquire(timeout=_SLOT_WAIT_S):
            if self.control._stopping.is_set():
                self.shutdown_request(request)
                return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.control._release_slot()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.control.handle(self.request)


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead daemon; refuse if a live one answers."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise TagstatError(f"{path} exists and is not a socket; remove it, then start tagstatd")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except TimeoutError:
        pass  # a full backlog: someone is listening
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise TagstatError(f"cannot check control socket {path}: {exc.strerror}") from exc
        log.info("removing stale control socket %s", path)
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise TagstatError(
        f"another tagstatd is already answering on {path}; stop it first "
        "(systemctl stop tagstatd) or use a different --home"
    )
