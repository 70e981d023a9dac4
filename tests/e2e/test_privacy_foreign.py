"""What leaves the machine, judged by the bytes, with the real tagstatd, CLI and collector.

Simulated instruments say what real ones and their users put in texts: foreign host names,
e-mail, IPv4, IPv6 and MAC addresses, URLs, file names and paths, serial-shaped tokens in
any case, glued into other words. After a run that uploads to a real collector, none of it
is in the database, its WAL or SHM, tagstatd's log, any CLI output, the report, the
collector's database or what it received. Two installs that see the same unit send nothing
that links the two, and a switch to CollectingAndUploading in the middle of a poll interval
uploads nothing measured before it."""

import datetime as dt
import json

import pytest
from conftest import wait_for

from tagstat import calibration
from tagstat.drivers.sim import documents

pytestmark = pytest.mark.e2e

ULTRA = "Time Tagger Ultra"


def same_calibration_summary(serial: str) -> str:
    """Another serial whose calibration summary equals ``serial``'s (most do)."""
    want = calibration.summarize(documents.calibration(ULTRA, serial), 0)["quantities"]
    for n in range(1000, 9999):
        other = f"{n}111XYZ"
        got = calibration.summarize(documents.calibration(ULTRA, other), 0)["quantities"]
        if got == want and other[:4] != serial[:4]:
            return other
    raise AssertionError("no serial with the same summary")


SERIAL = "1740000JEH"
OTHER = same_calibration_summary(SERIAL)

# (text the instrument logs, the identifying parts that must never leave it)
FOREIGN = [
    (
        "Saved to run_42.ttbin on labpc-17.physik.example.edu",
        ["run_42", "labpc-17", "physik", "example.edu"],
    ),
    ("mail anna.berg@uni-example.org about it", ["anna.berg", "uni-example"]),
    (
        "peer 10.20.30.40:5000 and fe80::21a:2bff:fe3c:4d5e and 00:1a:2b:3c:4d:5e",
        ["10.20.30.40", "fe80::21a:2bff:fe3c:4d5e", "00:1a:2b:3c:4d:5e"],
    ),
    ("see https://wiki.quantum-lab.example.net/tt?id=77 now", ["wiki.quantum-lab", "id=77"]),
    (
        r"wrote C:\Users\anna\Documents\scan_0042.h5 and ../results/2026/run7.dat",
        ["scan_0042", "results/2026", "run7.dat", "Users\\anna"],
    ),
    ("saved /home/anna/tt/run9.ttbin, ~/tt/run10.ttbin", ["/home/anna", "run9", "run10"]),
    ("ref-2066wiiu2v and x2066WIIU2Vy and 1809000lgg", ["2066wiiu2v", "1809000lgg"]),
    (f"unit {SERIAL.lower()} sync with x{OTHER}y", [SERIAL, OTHER]),
]
SECRETS = sorted({part for _, parts in FOREIGN for part in parts} | {SERIAL, OTHER})


def scenario(serials):
    """Each device logs every text once every 2 s (the messages repeat), so they are seen
    under consent, whenever it is given."""
    return [
        {"serial": s, "model": ULTRA, "usb_speed": "super", "rate": [[0, 40e6]], "loop_s": 2,
         "messages": [[0.1 + 0.1 * i, "warning", text] for i, (text, _) in enumerate(FOREIGN)]}
        for s in serials
    ]  # fmt: skip


def leaks(blobs: dict[str, bytes]) -> list[str]:
    found = []
    for name, data in blobs.items():
        low = data.lower()
        for secret in SECRETS:
            forms = {secret.lower().encode(), secret.lower().encode("utf-16-le")}
            found += [f"{secret!r} in {name}" for form in forms if form in low]
    return found


def home_bytes(home) -> dict[str, bytes]:
    """Every file under the home: the database, WAL, SHM, logs, the simulated instruments'
    state; not the scenario, which is the spec of the simulated hardware."""
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in home.rglob("*")
        if p.is_file() and p.name != "s.toml"
    }


def run_install(home, daemons, write_scenario, run_cli, collector, serials):
    sc = write_scenario(home / "s.toml", scenario(serials))
    env = {"TAGSTAT_UPLOAD_URL": collector.url, "TAGSTAT_UPLOAD_INTERVAL_S": "5",
           "TAGSTAT_CHECKPOINT_S": "0.5"}  # fmt: skip
    d = daemons(sc, env).start()
    run_cli(home, "status", "collecting-and-uploading")
    d.wait_until(
        lambda: (
            len([m for m in d.report()["messages"]]) >= len(FOREIGN) * len(serials)
            and d.report()["devices"]
            and all(x["calibration"] for x in d.report()["devices"])
        ),
        what="every message and device document under consent",
    )
    commands = [["status"], ["status", "--json"], ["devices"], ["devices", "--calibration"],
                ["sessions"], ["report"], ["report", "--pending"], ["uploads"],
                ["explain"]]  # fmt: skip
    outputs = {" ".join(c): run_cli(home, *c).stdout.encode() for c in commands}
    report = d.report()
    assert d.stop() == 0  # the last period goes out at the stop
    wait_for(lambda: collector.reports(), "an upload at the collector")
    return d, outputs, report


