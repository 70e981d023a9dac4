"""tagstatd as a real subprocess: sessions, restarts, status and the report."""

import json
import signal

import pytest

from tagstat.clock import parse_iso
from tagstat.fields import REAL

pytestmark = pytest.mark.e2e

STEPS = [[0, 50_000_000], [2, 200_000_000], [4, 100_000_000]]


def integral(steps, a: float, b: float) -> float:
    """Bytes the scenario sends between scenario times a and b."""
    total = 0.0
    for i, (t, rate) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
        lo, hi = max(a, t), min(b, end)
        if hi > lo:
            total += rate * (hi - lo)
    return total


def run_start(home) -> float:
    return json.loads((home / "simulator" / "state.json").read_text())["run_start_s"]


def one_session(daemon, min_duration_s: float):
    def ready():
        sessions = daemon.report()["sessions"]
        return sessions if sessions and sessions[-1]["duration_s"] >= min_duration_s else None

    return daemon.wait_until(ready, what=f"a session of {min_duration_s} s")


def test_report_rates_match_the_scenario(home, daemons, write_scenario):
    sc = write_scenario(home / "s.toml", [{"serial": "1740000JEH", "model": "Time Tagger Ultra",
                                           "usb_speed": "super", "rate": STEPS}])  # fmt: skip
    d = daemons(sc).start()
    (session,) = one_session(d, 5.5)
    t0 = run_start(home)
    a = parse_iso(session["start"]).timestamp() - t0
    b = parse_iso(session["end"]).timestamp() - t0
    truth_avg = integral(STEPS, a, b) / (b - a)
    rate = session["data_rate"]
    assert rate["min"] == pytest.approx(50e6, rel=0.01)
    assert rate["max"] == pytest.approx(200e6, rel=0.01)
    assert rate["avg"] == pytest.approx(truth_avg, rel=0.01)
    assert session["bytes"] == pytest.approx(integral(STEPS, a, b), rel=0.01)
    assert session["open"] is True
    assert d.stop() == 0


def test_session_survives_kill_9_and_restart(home, daemons, write_scenario):
    sc = write_scenario(home / "s.toml", [{"serial": "1809000LGG", "model": "Time Tagger X",
                                           "usb_speed": "super", "rate": [[0, 80e6]]}])  # fmt: skip
    env = {"TAGSTAT_CHECKPOINT_S": "0.5"}
    first = daemons(sc, env).start()
    (before,) = one_session(first, 2.0)
    # the report call checkpointed the session; now kill without warning
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    second = daemons(sc, env).start()
    (after,) = one_session(second, before["duration_s"] + 2.0)
    assert after["start"] == before["start"]
    assert after["open"] is True
    # the gap while the daemon was down is inside the session: bytes keep up with time
    assert after["data_rate"]["avg"] == pytest.approx(80e6, rel=0.01)
    assert second.stop() == 0


def test_sigterm_checkpoints_and_exits_zero(home, daemons, write_scenario):
    sc = write_scenario(home / "s.toml", [{"serial": "1910000OZQ", "model": "Time Tagger Ultra",
                                           "usb_speed": "super", "rate": [[0, 10e6]]}])  # fmt: skip
    d = daemons(sc, {"TAGSTAT_CHECKPOINT_S": "3600"}).start()
    (live,) = one_session(d, 1.0)
    assert d.stop() == 0
    again = daemons(sc).start()
    sessions = again.report()["sessions"]
    assert sessions[0]["start"] == live["start"]
    assert sessions[0]["duration_s"] >= live["duration_s"]
    assert again.stop() == 0


def test_status_api_and_disabled_stops_collection(home, daemons, write_scenario, monkeypatch):
    import tagstat

    sc = write_scenario(home / "s.toml", [{"serial": "1948000SAE", "model": "Time Tagger Ultra",
                                           "usb_speed": "super", "rate": [[0, 10e6]]}])  # fmt: skip
    d = daemons(sc).start()
    monkeypatch.setenv("TAGSTAT_HOME", str(home))
    assert tagstat.getUsageStatisticsStatus() == tagstat.UsageStatisticsStatus.Collecting
    one_session(d, 1.0)
    tagstat.setUsageStatisticsStatus(tagstat.UsageStatisticsStatus.Disabled)
    frozen = d.report()["sessions"]
    assert [s["end_reason"] for s in frozen] == ["disabled"]
    assert d.client.devices()[0]["attached"] is False
    d.wait_until(lambda: d.proc.poll() is None, what="daemon alive")
    assert d.report()["sessions"] == frozen  # nothing new while Disabled
    tagstat.setUsageStatisticsStatus(2, persistent_config=False)
    assert tagstat.getUsageStatisticsStatus() == 2
    assert d.stop() == 0
    again = daemons(sc).start()  # the temporary status is gone after a restart
    assert tagstat.getUsageStatisticsStatus() == tagstat.UsageStatisticsStatus.Disabled
    with pytest.raises(ValueError, match="allowed"):
        tagstat.setUsageStatisticsStatus(7)
    assert again.stop() == 0


def test_empty_report_is_valid(home, daemons, write_scenario):
    sc = write_scenario(home / "s.toml", [{"serial": "2023000TMV", "model": "Time Tagger 20",
                                           "usb_speed": "high", "rate": [[0, 0]]}])  # fmt: skip
    d = daemons(sc).start()
    report = d.report()
    assert report["schema_version"] == REAL.version and report["sessions"] == []
    assert report["status"] == "Collecting" and len(report["user_id"]) == 36
    assert d.stop() == 0


def test_cli_shows_sessions_devices_status(home, daemons, write_scenario, run_cli):
    sc = write_scenario(home / "s.toml", [{"serial": "23010013TP", "model": "Time Tagger Ultra",
                                           "usb_speed": "high", "rate": [[0, 30e6]]}])  # fmt: skip
    d = daemons(sc).start()
    one_session(d, 1.0)
    out = run_cli(home, "sessions").stdout
    assert "MB/s" in out and "30.0" in out
    devices = json.loads(run_cli(home, "devices", "--json").stdout)
    assert devices[0]["usb_speed"] == "high" and devices[0]["serial"].startswith("[serial:")
    assert "Collecting" in run_cli(home, "status").stdout
    report = d.report()
    warning = [m for m in report["messages"] if "USB 3" in m["text"]]
    assert warning, report["messages"]  # a USB 3 model on a USB 2 link is reported
    assert d.stop() == 0


def test_disabled_from_the_start_collects_nothing(home, daemons, write_scenario):
    (home / "tagstat.toml").write_text('initial_status = "Disabled"\n')
    sc = write_scenario(home / "s.toml", [{"serial": "1740000JEH", "model": "Time Tagger X",
                                           "usb_speed": "super", "rate": [[0, 10e6]]}])  # fmt: skip
    d = daemons(sc).start()
    d.wait_until(lambda: d.client.status()["name"] == "Disabled", what="status")
    report = d.report()
    assert report["devices"] == [] and report["sessions"] == [] and report["host"] is None
    assert not (home / "hostinfo.json").exists()
    assert d.stop() == 0
