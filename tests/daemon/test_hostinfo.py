"""Host information: coarse fields only, cached per boot, collected off the start-up path."""

import dataclasses
import json
import logging
import platform
import socket
import threading
import time

import pytest

from tagstat import hostinfo
from tagstat.hostinfo import (
    CACHE_FORMAT,
    ISA_FEATURES,
    HostInfo,
    HostInfoCache,
    collect_host_info,
    describe_os,
    ram_gib,
)

ALL_ISA = tuple(name for name, _, _ in ISA_FEATURES)
X86_ISA = tuple(name for name in ALL_ISA if name != "neon")

INFO = HostInfo(
    cpu_vendor="GenuineIntel",
    cpu_brand="Intel(R) Xeon(R) Processor",
    cpu_family=6,
    cpu_model=167,
    cpu_logical_processors=2,
    isa_features=tuple(n for n in X86_ISA if n != "avx512"),
    ram_gib=24,
    os_family="Linux",
    os_distribution="debian",
    os_version="12",
    python="3.11.2",
    tagstat="0.1.0",
)

REPORT_KEYS = {"cpu", "ram_gib", "os"}
CPU_KEYS = {"vendor", "brand", "family", "model", "logical_processors", "isa_features"}
OS_KEYS = {"family", "distribution", "version"}
ISA_KEYS = {
    "sse", "sse2", "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "avx512",
    "fma", "bmi1", "bmi2", "popcnt", "aes", "neon",
}  # fmt: skip

DEBIAN_12 = {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}
UBUNTU_2204 = {"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "22.04"}
FEDORA_40 = {"ID": "fedora", "VERSION_ID": "40", "VARIANT_ID": "workstation"}

# /proc/cpuinfo of a Sapphire Rapids guest: 116 flags, spelled as Linux spells them.
LINUX_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon rep_good nopl "
    "xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 "
    "x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm "
    "3dnowprefetch cpuid_fault invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase "
    "tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma "
    "clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni "
    "avx512_bf16 wbnoinvd arat avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes "
    "vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid cldemote movdiri movdir64b "
    "md_clear serialize amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities"
).split()
# Flags that no ISA_FEATURES entry names: none of them may reach the report.
UNREPORTED_FLAGS = sorted(
    set(LINUX_FLAGS) - set().union(*(aliases for _, aliases, _ in ISA_FEATURES)) - ISA_KEYS
)

CPU_INFO = {
    "vendor_id_raw": "GenuineIntel",
    "brand_raw": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
    "family": 6,
    "model": 143,
    "stepping": 8,
    "arch": "X86_64",
    "flags": LINUX_FLAGS,
}


def fake_collect(cpu=CPU_INFO, logical=2, ram=24105 << 20, release=DEBIAN_12, system="Linux"):
    def os_release():
        if release is None:
            raise OSError("no os-release")
        return release

    return collect_host_info(
        cpu_info=lambda: cpu,
        logical_processors=lambda: logical,
        ram_bytes=lambda: ram,
        os_release=os_release,
        system=lambda: system,
    )


def assert_report_keys(report: dict) -> None:
    assert set(report) == REPORT_KEYS
    assert set(report["cpu"]) == CPU_KEYS
    assert set(report["cpu"]["isa_features"]) == ISA_KEYS
    assert all(isinstance(v, bool) for v in report["cpu"]["isa_features"].values())
    assert set(report["os"]) == OS_KEYS


# --- the report's shape -----------------------------------------------------------------


def test_report_shape():
    assert INFO.to_report() == {
        "cpu": {
            "vendor": "GenuineIntel",
            "brand": "Intel(R) Xeon(R) Processor",
            "family": 6,
            "model": 167,
            "logical_processors": 2,
            "isa_features": {
                "sse": True,
                "sse2": True,
                "sse3": True,
                "ssse3": True,
                "sse4_1": True,
                "sse4_2": True,
                "avx": True,
                "avx2": True,
                "avx512": False,
                "fma": True,
                "bmi1": True,
                "bmi2": True,
                "popcnt": True,
                "aes": True,
                "neon": False,
            },  # fmt: skip
        },
        "ram_gib": 24,
        "os": {"family": "Linux", "distribution": "debian", "version": "12"},
    }


