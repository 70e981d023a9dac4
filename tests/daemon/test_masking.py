"""Masking: serials and identifying text never survive, ordinary device text does."""

import json
import logging
import os
import stat
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagstat.errors import StoreError, TagstatError
from tagstat.masking import (
    SERIAL_PATTERN,
    Masker,
    MaskingLogFilter,
    load_or_create_secret,
)

SERIAL = "1740000JEH"
SECRET = bytes(range(32))


@pytest.fixture
def masker():
    m = Masker(SECRET, hostnames=["labpc", "labpc.physics.example.org"], usernames=["alice"])
    m.learn(SERIAL)
    return m


def leaks(obj, serial=SERIAL) -> bool:
    data = json.dumps(obj).encode()
    return serial.encode() in data or serial.lower().encode() in data


# -- learned serials ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        SERIAL,
        "The TimeTagger '1740000JEH' is not connected by USB 3.0, its performance will be low.",
        "1740000JEH_run3.ttbin",
        "data/1740000JEH_run3.ttbin",
        "/home/alice/data/1740000JEH/run3.ttbin",
        r"C:\Users\alice\1740000JEH_run3.ttbin",
        "serial=1740000jeh;",
        "x1740000JEHx",
    ],
)
def test_learned_serial_disappears_in_every_form(masker, text):
    assert not leaks(masker.scrub_text(text))


def test_learned_serial_is_replaced_by_its_masked_form(masker):
    out = masker.scrub_text("The TimeTagger '1740000JEH' is not connected")
    assert out == f"The TimeTagger '{masker.masked_serial(SERIAL)}' is not connected"
    assert masker.masked_serial(SERIAL) == f"[serial:{masker.device_id(SERIAL)[:8]}]"


def test_device_id_learns_the_serial():
    m = Masker(SECRET, hostnames=[], usernames=[])
    m.device_id("23010013TP")
    assert m.scrub_text("x23010013TPy") == f"x{m.masked_serial('23010013TP')}y"


def test_serial_in_nested_dict_keys_and_lists(masker):
    doc = {
        "serial": SERIAL,
        SERIAL: {"channels": [1, 2.5, None, True, ["1740000jeh", ("a", SERIAL)]]},
        "files": ("1740000JEH_run3.ttbin",),
    }
    out = masker.scrub(doc)
    assert not leaks(out)
    masked = masker.masked_serial(SERIAL)
    assert out[masked]["channels"][:4] == [1, 2.5, None, True]
    assert isinstance(out["files"], tuple)
    assert doc[SERIAL]["channels"][4][0] == "1740000jeh"  # the input is left alone


def test_keys_that_mask_to_the_same_text_keep_both_values():
    m = Masker(SECRET, hostnames=[], usernames=[])
    out = m.scrub({"1809000LGG": 1, "1910000OZQ": 2})
    assert sorted(out.values()) == [1, 2]
    assert set(out) == {"[serial]", "[serial] (2)"}


def test_unknown_serial_shaped_tokens_are_scrubbed():
    m = Masker(SECRET, hostnames=[], usernames=[])
    for serial in ("1809000LGG", "1910000OZQ", "1948000SAE", "2023000TMV", "23010013TP"):
        text = f"device {serial} failed; see {serial}_run.ttbin ({serial})"
        assert serial not in m.scrub_text(text)
    assert m.scrub_text("device 1809000LGG failed") == "device [serial] failed"


# -- other identifying text --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cannot open /home/alice/x.ttbin: denied", "cannot open [path]: denied"),
        ("wrote ~/data/x.ttbin.", "wrote [path]."),
        (r"wrote C:\Users\Alice Smith\Documents\x.ttbin now", "wrote [path] now"),
        (r"share \\fileserver\lab\x.ttbin", "share [path]"),
        ("mail bob.smith@uni.example.edu now", "mail [email] now"),
        ("from 192.168.1.20:8080", "from [ip]:8080"),
        ("at fe80::1%eth0 and ::1", "at [ip] and [ip]"),
        ("nic 00:1a:2b:3c:4d:5e", "nic [mac]"),
        ("on LabPC today", "on [host] today"),
        ("on labpc.physics.example.org.", "on [host]."),
        ("started by Alice", "started by [user]"),
    ],
)
def test_identifying_text_is_scrubbed(masker, text, expected):
    assert masker.scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "TT-Ultra, FW 3, TS 2018-11-13 22:57:32, OK 1.30",
        "not connected by USB 3.0, its performance will be low",
        "12.0V in",
        "-5.0V D",
        "2.5V A",
        "duty cycle 45.5%",
        "ratio 1/2 and 3/4",
        "131072 events or 20 ms, 8 M tags/s, 64 MB/s",
        "power supply: fan controller, tachometer 1200 RPM",
        "USB PHY link errors: 0",
        "trigger level -0.5 V, deadtime 2000 ps",
    ],
)
def test_ordinary_device_text_survives(masker, text):
    assert masker.scrub_text(text) == text


