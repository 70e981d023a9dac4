"""Host information for the report: a coarse description of the processor, RAM and OS.

What is sent (``HostInfo.to_report()``) is about what the vendor's own usage report
holds, and for the same reason: to know which processors and systems time-tag
processing runs on, so that its SIMD paths and supported platforms follow what users
have. That is the CPU vendor and brand strings, its family and model numbers, the
logical processor count, 15 ISA booleans (``ISA_FEATURES``), RAM rounded to whole GiB,
and the OS as family, distribution and major version. Deliberately not sent, because
together they would fingerprint one machine across the anonymous ``user_id`` that an
opt-out makes: the kernel release or build string, the exact RAM size, the full CPU
flag list, the physical core count, and any host name, user name or address (none is
ever read). Every report has the same keys; an unknown number, distribution or version
is ``None``.
``py-cpuinfo`` takes about a second, so ``HostInfoCache`` keeps the result in a small
JSON file, valid for one boot of the machine and one version of tagstat and Python, and
collects in a background thread when the cache is stale: the daemon's start never
waits for it.
"""

import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import tagstat

log = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
CACHE_FORMAT = 2  # 2: the coarse fields below; a format-1 cache (full flags, bytes) is ignored

# (key in the report, py-cpuinfo flags that mean it, why it matters for time-tag processing).
# Linux /proc/cpuinfo, cpuid (Windows) and macOS sysctl spell some of them differently.
ISA_FEATURES: tuple[tuple[str, frozenset[str], str], ...] = (
    ("sse", frozenset({"sse"}), "the oldest x86 SIMD; the floor under every vector path"),
    ("sse2", frozenset({"sse2"}), "64-bit integer lanes for time stamps; the x86-64 baseline"),
    ("sse3", frozenset({"sse3", "pni"}), "horizontal adds; Linux calls it pni"),
    ("ssse3", frozenset({"ssse3"}), "byte shuffles that unpack packed tag words"),
    ("sse4_1", frozenset({"sse4_1", "sse4.1"}), "64-bit lane blends, inserts and compares"),
    ("sse4_2", frozenset({"sse4_2", "sse4.2"}), "64-bit greater-than, to merge sorted tags"),
    ("avx", frozenset({"avx", "avx1.0"}), "256-bit floating point: histograms, normalising"),
    ("avx2", frozenset({"avx2"}), "256-bit integer lanes: the main fast path over tag streams"),
    ("avx512", frozenset({"avx512f"}), "512-bit paths; avx512f is the base all subsets need"),
    ("fma", frozenset({"fma"}), "fused multiply-add in correlation and fitting measurements"),
    ("bmi1", frozenset({"bmi1"}), "tzcnt/andn to walk channel bit masks"),
    ("bmi2", frozenset({"bmi2"}), "pext/pdep to unpack the bit fields of raw tag words"),
    ("popcnt", frozenset({"popcnt"}), "counts the set bits of event and channel masks"),
    ("aes", frozenset({"aes"}), "AES-NI: fast hashing and encrypted network streaming"),
    ("neon", frozenset({"neon", "asimd"}), "Arm's SIMD (asimd on AArch64): the Arm vector path"),
)
_ISA_NAMES = tuple(name for name, _, _ in ISA_FEATURES)

_BRAND_MAX = 80
_VENDOR_MAX = 12  # cpuid vendor ids are 12 characters ("GenuineIntel")
_DISTRIBUTION = re.compile(r"[a-z0-9._-]{1,32}")
# The leading number of "22.04", "10", "2019Server"; a longer one (openSUSE Tumbleweed's
# snapshot date "20240101") is no major version.
_MAJOR = re.compile(r"\d{1,4}(?!\d)")