def test_isa_table_has_the_fifteen_keys_each_with_a_reason():
    assert set(ALL_ISA) == ISA_KEYS and len(ALL_ISA) == 15
    assert all(why and aliases for _, aliases, why in ISA_FEATURES)


def test_every_key_is_present_when_nothing_is_known():
    info = fake_collect(cpu={}, logical=None, ram=0, release=None)
    report = info.to_report()
    assert_report_keys(report)
    assert report["cpu"] == {
        "vendor": "unknown",
        "brand": report["cpu"]["brand"],  # platform.processor() or machine(): this machine's
        "family": None,
        "model": None,
        "logical_processors": 1,
        "isa_features": dict.fromkeys(ALL_ISA, False),
    }
    assert report["ram_gib"] == 1
    assert report["os"] == {"family": "Linux", "distribution": None, "version": None}


def test_collect_from_fixed_sources():
    info = fake_collect()
    assert info.to_report() == {
        "cpu": {
            "vendor": "GenuineIntel",
            "brand": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
            "family": 6,
            "model": 143,
            "logical_processors": 2,
            "isa_features": {**dict.fromkeys(ALL_ISA, True), "neon": False},
        },
        "ram_gib": 24,
        "os": {"family": "Linux", "distribution": "debian", "version": "12"},
    }
    assert info.python == platform.python_version()


def test_nothing_identifying_or_fine_grained_reaches_the_report():
    text = json.dumps(fake_collect().to_report())
    assert len(LINUX_FLAGS) == 116 and len(UNREPORTED_FLAGS) > 90
    for flag in UNREPORTED_FLAGS:
        assert f'"{flag}"' not in text
    assert " ".join(LINUX_FLAGS) not in text
    assert platform.release() not in text  # the kernel release, e.g. "6.1.0-18-amd64"
    assert platform.version() not in text  # its build string
    assert "bookworm" not in text and "PRETTY" not in text
    assert str(24105 << 20) not in text and "24105" not in text  # exact RAM, bytes or MiB
    assert "stepping" not in text and "cores_physical" not in text


def test_report_json_stays_under_500_bytes():
    assert len(json.dumps(INFO.to_report()).encode()) < 500
    assert len(json.dumps(fake_collect().to_report()).encode()) < 500
    # Every field at its longest, as the upload encodes it (report_json: no spaces).
    longest = HostInfo(
        cpu_vendor="V" * 12,
        cpu_brand="B" * 80,
        cpu_family=4095,
        cpu_model=4095,
        cpu_logical_processors=8192,
        isa_features=ALL_ISA,
        ram_gib=65536,
        os_family="F" * 12,
        os_distribution="d" * 32,
        os_version="9999",
        python="3.11.2",
        tagstat="0.1.0",
    )
    cached = json.loads(json.dumps(dataclasses.asdict(longest)))
    assert HostInfo.from_json(cached) == longest  # these are the limits
    assert len(json.dumps(longest.to_report(), separators=(",", ":")).encode()) < 500


# --- processor --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "flags", "expected"),
    [
        ("X86_64", ["pni"], {"sse3"}),
        ("X86_64", ["sse3"], {"sse3"}),
        ("X86_64", ["avx512f", "avx512bw"], {"avx512"}),
        ("X86_64", ["avx512bw", "avx512vl"], set()),  # subsets without the foundation
        ("X86_64", ["SSE4.1", "sse4.2", "avx1.0"], {"sse4_1", "sse4_2", "avx"}),  # macOS sysctl
        ("X86_64", ["sse4_1", "popcnt", "aes", "fma"], {"sse4_1", "popcnt", "aes", "fma"}),
        ("ARM_8", ["fp", "asimd", "aes", "crc32"], {"neon", "aes"}),
        ("ARM_7", ["half", "thumb", "neon", "vfpv4"], {"neon"}),
        ("ARM_7", ["half", "thumb", "vfpv3"], set()),
        ("ARM_8", [], {"neon"}),  # Apple silicon: py-cpuinfo has no flags, AArch64 has ASIMD
        ("X86_64", [], set()),
    ],
)  # fmt: skip
def test_isa_aliases(arch, flags, expected):
    info = fake_collect(cpu={"arch": arch, "flags": flags})
    isa = info.to_report()["cpu"]["isa_features"]
    assert {name for name, present in isa.items() if present} == expected
    assert list(isa) == list(ALL_ISA)


