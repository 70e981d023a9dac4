"""Where tagstat keeps its files.

A system instance uses ``/etc/tagstat``, ``/var/lib/tagstat`` and
``/run/tagstat``. A non-system instance (``--home DIR`` or ``TAGSTAT_HOME``)
keeps all three in one directory, which is what tests and the demo use.
Only tagstatd creates these directories (``Paths.ensure``); the CLI never
does, so a mistyped ``--home`` is an error, not a new install.
"""

import dataclasses
import os
import pwd
from pathlib import Path

from tagstat.errors import TagstatError

SYSTEM_CONFIG_DIR = Path("/etc/tagstat")
SYSTEM_STATE_DIR = Path("/var/lib/tagstat")
SYSTEM_RUNTIME_DIR = Path("/run/tagstat")
# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
SOCKET_PATH_MAX_BYTES = 107
_SYSTEM_ADVICE = (
    "without --home, tagstatd is the system instance, which runs as the service user: "
    "start it with `sudo systemctl start tagstatd`, or pass --home DIR to run one of your own"
)
_CREATE_ADVICE = "create it, or pass a --home in a directory you can write"
_WRITE_ADVICE = (
    "tagstatd keeps its database and control socket there, so it must be writable: "
    "fix its permissions or pass another --home"
)


@dataclasses.dataclass(frozen=True)
class Paths:
    config_dir: Path
    state_dir: Path
    runtime_dir: Path

    @classmethod
    def system(cls) -> "Paths":
        return cls(SYSTEM_CONFIG_DIR, SYSTEM_STATE_DIR, SYSTEM_RUNTIME_DIR)

    @classmethod
    def for_home(cls, home: str | os.PathLike) -> "Paths":
        home = Path(home).absolute()
        return cls(home, home, home)

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> "Paths":
        """``home`` if given, else ``TAGSTAT_HOME``, else the system paths."""
        home = home or os.environ.get("TAGSTAT_HOME")
        return cls.for_home(home) if home else cls.system()

    @property
    def config_file(self) -> Path:
        return self.config_dir / "tagstat.toml"

    @property
    def database(self) -> Path:
        return self.state_dir / "tagstat.db"

    @property
    def secret_file(self) -> Path:
        return self.state_dir / "secret.key"

    @property
    def hostinfo_cache(self) -> Path:
        return self.state_dir / "hostinfo.json"

    @property
    def simulator_dir(self) -> Path:
        """State of simulated instruments, which outlive the daemon like real ones."""
        return self.state_dir / "simulator"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "control.sock"

    @property
    def is_system(self) -> bool:
        return self == Paths.system()

    def check_socket(self) -> None:
        """Raise TagstatError if the control socket's path is too long to bind."""
        problem = socket_path_problem(self.socket)
        if problem:
            raise TagstatError(f"{problem}: use a shorter --home")

    def ensure(self) -> None:
        """Create the state and runtime directories; raise TagstatError saying what to do
        if one cannot be created or written (tagstatd only: the CLI never creates)."""
        for d in dict.fromkeys((self.state_dir, self.runtime_dir)):
            _ensure_dir(d, self.is_system)


def socket_path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a Unix socket's path (it is too long), or None."""
    n = len(os.fsencode(path))
    if n <= SOCKET_PATH_MAX_BYTES:
        return None
    return (f"the control socket path {path} is {n} bytes, and Unix socket paths are "
            f"limited to {SOCKET_PATH_MAX_BYTES} bytes")  # fmt: skip


def _ensure_dir(d: Path, system: bool) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o750)
    except (FileExistsError, NotADirectoryError):
        raise TagstatError(_not_a_directory(d)) from None
    except PermissionError:
        advice = _SYSTEM_ADVICE if system else _CREATE_ADVICE
        raise TagstatError(
            f"cannot create {d}: permission denied for user {_user()}; {advice}"
        ) from None
    except OSError as exc:
        raise TagstatError(f"cannot create {d}: {exc.strerror}") from None
    if not os.access(d, os.W_OK | os.X_OK):  # its mode or owner, or a read-only mount
        advice = _SYSTEM_ADVICE if system else _WRITE_ADVICE
        raise TagstatError(f"{d} is not writable by user {_user()}; {advice}")


def _not_a_directory(d: Path) -> str:
    """``d``, or the first of its parents that exists, is a file (or so) where a
    directory must be."""
    blocker = next((p for p in (d, *d.parents) if os.path.lexists(p)), d)
    what = "a file, not a directory" if blocker.is_file() else "not a directory"
    where = f"{d} is {what}" if blocker == d else f"cannot create {d}: {blocker} is {what}"
    return (f"{where}; pass a --home that is a directory, or one that does not exist yet "
            "(tagstatd creates it)")  # fmt: skip


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
