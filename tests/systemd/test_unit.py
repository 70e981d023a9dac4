"""The unit file, sysusers entry and udev rule, checked by systemd's own tools.

``systemd-analyze verify`` needs the ExecStart binary to exist, so it checks a
copy whose ExecStart points at this checkout's tagstatd (the installer only
rewrites the prefix); the security score is measured on the file itself. Both
work without a running systemd. Missing tools skip, except under ``CI=true``.
"""

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest
from systemd_tools import need

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "tagstatd.service"
MAX_EXPOSURE = 2.0  # Debian's systemd-timesyncd scores 2.3


def unit_settings() -> dict[str, list[str]]:
    """[Service] settings, each key with all its values (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_analyze_verify_is_clean(tmp_path):
    analyze = need("systemd-analyze")
    tagstatd = Path(sys.executable).parent / "tagstatd"
    text = UNIT.read_text().replace("ExecStart=/opt/tagstat/bin/tagstatd", f"ExecStart={tagstatd}")
    assert text != UNIT.read_text()
    (tmp_path / "tagstatd.service").write_text(text)
    out = subprocess.run([analyze, "verify", str(tmp_path / "tagstatd.service")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_security_exposure_is_at_most_2(tmp_path):
    analyze = need("systemd-analyze")
    out = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    match = re.search(r"Overall exposure level for tagstatd\.service: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security --offline=yes: {score}")
    assert score <= MAX_EXPOSURE, out.stdout


def test_the_unit_has_what_the_service_relies_on():
    s = unit_settings()
    expected = {
        "Type": ["notify"], "NotifyAccess": ["main"], "WatchdogSec": ["30s"],
        "Restart": ["on-failure"], "RestartPreventExitStatus": ["78"],
        "StateDirectory": ["tagstat"], "RuntimeDirectory": ["tagstat"],
        "ConfigurationDirectory": ["tagstat"], "User": ["tagstat"], "Group": ["tagstat"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"], "DevicePolicy": ["closed"],
        "DeviceAllow": ["char-usb_device rw"], "PrivateDevices": ["no"],
        "ExecStart": ["/opt/tagstat/bin/tagstatd"], "UMask": ["0077"],
    }  # fmt: skip
    assert {k: s.get(k) for k in expected} == expected
    # USB hotplug (netlink) and uploads (IP) must stay possible
    assert set(s["RestrictAddressFamilies"][0].split()) >= {"AF_UNIX", "AF_INET", "AF_NETLINK"}
    assert "PrivateNetwork" not in s and "IPAddressDeny" not in s


def test_the_installer_and_the_unit_agree_on_the_prefix():
    assert "/opt/tagstat" in (SYSTEMD / "install.sh").read_text()


def test_sysusers_creates_the_users_and_groups(tmp_path):
    sysusers = need("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    subprocess.run([sysusers, f"--root={tmp_path}", str(SYSTEMD / "tagstat.sysusers")],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").open()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").open()}
    assert set(groups) == {"tagstat", "tagstat-admin"}
    user = passwd["tagstat"]
    assert user[3] == groups["tagstat"][2]  # primary group tagstat
    assert user[5] == "/var/lib/tagstat" and user[6].strip().endswith("nologin")
    assert int(user[2]) < 1000  # a system account


# -- the udev rule: udevadm verify needs systemd 254; this is its grammar --------

MATCH_OPS, ASSIGN_OPS = ("==", "!="), ("=", "+=", "-=", ":=")
MATCH_KEYS = {"SUBSYSTEM", "ACTION", "KERNEL", "DRIVER", "ATTR", "ATTRS", "ENV"}
ASSIGN_KEYS = {"GROUP", "MODE", "OWNER", "TAG", "ENV", "RUN"}
TOKEN = re.compile(r'\s*([A-Z]+)(?:\{([^}]+)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def parse_rule(line: str) -> list[tuple[str, str | None, str, str]]:
    tokens, pos = [], 0
    while pos < len(line):
        m = TOKEN.match(line, pos)
        assert m, f"unparsable at column {pos}: {line[pos:]!r}"
        key, attr, op, value = m.groups()
        kind, keys = ("match", MATCH_KEYS) if op in MATCH_OPS else ("assignment", ASSIGN_KEYS)
        assert key in keys, f"{key}{op} is not a udev {kind}"
        tokens.append((key, attr, op, value))
        pos = m.end()
    return tokens


def test_udev_rule_parses_and_says_what_it_should():
    lines = [x for x in (SYSTEMD / "60-tagstat.rules").read_text().splitlines()
             if x.strip() and not x.lstrip().startswith("#")]  # fmt: skip
    assert len(lines) == 1
    tokens = {(k, a, op): v for k, a, op, v in parse_rule(lines[0])}
    assert tokens == {
        ("SUBSYSTEM", None, "=="): "usb",
        ("ENV", "DEVTYPE", "=="): "usb_device",
        ("ATTR", "idVendor", "=="): "151f",
        ("GROUP", None, "="): "tagstat",
        ("MODE", None, "="): "0660",
        ("TAG", None, "+="): "systemd",
    }


@pytest.mark.parametrize("bad", ['SUBSYSTEM="usb"x', 'SUBSYSTEM=="usb", GROUP=="x"', 'FOO=="1"'])
def test_the_rule_check_rejects_bad_rules(bad):
    with pytest.raises(AssertionError):
        parse_rule(bad)


def test_unit_file_is_plain_ini_with_the_expected_sections():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"