@pytest.mark.parametrize(
    ("cpu", "vendor", "brand"),
    [
        ({"vendor_id_raw": "AuthenticAMD", "brand_raw": "AMD EPYC 7763 64-Core Processor"},
         "AuthenticAMD", "AMD EPYC 7763 64-Core Processor"),
        ({"vendor_id_raw": " GenuineIntel\n", "brand_raw": "  Intel(R) Core(TM)\ti7   CPU  "},
         "GenuineIntel", "Intel(R) Core(TM) i7 CPU"),
        ({"vendor_id_raw": "Genuine\x00Intel", "brand_raw": "Xeon\x1b[31m\u00ae \u2122"},
         "GenuineIntel", "Xeon[31m"),
        ({"brand_raw": "x" * 200}, "unknown", "x" * 80),
        ({"arch": "ARM_8", "brand_raw": "Apple M2"}, "arm", "Apple M2"),
        ({"arch": "RISCV_64", "brand_raw": "SiFive U74"}, "riscv", "SiFive U74"),
        ({"vendor_id_raw": "", "arch": "PPC_64", "brand_raw": "POWER9"}, "ppc", "POWER9"),
    ],
)  # fmt: skip
def test_vendor_and_brand_are_trimmed_printable_and_short(cpu, vendor, brand):
    info = fake_collect(cpu=cpu)
    assert (info.cpu_vendor, info.cpu_brand) == (vendor, brand)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(6, 6), (25, 25), (0, 0), ("6", 6), (None, None), (True, None), (-1, None),
     (1 << 20, None), ("six", None), (6.0, None)],
)  # fmt: skip
def test_family_and_model_are_small_ints_or_none(value, expected):
    info = fake_collect(cpu={"family": value, "model": value})
    assert info.cpu_family == expected and info.cpu_model == expected


@pytest.mark.parametrize(("logical", "expected"), [(2, 2), (128, 128), (None, 1), (0, 1)])
def test_logical_processors(logical, expected):
    assert fake_collect(logical=logical).cpu_logical_processors == expected


# --- RAM --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total_bytes", "gib"),
    [
        (24105 << 20, 24),  # the vendor report's 24105 MB
        (16 << 30, 16),
        ((23 << 30) + (1 << 29), 24),  # exactly half rounds up
        ((23 << 30) + (1 << 29) - 1, 23),
        (int(0.4 * (1 << 30)), 1),  # never 0
        (0, 1),
        ((1 << 40) - (100 << 20), 1024),
    ],
)
def test_ram_rounds_to_the_nearest_gib(total_bytes, gib):
    assert ram_gib(total_bytes) == gib
    assert fake_collect(ram=total_bytes).ram_gib == gib


# --- operating system -------------------------------------------------------------------


def linux(release):
    def read():
        if release is None:
            raise OSError("neither /etc/os-release nor /usr/lib/os-release")
        return release

    return describe_os(system=lambda: "Linux", os_release=read)


