"""Fuzzing over real HTTP: no body, header or broken report ever makes the collector answer 500.

Every answer must be a 200 with one of the documented statuses or a 4xx with a
JSON ``error``; a 5xx would mean bad input reached a server fault path.
"""

import gzip
import json
import socket

from collector_fixtures import usage_report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ANSWERS = {"stored", "duplicate", "discarded", "deleted"}
FUZZ = settings(
    max_examples=300,
    deadline=5000,  # ms per example; a request takes a few
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Header values requests can send: printable Latin-1, no surrounding blanks.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60).map(
    str.strip
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
REMOVE = object()


def field_paths(value, prefix=()):
    """Every path into a JSON value, as tuples of keys and list indexes."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from field_paths(child, (*prefix, key))


REPORT_PATHS = list(field_paths(usage_report()))


def mutate(report: dict, path: tuple, value) -> dict:
    *parents, last = path
    target = report
    for key in parents:
        target = target[key]
    if value is REMOVE:
        del target[last]
    else:
        target[last] = value
    return report


def check(answer) -> None:
    assert answer.status_code < 500, answer.text
    body = answer.json()
    if answer.status_code == 200:
        assert body["status"] in ANSWERS
    else:
        assert 400 <= answer.status_code < 500 and body["error"]


@FUZZ
@given(
    data=st.binary(max_size=2000),
    gzipped=st.booleans(),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8"])
    | header_text,
    encoding=st.sampled_from(["gzip", "identity", "", "GZIP"]) | header_text,
    key=st.none() | st.uuids().map(str) | header_text,
)
def test_random_bytes_and_headers_never_give_500(collector, data, gzipped, content_type, **more):
    headers = {"Content-Type": content_type, "Content-Encoding": more["encoding"]}
    if more["key"] is not None:
        headers["Idempotency-Key"] = more["key"]
    body = gzip.compress(data) if gzipped else data
    check(collector.post(body, compress=False, headers=headers))


@FUZZ
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(REPORT_PATHS), json_values | st.just(REMOVE)),
        min_size=1,
        max_size=3,
    ),
    gzipped=st.booleans(),
)
def test_reports_with_broken_fields_never_give_500(collector, changes, gzipped):
    report = usage_report()
    for path, value in changes:
        try:
            mutate(report, path, value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced the parent
    check(collector.post(report, compress=gzipped, idempotency=False))


@settings(FUZZ, max_examples=150)
@given(value=json_values, gzipped=st.booleans())
def test_arbitrary_json_never_gives_500(collector, value, gzipped):
    check(collector.post(json.dumps(value).encode(), compress=gzipped))


@settings(FUZZ, max_examples=100)
@given(
    framing=st.sampled_from([b"Transfer-Encoding: chunked\r\n", b"Content-Length: 40\r\n", b""]),
    body=st.binary(max_size=200)
    | st.builds(
        lambda size, data, end: b"%x\r\n%s%s" % (size, data, end),  # chunks, often cut short
        st.integers(0, 2**80),
        st.binary(max_size=50),
        st.sampled_from([b"", b"\r\n", b"\r\n0\r\n\r\n"]),
    ),
)
def test_raw_bodies_with_any_framing_never_give_500(collector, framing, body):
    head = b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 4")), answer[:200]
