"""Configuration: defaults, precedence, and one test per way a setting can be wrong."""

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagstat.config import DEFAULT_CONFIG_TEXT, FIELDS, Config, load_config, reference_table
from tagstat.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"


@pytest.fixture
def conf(tmp_path):
    return tmp_path / "tagstat.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error(path, env=None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, env or {})
    return str(err.value)


# -- defaults and precedence -------------------------------------------------


def test_missing_file_gives_the_defaults(conf):
    assert load_config(conf, {}) == Config()
    assert load_config(None, {}) == Config()


def test_defaults_are_the_documented_ones():
    c = Config()
    assert (c.poll_interval_s, c.checkpoint_s, c.idle_timeout_s) == (1.0, 10.0, 60.0)
    assert (c.usb_timeout_ms, c.product_ids, c.retention_max_bytes) == (500, (), 64 << 20)
    assert c.initial_status == "Collecting"


def test_values_from_the_main_file(conf):
    write(conf, 'poll_interval_s = 2\nproduct_ids = [0x012b, "0x012c"]\nusb_timeout_ms = 250\n')
    c = load_config(conf, {})
    assert c.poll_interval_s == 2.0 and isinstance(c.poll_interval_s, float)
    assert c.product_ids == (0x012B, 0x012C)
    assert c.usb_timeout_ms == 250
    assert c.checkpoint_s == Config().checkpoint_s


def test_drop_ins_override_in_lexical_order(conf):
    write(conf, "poll_interval_s = 2.0\nmax_messages = 5\n")
    write(conf.parent / "tagstat.toml.d" / "20-b.toml", "poll_interval_s = 4.0\n")
    write(conf.parent / "tagstat.toml.d" / "10-a.toml", "poll_interval_s = 3.0\nmax_messages = 7\n")
    write(conf.parent / "tagstat.toml.d" / "30-ignored.txt", "this is not toml")
    c = load_config(conf, {})
    assert (c.poll_interval_s, c.max_messages) == (4.0, 7)


def test_drop_ins_apply_without_a_main_file(conf):
    write(conf.parent / "tagstat.toml.d" / "a.toml", "retention_days = 7\n")
    assert load_config(conf, {}).retention_days == 7.0


def test_environment_overrides_files(conf):
    write(conf, "poll_interval_s = 2.0\nretention_days = 3\n")
    write(conf.parent / "tagstat.toml.d" / "a.toml", "poll_interval_s = 3.0\n")
    env = {
        "TAGSTAT_POLL_INTERVAL_S": "0.5",
        "TAGSTAT_PRODUCT_IDS": "0x012b, 0x012c,300",
        "TAGSTAT_USB_TIMEOUT_MS": "1000",
        "TAGSTAT_INITIAL_STATUS": "collecting-and-uploading",
    }
    c = load_config(conf, env)
    assert c.poll_interval_s == 0.5 and c.retention_days == 3.0
    assert c.product_ids == (0x012B, 0x012C, 300)
    assert c.usb_timeout_ms == 1000
    assert c.initial_status == "CollectingAndUploading"


def test_empty_product_ids_in_the_environment_clear_the_list(conf):
    write(conf, "product_ids = [1]\n")
    assert load_config(conf, {"TAGSTAT_PRODUCT_IDS": ""}).product_ids == ()


def test_misspelt_environment_variable_is_warned_about(conf, caplog):
    load_config(conf, {"TAGSTAT_POLL_INTERVALS": "5", "TAGSTAT_HOME": "/x"})
    assert "TAGSTAT_POLL_INTERVALS" in caplog.text and "TAGSTAT_POLL_INTERVAL_S" in caplog.text
    assert "TAGSTAT_HOME" not in caplog.text


# -- the default file and the docs -------------------------------------------


def test_default_config_text_parses_to_the_defaults(conf):
    write(conf, DEFAULT_CONFIG_TEXT)
    assert load_config(conf, {}) == Config()


def test_default_config_text_uncommented_still_gives_the_defaults(conf):
    uncommented = re.sub(r"^#(\w+ = )", r"\1", DEFAULT_CONFIG_TEXT, flags=re.M)
    assert uncommented.count("\n#") < DEFAULT_CONFIG_TEXT.count("\n#")
    write(conf, uncommented)
    assert load_config(conf, {}) == Config()
    for name in FIELDS:
        assert f"\n{name} = " in uncommented


def test_docs_hold_the_generated_reference_table():
    assert reference_table() in DOCS.read_text(encoding="utf-8"), (
        "docs/CONFIG.md is out of date: paste tagstat.config.reference_table() into it"
    )


def test_every_key_has_a_doc_and_a_known_type():
    for f in dataclasses.fields(Config):
        assert f.metadata["doc"]
        assert f.name in reference_table()


# -- errors: one test each ---------------------------------------------------


def test_unknown_key_suggests_the_close_one(conf):
    write(conf, "pol_interval_s = 1\n")
    assert error(conf) == (
        f"unknown key 'pol_interval_s' in {conf} (did you mean 'poll_interval_s'?)"
    )


def test_unknown_key_without_a_close_one_lists_the_keys(conf):
    write(conf, "[server]\nurl = 'x'\n")
    msg = error(conf)
    assert "unknown key 'server'" in msg and "poll_interval_s" in msg


