"""The consent boundary, exact: a switch in the middle of a poll interval splits it at the
switch, to the byte, and nothing measured before a switch to CollectingAndUploading (or
after leaving it) is uploaded: no part of an interval, no sensor reading, no document.

A real service over a simulated Time Tagger whose data rate is constant, with one hand-driven
clock for both, so every figure below is exact."""

import datetime as dt
import json

import pytest
from service_sim import DEVICE, SERIAL, T0, SimService

from tagstat.status import UsageStatisticsStatus as S

RATE = 50_000_000  # bytes per second, constant
ULTRA = DEVICE | {"rate": [[0, RATE]], "messages": []}


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")[:-6] + "Z"


@pytest.fixture
def sim(tmp_path):
    # Sensors every 1000 s: a reading from before the switch would still be the newest one
    # at the first poll after it, unless the switch forces a new one.
    s = SimService(tmp_path / "home", ULTRA, sensor_interval_s=1000.0, config_interval_s=1e6)
    yield s
    s.close()


def sessions(sim, status=None):
    sim.service.checkpoint()
    found = sim.service.store.sessions()
    return [s for s in found if status is None or s.status == status]


def upload(sim) -> dict:
    """The report the outbox stores for upload when the period closes now."""
    sim.service.checkpoint()
    report_id = sim.service.outbox.close_period()
    return json.loads(sim.service.store.outbox_get(report_id).body)


def test_a_switch_mid_interval_splits_the_interval_at_the_switch(sim):
    sim.poll(5)  # t = 1..5 s under Collecting
    sim.clock.t += 0.5  # t = 5.5 s: half-way through a poll interval
    sim.set_status(S.CollectingAndUploading)
    sim.poll(4)  # t = 6.5 .. 9.5 s
    (before,) = sessions(sim, status=1)
    assert (before.start, before.end) == (T0 + dt.timedelta(seconds=1),
                                          T0 + dt.timedelta(seconds=5.5))  # fmt: skip
    assert before.bytes_total == 4.5 * RATE and before.end_reason == "status_change"
    (after,) = sessions(sim, status=2)
    assert after.start == T0 + dt.timedelta(seconds=5.5)
    assert after.bytes_total == 4 * RATE
    changes = sim.service.store.status_changes()
    assert changes[-1].at == T0 + dt.timedelta(seconds=5.5)  # the switch is the split

    sent = upload(sim)
    (session,) = sent["sessions"]
    assert session["start"] == at(5.5) and session["bytes"] == 4 * RATE
    assert sent["period"]["start"] == at(5.5)
    assert session["data_rate"] == {"min": RATE, "avg": RATE, "max": RATE}


def test_the_first_session_after_consent_starts_with_sensors_read_after_it(sim):
    sim.poll(5)
    old = sim.service.store.sensor_summary(sim.service.store.devices()[0].device_id)
    assert old and {s.last_at for s in old} == {T0 + dt.timedelta(seconds=1)}
    sim.clock.t += 0.5
    sim.set_status(S.CollectingAndUploading)
    sim.poll(3)
    (after,) = sessions(sim, status=2)
    device = sim.sim.device(SERIAL)
    reading = sim.service.store.sensor_summary(after.device_id, min_status=2)
    assert {s.last_at for s in reading} == {T0 + dt.timedelta(seconds=6.5)}  # after the switch
    fpga = after.initial_sensors["fpga sensors"]["temp"]
    assert fpga == device._document(6.5, 0xB2, 0)["fpga sensors"]["temp"]
    assert fpga != sessions(sim, status=1)[0].initial_sensors["fpga sensors"]["temp"]
    sent = upload(sim)
    assert sent["sessions"][0]["initial_sensors"] == after.initial_sensors
    (d,) = sent["devices"]
    assert {k: v["last"] for k, v in d["sensors"].items()} == {
        s.key: s.last for s in reading
    }  # only readings taken under status 2


