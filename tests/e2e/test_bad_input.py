"""Bad input gets a clear error that names the problem, and never loses data."""

import sqlite3
import subprocess

import pytest

pytestmark = pytest.mark.e2e

ULTRA = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super",
         "rate": [[0, 10e6]]}  # fmt: skip


def start_failing(daemons, scenario=None, env=None) -> tuple[int, str]:
    d = daemons(scenario, env).start(wait=False)
    try:
        rc = d.proc.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail("tagstatd kept running on bad input")
    return rc, d.stderr()


def test_unknown_config_key_is_named(home, daemons, write_scenario):
    (home / "tagstat.toml").write_text("poll_interval_s = 1.0\npol_intervall = 3\n")
    rc, err = start_failing(daemons, write_scenario(home / "s.toml", [ULTRA]))
    assert rc == 78  # EX_CONFIG: systemd's RestartPreventExitStatus stops a restart loop
    assert "pol_intervall" in err and "tagstat.toml" in err
    assert "Traceback" not in err


def test_bad_environment_override_is_named(home, daemons, write_scenario):
    env = {"TAGSTAT_POLL_INTERVAL_S": "fast"}
    rc, err = start_failing(daemons, write_scenario(home / "s.toml", [ULTRA]), env)
    assert rc == 78 and "TAGSTAT_POLL_INTERVAL_S" in err


def test_scenario_error_names_file_device_and_key(home, daemons, write_scenario):
    bad = dict(ULTRA, rate=[[0, 10e6], [1, -5]])
    rc, err = start_failing(
        daemons, write_scenario(home / "s.toml", [ULTRA | {"serial": "1809000LGG"}, bad])
    )
    assert rc != 0
    assert "s.toml" in err and "device 2" in err and "rate" in err
    assert "Traceback" not in err


def test_corrupt_database_is_moved_aside_not_deleted(home, daemons, write_scenario):
    garbage = b"this is not a database\x00" * 100
    (home / "tagstat.db").write_bytes(garbage)
    d = daemons(write_scenario(home / "s.toml", [ULTRA])).start()
    moved = list(home.glob("tagstat.db.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == garbage
    report = d.report()
    assert all("moved aside" not in m["text"] for m in report["messages"])  # not the device's
    assert d.stop() == 0
    assert "moved aside" in d.stderr()  # the journal names the file it was moved to
    sqlite3.connect(home / "tagstat.db").execute("PRAGMA quick_check").fetchall()


def test_wrong_status_value_via_cli(home, daemons, write_scenario, run_cli):
    d = daemons(write_scenario(home / "s.toml", [ULTRA])).start()
    proc = run_cli(home, "status", "uploading-everything", check=False)
    assert proc.returncode != 0 and "collecting-and-uploading" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert run_cli(home, "status", "--json").returncode == 0
    assert d.stop() == 0


def test_no_daemon_names_the_socket(home, run_cli):
    proc = run_cli(home, "report", check=False)
    assert proc.returncode == 1
    assert str(home / "control.sock") in proc.stderr and "Traceback" not in proc.stderr
