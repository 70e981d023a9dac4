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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ref-2066wiiu2v", "ref-[serial]"),  # regression: lower case survived
        ("x2066WIIU2Vy", "x[serial]y"),  # regression: glued between letters survived
        ("id=2066wIiU2v;", "id=[serial];"),
        ("ts 2018111322", "ts [serial]"),  # ten digits: a number that long may identify
    ],
)
def test_serial_shaped_tokens_in_any_case_and_glued_are_scrubbed(text, expected):
    m = Masker(SECRET, hostnames=[], usernames=[])
    assert m.scrub_text(text) == expected


def test_learn_says_whether_the_serial_was_new():
    m = Masker(SECRET, hostnames=[], usernames=[])
    assert m.learn("2066WIIU2V") is True
    assert m.learn(" 2066wiiu2v ") is False  # the same serial, another spelling
    assert m.learn("12345") is False  # too short to learn


# -- serials known from an earlier start -------------------------------------


def restarted(*serials: str) -> Masker:
    """A Masker of a later start that knows ``serials`` only by their digests."""
    first = Masker(SECRET, hostnames=[], usernames=[])
    entries = [first.serial_entry(s) for s in serials]
    return Masker(SECRET, hostnames=[], usernames=[], known_serials=entries)


def test_serial_entry_is_length_and_device_id():
    m = Masker(SECRET, hostnames=[], usernames=[])
    assert m.serial_entry(" 2066wiiu2v ") == (10, m.device_id("2066WIIU2V"))
    assert SERIAL not in repr(m.serial_entry(SERIAL))


@pytest.mark.parametrize(
    "text",
    ["device QWERTY1234 failed", "ref-qwerty1234", "xQwErTy1234y", "QWERTY1234QWERTY1234"],
)
def test_known_serial_is_masked_after_a_restart_in_any_case_and_glued(text):
    # Not serial-shaped, so only the digest can find it.
    m = restarted("QWERTY1234")
    out = m.scrub_text(text)
    assert "qwerty1234" not in out.lower()
    assert m.masked_serial("QWERTY1234") in out


def test_known_serial_gets_its_masked_form_not_the_generic_one():
    m = restarted(SERIAL)
    assert m.scrub_text(f"TimeTagger {SERIAL} gone") == f"TimeTagger {m.masked_serial(SERIAL)} gone"
    assert m.scrub_serials(f"log {SERIAL.lower()}") == f"log {m.masked_serial(SERIAL)}"


def test_the_longest_known_serial_wins_at_one_place():
    m = restarted("ABCDEF1234", "ABCDEF1234XY")
    assert m.scrub_text("ABCDEF1234XY") == m.masked_serial("ABCDEF1234XY")
    assert m.scrub_text("ABCDEF1234 ") == m.masked_serial("ABCDEF1234") + " "


def test_known_serials_need_a_device_id_and_a_useful_length():
    with pytest.raises(ValueError, match="16 hex digits") as err:
        Masker(SECRET, hostnames=[], usernames=[], known_serials=[(10, SERIAL)])
    assert SERIAL not in str(err.value)  # a serial passed by mistake is not shown
    m = Masker(SECRET, hostnames=[], usernames=[], known_serials=[(3, "0" * 16)])
    assert m.scrub_text("abc") == "abc"  # too short to search for, like learn()