def test_documents_read_before_consent_are_never_uploaded(sim):
    sim.poll(3)
    (device,) = sim.service.store.devices()
    assert device.configuration_status == device.calibration_status == 1
    sim.set_status(S.CollectingAndUploading)
    for _ in range(12):  # the first reads after the switch fail
        sim.sim.inject(SERIAL, "timeout")
    sim.poll(1)
    before = upload(sim)
    (d,) = before["devices"]  # seen after the switch, its documents still from before it
    assert d["calibration"] is None and d["configuration"] is None
    assert d["first_seen"] == before["period"]["start"]  # not when the install first saw it
    sim.poll(10)  # a failed read is tried again within 10 s
    (device,) = sim.service.store.devices()
    assert device.configuration_status == device.calibration_status == 2  # read again
    (d,) = upload(sim)["devices"]
    assert d["configuration"]["serial"].startswith("[id:") and d["calibration"]["channels"] == 18


def test_leaving_uploads_mid_interval_uploads_nothing_measured_after(sim):
    sim.set_status(S.CollectingAndUploading)
    sim.poll(4)  # t = 1..4
    sim.clock.t += 0.25
    sim.set_status(S.Collecting)  # t = 4.25 s
    sim.poll(2)
    (during,) = sessions(sim, status=2)
    assert during.end == T0 + dt.timedelta(seconds=4.25)
    assert during.bytes_total == 3.25 * RATE
    (after,) = sessions(sim, status=1)
    assert after.start == T0 + dt.timedelta(seconds=4.25) and after.bytes_total == 2 * RATE
    # the unfinished period is discarded and nothing is queued
    assert sim.service.store.outbox_pending() == []
    assert sim.service.outbox.close_period() is None


def test_a_failed_reading_at_the_switch_drops_the_interval_that_spans_it(sim):
    sim.poll(3)
    sim.clock.t += 0.5
    sim.sim.inject(SERIAL, "timeout")  # the reading at the switch fails
    sim.set_status(S.CollectingAndUploading)
    sim.poll(3)  # t = 4.5 .. 6.5: a fresh baseline at 4.5, data from then on
    (before,) = sessions(sim, status=1)
    assert before.end == T0 + dt.timedelta(seconds=3)  # the last good reading
    (after,) = sessions(sim, status=2)
    assert after.start == T0 + dt.timedelta(seconds=4.5)
    assert after.bytes_total == 2 * RATE  # nothing from before the switch
    assert sim.service.store.daemon_counts() == {"read_errors": 1}  # under Collecting


def test_daemon_problems_are_counted_under_their_status_and_never_reported_as_text(sim):
    sim.poll(2)
    sim.sim.inject(SERIAL, "timeout")
    sim.poll(1)  # a failed reading under Collecting
    sim.set_status(S.CollectingAndUploading)
    sim.poll(1)
    sim.sim.inject(SERIAL, "timeout")
    sim.poll(1)  # and one under CollectingAndUploading
    sent = upload(sim)
    assert sent["daemon"]["read_errors"] == 1  # only the one after consent
    assert sent["messages"] == []
    local = json.loads(sim.service.get_report())  # under status 2: what would be sent
    assert local["daemon"]["read_errors"] == 0  # the closed period took it
    sim.set_status(S.Collecting)
    local = json.loads(sim.service.get_report())  # everything kept here
    assert local["daemon"]["read_errors"] == 2
    assert local["messages"] == []  # the instrument said nothing; the daemon's texts stay out


def test_an_application_cannot_smuggle_an_identifier_in_an_error_class(sim):
    # Class names pass the application-side checks; tagstatd's masking sees this install's
    # serials and every host and file name.
    sim.poll(2)
    now = sim.clock.utc_now().isoformat()
    names = ["Failed" + SERIAL.lower(), "labpc17.example.org", "run_42.ttbin", "ValueError"]
    events = [{"type": "Counter", "start": now, "end": now, "duration_s": 0.0, "error": name}
              for name in names]  # fmt: skip
    assert sim.service.record_measurements(events)["stored"] == 4
    errors = sorted(e.error for e in sim.service.store.measurements())
    assert errors == ["Exception", "Exception", "Exception", "ValueError"]