@pytest.mark.parametrize(
    ("release", "distribution", "version"),
    [
        (DEBIAN_12, "debian", "12"),
        (UBUNTU_2204, "ubuntu", "22"),
        (FEDORA_40, "fedora", "40"),
        ({"ID": "opensuse-leap", "VERSION_ID": "15.5"}, "opensuse-leap", "15"),
        ({"ID": "Rocky", "VERSION_ID": "9.3"}, "rocky", "9"),  # lower-cased
        ({"ID": "arch"}, "arch", None),  # rolling: no VERSION_ID
        ({"ID": "opensuse-tumbleweed", "VERSION_ID": "20240101"}, "opensuse-tumbleweed", None),
        ({"ID": "debian", "VERSION_ID": "bookworm/sid"}, "debian", None),
        ({"ID": "My Distro!", "VERSION_ID": "1"}, None, "1"),
        ({"ID": "lab-pc-17.physics.example.org.with.a.long.name", "VERSION_ID": "3"}, None, "3"),
        ({"ID": "d\u00e9bian", "VERSION_ID": "12"}, None, "12"),
        ({"ID": "", "VERSION_ID": ""}, None, None),
        ({}, None, None),
        (None, None, None),  # no os-release at all
    ],
)
def test_linux_distribution_and_major_version(release, distribution, version):
    assert linux(release) == ("Linux", distribution, version)


@pytest.mark.parametrize(
    ("system", "windows", "mac", "expected"),
    [
        ("Windows", "10", "", ("Windows", "windows", "10")),
        ("Windows", "11", "", ("Windows", "windows", "11")),
        ("Windows", "2019Server", "", ("Windows", "windows", "2019")),
        ("Windows", "", "", ("Windows", "windows", None)),
        ("Darwin", "23.2.0", "14.2.1", ("Darwin", "macos", "14")),  # not the Darwin kernel's 23
        ("Darwin", "23.2.0", "", ("Darwin", "macos", None)),
        ("FreeBSD", "14.0-RELEASE", "", ("FreeBSD", None, None)),
        ("CYGWIN_NT-10.0-19045", "3.4.10", "", ("CYGWIN", None, None)),
        ("", "", "", ("unknown", None, None)),
    ],
)
def test_other_systems_never_give_the_kernel_release(system, windows, mac, expected):
    def no_os_release():
        raise AssertionError("os-release is only read on Linux")

    got = describe_os(
        system=lambda: system,
        os_release=no_os_release,
        windows_release=lambda: windows,
        mac_release=lambda: mac,
    )
    assert got == expected


def test_linux_never_reads_the_kernel_release():
    def kernel_release():
        raise AssertionError("the kernel release is never read on Linux")

    got = describe_os(
        system=lambda: "Linux",
        os_release=lambda: DEBIAN_12,
        windows_release=kernel_release,
        mac_release=kernel_release,
    )
    assert got == ("Linux", "debian", "12")


# --- the real machine -------------------------------------------------------------------


def test_real_collect_gives_the_report_keys_and_no_host_name():
    info = collect_host_info()
    report = info.to_report()
    assert_report_keys(report)
    assert info.cpu_brand and info.cpu_vendor
    assert info.cpu_logical_processors >= 1 and info.ram_gib >= 1
    assert info.os_family == platform.system()
    assert info.python.count(".") == 2
    assert HostInfo.from_json(json.loads(json.dumps(dataclasses.asdict(info)))) == info
    text = json.dumps(dataclasses.asdict(info))
    hostname = socket.gethostname()
    if len(hostname) >= 3:
        assert hostname not in text
    assert platform.release() not in json.dumps(report)
    assert len(json.dumps(report, separators=(",", ":")).encode()) < 500


# --- the cache --------------------------------------------------------------------------


class CountingCollect:
    def __init__(self, info=INFO, gate: threading.Event | None = None, error=None):
        self.calls = 0
        self.info, self.gate, self.error = info, gate, error

    def __call__(self) -> HostInfo:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return self.info


@pytest.fixture
def boot_id(tmp_path):
    path = tmp_path / "boot_id"
    path.write_text("91c964bf-bdc8-4a3e-9469-e1bb8faca02c\n")
    return path


@pytest.fixture
def cache_path(tmp_path):
    return tmp_path / "hostinfo.json"


def started(cache_path, boot_id, collect) -> HostInfoCache:
    cache = HostInfoCache(cache_path, collect=collect, boot_id_path=boot_id)
    cache.start()
    return cache


def written(cache_path, boot_id) -> dict:
    started(cache_path, boot_id, CountingCollect())._thread.join(5)
    return json.loads(cache_path.read_text())


