"""The field registry: it agrees with docs/DATA.md both ways, covers every field the report
builder makes, and its filter leaves out newer and unknown fields; the shipped DATA.md is
docs/DATA.md."""

import importlib.resources
import json
import re
from pathlib import Path

import pytest
from test_report import field_paths, report, seed

from tagstat import datadoc, fields
from tagstat.errors import ConfigError
from tagstat.example_report import example_report
from tagstat.report import SCHEMA_VERSION
from tagstat.store import Store

DOCS = Path(__file__).parents[2] / "docs"


def documented_since() -> dict[str, int]:
    table = datadoc.section("The report", (DOCS / "DATA.md").read_text())
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| `([^`]+)` \| (\d+) \|", table, re.M)}


def test_registry_and_data_md_since_column_agree_both_ways():
    documented = documented_since()
    assert sorted(set(fields.REPORT_FIELDS) - set(documented)) == [], "missing from DATA.md"
    assert sorted(set(documented) - set(fields.REPORT_FIELDS)) == [], "missing from fields.py"
    assert documented == fields.REPORT_FIELDS


def test_the_real_schema_is_version_2_and_no_field_is_newer():
    assert SCHEMA_VERSION == 2 and fields.REAL.version == 2
    assert set(fields.REPORT_FIELDS.values()) == {1, 2}


def test_a_version_1_consent_uploads_only_fields_of_version_1():
    # What a user who agreed before schema 2 keeps sending: none of the new host fields,
    # no calibration summary, no daemon counters.
    kept = fields.REAL.filter(example_report(fields.REAL), 1)
    assert kept["schema_version"] == 1
    assert kept["host"] == {"cpu": {"brand": "Intel(R) Core(TM) i7-12700"}}
    assert "calibration" not in kept["devices"][0] and "daemon" not in kept
    assert kept["devices"][0]["configuration"] and kept["sessions"]


def test_every_field_the_builder_makes_is_registered(tmp_path):
    store = Store.open(tmp_path / "t.db")
    seed(store)
    made = set(field_paths(report(store)))
    store.close()
    assert sorted(made - set(fields.REPORT_FIELDS)) == []


def test_the_filter_keeps_a_whole_current_report(tmp_path):
    store = Store.open(tmp_path / "t.db")
    seed(store)
    full = report(store)
    store.close()
    assert fields.REAL.filter(full, fields.REAL.version) == full


def test_a_newer_field_and_its_parts_are_left_out_and_the_version_says_so():
    v = fields.REAL.version
    schema = fields.current({fields.TEST_SCHEMA_ENV: json.dumps(
        {"version": v + 1, "since": {"measurements[]": v + 1, "host.cpu.brand": v + 1}}
    )})  # fmt: skip
    assert schema.since["measurements[].config"] == v + 1  # parts are as new as their parent
    r = example_report(fields.REAL)
    kept = schema.filter(r, v)
    assert "measurements" not in kept and "brand" not in kept["host"]["cpu"]
    assert kept["schema_version"] == v and kept["sessions"] == r["sessions"]
    assert schema.filter(r, v + 1)["measurements"] == r["measurements"]
    assert schema.new_fields(v)[:2] == ["host.cpu.brand", "measurements[]"]


def test_unknown_fields_are_never_uploaded_but_opaque_subtrees_are_kept_whole():
    r = example_report(fields.REAL)
    r["surprise"] = {"secret": 1}
    r["devices"][0]["extra"] = "x"
    r["devices"][0]["configuration"]["any_key"] = 5
    kept = fields.REAL.filter(r, fields.REAL.version)
    assert "surprise" not in kept and "extra" not in kept["devices"][0]
    assert kept["devices"][0]["configuration"]["any_key"] == 5


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"since": {}}',
        '{"version": 0}',
        '{"version": 1}',
        '{"version": 3, "since": {"nope": 3}}',
        '{"version": 3, "since": {"host": 4}}',
        '{"version": 3, "since": {"host": 0}}',
        '{"version": 3, "since": {"host": "3"}}',
        '{"version": 3, "since": {"host.ram_gib": 1}}',
        "[1]",
    ],
)
def test_a_bad_test_schema_is_an_error_naming_the_variable(raw):
    with pytest.raises(ConfigError, match=fields.TEST_SCHEMA_ENV):
        fields.current({fields.TEST_SCHEMA_ENV: raw})


def test_the_package_ships_docs_data_md():
    shipped = importlib.resources.files("tagstat").joinpath("DATA.md").read_text()
    assert shipped == (DOCS / "DATA.md").read_text()
    assert datadoc.field_rows()["devices[].serial"].since == 1


def test_data_md_sections_the_explanations_read_exist():
    assert set(datadoc.status_rows()) == {"Disabled", "Collecting", "CollectingAndUploading"}
    assert "Serial numbers" in datadoc.section("Never collected")
    with pytest.raises(KeyError):
        datadoc.section("No such section")
