"""`make install` and `make uninstall` into a DESTDIR: what lands where, and what stays.

Runs the real installer (a virtual environment built by pip, without
dependencies to stay fast) below a temporary directory; nothing on this system
changes, since with DESTDIR set the installer never runs sysusers, udevadm or
systemctl.
"""

import os
import subprocess
from pathlib import Path

import pytest
from systemd_tools import need

from tagstat.config import DEFAULT_CONFIG_TEXT

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/opt/tagstat"
INSTALLED = [
    "opt/tagstat/bin/tagstatd",
    "opt/tagstat/bin/tagstat",
    "opt/tagstat/share/doc/tagstat/ADMIN.md",
    "usr/local/lib/systemd/system/tagstatd.service",
    "usr/local/lib/sysusers.d/tagstat.conf",
    "usr/local/lib/udev/rules.d/60-tagstat.rules",
    "etc/tagstat/tagstat.toml",
]


def make(target: str, dest: Path, **variables) -> subprocess.CompletedProcess:
    args = [need("make"), "-C", str(REPO), target, f"DESTDIR={dest}", "PIP_ARGS=--no-deps"]
    args += [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_install_reinstall_uninstall_and_purge(tmp_path):
    dest = tmp_path / "root"
    make("install", dest)
    for path in INSTALLED:
        assert (dest / path).is_file(), path
    unit = (dest / INSTALLED[3]).read_text()
    assert f"ExecStart={PREFIX}/bin/tagstatd\n" in unit
    assert (dest / "opt/tagstat/bin/tagstatd").read_text().startswith(f"#!{PREFIX}/bin/python\n")
    for f in (dest / "opt/tagstat/bin").iterdir():  # the final paths, never the DESTDIR
        if f.is_file() and not f.is_symlink():
            assert str(dest) not in f.read_text(errors="replace"), f
    assert os.readlink(dest / "usr/local/bin/tagstat") == f"{PREFIX}/bin/tagstat"
    assert (dest / "etc/tagstat/tagstat.toml").read_text() == DEFAULT_CONFIG_TEXT
    assert (dest / "etc/tagstat/tagstat.toml.d").is_dir()
    assert (dest / INSTALLED[5]).read_bytes() == (REPO / "systemd/60-tagstat.rules").read_bytes()
    python = dest / "opt/tagstat/bin/python"
    subprocess.run([python, "-c", "import tagstat.config"], check=True, timeout=60)

    # the admin's configuration survives a reinstall and an uninstall
    conf = dest / "etc/tagstat/tagstat.toml"
    conf.write_text('max_status = "Collecting"\n')
    assert "keeping the existing" in make("install", dest).stdout
    assert conf.read_text() == 'max_status = "Collecting"\n'
    state = dest / "var/lib/tagstat"
    state.mkdir(parents=True)
    (state / "tagstat.db").write_bytes(b"collected")
    out = make("uninstall", dest)
    assert "keeping" in out.stdout and "kept /var/lib/tagstat" in out.stdout
    for path in INSTALLED[:-1]:
        assert not (dest / path).exists(), path
    assert not (dest / "opt/tagstat").exists()
    assert not (dest / "usr/local/bin/tagstat").is_symlink()
    assert conf.exists() and (state / "tagstat.db").exists()

    make("uninstall", dest, PURGE=1)
    assert not (dest / "etc/tagstat").exists() and not state.exists()


def test_uninstall_removes_an_unedited_default_config(tmp_path):
    dest = tmp_path / "root"
    make("install", dest, PREFIX="/opt/ts2")
    assert "ExecStart=/opt/ts2/bin/tagstatd" in (dest / INSTALLED[3]).read_text()
    make("uninstall", dest, PREFIX="/opt/ts2")
    assert not (dest / "etc/tagstat").exists()
    assert not any(p.is_file() for p in dest.rglob("*")), sorted(dest.rglob("*"))


def test_install_refuses_nothing_silently_a_bad_target_is_a_usage_error():
    out = subprocess.run(["sh", str(REPO / "systemd/install.sh"), "frobnicate"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 2 and "usage:" in out.stderr


@pytest.fixture(autouse=True)
def _no_live_system(monkeypatch):
    # Belt and braces: the installer only touches the live system without DESTDIR.
    monkeypatch.delenv("DESTDIR", raising=False)