def test_first_start_collects_and_writes_the_cache(cache_path, boot_id):
    collect = CountingCollect()
    cache = started(cache_path, boot_id, collect)
    assert cache.get(timeout_s=5) == INFO
    assert collect.calls == 1
    cache._thread.join(5)  # the file is written just after the result is published
    data = json.loads(cache_path.read_text())
    assert data["stamp"]["format"] == CACHE_FORMAT
    assert data["host"]["cpu_brand"] == "Intel(R) Xeon(R) Processor"
    assert HostInfo.from_json(data["host"]) == INFO


def test_second_start_uses_the_cache_without_collecting(cache_path, boot_id):
    written(cache_path, boot_id)
    collect = CountingCollect()
    second = started(cache_path, boot_id, collect)
    assert second.get() == INFO  # timeout 0: the cache was loaded synchronously
    assert collect.calls == 0


@pytest.mark.parametrize(
    ("host", "stamp_format"),
    [
        (  # what format 1 wrote, with its own stamp
            {
                "cpu_brand": "AMD EPYC 7763",
                "cpu_flags": ["avx2", "sse4_2"],
                "cpu_cores_logical": 8,
                "cpu_cores_physical": 4,
                "ram_bytes": 16 << 30,
                "os": "Linux 6.1.0-18-amd64 (Debian GNU/Linux 12 (bookworm))",
                "python": platform.python_version(),
                "tagstat": "0.1.0",
            },
            1,
        ),
        (None, 1),  # a format-1 stamp, whatever the host block
    ],
)
def test_old_format_cache_is_ignored(cache_path, boot_id, host, stamp_format):
    data = written(cache_path, boot_id)
    assert CACHE_FORMAT != 1
    data["stamp"]["format"] = stamp_format
    if host is not None:
        data["host"] = host
    cache_path.write_text(json.dumps(data))
    collect = CountingCollect()
    assert started(cache_path, boot_id, collect).get(timeout_s=5) == INFO
    assert collect.calls == 1


def test_old_host_block_under_the_current_stamp_is_invalid(cache_path, boot_id, caplog):
    caplog.set_level(logging.INFO, logger="tagstat.hostinfo")
    data = written(cache_path, boot_id)
    data["host"] = {"cpu_brand": "AMD EPYC", "cpu_flags": ["avx2"], "ram_bytes": 1 << 34}
    cache_path.write_text(json.dumps(data))
    collect = CountingCollect()
    assert started(cache_path, boot_id, collect).get(timeout_s=5) == INFO
    assert collect.calls == 1
    assert "ignoring invalid host information cache" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"stamp": {}, "host": {}}',
        "",
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(cache_path, boot_id, content):
    cache_path.write_text(content)
    collect = CountingCollect()
    cache = started(cache_path, boot_id, collect)
    assert cache.get(timeout_s=5) == INFO
    cache._thread.join(5)
    assert collect.calls == 1
    assert HostInfo.from_json(json.loads(cache_path.read_text())["host"]) == INFO


