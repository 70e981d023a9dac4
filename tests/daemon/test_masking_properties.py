"""Masking properties: every kind of identifier, anywhere in any text, leaves nothing behind.

One test per kind. Each generates values of its kind, puts them into generated
sentences and into nested documents (as dict keys and values), and checks that
neither the value nor any identifying part of it survives, case-insensitively,
and that scrubbing again changes nothing. Generated parts are distinctive (five
or more characters with a digit), so they cannot be confused with the ordinary
words around them.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagstat.masking import Masker

SECRET = bytes(range(32))

# Ordinary device text around the value; every word survives scrubbing on its own.
WORDS = [
    "the", "device", "saved", "to", "on", "error", "channel", "3", "rate", "tags", "lost",
    "USB 3.0", "OK", "1.30", "12.0V", "45.5%", "MB/s", "tags/s", "1/2", "e.g.", "done.",
    "overflow", "TT-Ultra", "FW", "22:57:32", "2018-11-13", "-0.5", "ps", "1200", "RPM",
]  # fmt: skip
BEFORE = [" ", ", ", " (", ": ", " '", ' "', "\n", "\t", "; ", " <", "=", ". "]
AFTER = [" ", ", ", ") ", ": ", "' ", '" ', "\n", "\t", "; ", "> ", ". "]
# Common directory and file words a path may hold; everything else in it must go.
COMMON = {"home", "data", "tmp", "usr", "var", "mnt", "users", "documents", "desktop", "share"}
EXTENSIONS = ["ttbin", "csv", "txt", "TXT", "h5", "hdf5", "npy", "json", "log", "py", "ipynb"]
TLDS = ["org", "edu", "com", "de", "ch", "net", "local", "ORG", "EDU"]

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_case(text_strategy):
    """The same text with each letter in a random case."""
    return st.tuples(text_strategy, st.randoms(use_true_random=False)).map(
        lambda t: "".join(c.upper() if t[1].random() < 0.5 else c.lower() for c in t[0])
    )


# A distinctive name: 5 to 10 letters and digits, at least one digit.
names = st.from_regex(r"\A[a-z]{2,4}[0-9][a-z0-9]{2,5}\Z")
words = st.lists(st.sampled_from(WORDS), max_size=4).map(" ".join)


def sentence(value: str):
    """Ordinary words, a separator, ``value``, a separator, ordinary words."""
    return st.tuples(words, st.sampled_from(BEFORE), st.sampled_from(AFTER), words).map(
        lambda t: f"{t[0]}{t[1]}{value}{t[2]}{t[3]}"
    )


def document(value: str):
    """A nested document holding ``value`` in sentences, as keys and as values."""
    text = sentence(value) | st.just(value)
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | words
    return st.recursive(
        text,
        lambda inner: (
            st.lists(inner | scalars, min_size=1, max_size=3)
            | st.dictionaries(text | words, inner | scalars, min_size=1, max_size=3)
        ),
        max_leaves=6,
    )


def assert_masked(masker: Masker, data, value: str, parts=()):
    """Neither ``value`` nor any of ``parts`` survives, in a sentence or a document."""
    text = data.draw(sentence(value), label="text")
    out = masker.scrub_text(text)
    assert masker.scrub_text(out) == out  # idempotent
    doc = masker.scrub(data.draw(document(value), label="document"))
    assert masker.scrub(doc) == doc
    for where in (out, json.dumps(doc, ensure_ascii=False)):
        for secret in {value, *parts}:
            assert secret.lower() not in where.lower(), (secret, text, out)


def plain_masker() -> Masker:
    return Masker(SECRET, hostnames=[], usernames=[])


# -- serials -----------------------------------------------------------------

serial_shaped = st.from_regex(r"\A[0-9]{4}[0-9A-Za-z]{6}\Z")
glue = st.from_regex(r"\A[A-Za-z]{0,4}\Z")


@FAST
@given(data=st.data(), serial=serial_shaped, before=glue, after=glue)
def test_serial_shaped_tokens_never_survive(data, serial, before, after):
    assert_masked(plain_masker(), data, f"{before}{serial}{after}", [serial])


device_serials = st.from_regex(r"\A[0-9]{4}[0-9A-Z]{6}\Z")


@FAST
@given(data=st.data(), serial=device_serials, before=glue, after=glue)
def test_learned_serials_never_survive_in_any_case(data, serial, before, after):
    m = plain_masker()
    m.learn(serial)
    spelled = data.draw(random_case(st.just(serial)))
    assert_masked(m, data, f"{before}{spelled}{after}", [serial])


# Known serials need not be serial-shaped: these are found by their digest alone.
odd_serials = st.from_regex(r"\A[A-Z]{1,4}[0-9][A-Z0-9]{6,9}\Z") | device_serials


@FAST
@given(data=st.data(), serial=odd_serials, before=glue, after=glue)
def test_known_serials_never_survive_a_restart(data, serial, before, after):
    entry = plain_masker().serial_entry(serial)
    later = Masker(SECRET, hostnames=[], usernames=[], known_serials=[entry])
    spelled = data.draw(random_case(st.just(serial)))
    assert_masked(later, data, f"{before}{spelled}{after}", [serial])


# -- host names, e-mail, addresses -------------------------------------------

labels = random_case(names) | names.map(lambda n: f"{n[:3]}-{n[3:]}")


@st.composite
def hosts(draw):
    """``(host name, labels that must go)``: one to three labels and a TLD."""
    parts = draw(st.lists(labels, min_size=1, max_size=3))
    return ".".join([*parts, draw(st.sampled_from(TLDS))]), parts


@FAST
@given(data=st.data(), host=hosts())
def test_host_names_never_survive(data, host):
    name, parts = host
    assert_masked(plain_masker(), data, name, parts)


local_parts = st.lists(names, min_size=1, max_size=2).flatmap(
    lambda ns: st.sampled_from([".", "_", "+", "-"]).map(lambda sep: sep.join(ns))
)


@FAST
@given(data=st.data(), local=local_parts, host=hosts())
def test_email_addresses_never_survive(data, local, host):
    domain, parts = host
    assert_masked(plain_masker(), data, f"{local}@{domain}", [local, *parts])


@FAST
@given(data=st.data(), address=st.ip_addresses(v=4), port=st.none() | st.integers(1, 65535))
def test_ipv4_addresses_never_survive(data, address, port):
    value = str(address) if port is None else f"{address}:{port}"
    assert_masked(plain_masker(), data, value, [str(address)])


@FAST
@given(data=st.data(), address=st.ip_addresses(v=6), exploded=st.booleans(), upper=st.booleans())
def test_ipv6_addresses_never_survive(data, address, exploded, upper):
    value = address.exploded if exploded else address.compressed
    value = value.upper() if upper else value
    assert_masked(plain_masker(), data, value, [address.compressed, address.exploded])


@FAST
@given(
    data=st.data(),
    octets=st.lists(st.integers(0, 255), min_size=6, max_size=6),
    sep=st.sampled_from([":", "-"]),
    upper=st.booleans(),
)
def test_mac_addresses_never_survive(data, octets, sep, upper):
    value = sep.join(f"{o:02X}" if upper else f"{o:02x}" for o in octets)
    assert_masked(plain_masker(), data, value)


# -- file names, paths, URLs -------------------------------------------------

one_case_exts = st.from_regex(r"\A[a-z][a-z0-9]{0,5}\Z") | st.from_regex(r"\A[A-Z][A-Z0-9]{0,5}\Z")
file_names = st.tuples(
    names | st.builds(lambda s, n: f"{s}_{n}", device_serials, names),
    st.sampled_from(EXTENSIONS) | one_case_exts,
).map(".".join)
directories = names | st.sampled_from(sorted(COMMON))


def identifying(path: str, *separators: str) -> list[str]:
    """Every directory or file name of 3+ characters in ``path`` that is not common."""
    for sep in separators:
        path = path.replace(sep, "/")
    # A part, its words, and its name without the extension (which may be a word).
    pieces = [p for part in path.split("/") for p in (part, *part.split(" "), part.split(".")[0])]
    return [p for p in pieces if len(p) >= 3 and p.lower() not in COMMON]


@FAST
@given(data=st.data(), name=file_names)
def test_file_names_never_survive(data, name):
    assert_masked(plain_masker(), data, name, identifying(name))


def posix_paths():
    absolute = st.lists(directories, min_size=1, max_size=4).map(lambda ds: "/" + "/".join(ds))
    home = st.tuples(
        st.sampled_from(["~", "~alice7x"]), st.lists(directories, min_size=1, max_size=3)
    ).map(lambda t: "/".join([t[0], *t[1]]))
    return st.tuples(absolute | home, st.none() | file_names).map(
        lambda t: t[0] if t[1] is None else f"{t[0]}/{t[1]}"
    )


@FAST
@given(data=st.data(), path=posix_paths())
def test_posix_and_home_paths_never_survive(data, path):
    assert_masked(plain_masker(), data, path, identifying(path, "~"))


@st.composite
def relative_paths(draw):
    kind = draw(st.sampled_from(["dot", "dotdot", "deep", "file", "windows"]))
    dirs = draw(st.lists(directories, min_size=1, max_size=3))
    if kind == "dot":
        return "./" + "/".join(dirs)
    if kind == "dotdot":
        return "../" + "/".join(dirs)
    if kind == "deep":  # any three segments or more
        return "/".join([*dirs, *draw(st.lists(directories, min_size=3 - len(dirs), max_size=2))])
    sep = "/" if kind == "file" else "\\"
    return sep.join([*dirs, draw(file_names)])


@FAST
@given(data=st.data(), path=relative_paths())
def test_relative_paths_never_survive(data, path):
    assert_masked(plain_masker(), data, path, identifying(path, "\\"))


# Windows folder names may hold single spaces ("Alice Smith"); the last part may not.
windows_dirs = directories | st.tuples(names, names).map(" ".join)


@st.composite
def windows_paths(draw):
    sep = draw(st.sampled_from(["\\", "/"]))
    if draw(st.booleans()):
        head = draw(st.sampled_from("CDZcd")) + ":"
    else:
        head = "\\\\" + draw(names) + "\\" + draw(names)  # UNC: server and share
        sep = "\\"
    dirs = draw(st.lists(windows_dirs, max_size=3))
    last = draw(file_names | names)
    return sep.join([head, *dirs, last])


@FAST
@given(data=st.data(), path=windows_paths())
def test_windows_and_unc_paths_never_survive(data, path):
    assert_masked(plain_masker(), data, path, identifying(path, "\\", ":"))


@st.composite
def urls(draw):
    host, parts = draw(hosts())
    if draw(st.booleans()):
        start = draw(st.sampled_from(["http", "https", "ftp", "ssh", "HTTPS"])) + "://" + host
    else:
        start = "www." + host
    port = draw(st.none() | st.integers(1, 65535))
    segments = draw(st.lists(directories | file_names, max_size=3))
    query = draw(st.none() | names)
    url = start + ("" if port is None else f":{port}")
    url += "".join("/" + s for s in segments)
    url += "" if query is None else f"?q={query}#top"
    return url, [*parts, *identifying("/".join(segments)), *([query] if query else [])]


@FAST
@given(data=st.data(), url=urls())
def test_urls_never_survive(data, url):
    value, parts = url
    assert_masked(plain_masker(), data, value, parts)