def test_unknown_key_in_a_drop_in_names_the_drop_in(conf):
    drop_in = write(conf.parent / "tagstat.toml.d" / "a.toml", "idle_timeout = 5\n")
    assert f"in {drop_in} (did you mean 'idle_timeout_s'?)" in error(conf)


def test_wrong_type_names_key_file_and_value(conf):
    write(conf, 'poll_interval_s = "fast"\n')
    assert error(conf) == f"poll_interval_s in {conf} must be a number, got 'fast'"


def test_bool_is_not_a_number(conf):
    write(conf, "retention_days = true\n")
    assert "retention_days" in error(conf) and "must be a number" in error(conf)


def test_float_is_not_an_integer(conf):
    write(conf, "usb_timeout_ms = 12.5\n")
    assert error(conf) == f"usb_timeout_ms in {conf} must be an integer, got 12.5"


def test_product_ids_must_be_a_list_of_integers(conf):
    write(conf, 'product_ids = ["lots"]\n')
    assert "product_ids in" in error(conf) and "list of integers" in error(conf)


def test_wrong_type_in_the_environment_names_the_variable(conf):
    msg = error(conf, {"TAGSTAT_POLL_INTERVAL_S": "fast"})
    assert msg == (
        "poll_interval_s in environment variable TAGSTAT_POLL_INTERVAL_S must be a number, "
        "got 'fast'"
    )


def test_nan_in_the_environment_is_rejected(conf):
    assert "must be a number" in error(conf, {"TAGSTAT_IDLE_TIMEOUT_S": "nan"})


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("poll_interval_s = 0.01", "poll_interval_s in {f} must be >= 0.05, got 0.01"),
        ("idle_timeout_s = 0", "idle_timeout_s in {f} must be > 0, got 0.0"),
        ("sensor_interval_s = -1", "sensor_interval_s in {f} must be > 0, got -1.0"),
        ("config_interval_s = 0", "config_interval_s in {f} must be > 0, got 0.0"),
        ("usb_timeout_ms = 5", "usb_timeout_ms in {f} must be >= 10, got 5"),
        ("usb_timeout_ms = 60001", "usb_timeout_ms in {f} must be <= 60000, got 60001"),
        ("product_ids = [0x10000]", "product_ids in {f} must be <= 0xffff, got 65536"),
        ("product_ids = [-1]", "product_ids in {f} must be >= 0x0000, got -1"),
        ("retention_days = 0", "retention_days in {f} must be > 0, got 0.0"),
        ("retention_max_bytes = 0", "retention_max_bytes in {f} must be > 0, got 0"),
        ("max_messages = 0", "max_messages in {f} must be >= 1, got 0"),
    ],
)
def test_out_of_range(conf, line, expected):
    write(conf, line + "\n")
    assert error(conf) == expected.format(f=conf)


def test_checkpoint_shorter_than_poll_interval(conf):
    write(conf, "poll_interval_s = 5\n")
    msg = error(conf, {"TAGSTAT_CHECKPOINT_S": "2"})
    assert msg == (
        "checkpoint_s (2, from environment variable TAGSTAT_CHECKPOINT_S) must be >= "
        f"poll_interval_s (5, from {conf})"
    )


def test_checkpoint_default_below_a_long_poll_interval_names_the_default(conf):
    write(conf, "poll_interval_s = 30\n")
    assert "checkpoint_s (10, from the default)" in error(conf)


def test_invalid_status(conf):
    write(conf, 'initial_status = "Uploading"\n')
    msg = error(conf)
    assert msg.startswith(f"initial_status in {conf}:") and "CollectingAndUploading" in msg


def test_invalid_toml_names_file_line_and_column(conf):
    write(conf, "poll_interval_s = 1\nidle_timeout_s = = 3\n")
    msg = error(conf)
    assert msg.startswith(f"invalid TOML in {conf}:") and "line 2" in msg and "column" in msg


def test_not_utf8(conf):
    conf.write_bytes(b"initial_status = '\xff'\n")
    assert "is not UTF-8" in error(conf)


def test_unreadable_main_file(conf):
    conf.mkdir()  # a directory cannot be read as a file, even by root
    assert error(conf).startswith(f"cannot read {conf}:")


def test_dangling_symlink_is_not_silently_the_defaults(conf):
    conf.symlink_to(conf.parent / "nowhere.toml")
    assert error(conf).startswith(f"cannot read {conf}:")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_unreadable_by_permissions(conf):
    write(conf, "poll_interval_s = 1\n").chmod(0)
    assert "check its permissions" in error(conf)


# -- property ----------------------------------------------------------------

toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3)
keys = st.sampled_from(sorted(FIELDS)) | st.text(min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    table=st.dictionaries(keys, toml_values, max_size=5),
    env=st.dictionaries(
        st.sampled_from(sorted(FIELDS)).map(lambda k: f"TAGSTAT_{k.upper()}"),
        st.text(alphabet="0123456789x.,-abe ", max_size=8),
        max_size=3,
    ),
)
def test_any_input_gives_a_config_or_a_config_error(tmp_path_factory, table, env):
    conf = tmp_path_factory.mktemp("conf") / "tagstat.toml"
    text = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in table.items())
    write(conf, text)
    try:
        result = load_config(conf, env)
    except ConfigError:
        return
    assert isinstance(result, Config)
    assert result.checkpoint_s >= result.poll_interval_s >= 0.05