def test_known_serials_of_another_install_mean_nothing():
    first = Masker(bytes(32), hostnames=[], usernames=[])
    m = Masker(SECRET, hostnames=[], usernames=[], known_serials=[first.serial_entry("QWERTY1234")])
    assert m.scrub_text("QWERTY1234") == "QWERTY1234"


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
        # URLs
        ("see https://lab.example.org/x?y=1, then", "see [url], then"),
        ("(http://[fe80::1]:8080/status)", "([url])"),
        ("docs at www.example.com/a.", "docs at [url]."),
        # paths of every kind
        ("in ~bob/data now", "in [path] now"),
        ("file=data/run7.ttbin;", "file=[path];"),
        (r"wrote dumps\x.ttbin", "wrote [path]"),
        ("run ./x and ../x/y", "run [path] and [path]"),
        ("under raw/2024/may.", "under [path]."),
        ("at C:/Users/lab/x.ttbin", "at [path]"),
        # file names
        ("Saved data.csv, notes.TXT and scan 3.h5", "Saved [file], [file] and scan [file]"),
        ("loaded 2047000KBT_run7.ttbin.", "loaded [file]."),
        # host names of any machine
        ("from NODE7.LAB.EXAMPLE.ORG and lab.example.org", "from [host] and [host]"),
        # addresses
        ("at ::ffff:10.0.0.1 now", "at [ip] now"),
        ("connect to fe80::1: refused", "connect to [ip]: refused"),
        ("at fe80::1%eth0. Next", "at [ip]. Next"),
        ("2001:db8:0:0:0:0:0:1:8080 up", "[ip]:8080 up"),
        ("hwaddr:00-1a-2b-3c-4d-5e: up", "hwaddr:[mac]: up"),
        ("mail <bob+tt@uni.example.edu>.", "mail <[email]>."),
    ],
)
def test_identifying_text_is_scrubbed(masker, text, expected):
    assert masker.scrub_text(text) == expected


# -- regressions from outside testing ----------------------------------------


def test_regression_foreign_host_and_file_name_are_masked(masker):
    # Only this machine's own host name was masked.
    out = masker.scrub_text("Saved to run_42.ttbin on labpc-17.physik.example.edu")
    assert out == "Saved to [file] on [host]"


def test_regression_learned_serial_no_longer_cuts_a_path():
    # The learned serial was masked first, and its placeholder ended the path.
    m = Masker(SECRET, hostnames=[], usernames=[])
    m.learn("2047000KBT")
    assert m.scrub_text("C:/Users/lab/Documents/dumps/2047000KBT_run7.ttbin") == "[path]"
    assert m.scrub_text("saved 2047000KBT_run7.ttbin") == "saved [file]"


def test_placeholders_are_never_scrubbed_again(masker):
    text = "[url] [file] [id:0123abcd] [serial:0123abcd] [path] [host] [ip]:80"
    assert masker.scrub_text(text) == text


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
        "rate 1.5e9 B/s",
        "e.g. channel 3",
        "software 2.22.6",
        "calibration date 2017-05-17T10:24:00Z",
        "the data rate exceeds the USB transfer rate, tags were lost (overflow).",
        "i.e. done.Next, see TCP/IP and input/output, version v2.22.6 or 3.x",
        "calibrated on 2024/05/17, U.S.A. time",
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


LONG_TEXTS = [
    "." * 100_000,
    "1" * 100_000,
    "a." * 50_000 + "@",
    ":" * 100_000,
    "C:\\" + "a b\\" * 30_000,
    "a" * 100_000 + " /x",  # a long run, then a change: a second pass over the run
    "ab:" * 33_000,  # a chain of MAC groups: each pass must not peel six off its end
    "00-" * 33_000,
    "a/" * 50_000,
    "a-" * 50_000 + "@",
    "http:/" * 20_000,
]


@pytest.mark.parametrize("known", [False, True], ids=["learned", "known"])
@pytest.mark.parametrize("text", LONG_TEXTS, ids=range(len(LONG_TEXTS)))
def test_scrubbing_long_text_takes_linear_time(masker, text, known):
    # A device document may be up to 1 MB; quadratic patterns took minutes on
    # these. Known serials are searched window by window in every long run.
    if known:
        masker = restarted(SERIAL, "QWERTY1234")
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
    for serial in ("1740000JEH", "1809000LGG", "23010013TP", "2066WIIU2V", "2066wiiu2v"):
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


def test_uuids_are_not_cut_by_the_serial_shape_but_learned_serials_in_them_are(masker):
    report_id = "41c76dcd-4947-4c4c-9c7e-ac2f1234b9f6"  # holds "1234b9f6..": not a serial
    assert masker.scrub_serials(f"queued report {report_id}") == f"queued report {report_id}"
    assert masker.scrub_text(f"id {report_id} ok") == f"id {report_id} ok"
    assert masker.scrub_text("x-41c76dcd-4947-4c4c-9c7e-1234567890ab") != (
        "x-41c76dcd-4947-4c4c-9c7e-1234567890ab"
    )  # glued to other text it is no UUID of ours
    assert "1740000JEH" not in masker.scrub_text("1740000jeh-4947-4c4c-9c7e-ac2f1234b9f6")