@dataclasses.dataclass(frozen=True)
class HostInfo:
    cpu_vendor: str  # "GenuineIntel", "AuthenticAMD"; "unknown" if none
    cpu_brand: str  # "Intel(R) Xeon(R) Processor"; printable ASCII, at most 80 characters
    cpu_family: int | None
    cpu_model: int | None
    cpu_logical_processors: int
    isa_features: tuple[str, ...]  # the ISA_FEATURES names this processor has, in table order
    ram_gib: int  # total RAM rounded to the nearest GiB, at least 1
    os_family: str  # platform.system(): "Linux", "Windows", "Darwin"
    os_distribution: str | None  # os-release ID ("debian"), "windows" or "macos"
    os_version: str | None  # major version only: "12", "22", "11", "14"
    python: str  # these two key the cache and are not part of to_report()
    tagstat: str

    def to_report(self) -> dict:
        return {
            "cpu": {
                "vendor": self.cpu_vendor,
                "brand": self.cpu_brand,
                "family": self.cpu_family,
                "model": self.cpu_model,
                "logical_processors": self.cpu_logical_processors,
                "isa_features": {name: name in self.isa_features for name in _ISA_NAMES},
            },
            "ram_gib": self.ram_gib,
            "os": {
                "family": self.os_family,
                "distribution": self.os_distribution,
                "version": self.os_version,
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> "HostInfo":
        """Rebuild from ``dataclasses.asdict`` output; ValueError if anything is off."""
        if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(cls)}:
            raise ValueError("wrong fields")
        isa = data["isa_features"]
        if not isinstance(isa, list) or list(isa) != [n for n in _ISA_NAMES if n in isa]:
            raise ValueError("isa_features")
        if not all(_valid_field(name, data[name]) for name in _CHECKS):
            raise ValueError("field types")
        return cls(**{**data, "isa_features": tuple(isa)})


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_str(value) -> bool:
    return isinstance(value, str)


# A cached value must be what collection could have produced, so a hand-edited cache
# cannot put anything longer or stranger into the report than a fresh collection.
_CHECKS: dict[str, Callable[[object], bool]] = {
    "cpu_vendor": lambda v: _is_str(v) and v != "" and clean_text(v, _VENDOR_MAX) == v,
    "cpu_brand": lambda v: _is_str(v) and v != "" and clean_text(v, _BRAND_MAX) == v,
    "cpu_family": _optional(lambda v: _small_int(v) == v),
    "cpu_model": _optional(lambda v: _small_int(v) == v),
    "cpu_logical_processors": _positive_int,
    "ram_gib": _positive_int,
    "os_family": lambda v: _is_str(v) and v != "" and _os_family(v) == v,
    "os_distribution": _optional(lambda v: _is_str(v) and _distribution(v) == v),
    "os_version": _optional(lambda v: _is_str(v) and major_version(v) == v),
    "python": _is_str,
    "tagstat": _is_str,
}


def _valid_field(name: str, value) -> bool:
    try:
        return bool(_CHECKS[name](value))
    except (TypeError, ValueError):
        return False


class OsInfo(NamedTuple):
    family: str
    distribution: str | None
    version: str | None


def _py_cpuinfo() -> dict:
    import cpuinfo  # imported here: it is slow to import and only the collecting thread needs it

    return cpuinfo.get_cpu_info()


def _psutil_logical_processors() -> int | None:
    import psutil

    return psutil.cpu_count(logical=True) or os.cpu_count()


def _psutil_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _mac_release() -> str:
    return platform.mac_ver()[0]


def collect_host_info(
    *,
    cpu_info: Callable[[], Mapping] = _py_cpuinfo,
    logical_processors: Callable[[], int | None] = _psutil_logical_processors,
    ram_bytes: Callable[[], int] = _psutil_ram_bytes,
    os_release: Callable[[], Mapping[str, str]] = platform.freedesktop_os_release,
    system: Callable[[], str] = platform.system,
) -> HostInfo:
    """Gather the host's description; slow (about 1 s), so never on the start-up path.

    The sources default to py-cpuinfo, psutil and the platform module; tests pass fixed ones.
    """
    cpu = cpu_info()
    os_info = describe_os(system=system, os_release=os_release)
    return HostInfo(
        cpu_vendor=cpu_vendor(cpu),
        cpu_brand=cpu_brand(cpu),
        cpu_family=_small_int(cpu.get("family")),
        cpu_model=_small_int(cpu.get("model")),
        cpu_logical_processors=logical_processors() or 1,
        isa_features=isa_features(cpu),
        ram_gib=ram_gib(ram_bytes()),
        os_family=os_info.family,
        os_distribution=os_info.distribution,
        os_version=os_info.version,
        python=platform.python_version(),
        tagstat=tagstat.__version__,
    )


def clean_text(value, limit: int) -> str:
    """Whitespace runs made one space, only printable ASCII kept, at most ``limit`` long."""
    text = " ".join(str(value).split())
    return "".join(c for c in text if c.isascii() and c.isprintable())[:limit].strip()


def cpu_vendor(cpu: Mapping) -> str:
    """py-cpuinfo's vendor id, else the architecture's family ("arm" for ARM_8)."""
    vendor = clean_text(cpu.get("vendor_id_raw") or "", _VENDOR_MAX)
    if not vendor:
        vendor = clean_text(str(cpu.get("arch") or "").split("_")[0].lower(), _VENDOR_MAX)
    return vendor or "unknown"


def cpu_brand(cpu: Mapping) -> str:
    brand = cpu.get("brand_raw") or platform.processor() or platform.machine()
    return clean_text(brand or "", _BRAND_MAX) or "unknown"


def isa_features(cpu: Mapping) -> tuple[str, ...]:
    """The ISA_FEATURES names whose flags py-cpuinfo reports, in table order."""
    flags = {str(f).strip().lower() for f in cpu.get("flags") or ()}
    if cpu.get("arch") == "ARM_8":
        # Advanced SIMD is mandatory on AArch64, and py-cpuinfo lists no flags on macOS.
        flags.add("asimd")
    return tuple(name for name, aliases, _ in ISA_FEATURES if aliases & flags)


def _small_int(value) -> int | None:
    """py-cpuinfo's family or model number: an int in 0..4095, or None.

    x86 families go up to 270 and models to 255; a bound keeps junk out of the report.
    """
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFF:
        return value
    return None


def ram_gib(total_bytes: int) -> int:
    """Rounded to the nearest GiB (half up), at least 1: 24105 MiB gives 24."""
    return max(1, (int(total_bytes) + (1 << 29)) >> 30)


def describe_os(
    *,
    system: Callable[[], str] = platform.system,
    os_release: Callable[[], Mapping[str, str]] = platform.freedesktop_os_release,
    windows_release: Callable[[], str] = platform.release,
    mac_release: Callable[[], str] = _mac_release,
) -> OsInfo:
    """Family, distribution and major version; never the kernel's release or build."""
    family = _os_family(system())
    if family == "Windows":
        return OsInfo(family, "windows", major_version(windows_release()))
    if family == "Darwin":
        return OsInfo(family, "macos", major_version(mac_release()))
    if family != "Linux":
        return OsInfo(family, None, None)
    try:
        release = os_release()
    except OSError:
        return OsInfo(family, None, None)  # no /etc/os-release nor /usr/lib/os-release
    version = major_version(release.get("VERSION_ID"))
    return OsInfo(family, _distribution(release.get("ID")), version)


def _os_family(system: str) -> str:
    # Only the leading word: Cygwin's "CYGWIN_NT-10.0-19045" would carry a build number.
    match = re.match(r"[A-Za-z]{1,12}", system or "")
    return match.group() if match else "unknown"


def _distribution(os_id: str | None) -> str | None:
    value = (os_id or "").strip().lower()
    return value if _DISTRIBUTION.fullmatch(value) else None


def major_version(version: str | None) -> str | None:
    """The leading number: "22.04" gives "22", "2019Server" "2019", "rolling" None."""
    match = _MAJOR.match((version or "").strip())
    return match.group() if match else None


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
