"""`tagstat-collector serve` as a real subprocess on 127.0.0.1, for the end-to-end tests."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


class Collector:
    """``tagstat-collector serve`` on 127.0.0.1, port 0, restartable on the same database."""

    def __init__(self, db: Path):
        self.db = db
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> "Collector":
        self.proc = subprocess.Popen(
            [str(BIN / "tagstat-collector"), "--log-level", "warning", "serve", "--host",
             "127.0.0.1", "--port", "0", "--db", str(self.db)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline()  # blocks until it listens (or exits)
        match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        assert match, f"collector did not start: {line!r}"
        self.url, self.port = match.group(1), int(match.group(2))
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def reports(self) -> list[dict]:
        return requests.get(f"{self.url}/v1/reports", timeout=5).json()["reports"]

    def report_ids(self) -> list[str]:
        return [r["report_id"] for r in self.reports()]

    def body(self, report_id: str) -> bytes:
        answer = requests.get(f"{self.url}/v1/reports/{report_id}", timeout=5)
        answer.raise_for_status()
        return answer.content
