"""The control socket server: the daemon's local API.

``ControlServer`` listens on a Unix stream socket, reads one request per
connection (see ``tagstat.wire``), checks it, hands it to a ``Controller``
(implemented by ``tagstat.service``) and writes one reply. One selector thread
accepts and does all socket I/O without blocking, so accepting never waits for
a slow client and a connection that sends nothing costs a file descriptor, not
a thread; complete request lines go to a small pool of worker threads. Every
connection has deadlines (first byte, whole request, reply and drain) and
connections are capped per uid and in all, so a slow or hostile local client
can neither block others nor exhaust the daemon: one over a limit gets a
``Busy`` error reply that names it. No single request can take the server
down: every failure becomes an error reply. ``authorize`` is the seam for
peer-credential checks (the daemon passes ``tagstat.access.AccessPolicy``; the
default allows everything). The socket is mode 0660 and, when ``socket_group``
exists, owned by that group.
"""

import errno
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from tagstat import wire
from tagstat.access import PermissionDenied, group_gid
from tagstat.control_loop import Loop, bad_request, drain_blocking
from tagstat.control_peer import PeerCred, peer_cred
from tagstat.errors import TagstatError
from tagstat.status import UsageStatisticsStatus

log = logging.getLogger(__name__)

# The defaults of ControlServer's limits (docs/ADMIN.md, "Users, groups and the local API").
MAX_CONNECTIONS = 16  # requests in the controller at once: the worker threads
MAX_QUEUED = 64  # complete requests waiting for a worker; past that, Busy
MAX_OPEN = 512  # connections open at once, all uids together: a file descriptor budget
MAX_PER_UID = 8  # connections open at once from one uid (root and tagstatd's own exempt)
FIRST_BYTE_TIMEOUT_S = 0.25  # a real client writes its request right after connect()
DRAIN_TIMEOUT_S = 0.25  # after the reply, for the client to finish sending and close
# Bursts of connect() wait here only until the loop's next accept, never for a slot.
_LISTEN_BACKLOG = 512


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


def allow_all(op: str, peer: PeerCred | None) -> bool:
    """The default authorization: any local user who can open the socket may call any op."""
    return True


class ControlServer:
    """Serves the local API on ``socket_path`` until ``stop()``.

    Limits (keyword arguments; the module constants are the defaults):

    - ``first_byte_timeout_s``: the request's first byte must arrive this soon after
      connect, or the client gets a timeout reply and is closed.
    - ``timeout_s``: the client's time in all: the whole request line, then the reply
      and the drain, within this of connect, not counting the controller's time.
    - ``drain_timeout_s``: after the reply, how long the server reads on (at most
      1 MiB, never past ``timeout_s``) so that closing does not reset the connection
      and lose the reply while the client is still sending.
    - ``max_connections``: requests in the controller at once (worker threads);
      ``max_queued`` more may wait for one; the next gets a ``Busy`` reply.
    - ``max_connections_per_uid``: connections open at once from one uid (None: no
      limit); ``exempt_uids`` (default: root and this process's uid) have none.
    - ``max_open_connections``: connections open at once in all.
    """

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
        first_byte_timeout_s: float = FIRST_BYTE_TIMEOUT_S,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        max_queued: int = MAX_QUEUED,
        max_connections_per_uid: int | None = MAX_PER_UID,
        exempt_uids: Iterable[int] | None = None,
        max_open_connections: int = MAX_OPEN,
    ):
        self.socket_path = Path(socket_path)
        self.controller = controller
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s
        self.socket_mode = socket_mode
        self.socket_group = socket_group
        self.authorize = authorize
        self.max_connections = max_connections
        self.first_byte_timeout_s = min(first_byte_timeout_s, timeout_s)
        self.drain_timeout_s = drain_timeout_s
        self.max_queued = max_queued
        self.max_connections_per_uid = max_connections_per_uid
        # Root and tagstatd's own user may do everything anyway (docs/ADMIN.md).
        default_exempt = {0, os.geteuid()}
        self.exempt_uids = frozenset(default_exempt if exempt_uids is None else exempt_uids)
        self.max_open_connections = max_open_connections
        self._loop: Loop | None = None

    def start(self) -> None:
        """Bind the socket (replacing a stale one), set its mode and serve in the background."""
        _clear_stale_socket(self.socket_path)
        self._loop = Loop(self, self._listen())
        self._loop.start()
        log.info("control socket listening on %s", self.socket_path)

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            # Set the mode before listen() so nobody connects through a wider one.
            os.chmod(self.socket_path, self.socket_mode)
            self.set_socket_group(self.socket_group)
            sock.listen(_LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise TagstatError(f"cannot listen on {self.socket_path}: {exc.strerror}") from exc
        sock.setblocking(False)
        return sock

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
        """Stop accepting, close every connection, close and unlink the socket. Safe twice."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.stop()
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        log.info("control socket closed")

    def __enter__(self) -> "ControlServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def handle(self, sock: socket.socket) -> None:
        """Serve one connection in the calling thread: read, dispatch, reply. Never raises.

        The daemon's own connections go through the selector loop; this runs the same
        steps, blocking, on a socket the caller owns (a socketpair, say).
        """
        try:
            line = wire.read_line(sock, self.max_request_bytes, self.timeout_s)
        except wire.BadRequest as exc:
            reply = bad_request(exc)
        except OSError:
            return  # the client went away; nobody to answer
        else:
            reply = self._reply_for_line(line, peer_cred(sock))
        try:
            sock.settimeout(self.timeout_s)
            sock.sendall(self._encode(reply))
            sock.shutdown(socket.SHUT_WR)
            drain_blocking(sock, self.drain_timeout_s)
        except OSError as exc:  # the client went away or stopped reading; its loss
            log.debug("could not send control reply: %s", exc)

    def _reply_for_line(self, line: bytes, peer: PeerCred | None) -> dict:
        """The reply to one request line; never raises (the server must survive any)."""
        try:
            return self._answer(line, peer)
        except Exception:
            log.exception("control request failed unexpectedly")
            return wire.error_reply("InternalError", "internal error")

    def _answer(self, line: bytes, peer: PeerCred | None) -> dict:
        try:
            op, args = wire.parse_request(wire.decode(line))
        except wire.BadRequest as exc:
            return bad_request(exc)
        try:
            allowed = self.authorize(op, peer)
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

    def _encode(self, reply: dict) -> bytes:
        try:
            return wire.encode(reply)
        except (TypeError, ValueError, RecursionError) as exc:  # the result is not JSON
            log.error("control reply is not JSON-serializable: %s", exc)
            return wire.encode(wire.error_reply("InternalError", "internal error: bad reply"))


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