def test_short_names_are_ignored():
    m = Masker(SECRET, hostnames=["vm", ""], usernames=["al"])
    assert m.scrub_text("vm al") == "vm al"


def test_numbers_and_none_pass_through(masker):
    assert masker.scrub([0, -1, 3.5, True, None]) == [0, -1, 3.5, True, None]


def test_discovery_finds_the_current_user_and_host(monkeypatch):
    monkeypatch.setenv("USER", "zelda-lab")
    monkeypatch.setattr("socket.gethostname", lambda: "optics-bench.lab.example.org")
    monkeypatch.setattr("socket.getfqdn", lambda: pytest.fail("getfqdn asks DNS at start-up"))
    m = Masker(SECRET)
    assert m.scrub_text("zelda-lab on optics-bench.lab.example.org") == "[user] on [host]"
    assert m.scrub_text("optics-bench says hi") == "[host] says hi"


@pytest.mark.parametrize(
    "text",
    ["." * 100_000, "1" * 100_000, "a." * 50_000 + "@", ":" * 100_000, "C:\\" + "a b\\" * 30_000],
)
def test_scrubbing_long_text_takes_linear_time(masker, text):
    # A device document may be up to 1 MB; quadratic patterns took minutes on these.
    t0 = time.monotonic()
    masker.scrub_text(text)
    assert time.monotonic() - t0 < 2.0


def test_repr_does_not_show_the_secret(masker):
    assert SECRET.hex() not in repr(masker) and repr(SECRET) not in repr(masker)


# -- device ids --------------------------------------------------------------


def test_device_ids_are_stable_per_secret_and_hide_the_serial():
    a1 = Masker(SECRET, hostnames=[], usernames=[]).device_id(SERIAL)
    a2 = Masker(SECRET, hostnames=[], usernames=[]).device_id(SERIAL)
    b = Masker(bytes(32), hostnames=[], usernames=[]).device_id(SERIAL)
    assert a1 == a2 != b
    assert len(a1) == 16 and all(c in string.hexdigits for c in a1)
    assert SERIAL.lower() not in a1
    assert Masker(SECRET, hostnames=[], usernames=[]).device_id("1809000LGG") != a1


# -- properties --------------------------------------------------------------

serials = st.from_regex(r"\A[0-9]{4}[0-9A-Z]{6}\Z")
free_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | free_text


def embed(serial):
    """Text, lists and dicts that contain ``serial`` somewhere, in keys too."""
    in_text = st.tuples(free_text, free_text).map(lambda t: f"{t[0]}{serial}{t[1]}")
    return st.recursive(
        in_text,
        lambda inner: (
            st.lists(inner | json_scalars, min_size=1, max_size=4)
            | st.dictionaries(in_text | free_text, inner | json_scalars, min_size=1, max_size=4)
        ),
        max_leaves=8,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), serial=serials)
def test_learned_serial_never_survives(data, serial):
    m = Masker(SECRET, hostnames=[], usernames=[])
    m.learn(serial)
    obj = data.draw(embed(serial))
    assert serial not in json.dumps(m.scrub(obj), ensure_ascii=False)


@settings(max_examples=150, deadline=None)
@given(before=free_text, after=free_text, serial=serials, sep=st.sampled_from(" '\"_/.,:;()=\n"))
def test_unknown_serial_between_separators_never_survives(before, after, serial, sep):
    m = Masker(SECRET, hostnames=[], usernames=[])
    out = m.scrub({"k": [f"{before}{sep}{serial}{sep}{after}"]})
    assert serial not in json.dumps(out, ensure_ascii=False)


