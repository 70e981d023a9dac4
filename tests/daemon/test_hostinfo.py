"""Host information: cached per boot, collected off the start-up path, nothing identifying."""

import dataclasses
import json
import socket
import threading
import time

import pytest

from tagstat.hostinfo import HostInfo, HostInfoCache, collect_host_info

INFO = HostInfo(
    cpu_brand="AMD EPYC 7763",
    cpu_flags=("avx2", "sse4_2"),
    cpu_cores_logical=8,
    cpu_cores_physical=4,
    ram_bytes=16 << 30,
    os="Linux 6.1.0-18-amd64 (Debian GNU/Linux 12 (bookworm))",
    python="3.11.2",
    tagstat="0.1.0",
)


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


def test_first_start_collects_and_writes_the_cache(cache_path, boot_id):
    collect = CountingCollect()
    cache = started(cache_path, boot_id, collect)
    assert cache.get(timeout_s=5) == INFO
    assert collect.calls == 1
    cache._thread.join(5)  # the file is written just after the result is published
    assert json.loads(cache_path.read_text())["host"]["cpu_brand"] == "AMD EPYC 7763"


def test_second_start_uses_the_cache_without_collecting(cache_path, boot_id):
    first = started(cache_path, boot_id, CountingCollect())
    first.get(timeout_s=5)
    first._thread.join(5)
    collect = CountingCollect()
    second = started(cache_path, boot_id, collect)
    assert second.get() == INFO  # timeout 0: the cache was loaded synchronously
    assert collect.calls == 0


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


@pytest.mark.parametrize(
    ("field", "value"),
    [("ram_bytes", "16G"), ("cpu_cores_logical", 0), ("cpu_flags", "avx"), ("os", None)],
)
def test_cache_with_bad_field_values_is_ignored(cache_path, boot_id, field, value):
    started(cache_path, boot_id, CountingCollect())._thread.join(5)
    data = json.loads(cache_path.read_text())
    data["host"][field] = value
    cache_path.write_text(json.dumps(data))
    collect = CountingCollect()
    assert started(cache_path, boot_id, collect).get(timeout_s=5) == INFO
    assert collect.calls == 1


def test_another_boot_invalidates_the_cache(cache_path, boot_id):
    started(cache_path, boot_id, CountingCollect())._thread.join(5)
    boot_id.write_text("00000000-0000-0000-0000-000000000000\n")
    collect = CountingCollect(info=dataclasses.replace(INFO, ram_bytes=32 << 30))
    cache = started(cache_path, boot_id, collect)
    assert cache.get(timeout_s=5).ram_bytes == 32 << 30
    assert collect.calls == 1


def test_another_tagstat_version_invalidates_the_cache(cache_path, boot_id, monkeypatch):
    started(cache_path, boot_id, CountingCollect())._thread.join(5)
    monkeypatch.setattr("tagstat.__version__", "9.9.9")
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


def test_report_shape():
    assert INFO.to_report() == {
        "cpu": {
            "brand": "AMD EPYC 7763",
            "flags": ["avx2", "sse4_2"],
            "cores": 8,
            "cores_physical": 4,
        },
        "ram_bytes": 16 << 30,
        "os": "Linux 6.1.0-18-amd64 (Debian GNU/Linux 12 (bookworm))",
    }
    json.dumps(INFO.to_report())


def test_real_collect_gives_sane_values_and_no_host_name():
    info = collect_host_info()
    assert isinstance(info.cpu_brand, str) and info.cpu_brand
    assert info.cpu_cores_logical >= 1
    assert info.cpu_cores_physical is None or info.cpu_cores_physical >= 1
    assert info.ram_bytes > 0
    assert info.os and info.python.count(".") == 2
    text = json.dumps(dataclasses.asdict(info))
    hostname = socket.gethostname()
    if len(hostname) >= 3:
        assert hostname not in text
