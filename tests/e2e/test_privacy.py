"""No serial number reaches the disk, a log, the CLI's output or the report.

The simulated instruments put their serials where real ones do: the USB
descriptor, the configuration dictionary, a file name in the configuration,
and warning texts. After a run, every byte under the daemon's home directory
(database, WAL, logs, socket dir, and the simulated instruments' state, which
lies beside them) and everything the CLI printed is searched; only the scenario
file, the simulated hardware's own spec, is left out.
"""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

SERIALS = ["1740000JEH", "1809000LGG", "2023000TMV"]
serial_st = st.builds(
    lambda d, r: d + r,
    st.text(string.digits, min_size=4, max_size=4),
    st.text(string.digits + string.ascii_uppercase, min_size=6, max_size=6),
)


def scenario_for(serials):
    models = ["Time Tagger Ultra", "Time Tagger 20", "Time Tagger X"]
    return [
        {
            "serial": s,
            "model": models[i % 3],
            "usb_speed": "high" if i % 2 else "super",
            "rate": [[0, 20e6 * (i + 1)]],
            "messages": [
                [0.2, "warning", f"TimeTagger '{s}': overflow in /home/alice/{s}.ttbin"],
                [0.4, "error", f"device {s.lower()} error on host"],
            ],
        }  # fmt: skip
        for i, s in enumerate(serials)
    ]


def leaks(home, outputs: list[str], serials) -> list[str]:
    found = []
    for path in home.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".toml" and path.name.startswith("s"):
            continue  # the scenario file itself (the simulated hardware's spec)
        data = path.read_bytes()
        for s in serials:
            for form in (s.encode(), s.lower().encode(), s.encode("utf-16-le")):
                if form in data:
                    found.append(f"{s} in {path.name}")
    for i, text in enumerate(outputs):
        found += [f"{s} in CLI output {i}" for s in serials if s.lower() in text.lower()]
    return found


def exercise(home, daemons, write_scenario, run_cli, serials):
    sc = write_scenario(home / "s.toml", scenario_for(serials))
    d = daemons(sc, {"TAGSTAT_CHECKPOINT_S": "0.5"}).start()
    d.wait_until(
        lambda: (
            len(d.report()["sessions"]) >= len(serials)
            and len(d.report()["messages"]) >= len(serials)
        ),
        what="sessions and messages of every device",
    )
    commands = (["status"], ["devices"], ["devices", "--json"], ["sessions"], ["report"])
    outputs = [run_cli(home, *args).stdout for args in commands]
    outputs.append(d.client.report())
    assert d.stop() == 0
    outputs.append(d.stderr())
    return outputs


def test_no_serial_on_disk_in_logs_or_output(home, daemons, write_scenario, run_cli):
    outputs = exercise(home, daemons, write_scenario, run_cli, SERIALS)
    assert leaks(home, outputs, SERIALS) == []
    report = outputs[4]
    assert "[serial:" in report and "[path]" in report  # masked, not dropped


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(serials=st.lists(serial_st, min_size=1, max_size=3, unique=True))
def test_no_random_serial_leaks(daemons_factory, write_scenario, run_cli, serials):
    home, daemons = daemons_factory()
    outputs = exercise(home, daemons, write_scenario, run_cli, serials)
    assert leaks(home, outputs, serials) == []