def test_no_identifier_leaves_in_any_byte(home, daemons, write_scenario, run_cli, collector):
    d, outputs, report = run_install(home, daemons, write_scenario, run_cli, collector,
                                     [SERIAL, OTHER])  # fmt: skip
    received = {f"upload {r}": collector.body(r) for r in collector.report_ids()}
    assert received
    blobs = home_bytes(home) | {f"tagstat {k}": v for k, v in outputs.items()} | received
    blobs["collector.db"] = collector.db.read_bytes()
    assert leaks(blobs) == []
    # masked, not dropped: the messages are there, with placeholders where the names were
    texts = " ".join(m["text"] for m in report["messages"])
    for placeholder in ("[file]", "[host]", "[email]", "[ip]", "[mac]", "[url]", "[path]",
                        "[serial"):  # fmt: skip
        assert placeholder in texts, placeholder
    assert "Saved to" in texts and "mail" in texts


def test_two_installs_that_see_one_unit_send_nothing_that_links_them(
    daemons_factory, write_scenario, run_cli, collector
):
    devices = []
    for _ in range(2):
        home, daemons = daemons_factory()
        _, _, report = run_install(home, daemons, write_scenario, run_cli, collector, [SERIAL])
        (device,) = report["devices"]
        devices.append(device)
    a, b = devices
    assert a["device_id"] != b["device_id"] and a["serial"] != b["serial"]
    hashed = [k for k, v in a["configuration"].items() if str(v).startswith("[id:")]
    assert {"serial", "PCB UID", "FPGA ID"} <= set(hashed)
    assert all(a["configuration"][k] != b["configuration"][k] for k in hashed)
    raw = documents.calibration(ULTRA, SERIAL)
    text = json.dumps([a, b])
    for ch in raw["channels"].values():  # no per-channel value of the unit's own table
        assert f'"delay ps": {ch["delay ps"]}' not in text
    assert "offset ppb" not in text and "reference clock" not in text
    # what both say of the calibration, another unit of the model says too
    other = calibration.summarize(documents.calibration(ULTRA, OTHER), 0)["quantities"]
    assert a["calibration"]["quantities"] == b["calibration"]["quantities"] == other
    assert a["calibration"]["age_days"] % 30 == 0 and b["calibration"]["age_days"] % 30 == 0


def test_a_switch_mid_interval_uploads_nothing_measured_before_it(
    home, daemons, write_scenario, run_cli, collector
):
    sc = write_scenario(home / "s.toml", [{"serial": SERIAL, "model": ULTRA,
                                           "rate": [[0, 40e6]]}])  # fmt: skip
    env = {"TAGSTAT_UPLOAD_URL": collector.url, "TAGSTAT_POLL_INTERVAL_S": "1",
           "TAGSTAT_UPLOAD_INTERVAL_S": "3600", "TAGSTAT_SENSOR_INTERVAL_S": "1000"}  # fmt: skip
    d = daemons(sc, env).start()
    d.wait_until(lambda: d.client.sessions(), what="a session under Collecting")
    switched = json.loads(run_cli(home, "status", "collecting-and-uploading", "--json").stdout)
    at = dt.datetime.fromisoformat(switched["since"].replace("Z", "+00:00"))
    d.wait_until(
        lambda: [s for s in d.report()["sessions"] if s["duration_s"] >= 2],
        what="two seconds of data under consent",
    )
    assert d.stop() == 0
    body = json.loads(wait_for(lambda: collector.reports() and collector.body(
        collector.report_ids()[0]), "the upload at the stop"))  # fmt: skip
    assert body["period"]["start"] == switched["since"]
    (session,) = body["sessions"]
    start = dt.datetime.fromisoformat(session["start"].replace("Z", "+00:00"))
    assert start >= at  # no part of the interval before the switch
    # 40 MB/s from the switch on: the bytes are those of the session's own duration
    assert abs(session["bytes"] - 40e6 * session["duration_s"]) <= 40e6 * 0.01
    (device,) = body["devices"]
    assert session["initial_sensors"]  # read at the first poll after the switch
    first_seen = dt.datetime.fromisoformat(device["first_seen"].replace("Z", "+00:00"))
    assert first_seen >= at
