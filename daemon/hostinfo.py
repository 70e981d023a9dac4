"""Host information for the report: processor, RAM and operating system, nothing identifying.

The vendor's report holds the computer's processor name and capabilities and its
RAM size; this module gathers exactly that plus the OS and Python versions. It
never reads a host name, user name, MAC address or any other identifier.
``py-cpuinfo`` takes about a second, so ``HostInfoCache`` keeps the result in a
small JSON file, valid for one boot of the machine and one version of tagstat and
Python, and collects in a background thread when the cache is stale: the
daemon's start never waits for it.
"""

import dataclasses
import hashlib
import json
import logging
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path

import tagstat

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class HostInfo:
    cpu_brand: str
    cpu_flags: tuple[str, ...]
    cpu_cores_logical: int
    cpu_cores_physical: int | None
    ram_bytes: int
    os: str  # e.g. "Linux 6.1.0-18-amd64 (Debian GNU/Linux 12 (bookworm))"
    python: str
    tagstat: str

    def to_report(self) -> dict:
        return {
            "cpu": {
                "brand": self.cpu_brand,
                "flags": list(self.cpu_flags),
                "cores": self.cpu_cores_logical,
                "cores_physical": self.cpu_cores_physical,
            },
            "ram_bytes": self.ram_bytes,
            "os": self.os,
        }

    @classmethod
    def from_json(cls, data: dict) -> "HostInfo":
        """Rebuild from ``dataclasses.asdict`` output; ValueError if anything is off."""
        if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(cls)}:
            raise ValueError("wrong fields")
        flags = data["cpu_flags"]
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise ValueError("cpu_flags")
        physical = data["cpu_cores_physical"]
        checks = [
            all(isinstance(data[k], str) for k in ("cpu_brand", "os", "python", "tagstat")),
            _positive_int(data["cpu_cores_logical"]) and _positive_int(data["ram_bytes"]),
            physical is None or _positive_int(physical),
        ]
        if not all(checks):
            raise ValueError("field types")
        return cls(**{**data, "cpu_flags": tuple(flags)})


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def collect_host_info() -> HostInfo:
    """Gather the host's description; slow (about 1 s), so never on the start-up path."""
    import cpuinfo  # imported here: it is slow to import and only this thread needs it
    import psutil

    cpu = cpuinfo.get_cpu_info()
    brand = str(cpu.get("brand_raw") or platform.processor() or platform.machine() or "unknown")
    return HostInfo(
        cpu_brand=brand.strip(),
        cpu_flags=tuple(sorted(str(f) for f in cpu.get("flags", ()))),
        cpu_cores_logical=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        cpu_cores_physical=psutil.cpu_count(logical=False),
        ram_bytes=int(psutil.virtual_memory().total),
        os=os_description(),
        python=platform.python_version(),
        tagstat=tagstat.__version__,
    )


def os_description() -> str:
    """``system release (PRETTY_NAME)``, e.g. "Linux 6.1.0-18-amd64 (Debian GNU/Linux 12)"."""
    base = f"{platform.system()} {platform.release()}".strip()
    try:
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        pretty = ""  # not a freedesktop system (no /etc/os-release)
    return f"{base} ({pretty})" if pretty else base


def boot_tag(boot_id_path: Path = BOOT_ID_PATH) -> str:
    """A hash of this boot's id: hardware only changes across a reboot."""
    try:
        boot_id = boot_id_path.read_bytes().strip()
    except OSError:
        return ""
    return hashlib.sha256(b"tagstat-hostinfo:" + boot_id).hexdigest()[:16]


class HostInfoCache:
    """Host information, from the cache file or from a background collection."""

    def __init__(
        self,
        cache_path: Path,
        *,
        collect: Callable[[], HostInfo] = collect_host_info,
        boot_id_path: Path = BOOT_ID_PATH,
    ):
        self._path = Path(cache_path)
        self._collect = collect
        self._boot_id_path = boot_id_path
        self._ready = threading.Event()
        self._info: HostInfo | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Returns at once: uses a valid cache, or starts collecting in a daemon thread.

        Idempotent, so the service can call it whenever collection is (re)enabled.
        """
        if self._ready.is_set() or (self._thread is not None and self._thread.is_alive()):
            return
        stamp = self._stamp()
        info = self._load(stamp)
        if info is not None:
            self._info = info
            self._ready.set()
            return
        self._thread = threading.Thread(
            target=self._collect_and_save, args=(stamp,), name="tagstat-hostinfo", daemon=True
        )
        self._thread.start()

    def get(self, timeout_s: float = 0) -> HostInfo | None:
        """The host information, or None while it is still being collected."""
        if timeout_s > 0:
            self._ready.wait(timeout_s)
        return self._info

    def _stamp(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "boot": boot_tag(self._boot_id_path),
            "python": platform.python_version(),
            "tagstat": tagstat.__version__,
        }

    def _load(self, stamp: dict) -> HostInfo | None:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.info("ignoring unreadable host information cache %s: %s", self._path, e)
            return None
        if not isinstance(data, dict) or data.get("stamp") != stamp:
            log.debug("host information cache %s is stale", self._path)
            return None
        try:
            return HostInfo.from_json(data.get("host"))
        except (TypeError, ValueError) as e:
            log.info("ignoring invalid host information cache %s: %s", self._path, e)
            return None

    def _collect_and_save(self, stamp: dict) -> None:
        try:
            info = self._collect()
        except Exception as e:  # a failed collection leaves the report without host data
            log.warning("could not collect host information: %s", e)
            self._ready.set()
            return
        self._info = info
        self._ready.set()
        try:
            self._save(stamp, info)
        except OSError as e:
            log.warning("could not write the host information cache %s: %s", self._path, e)

    def _save(self, stamp: dict, info: HostInfo) -> None:
        text = json.dumps({"stamp": stamp, "host": dataclasses.asdict(info)}, indent=1)
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        finally:
            tmp.unlink(missing_ok=True)
