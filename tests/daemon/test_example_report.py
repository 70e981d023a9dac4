"""The example shown at the consent prompt is the real thing: the same field paths, depth and
size as a report the service stores for upload, and nothing about this computer."""

import json
import socket

from service_sim import SimService
from test_report import field_paths

from tagstat.example_report import HOST, example_report
from tagstat.fields import REAL
from tagstat.status import UsageStatisticsStatus as S

DEVICE = {
    "serial": "2047000KBT",
    "model": "Time Tagger Ultra",
    "usb_speed": "super",
    "rate": [[0, 25e6], [10, 310e6], [45, 40e6], [240, 0]],
    "messages": [[15, "warning", "TimeTagger '{serial}': tags were lost (overflow)."]],
}


def real_upload(tmp_path, seconds=11 * 60) -> dict:
    sim = SimService(tmp_path / "home", DEVICE, sensor_interval_s=10.0)
    try:
        sim.service.hostinfo.get(timeout_s=30)
        sim.set_status(S.CollectingAndUploading)
        sim.poll(150)
        now = sim.clock.utc_now().isoformat()
        event = {"type": "Histogram", "start": now, "end": now, "duration_s": 0.0,
                 "error": "RuntimeError", "config": {"binwidth": 10, "n_bins": 100},
                 "indicators": {"events_processed": 10}}  # fmt: skip
        assert sim.service.record_measurements([event])["stored"] == 1
        sim.poll(seconds - 150)
        sim.service.checkpoint()
        report_id = sim.service.outbox.close_period()
        return json.loads(sim.service.store.outbox_get(report_id).body)
    finally:
        sim.close()


def test_the_example_has_the_field_paths_of_a_real_upload(tmp_path):
    example, real = example_report(REAL), real_upload(tmp_path)
    assert sorted(set(field_paths(example))) == sorted(set(field_paths(real)))
    assert example["schema_version"] == real["schema_version"] == REAL.version
    assert example["host"].keys() == real["host"].keys()
    assert example["host"]["cpu"].keys() == real["host"]["cpu"].keys()


def test_the_example_is_as_big_as_a_real_upload_of_the_same_length(tmp_path):
    def lines(report):
        return len(json.dumps(report, indent=2).splitlines())

    example, real = example_report(REAL), real_upload(tmp_path)
    assert 0.8 < lines(example) / lines(real) < 1.25
    for key in ("devices", "sessions", "messages", "measurements"):
        assert example[key], key  # every part of the report is shown filled in
    assert len(example["devices"][0]["configuration"]["channels"]) == 18


def test_the_example_holds_nothing_about_this_computer():
    example = example_report(REAL)
    assert example["host"] == HOST.to_report()
    text = json.dumps(example)
    assert socket.gethostname() not in text or len(socket.gethostname()) < 3
    assert "1910000ABC" not in text and "[serial:" in text  # the invented serial, masked


def test_a_version_1_consent_shows_version_1_fields_only():
    example = example_report(REAL, 1)
    assert example["schema_version"] == 1 and "daemon" not in example
    assert "ram_gib" not in example["host"]