ident_text = st.lists(
    st.sampled_from(
        [
            "/home/alice/x",
            "alice",
            "labpc",
            "a@b.org",
            "10.0.0.1",
            "::1",
            "[user]",
            "[path]",
            "[serial]",
            SERIAL,
            "1809000LGG",
            "C:\\x y\\z",
            " ",
            "_",
            "/",
            ":",
            ".",
            "1.30",
            "22:57:32",
        ]
    )
    | free_text,
    max_size=8,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=ident_text)
def test_scrub_is_idempotent(text):
    m = Masker(SECRET, hostnames=["labpc", "path"], usernames=["alice", "user"])
    m.learn(SERIAL)
    once = m.scrub_text(text)
    assert m.scrub_text(once) == once


def test_serial_pattern_matches_the_reference_serials():
    for serial in ("1740000JEH", "1809000LGG", "23010013TP"):
        assert SERIAL_PATTERN.fullmatch(serial)
    assert not SERIAL_PATTERN.search("2018-11-13 22:57:32 1.30")


# -- the secret file ---------------------------------------------------------


def test_secret_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "state" / "secret.key"
    first = load_or_create_secret(path)
    assert len(first) == 32 and path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left


def test_two_installs_get_different_secrets(tmp_path):
    assert load_or_create_secret(tmp_path / "a") != load_or_create_secret(tmp_path / "b")


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_secret_of_wrong_size_is_a_clear_error(tmp_path, size, caplog):
    path = tmp_path / "secret.key"
    path.write_bytes(b"\x01" * size)
    path.chmod(0o600)
    with pytest.raises(StoreError) as err:
        load_or_create_secret(path)
    assert isinstance(err.value, TagstatError)
    assert str(path) in str(err.value) and "move it aside" in str(err.value)
    assert path.read_bytes() == b"\x01" * size  # never overwritten


def test_wide_secret_mode_is_fixed_with_a_warning(tmp_path, caplog):
    path = tmp_path / "secret.key"
    secret = os.urandom(32)
    path.write_bytes(secret)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tagstat.masking"):
        assert load_or_create_secret(path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "0600" in caplog.text
    assert secret.hex() not in caplog.text


def test_secret_create_race_keeps_the_first(tmp_path, monkeypatch):
    # Another start links its secret in between our write and our link.
    import tagstat.masking as masking

    path = tmp_path / "secret.key"
    real_link = os.link

    def racing_link(src, dst):
        with open(dst, "wb") as f:
            f.write(b"\x07" * 32)
        os.chmod(dst, 0o600)
        real_link(src, dst)

    monkeypatch.setattr(masking.os, "link", racing_link)
    assert load_or_create_secret(path) == b"\x07" * 32
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_secret_path_that_is_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "secret.key").mkdir()
    with pytest.raises(StoreError, match="cannot read the secret file"):
        load_or_create_secret(tmp_path / "secret.key")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_unreadable_secret_is_a_clear_error(tmp_path):
    path = tmp_path / "secret.key"
    path.write_bytes(bytes(32))
    path.chmod(0)
    with pytest.raises(StoreError, match="cannot read the secret file"):
        load_or_create_secret(path)


# -- the log filter ----------------------------------------------------------


def test_log_filter_scrubs_the_bytes_written(tmp_path, masker):
    logfile = tmp_path / "tagstatd.log"
    handler = logging.FileHandler(logfile, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(MaskingLogFilter(masker))
    logger = logging.getLogger("tagstat.test_masking_filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("device %s says %r", SERIAL, {"serial": SERIAL.lower()})
        try:
            raise RuntimeError(f"The TimeTagger '{SERIAL}' is gone")
        except RuntimeError:
            logger.exception("poll failed for %s", "/home/alice/run.ttbin")
        logger.warning("plain %d%%", 5)
    finally:
        logger.removeHandler(handler)
        handler.close()
    data = logfile.read_bytes()
    assert SERIAL.encode() not in data and SERIAL.lower().encode() not in data
    # The daemon's own log keeps paths for the admin; the report scrubs them.
    assert b"/home/alice/run.ttbin" in data
    assert masker.masked_serial(SERIAL).encode() in data
    assert b"RuntimeError" in data  # the traceback is kept, scrubbed
    assert b"plain 5%" in data
