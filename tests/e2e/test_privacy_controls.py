"""Privacy controls end to end: real tagstatd subprocesses, the real `tagstat` CLI (on a
pseudo-terminal where it must ask), the real collector behind a counting proxy.

Shown here: each kill switch (TAGSTAT_DISABLE, DO_NOT_TRACK, CI without allow_in_ci) beats
a stored CollectingAndUploading, so nothing is collected and not one request reaches the
collector, while the waiting report survives and goes out once the switch is gone; a
switch in the CLI's own environment; the consent prompt on a terminal and never without
one, its answer kept and not asked again; and a schema bump (TAGSTAT_TEST_SCHEMA) that
asks about the new fields only, which uploads leave out until they are agreed to.
"""

import datetime as dt
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _clean_environ, wait_for

from tagstat.clock import parse_iso
from tagstat.fields import REAL, TEST_SCHEMA_ENV

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
FAST = {
    "TAGSTAT_UPLOAD_INTERVAL_S": "1",
    "TAGSTAT_UPLOAD_BACKOFF_INITIAL_S": "0.2",
    "TAGSTAT_UPLOAD_BACKOFF_MAX_S": "1",
    "TAGSTAT_CHECKPOINT_S": "0.5",
}
# Nothing can be waited on for an absence: under a switch the daemon is watched this long,
# 8 poll intervals and 2 upload periods, in which an unswitched one collects and uploads.
QUIET_WINDOW_S = 2.0
V = REAL.version  # this tagstat's report schema
BUMP = json.dumps({"version": V + 1, "since": {"measurements[]": V + 1}})
SWITCHES = [
    ("DO_NOT_TRACK", {"DO_NOT_TRACK": "1"}),
    ("TAGSTAT_DISABLE", {"TAGSTAT_DISABLE": "1"}),
    ("CI", {"CI": "true", "TAGSTAT_ALLOW_IN_CI": "false"}),
]


def cli_env(**extra) -> dict:
    env = {k: v for k, v in _clean_environ().items() if k != "TAGSTAT_HOME"}
    return {**env, **extra}


def cli(home, *args, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "tagstat"), "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=30,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tagstat {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def status(home, env=None) -> dict:
    return json.loads(cli(home, "status", "--json", env=env).stdout)


class Terminal:
    """The real `tagstat` on a pseudo-terminal: stdin, stdout and stderr are its tty."""

    def __init__(self, home, *args, env=None):
        master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [str(BIN / "tagstat"), "--home", str(home), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env or cli_env(),
            start_new_session=True,
        )
        os.close(slave)
        self.master, self.out = master, ""

    def _read(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the program exited and the tty closed
            return False
        self.out += chunk.decode("utf-8", "replace")
        return bool(chunk)

    def expect(self, text: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.out:
            if time.monotonic() > deadline or not self._read(deadline):
                raise AssertionError(f"{text!r} not shown; the terminal had:\n{self.out}")

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self, timeout_s: float = 20.0) -> tuple[int, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._read(deadline):
            pass
        os.close(self.master)
        return self.proc.wait(timeout_s), self.out


# -- kill switches ------------------------------------------------------------------------


def test_each_kill_switch_beats_a_stored_collecting_and_uploading(home, daemons, proxy, collector):
    d = daemons(env=FAST).start()  # no upload_url: the report stays queued
    cli(home, "status", "collecting-and-uploading")
    wait_for(lambda: status(home)["upload"]["pending"] >= 1, "a queued report")
    d.stop()
    upload = {**FAST, "TAGSTAT_UPLOAD_URL": proxy.url}

    for name, env in SWITCHES:
        d = daemons(env={**upload, **env}).start()
        shown = status(home)
        assert (shown["name"], shown["stored_name"]) == ("Disabled", "CollectingAndUploading")
        assert shown["forced_by"]["variable"] == name
        text = cli(home, "status").stdout
        assert f"Disabled (forced by {name}" in text and "stored status: Colle" in text, text
        explained = cli(home, "explain").stdout
        assert f"Kill switch: {name}" in explained and "Collected: nothing new" in explained
        assert json.loads(cli(home, "explain", "--json").stdout)["kill_switches"][0]["variable"]
        sessions = cli(home, "sessions", "--json").stdout
        assert json.loads(sessions), "phase one recorded sessions"
        time.sleep(QUIET_WINDOW_S)
        assert proxy.captured == [], f"{name}: a request reached the collector"
        assert cli(home, "sessions", "--json").stdout == sessions, f"{name}: collected"
        assert status(home)["upload"]["pending"] >= 1, f"{name}: the outbox was emptied"
        assert d.stop() == 0

    d = daemons(env=upload).start()  # the switch is gone: the stored status is back
    assert status(home)["name"] == "CollectingAndUploading"
    wait_for(lambda: collector.reports(), "the report kept under the switches to arrive")


def test_allow_in_ci_lets_tagstatd_collect_in_ci(home, daemons):
    daemons(env={"CI": "true", "GITHUB_ACTIONS": "true", "TAGSTAT_ALLOW_IN_CI": "true"}).start()
    assert status(home)["forced_by"] is None
    wait_for(lambda: json.loads(cli(home, "sessions", "--json").stdout), "a session")


def test_a_switch_in_the_clients_environment(home, daemons):
    daemons().start()
    env = cli_env(TAGSTAT_DISABLE="1")
    text = cli(home, "status", env=env).stdout
    assert "Disabled for this program (forced by TAGSTAT_DISABLE=1 in this program" in text
    assert status(home, env)["client_forced_by"]["variable"] == "TAGSTAT_DISABLE"
    refused = cli(home, "status", "collecting-and-uploading", env=env, check=False)
    assert refused.returncode == 1 and "TAGSTAT_DISABLE=1" in refused.stderr
    assert status(home)["name"] == "Collecting"  # untouched
    assert "Kill switch: TAGSTAT_DISABLE=1" in cli(home, "explain", env=env).stdout
    code = "import tagstat; print(tagstat.getUsageStatisticsStatus().name)"
    app = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "TAGSTAT_HOME": str(home)},
        timeout=30,
    )
    assert app.stdout.strip() == "Disabled", app.stderr


