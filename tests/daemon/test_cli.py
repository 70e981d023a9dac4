"""The tagstat CLI, in-process via cli.main(argv) against a real control socket."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tagstat import cli
from tagstat.control import ControlServer
from tagstat.errors import TagstatError
from tagstat.status import UsageStatisticsStatus as Status

REPORT = json.dumps({"user_id": "u1", "sessions": [{"speed": {"avg": 1.5}}]}, separators=(",", ":"))
DEVICE = {
    "device_id": "0123456789abcdef" * 4,
    "model": "Time Tagger Ultra",
    "serial": "1740****EH",
    "usb_speed": "super",
    "firmware": "1.30",
    "attached": True,
    "last_seen": "2024-03-01T10:00:00.000Z",
}
SESSION = {
    "session_id": "s1",
    "device_id": "0123456789abcdef" * 4,
    "model": "Time Tagger Ultra",
    "start": "2024-03-01T09:58:54.321Z",
    "end": "2024-03-01T11:01:00.000Z",
    "duration_s": 3725.9,
    "bytes": 10**9,
    "tags": 10**8,
    "data_rate": {"min": 1_000_000, "avg": 123_456_789, "max": 400_000_000.0},
    "usb_speed": "super",
    "open": True,
    "end_reason": None,
}


class CliController:
    def __init__(self):
        self.status, self.persistent = Status.Collecting, True
        self.calls: list[tuple] = []
        self.fail: Exception | None = None
        self.devices, self.sessions = [DEVICE], [SESSION]

    def get_status(self):
        if self.fail:
            raise self.fail
        return {
            "status": int(self.status),
            "name": self.status.name,
            "persistent": self.persistent,
            "since": "2024-01-02T03:04:05.678Z",
        }

    def set_status(self, status, persistent, origin="api"):
        self.origin = origin
        self.calls.append((status, persistent))
        self.status, self.persistent = status, persistent
        return self.get_status()

    def get_report(self):
        return REPORT

    def list_devices(self, calibration=False):
        self.calibration_asked = calibration
        return self.devices

    def list_sessions(self):
        return self.sessions


@pytest.fixture
def home(monkeypatch):
    d = Path(tempfile.mkdtemp(prefix="tgs-", dir="/tmp"))  # noqa: S108 - AF_UNIX path limit
    monkeypatch.delenv("TAGSTAT_HOME", raising=False)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def controller():
    return CliController()


@pytest.fixture
def run(home, controller, capsys):
    """Run ``tagstat --home HOME ARGS...`` in-process; returns (code, stdout, stderr)."""
    with ControlServer(home / "control.sock", controller):

        def run_(*argv):
            code = cli.main(["--home", str(home), *argv])
            out, err = capsys.readouterr()
            return code, out, err

        yield run_


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help for a in action._choices_actions}
    for name in action.choices:
        assert helps.get(name), f"subcommand {name!r} has no help line"
    return action.choices


def test_there_are_subcommands():
    assert {"status", "report", "devices", "sessions"} <= set(subcommands())


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_has_help(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: tagstat {name}" in out
    description = subcommands()[name].description
    assert description and description in out


def test_top_level_help_lists_the_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in subcommands())


def test_status_shows_name_value_persistence_and_since(run):
    code, out, err = run("status")
    assert code == 0 and err == ""
    assert out.strip() == "status: Collecting (1), persistent, since 2024-01-02 03:04:05"


def test_status_sets_temporarily_and_prints_the_new_status(run, controller):
    code, out, _ = run("status", "collecting-and-uploading", "--temporary")
    assert code == 0
    assert controller.calls == [(Status.CollectingAndUploading, False)]
    assert "CollectingAndUploading (2), temporary" in out


def test_status_set_is_persistent_by_default(run, controller):
    assert run("status", "disabled")[0] == 0
    assert controller.calls == [(Status.Disabled, True)]


def test_status_set_says_it_comes_from_the_cli(run, controller):
    # the consent record names who decided: `tagstat status`, not a program
    assert run("status", "collecting-and-uploading")[0] == 0
    assert controller.origin == "cli"


def test_status_json(run):
    code, out, _ = run("status", "--json")
    assert code == 0 and json.loads(out)["name"] == "Collecting"


@pytest.mark.parametrize("bad", ["bogus", "-2", "+2", "2.0", "collecting and uploading"])
def test_invalid_status_is_a_usage_error(run, controller, bad):
    code, _, err = run("status", "--", bad)
    assert code == 2 and "allowed: Disabled (0)" in err
    assert controller.calls == []


def test_report_is_pretty_by_default_and_verbatim_with_json(run):
    code, out, _ = run("report")
    assert code == 0 and out == json.dumps(json.loads(REPORT), indent=2) + "\n"
    code, out, _ = run("report", "--json")
    assert code == 0 and out == REPORT + "\n"


def test_report_that_is_plain_text_is_printed_as_is(run, controller, monkeypatch):
    monkeypatch.setattr(controller, "get_report", lambda: "No usage data collected yet.")
    assert run("report")[1] == "No usage data collected yet.\n"


def test_devices_table_shows_masked_serial(run):
    code, out, _ = run("devices")
    header, row = out.splitlines()
    assert code == 0 and header.split() == [
        "DEVICE",
        "MODEL",
        "SERIAL",
        "LINK",
        "FIRMWARE",
        "ATTACHED",
    ]
    assert "1740****EH" in row and "0123456789ab" in row and "super" in row
    assert row.split()[-1] == "yes"


def test_devices_json(run, controller):
    code, out, _ = run("devices", "--json")
    assert code == 0 and json.loads(out) == [DEVICE]
    assert controller.calibration_asked is False


def test_devices_calibration_prints_each_table(run, controller):
    table = {"status": "OK", "channels": {"1": {"delay ps": 1017}}}
    controller.devices = [DEVICE | {"calibration": table}]
    code, out, _ = run("devices", "--calibration")
    assert code == 0 and controller.calibration_asked is True
    assert "calibration of 0123456789ab (kept on this computer):" in out
    assert json.dumps(table, indent=2) in out


def test_sessions_table_in_mb_per_s(run):
    code, out, _ = run("sessions")
    lines = out.splitlines()
    assert code == 0 and "AVG MB/s" in lines[0] and "1 MB = 10^6 bytes" in out
    row = lines[1]
    assert "2024-03-01 09:58:54" in row and "1:02:05" in row
    assert row.split()[-4:] == ["1.0", "123.5", "400.0", "open"]


def test_sessions_json(run):
    code, out, _ = run("sessions", "--json")
    assert code == 0 and json.loads(out) == [SESSION]


def test_empty_lists_say_so(run, controller):
    controller.devices, controller.sessions = [], []
    assert "no Time Tagger seen yet" in run("devices")[1]
    assert "no usage sessions yet" in run("sessions")[1]


def test_rows_with_missing_fields_still_print(run, controller):
    controller.sessions = [{"device_id": None, "duration_s": float("inf"), "data_rate": None}]
    code, out, _ = run("sessions")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["-", "-", "-"]


def test_daemon_error_exits_1_with_message(run, controller):
    controller.fail = TagstatError("store is read-only; check the disk")
    code, out, err = run("status")
    assert code == 1 and out == ""
    assert err == "tagstat: error: store is read-only; check the disk\n"


def test_no_daemon_exits_1_naming_the_socket(home, capsys):
    code = cli.main(["--socket", str(home / "nothing.sock"), "devices"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("tagstat: error: ")
    assert str(home / "nothing.sock") in err and "Traceback" not in err


def test_tagstat_home_env_is_used(home, controller, capsys, monkeypatch):
    monkeypatch.setenv("TAGSTAT_HOME", str(home))
    with ControlServer(home / "control.sock", controller):
        assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == 1


def test_console_script_without_daemon(home):
    script = Path(sys.executable).parent / "tagstat"
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    env = {k: v for k, v in os.environ.items() if k != "TAGSTAT_HOME"}
    proc = subprocess.run(
        [str(script), "--home", str(home), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("tagstat: error: ")
    assert str(home / "control.sock") in proc.stderr and "Traceback" not in proc.stderr
