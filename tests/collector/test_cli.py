"""tagstat-collector as a real subprocess: serve, print the URL, stop on SIGTERM; stats; errors."""

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from collector_fixtures import usage_report

from tagstat.collector.cli import build_parser

COLLECTOR = Path(sys.executable).with_name("tagstat-collector")


class Served:
    """A ``tagstat-collector serve`` subprocess and the URL it printed."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [str(COLLECTOR), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = self._read_url(timeout_s=20)

    def _read_url(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(deadline - time.monotonic()):
                    line = self.proc.stdout.readline()
                    if line.startswith("listening on "):
                        return line.removeprefix("listening on ").strip()
                    if not line:
                        break
        self.proc.kill()
        raise AssertionError(f"no URL printed; stderr: {self.proc.stderr.read()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.proc.kill()
            self.proc.stdout.close()
            self.proc.stderr.close()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(COLLECTOR), *args], capture_output=True, text=True, timeout=30)


def test_serve_prints_its_url_stores_reports_and_stops_on_sigterm(tmp_path):
    db = tmp_path / "c.db"
    served = Served("--db", str(db))
    try:
        assert served.url.startswith("http://127.0.0.1:")
        report = usage_report()
        r = requests.post(
            f"{served.url}/v1/reports",
            data=json.dumps(report),
            headers={"Content-Type": "application/json", "Idempotency-Key": report["report_id"]},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["status"] == "stored"
    finally:
        code = served.stop()
    assert code == 0
    stats = run("stats", "--db", str(db))
    assert stats.returncode == 0
    assert json.loads(stats.stdout)["models"][0]["model"] == "Time Tagger Ultra"


def test_serve_honours_the_body_limit(tmp_path):
    served = Served("--db", str(tmp_path / "c.db"), "--max-body-bytes", "100")
    try:
        r = requests.post(
            f"{served.url}/v1/reports",
            data=b" " * 101,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 413
    finally:
        assert served.stop() == 0


def test_a_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", "--db", str(tmp_path / "c.db"), "--port", str(port))
    assert done.returncode == 1
    assert f"tagstat-collector: error: cannot listen on 127.0.0.1:{port}" in done.stderr


def test_stats_of_a_missing_database_is_a_clear_error(tmp_path):
    done = run("stats", "--db", str(tmp_path / "none.db"))
    assert done.returncode == 1
    assert done.stderr == f"tagstat-collector: error: no database at {tmp_path / 'none.db'}\n"
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("args", [["serve", "--max-body-bytes", "0"], ["serve", "--port", "x"], []])
def test_usage_errors_exit_2(args):
    assert run(*args).returncode == 2


def test_every_command_and_option_has_help():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    for name, command in sub.choices.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings}"
    assert run("serve", "--help").returncode == 0


def test_the_console_script_is_installed():
    assert os.access(COLLECTOR, os.X_OK)