# -- the consent prompt -----------------------------------------------------------------------


def test_the_first_interactive_run_asks_and_a_yes_is_kept(home, daemons):
    daemons().start()
    term = Terminal(home, "devices")
    term.expect("[y/N]")
    for shown in (
        "What a report holds",
        "devices[]: each Time Tagger",
        "Never collected",
        "example report",
        '"serial": "[serial:',
    ):
        assert shown in term.out
    term.send("y")
    rc, out = term.finish()
    assert rc == 0 and "Recorded: uploads are on" in out and "DEVICE" in out, out
    shown = status(home)
    assert shown["name"] == "CollectingAndUploading"
    assert (shown["consent"]["agreed_version"], shown["consent"]["asked_version"]) == (V, V)
    assert shown["consent"]["answered_by"] == "prompt"
    rc, out = Terminal(home, "devices").finish()
    assert rc == 0 and "[y/N]" not in out and "DEVICE" in out  # never asked again


def test_the_default_answer_is_no_and_is_kept_too(home, daemons):
    daemons().start()
    term = Terminal(home, "status")
    term.expect("[y/N]")
    term.send("")
    rc, out = term.finish()
    assert rc == 0 and "nothing will be uploaded" in out and "status: Collecting" in out
    assert status(home)["consent"]["asked_version"] == V
    rc, out = Terminal(home, "sessions").finish()
    assert rc == 0 and "[y/N]" not in out


def test_no_prompt_without_a_terminal(home, daemons):
    daemons().start()
    for args in (("devices",), ("status",), ("explain",)):
        proc = cli(home, *args)
        assert "[y/N]" not in proc.stdout + proc.stderr
    # stdin a terminal but stdout a pipe (tagstat devices | less): not interactive either
    master, slave = os.openpty()
    try:
        proc = subprocess.run(
            [str(BIN / "tagstat"), "--home", str(home), "devices"],
            stdin=slave,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=30,
        )
    finally:
        os.close(master), os.close(slave)
    assert proc.returncode == 0 and "[y/N]" not in proc.stdout
    assert status(home)["consent"]["needs"] == "first_run"  # still unasked
    setup = cli(home, "setup", check=False)
    assert setup.returncode == 1 and "needs a terminal" in setup.stderr
    assert "tagstat status collecting-and-uploading" in setup.stderr


def test_setup_asks_again_after_an_answer_and_a_switch_stops_the_prompt(home, daemons):
    daemons().start()
    cli(home, "status", "collecting")  # an answer of sorts: no first-run prompt after this
    rc, out = Terminal(home, "devices", env=cli_env(DO_NOT_TRACK="1")).finish()
    assert "[y/N]" not in out
    term = Terminal(home, "setup")
    term.expect("Upload usage statistics collected from now on? [y/N]")
    term.send("yes")
    rc, out = term.finish()
    assert rc == 0 and status(home)["name"] == "CollectingAndUploading", out


def test_a_schema_bump_asks_about_new_fields_only_and_uploads_leave_them_out(
    home, daemons, collector
):
    upload = {**FAST, "TAGSTAT_UPLOAD_URL": collector.url}
    d = daemons(env=upload).start()
    cli(home, "status", "collecting-and-uploading")  # consent to this schema
    assert status(home)["consent"]["agreed_version"] == V
    d.stop()
    bumped = {**upload, TEST_SCHEMA_ENV: BUMP}  # an upgrade: the next schema adds measurements
    bumped_at = dt.datetime.now(dt.UTC)
    daemons(env=bumped).start()
    env = cli_env(**{TEST_SCHEMA_ENV: BUMP})
    text = cli(home, "status", env=env).stdout
    assert "new fields that need consent" in text and "measurements[]" in text, text

    def made_after_the_bump():  # reports queued before it hold schema V and go out as made
        bodies = [json.loads(collector.body(r["report_id"])) for r in collector.reports()]
        return [b for b in bodies if parse_iso(b["generated_at"]) > bumped_at]

    sent = wait_for(made_after_the_bump, "a report made after the bump to arrive")[0]
    assert "measurements" not in sent and sent["schema_version"] == V and sent["devices"]
    assert "measurements" not in json.loads(cli(home, "report", "--json").stdout)

    term = Terminal(home, "devices", env=env)
    term.expect("Upload these new fields too? [y/N]")
    asked = term.out.split("new fields", 1)[1]
    assert "measurements[]" in asked and "sessions[]" not in asked and "example" not in asked
    term.send("n")
    rc, out = term.finish()
    assert rc == 0 and "the new fields stay left out" in out, out
    assert status(home, env)["name"] == "CollectingAndUploading"
    rc, out = Terminal(home, "devices", env=env).finish()
    assert "[y/N]" not in out  # not asked twice for the new schema

    term = Terminal(home, "setup", env=env)  # asked on request, new fields only
    term.expect("Upload these new fields too? [y/N]")
    term.send("y")
    rc, out = term.finish()
    assert rc == 0 and "the new fields will be uploaded" in out, out
    report = json.loads(cli(home, "report", "--json").stdout)
    assert "measurements" in report and report["schema_version"] == V + 1
