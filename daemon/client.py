"""The public API: the vendor's usage-statistics calls, served by tagstatd.

``getUsageStatisticsReport``, ``getUsageStatisticsStatus`` and
``setUsageStatisticsStatus`` keep the vendor's names, arguments and values;
each opens one connection to the daemon's control socket (``tagstat.wire``),
sends one request and turns the reply, or the lack of one, into a return
value or a ``TagstatError`` that says what to do. Arguments are checked
before any socket I/O. ``Client`` is the same thing with a chosen socket
path, and is what the ``tagstat`` CLI uses.
"""

import errno
import os
import socket
import struct
from pathlib import Path

from tagstat import killswitch, wire
from tagstat.errors import ApiError, DaemonNotRunningError, TagstatError
from tagstat.paths import Paths, socket_path_problem
from tagstat.status import UsageStatisticsStatus

DEFAULT_TIMEOUT_S = 5.0
SOCKET_GROUP = "tagstat"
_NOT_RUNNING = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR)
_DENIED = (errno.EACCES, errno.EPERM)


class Client:
    """One tagstatd, reached through its control socket."""

    def __init__(self, socket_path: Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.socket_path = Path(socket_path) if socket_path else Paths.resolve().socket
        self.timeout_s = timeout_s

    def call(self, op: str, **args):
        """Send one request and return its result, or raise what the daemon answered."""
        request = wire.encode({"op": op, **args})
        with self._connect() as sock:
            try:
                sock.sendall(request)
                reply = wire.read_message(sock, None, self.timeout_s)
            except wire.MessageTimeout:
                raise TagstatError(
                    f"tagstatd on {self.socket_path} did not answer within {self.timeout_s:g} s"
                ) from None
            except wire.BadRequest as exc:
                raise ApiError(
                    f"garbled reply from tagstatd on {self.socket_path}: {exc}"
                ) from None
            except OSError as exc:
                raise TagstatError(
                    f"lost the connection to tagstatd on {self.socket_path}: {_reason(exc)}"
                ) from exc
        return self._result(reply)

    def status(self) -> dict:
        return self._expect(self.call("get_status"), dict, "status")

    def set_status(self, status, persistent: bool = True, origin: str = "api") -> dict:
        """``origin``: "cli" from `tagstat status`, "api" from a program (the consent record
        says which)."""
        status = UsageStatisticsStatus.parse(status)
        if not isinstance(persistent, bool):
            raise TypeError(f"persistent must be True or False, not {persistent!r}")
        switch = killswitch.client_switch()  # TAGSTAT_DISABLE or DO_NOT_TRACK here
        if switch is not None and status != UsageStatisticsStatus.Disabled:
            raise killswitch.refusal(switch, status.name)
        args = {"origin": origin} if origin != "api" else {}  # older daemons know no origin
        result = self.call("set_status", status=int(status), persistent=persistent, **args)
        return self._expect(result, dict, "status")

    def set_consent(self, version: int, upload: bool, *, new_fields=False, dry_run=False) -> dict:
        """Answer the consent question about report schema ``version`` (admin; tagstat.consent).

        ``dry_run`` records nothing: it checks that this user may answer.
        """
        switch = killswitch.client_switch()
        if upload and switch is not None:
            raise killswitch.refusal(switch, UsageStatisticsStatus.CollectingAndUploading.name)
        result = self.call("set_consent", version=version, upload=upload,
                           new_fields=new_fields, dry_run=dry_run)  # fmt: skip
        return self._expect(result, dict, "status")

    def report(self) -> str:
        return self._expect(self.call("get_report"), str, "report")

    def devices(self, calibration: bool = False) -> list[dict]:
        """The devices seen; with ``calibration`` each one's raw (masked) calibration table."""
        args = {"calibration": True} if calibration else {}
        return self._expect_rows(self.call("devices", **args), "device list")

    def sessions(self) -> list[dict]:
        return self._expect_rows(self.call("sessions"), "session list")

    def pending_report(self) -> dict:
        """The body the next upload will send (``body``), or the current period's report."""
        return self._expect(self.call("pending_report"), dict, "pending report")

    def uploads(self) -> list[dict]:
        """The upload audit log, oldest first: time, report id, size, result."""
        return self._expect_rows(self.call("uploads"), "upload list")

    def upload_body(self, report_id: str) -> dict:
        """The exact JSON bytes stored (and sent gzip-compressed) for one report."""
        if not isinstance(report_id, str):
            raise TypeError(f"report_id must be a string, not {type(report_id).__name__}")
        return self._expect(self.call("upload_body", report_id=report_id), dict, "upload")

    # -- purge and export (tagstat.purge, tagstat.export) ------------------------------

    def purge(self) -> dict:
        """Delete the collected data; keeps settings, makes a new user id (admin)."""
        return self._expect(self.call("purge"), dict, "purge result")

    def export_begin(self) -> dict:
        """The pending uploads and a token to mark them exported with (admin)."""
        return self._expect(self.call("export_begin"), dict, "export")

    def export_commit(self, token: str) -> dict:
        """Mark the reports of ``export_begin`` as delivered by export (admin)."""
        return self._expect(self.call("export_commit", token=token), dict, "export result")

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Connect blocking, bounded by SO_SNDTIMEO: the kernel then queues us while the
        # daemon's listen backlog is full (another process flooding it with connects),
        # where a non-blocking connect (settimeout) is refused at once with EAGAIN.
        seconds = max(self.timeout_s, 0.001)
        timeval = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        try:
            sock.connect(os.fspath(self.socket_path))
            sock.settimeout(self.timeout_s)
        except OSError as exc:
            sock.close()
            raise self._connect_error(exc) from exc
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_error(self, exc: OSError) -> TagstatError:
        path = self.socket_path
        too_long = socket_path_problem(path)  # Python's own message ends in ": None"
        if too_long:
            return TagstatError(f"{too_long}: use a shorter --home (TAGSTAT_HOME) or --socket")
        if isinstance(exc, TimeoutError) or exc.errno == errno.EAGAIN:  # SO_SNDTIMEO ran out
            return TagstatError(f"tagstatd on {path} did not accept within {self.timeout_s:g} s")
        if exc.errno in _NOT_RUNNING:
            return DaemonNotRunningError(_not_running(path, exc))
        if exc.errno in _DENIED:
            return TagstatError(
                f"permission denied on {path}: add yourself to group {SOCKET_GROUP} "
                f"(sudo usermod -aG {SOCKET_GROUP} $USER) and log in again"
            )
        return TagstatError(f"cannot connect to tagstatd on {path}: {_reason(exc)}")

    def _result(self, reply: dict):
        ok = reply.get("ok")
        if ok is True and "result" in reply:
            return reply["result"]
        error = reply.get("error")
        if ok is not False or not isinstance(error, dict):
            raise ApiError(f"garbled reply from tagstatd on {self.socket_path}: {reply!r:.200}")
        message = str(error.get("message", "(no message)"))
        if error.get("type") == "ValueError":
            raise ValueError(message)
        raise ApiError(message)

    def _expect(self, value, kind: type, what: str):
        if not isinstance(value, kind):
            raise ApiError(
                f"garbled reply from tagstatd on {self.socket_path}: "
                f"{what} is a {type(value).__name__}, expected a {kind.__name__}"
            )
        return value

    def _expect_rows(self, value, what: str) -> list[dict]:
        rows = self._expect(value, list, what)
        for row in rows:
            self._expect(row, dict, f"an entry of the {what}")
        return rows


def _not_running(path: Path, exc: OSError) -> str:
    """A mistyped home is named as such: only tagstatd creates one, the CLI never does."""
    where = path.parent
    if path != Paths.system().socket and not os.path.isdir(where):
        state = ("does not exist" if not os.path.lexists(where)
                 else "is a file, not a directory" if os.path.isfile(where)
                 else "is not a directory")  # fmt: skip
        return f"no tagstatd answers on {path}: {where} {state}; is the path right?"
    return (f"no tagstatd answers on {path} ({_reason(exc)}): is tagstatd running? "
            "start it with `systemctl start tagstatd` or `tagstatd --home DIR`")  # fmt: skip


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def getUsageStatisticsReport() -> str:  # noqa: N802 - the vendor's name
    """The usage report as a JSON string (or an informational text when there is no data)."""
    return Client().report()


def getUsageStatisticsStatus() -> UsageStatisticsStatus:  # noqa: N802 - the vendor's name
    """The status currently in force; Disabled in a process with a kill switch set."""
    if killswitch.client_switch() is not None:
        return UsageStatisticsStatus.Disabled  # this process sends nothing, whatever tagstatd does
    client = Client()
    value = client.status().get("status")
    try:
        return UsageStatisticsStatus.parse(value)
    except ValueError:
        raise ApiError(
            f"garbled reply from tagstatd on {client.socket_path}: status {value!r}"
        ) from None


def setUsageStatisticsStatus(status, persistent_config: bool = True) -> None:  # noqa: N802
    """Set the status; with ``persistent_config=False`` it holds until tagstatd restarts.

    An invalid ``status`` raises ValueError listing the allowed values, and a
    collecting status in a process with ``TAGSTAT_DISABLE`` or ``DO_NOT_TRACK``
    set raises ``KillSwitchOn`` naming it, both before the daemon is contacted.
    """
    status = UsageStatisticsStatus.parse(status)
    Client().set_status(status, persistent=persistent_config)
