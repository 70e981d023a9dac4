"""Masking, judged where it matters: for each kind of identifier, generated values that a
simulated instrument logs leave nothing in the database, its WAL or SHM, tagstatd's log, the
CLI's output, the report or the upload.

One property test per kind (hypothesis), each example a real service in a fresh home over
a simulated Time Tagger whose message log holds the generated text, before and after a
switch to CollectingAndUploading; the upload is the body the outbox stores for sending."""

import contextlib
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from service_sim import DEVICE, SimService
from test_masking_properties import (
    device_serials,
    file_names,
    glue,
    hosts,
    identifying,
    local_parts,
    posix_paths,
    random_case,
    relative_paths,
    sentence,
    serial_shaped,
    urls,
    windows_paths,
)

from tagstat import cli
from tagstat.control import ControlServer
from tagstat.example_report import HOST
from tagstat.hostinfo import HostInfoCache
from tagstat.masking import MaskingLogFilter
from tagstat.status import UsageStatisticsStatus as S


def _ipv6(address, exploded: bool, upper: bool):
    value = address.exploded if exploded else address.compressed
    return (value.upper() if upper else value), [address.compressed, address.exploded]


# kind -> strategy of (value as the instrument writes it, the parts that must not survive)
KINDS = {
    "serial-shaped": st.tuples(glue, serial_shaped, glue).map(lambda t: ("".join(t), [t[1]])),
    "host": hosts(),
    "email": st.tuples(local_parts, hosts()).map(lambda t: (f"{t[0]}@{t[1][0]}", [t[0], *t[1][1]])),
    "ipv4": st.tuples(st.ip_addresses(v=4), st.none() | st.integers(1, 65535)).map(
        lambda t: (str(t[0]) if t[1] is None else f"{t[0]}:{t[1]}", [str(t[0])])
    ),
    "ipv6": st.builds(_ipv6, st.ip_addresses(v=6), st.booleans(), st.booleans()),
    "mac": st.tuples(
        st.lists(st.integers(0, 255), min_size=6, max_size=6), st.sampled_from([":", "-"])
    ).map(lambda t: (t[1].join(f"{o:02x}" for o in t[0]), [])),  # fmt: skip
    "file name": file_names.map(lambda n: (n, identifying(n))),
    "posix path": posix_paths().map(lambda p: (p, identifying(p, "~"))),
    "relative path": relative_paths().map(lambda p: (p, identifying(p, "\\"))),
    "windows path": windows_paths().map(lambda p: (p, identifying(p, "\\", ":"))),
    "url": urls(),
}
EXAMPLES = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))


@contextlib.contextmanager
def captured_log(masker):
    """tagstatd's log as it writes it: every record through the masking filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingLogFilter(masker))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level, root.level = root.level, logging.DEBUG
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.level = old_level


def cli_output(home: Path, service) -> str:
    out = io.StringIO()
    commands = (["status"], ["report"], ["report", "--pending"], ["devices", "--json"],
                ["devices", "--calibration"], ["sessions", "--json"], ["explain"])  # fmt: skip
    with ControlServer(home / "control.sock", service), contextlib.redirect_stdout(out):
        for args in commands:
            assert cli.main(["--home", str(home), *args]) == 0
    return out.getvalue()


def everything(text: str, serial: str = DEVICE["serial"]) -> dict[str, bytes]:
    """Run a service whose instrument logs ``text``; every byte it left or showed."""
    home = Path(tempfile.mkdtemp(prefix="tgs-", dir="/tmp"))  # noqa: S108 - AF_UNIX limit
    device = DEVICE | {"serial": serial, "messages": [[1, "warning", text], [4, "error", text]]}
    hostinfo = HostInfoCache(home / "hostinfo.json", collect=lambda: HOST)  # no 1 s CPU probe
    sim = SimService(home, device, hostinfo=hostinfo)
    try:
        with captured_log(sim.service.masker) as log:
            sim.poll(2)  # the first message is logged under Collecting
            sim.set_status(S.CollectingAndUploading)
            sim.poll(4)  # the second under CollectingAndUploading
            shown = {"report": sim.service.get_report().encode(),
                     "cli": cli_output(home, sim.service).encode()}  # fmt: skip
            sim.service.checkpoint()
            report_id = sim.service.outbox.close_period()
            shown["upload"] = sim.service.store.outbox_get(report_id).body
            assert json.loads(shown["report"])["messages"], "the text was not collected"
            sim.close()
        shown["log"] = log.getvalue().encode()
        shown["database, WAL and SHM"] = sim.db_bytes()
        return shown
    finally:
        sim.close()
        shutil.rmtree(home, ignore_errors=True)


def assert_nothing_survives(blobs: dict[str, bytes], parts) -> None:
    for where, data in blobs.items():
        low = data.lower()
        for part in parts:
            for form in {part.lower().encode(), part.lower().encode("utf-16-le")}:
                assert form not in low, f"{part!r} in the {where}"


@pytest.mark.parametrize("kind", sorted(KINDS))
@EXAMPLES
@given(data=st.data())
def test_no_identifier_of_any_kind_is_stored_shown_logged_or_uploaded(kind, data):
    value, parts = data.draw(KINDS[kind], label=kind)
    # A path of common words only ("/data") names nobody, and the CLI's own text has it
    # ("docs/DATA.md"): it must be masked (test_masking_properties), but is no probe here.
    assume(parts or "path" not in kind)
    text = data.draw(sentence(value), label="text")
    assert_nothing_survives(everything(text), {value, *parts})


@EXAMPLES
@given(data=st.data(), serial=device_serials, before=glue, after=glue)
def test_the_instruments_own_serial_never_survives_in_any_case(data, serial, before, after):
    spelled = data.draw(random_case(st.just(serial)), label="spelled")
    text = data.draw(sentence(f"{before}{spelled}{after}"), label="text")
    assert_nothing_survives(everything(text, serial), {serial})
