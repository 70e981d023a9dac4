"""tagstat-collector as a real subprocess: serve, print the URL, stop on SIGTERM; stats; errors."""

import gzip
import http.client
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

    def __init__(self, tmp_path: Path, *args: str, log_level: str = "info"):
        self.db = tmp_path / "c.db"
        self.log = tmp_path / "collector.log"  # a file, not a pipe nobody drains
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(COLLECTOR), "--log-level", log_level, "serve", "--port", "0"]
                + ["--db", str(self.db), *args],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.url = self._read_url(timeout_s=20)

    def wait_log(self, text: str, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log.read_text():
            assert time.monotonic() < deadline, f"{text!r} not logged: {self.log.read_text()}"
            time.sleep(0.01)  # polling a file: nothing to block on

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
        raise AssertionError(f"no URL printed; log: {self.log.read_text()}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.proc.kill()
            self.proc.stdout.close()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(COLLECTOR), *args], capture_output=True, text=True, timeout=30)


def test_serve_prints_its_url_stores_reports_and_stops_on_sigterm(tmp_path):
    served = Served(tmp_path)
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
    stats = run("stats", "--db", str(served.db))
    assert stats.returncode == 0
    assert json.loads(stats.stdout)["models"][0]["model"] == "Time Tagger Ultra"


def test_sigterm_lets_a_request_in_flight_finish(tmp_path):
    served = Served(tmp_path, log_level="debug")
    report = usage_report()
    data = gzip.compress(json.dumps(report).encode())
    conn = http.client.HTTPConnection(served.url.removeprefix("http://"), timeout=10)
    conn.putrequest("POST", "/v1/reports")
    for name, value in [("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                        ("Transfer-Encoding", "chunked")]:  # fmt: skip
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(b"%x\r\n%s\r\n" % (10, data[:10]))  # the first chunk only
    served.wait_log("connection from 127.0.0.1")  # accepted: in flight, not in the backlog
    served.proc.send_signal(signal.SIGTERM)
    served.wait_log("stopping")
    conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data) - 10, data[10:]))
    answer = conn.getresponse()
    assert answer.status == 200 and json.loads(answer.read())["status"] == "stored"
    assert served.stop() == 0
    assert json.loads(run("stats", "--db", str(served.db)).stdout)["reports"] == 1
    assert "POST /v1/reports 200" in served.log.read_text()


def test_a_chunked_body_that_ends_inside_a_chunk_leaves_the_server_running(tmp_path):
    served = Served(tmp_path)
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n{}")  # fmt: skip
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert requests.get(f"{served.url}/healthz", timeout=10).status_code == 200
    assert served.stop() == 0


def test_serve_honours_the_body_limit(tmp_path):
    served = Served(tmp_path, "--max-body-bytes", "100")
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
