"""A real application process reports its measurements to a real tagstatd.

The application is a small script run with the venv's python, exactly as lab
software would run: it imports tagstat, tracks a few measurements and exits at
once, so the last event only arrives thanks to the exit hook. The same script
must run unchanged (exit 0, nothing on stderr) when no daemon is there.
"""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tagstat.clock import iso

pytestmark = pytest.mark.e2e

SECRETS = ["/home/alice/beamtime/run7.ttbin", "1740000JEH", "sample of Dr Alice Example"]

APP = textwrap.dedent(
    """
    import sys, time
    import tagstat

    for n in (100, 900, 200):
        with tagstat.track_measurement("Correlation", config={
            "binwidth": 1000, "n_bins": 5000, "resolution": "HighResA",
            "file": "/home/alice/beamtime/run7.ttbin", "serial": "1740000JEH",
            "n_values": "1740000JEH", "comment": "sample of Dr Alice Example",
            "channel_edge": "/home/alice/beamtime/run7.ttbin",
        }) as m:
            sum(range(20000))
            m.add(events_processed=n, dropped_events=n // 100)
    try:
        with tagstat.track_measurement("Histogram", config={"n_bins": 64}):
            raise RuntimeError("cannot write /home/alice/beamtime/run7.ttbin")
    except RuntimeError:
        pass
    now = time.time()
    tagstat.record_measurement("sample of Dr Alice Example", now - 2.5, now,
                               error="Err_1740000JEH", indicators={"cpu_time_s": 0.75})
    tagstat.record_measurement("Countrate", now - 1, now, error=TimeoutError())
    print("measured")
    """
)


@pytest.fixture
def app(tmp_path):
    """run(home, **env) -> the finished application process (its script lives outside home)."""
    script = tmp_path / "lab_app.py"
    script.write_text(APP)

    def run(home, **env) -> subprocess.CompletedProcess:
        # A clean environment: no kill switch or CI variable of the test runner leaks in.
        clean = {"PATH": os.environ["PATH"], "TAGSTAT_HOME": str(home), **env}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(script)], env=clean, capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        proc.elapsed_s = time.monotonic() - started
        return proc

    return run


def by_type(report: dict) -> dict:
    return {m["type"]: m for m in report["measurements"]}


def test_the_report_shows_an_application_s_measurements(home, daemons, app):
    d = daemons().start()
    proc = app(home)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "measured\n", "")
    # No waiting: the application's exit hook delivered its last events before it ended.
    m = by_type(d.report())
    corr, hist, other, rate = m["Correlation"], m["Histogram"], m["Other"], m["Countrate"]
    assert corr["count"] == 3 and corr["errors"] == {} and corr["total_duration_s"] >= 0
    assert corr["indicators"]["events_processed"] == {"min": 100, "median": 200, "max": 900}
    assert corr["indicators"]["dropped_events"] == {"min": 1, "median": 2, "max": 9}
    assert set(corr["indicators"]) == {"events_processed", "dropped_events", "cpu_time_s",
                                       "events_per_s"}  # fmt: skip
    assert corr["config"] == {
        "binwidth": [{"value": 1000, "count": 3}],
        "n_bins": [{"value": 5000, "count": 3}],
        "resolution": [{"value": "HighResA", "count": 3}],
    }
    assert hist["count"] == 1 and hist["errors"] == {"RuntimeError": 1}
    assert other["errors"] == {"Exception": 1} and other["total_duration_s"] == 2.5
    assert other["indicators"] == {"cpu_time_s": {"min": 0.75, "median": 0.75, "max": 0.75}}
    assert rate["errors"] == {"TimeoutError": 1}


@pytest.mark.parametrize("daemon_state", ["never started", "stopped", "killed"])
def test_without_a_daemon_the_application_runs_unchanged(home, daemons, app, daemon_state):
    if daemon_state != "never started":
        d = daemons().start()
        d.stop(signal.SIGKILL if daemon_state == "killed" else signal.SIGTERM)
    proc = app(home)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "measured\n", "")
    print(f"application with the daemon {daemon_state}: {proc.elapsed_s:.3f} s")


def test_paths_serials_and_free_text_leave_no_trace(home, daemons, app, run_cli):
    d = daemons().start()
    assert app(home).returncode == 0
    # An application that skips the library and writes to the socket itself is minimised too.
    end = dt.datetime.now(dt.UTC)
    evil = {"type": SECRETS[0], "start": iso(end - dt.timedelta(seconds=1)), "end": iso(end),
            "duration_s": 1, "error": f"OSError: {SECRETS[0]}", "note": SECRETS[2],
            "config": {"n_bins": SECRETS[1], "binwidth": {"path": SECRETS[0]}, SECRETS[2]: 1},
            "indicators": {"cpu_time_s": SECRETS[1], SECRETS[2]: 5}}  # fmt: skip
    reply = raw_request(home, {"op": "record_measurements", "events": [evil, SECRETS[2]]})
    assert reply == {"ok": True, "result": {"stored": 1, "rejected": 1}}
    outputs = [d.client.report(), run_cli(home, "report").stdout]
    assert d.stop() == 0  # checkpoints the WAL into the database file
    found = [f"{s!r} in {path.name}" for path in home.rglob("*") if path.is_file()
             for s in SECRETS if s.encode() in path.read_bytes()]  # fmt: skip
    found += [f"{s!r} in output {i}" for i, text in enumerate(outputs) for s in SECRETS
              if s in text]  # fmt: skip
    assert found == []
    assert "Correlation" in outputs[0]  # the measurements themselves are there


def test_nothing_is_recorded_under_disabled(home, daemons, app, run_cli):
    d = daemons().start()
    run_cli(home, "status", "disabled")
    assert app(home).returncode == 0
    run_cli(home, "status", "collecting")
    assert d.report()["measurements"] == []


@pytest.mark.parametrize("switch", ["TAGSTAT_DISABLE", "DO_NOT_TRACK"])
def test_a_kill_switch_in_the_application_s_environment_sends_nothing(home, daemons, app, switch):
    d = daemons().start()
    proc = app(home, **{switch: "1"})
    assert (proc.returncode, proc.stderr) == (0, "")
    assert d.report()["measurements"] == []


def raw_request(home, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(home / "control.sock"))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