BAD_FIELDS = [
    ("cpu_vendor", None),
    ("cpu_vendor", ""),
    ("cpu_vendor", "GenuineIntelGenuineIntel"),  # longer than collection makes it
    ("cpu_brand", 42),
    ("cpu_brand", "Xeon\nhost: lab-pc-17"),
    ("cpu_brand", "x" * 81),
    ("cpu_family", "6"),
    ("cpu_family", True),
    ("cpu_family", -1),
    ("cpu_model", 6.5),
    ("cpu_logical_processors", 0),
    ("cpu_logical_processors", None),
    ("isa_features", "avx"),
    ("isa_features", {"avx": True}),
    ("isa_features", ["avx2", "avx"]),  # not in table order
    ("isa_features", ["avx", "avx"]),
    ("isa_features", ["avx", "sha_ni"]),  # not a reported feature
    ("isa_features", [1]),
    ("ram_gib", "24G"),
    ("ram_gib", 0),
    ("ram_gib", 24.0),
    ("os_family", None),
    ("os_family", "Linux 6.1.0-18-amd64"),
    ("os_distribution", 12),
    ("os_distribution", "Debian GNU/Linux"),
    ("os_version", 12),
    ("os_version", "22.04"),
    ("os_version", "6.1.0-18-amd64"),
    ("python", None),
    ("tagstat", 1),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_from_json_rejects_wrong_values(field, value):
    data = dataclasses.asdict(INFO)
    data[field] = value
    with pytest.raises(ValueError):
        HostInfo.from_json(data)


@pytest.mark.parametrize(
    "data",
    [None, [], {}, {**dataclasses.asdict(INFO), "ram_bytes": 1}, {"cpu_brand": "x"}],
)
def test_from_json_rejects_wrong_field_sets(data):
    with pytest.raises(ValueError):
        HostInfo.from_json(data)


def test_from_json_accepts_nones_where_unknown_is_allowed():
    info = dataclasses.replace(
        INFO, cpu_family=None, cpu_model=None, os_distribution=None, os_version=None
    )
    assert HostInfo.from_json(json.loads(json.dumps(dataclasses.asdict(info)))) == info


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ram_gib", "16G"),
        ("cpu_logical_processors", 0),
        ("isa_features", "avx"),
        ("os_family", None),
    ],
)
def test_cache_with_bad_field_values_is_ignored(cache_path, boot_id, field, value):
    data = written(cache_path, boot_id)
    data["host"][field] = value
    cache_path.write_text(json.dumps(data))
    collect = CountingCollect()
    assert started(cache_path, boot_id, collect).get(timeout_s=5) == INFO
    assert collect.calls == 1


def test_another_boot_invalidates_the_cache(cache_path, boot_id):
    written(cache_path, boot_id)
    boot_id.write_text("00000000-0000-0000-0000-000000000000\n")
    collect = CountingCollect(info=dataclasses.replace(INFO, ram_gib=32))
    cache = started(cache_path, boot_id, collect)
    assert cache.get(timeout_s=5).ram_gib == 32
    assert collect.calls == 1


def test_another_tagstat_version_invalidates_the_cache(cache_path, boot_id, monkeypatch):
    written(cache_path, boot_id)
    monkeypatch.setattr("tagstat.__version__", "9.9.9")
    collect = CountingCollect()
    started(cache_path, boot_id, collect).get(timeout_s=5)
    assert collect.calls == 1


def test_another_cache_format_invalidates_the_cache(cache_path, boot_id, monkeypatch):
    written(cache_path, boot_id)
    monkeypatch.setattr(hostinfo, "CACHE_FORMAT", CACHE_FORMAT + 1)
    collect = CountingCollect()
    started(cache_path, boot_id, collect).get(timeout_s=5)
    assert collect.calls == 1


def test_start_returns_at_once_while_collect_is_slow(cache_path, boot_id):
    gate = threading.Event()
    collect = CountingCollect(gate=gate)
    t0 = time.monotonic()
    cache = started(cache_path, boot_id, collect)
    assert cache.get() is None and cache.get(timeout_s=0.01) is None
    assert time.monotonic() - t0 < 0.5
    gate.set()
    assert cache.get(timeout_s=5) == INFO


def test_failed_collect_is_logged_and_leaves_none(cache_path, boot_id, caplog):
    cache = started(cache_path, boot_id, CountingCollect(error=RuntimeError("no /proc")))
    cache._thread.join(5)
    assert cache.get(timeout_s=1) is None
    assert "could not collect host information" in caplog.text
    assert not cache_path.exists()


def test_unwritable_cache_still_gives_the_info(tmp_path, boot_id, caplog):
    cache = started(tmp_path / "missing-dir" / "hostinfo.json", boot_id, CountingCollect())
    cache._thread.join(5)
    assert cache.get() == INFO
    assert "could not write the host information cache" in caplog.text


def test_missing_boot_id_still_caches(cache_path, tmp_path):
    no_boot_id = tmp_path / "no-such-boot-id"
    started(cache_path, no_boot_id, CountingCollect())._thread.join(5)
    collect = CountingCollect()
    assert started(cache_path, no_boot_id, collect).get() == INFO
    assert collect.calls == 0
