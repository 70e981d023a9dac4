"""Where tagstat keeps its files.

A system instance uses ``/etc/tagstat``, ``/var/lib/tagstat`` and
``/run/tagstat``. A non-system instance (``--home DIR`` or ``TAGSTAT_HOME``)
keeps all three in one directory, which is what tests and the demo use.
"""

import dataclasses
import os
from pathlib import Path

SYSTEM_CONFIG_DIR = Path("/etc/tagstat")
SYSTEM_STATE_DIR = Path("/var/lib/tagstat")
SYSTEM_RUNTIME_DIR = Path("/run/tagstat")


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

    def ensure(self) -> None:
        for d in (self.state_dir, self.runtime_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o750)
