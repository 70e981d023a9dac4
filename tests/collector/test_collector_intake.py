"""POST /v1/reports over real HTTP: stored once, gzip or identity, every refusal with its reason."""

import gzip
import http.client
import json
import socket
import sqlite3
import threading
import tracemalloc
import zlib

import pytest
import requests
from collector_fixtures import deletion_request, usage_report


def count_rows(db_path, table="reports") -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_new_report_is_stored_and_its_body_kept_exactly(collector):
    report = usage_report()
    body = json.dumps(report, indent=1).encode()
    r = collector.post(body, headers={"Idempotency-Key": report["report_id"]})
    assert r.status_code == 200
    assert r.json() == {"status": "stored", "report_id": report["report_id"]}
    assert collector.get(f"/v1/reports/{report['report_id']}").content == body
    (listed,) = collector.reports()
    assert listed["report_id"] == report["report_id"] and listed["kind"] == "usage"
    assert listed["size_bytes"] == len(body) and listed["wire_bytes"] < len(body)
    assert listed["user_id"] == report["user_id"] and listed["received_at"].endswith("Z")


def test_the_same_report_twice_is_stored_once(collector):
    report = usage_report()
    assert collector.post(report).json()["status"] == "stored"
    second = collector.post(report)
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "report_id": report["report_id"]}
    assert count_rows(collector.db_path) == 1


def test_concurrent_identical_uploads_store_one_row(collector):
    report = usage_report()
    barrier = threading.Barrier(8)
    answers = []

    def upload():
        barrier.wait()
        answers.append(collector.post(report))

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(a.json()["status"] for a in answers)
    assert [a.status_code for a in answers] == [200] * 8
    assert statuses == ["duplicate"] * 7 + ["stored"]
    assert count_rows(collector.db_path) == 1
    assert count_rows(collector.db_path, "sessions") == 1


def test_identity_encoding_is_accepted(collector):
    report = usage_report()
    r = collector.post(report, compress=False)
    assert r.status_code == 200 and r.json()["status"] == "stored"
    r = collector.post(report, compress=False, headers={"Content-Encoding": "identity"})
    assert r.json()["status"] == "duplicate"


def test_a_chunked_body_without_content_length_is_read(collector):
    report = usage_report()
    data = gzip.compress(json.dumps(report).encode())
    chunks = (data[i : i + 100] for i in range(0, len(data), 100))  # a generator: sent chunked
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    r = requests.post(f"{collector.url}/v1/reports", data=chunks, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "stored"


def test_a_body_of_several_gzip_members_is_read_whole(collector):
    text = json.dumps(usage_report()).encode()
    data = gzip.compress(text[:100]) + gzip.compress(text[100:])
    r = collector.post(data, headers={"Content-Encoding": "gzip"}, compress=False)
    assert r.status_code == 200 and r.json()["status"] == "stored"


def test_idempotency_key_must_equal_the_report_id(collector):
    report = usage_report()
    r = collector.post(report, headers={"Idempotency-Key": str(deletion_request()["report_id"])})
    assert r.status_code == 400
    assert r.json() == {"error": "Idempotency-Key header does not equal the body's report_id"}
    assert count_rows(collector.db_path) == 0


def test_idempotency_key_is_compared_as_a_uuid(collector):
    report = usage_report()
    r = collector.post(report, headers={"Idempotency-Key": report["report_id"].upper()})
    assert r.json()["status"] == "stored"


def test_without_idempotency_key_the_body_decides(collector):
    assert collector.post(usage_report(), idempotency=False).json()["status"] == "stored"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Content-Type": "text/plain"}, "Content-Type must be application/json"),
        ({"Content-Type": ""}, "Content-Type must be application/json"),
        ({"Content-Encoding": "br"}, "Content-Encoding must be gzip or identity"),
        ({"Content-Encoding": "gzip, gzip"}, "Content-Encoding must be gzip or identity"),
    ],
    ids=["text-plain", "no-content-type", "brotli", "two-encodings"],
)
def test_unsupported_media_is_415(collector, headers, reason):
    r = collector.post(usage_report(), headers=headers)
    assert r.status_code == 415 and r.json() == {"error": reason}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "body is not valid JSON (Expecting property name"),
        (b"", "body is not valid JSON (Expecting value: line 1 column 1 (char 0))"),
        (b'{"schema_version": NaN}', "body is not valid JSON (NaN is not a JSON number)"),
        (b"\xff\xfe{}", "body is not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON (nested too deeply)"),
        (b"[1, 2]", "body must be a JSON object, got array"),
    ],
    ids=["garbage", "empty", "nan", "not-utf8", "deep-nesting", "array"],
)
def test_a_body_that_is_not_a_json_object_is_400(collector, data, reason):
    r = collector.post(data)
    assert r.status_code == 400 and r.json()["error"].startswith(reason)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"schema_version": 1}', "body is not valid gzip (Error -3"),
        (gzip.compress(b"{}")[:-6], "body is not valid gzip (truncated or empty)"),
        (b"", "body is not valid gzip (truncated or empty)"),
        (gzip.compress(b"{}") + b"trailing", "body is not valid gzip (Error -3"),
    ],
    ids=["plain-json", "truncated", "empty", "trailing-garbage"],
)
def test_a_body_declared_gzip_that_is_not_is_400(collector, data, reason):
    r = collector.post(data, compress=False, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and r.json()["error"].startswith(reason)


def test_a_body_over_the_wire_limit_is_413(collector_factory):
    collector = collector_factory(wire_bytes=4096)
    r = collector.post(b"x" * 4097, compress=False)
    assert r.status_code == 413
    assert r.json() == {"error": "body is larger than 4096 bytes on the wire"}


def test_a_chunked_body_over_the_wire_limit_is_413(collector_factory):
    collector = collector_factory(wire_bytes=4096)
    chunks = (b"x" * 1000 for _ in range(10))
    headers = {"Content-Type": "application/json"}
    r = requests.post(f"{collector.url}/v1/reports", data=chunks, headers=headers, timeout=30)
    assert r.status_code == 413
    assert r.json() == {"error": "body is larger than 4096 bytes on the wire"}


def test_the_default_wire_limit_is_one_mib(collector):
    r = collector.post(b" " * (1 << 20) + b"{}", compress=False)
    assert r.status_code == 413
    assert r.json() == {"error": "body is larger than 1048576 bytes on the wire"}


def test_an_identity_body_over_the_decoded_limit_is_413(collector_factory):
    collector = collector_factory(decoded_bytes=1000)
    r = collector.post(b" " * 1001, compress=False)
    assert r.status_code == 413 and r.json() == {"error": "body is larger than 1000 bytes"}


def test_a_gzip_bomb_is_413_with_bounded_memory(collector):
    # 100 MB of zeros compress to about 100 kB: well under the wire limit.
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(inflater.compress(zeros) for _ in range(100)) + inflater.flush()
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        r = collector.post(bomb, compress=False, headers={"Content-Encoding": "gzip"})
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413
    assert r.json() == {"error": f"body inflates to more than {16 << 20} bytes"}
    # The 16 MiB of output it may hold and one step more, never the 100 MB.
    assert peak_bytes < 24 << 20, peak_bytes


def raw_request(collector, head: bytes, body: bytes) -> bytes:
    """Send bytes as they are (no client library to tidy them) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: sock.recv(65536), b""))


def test_a_malformed_chunked_body_is_400(collector):
    head = (b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n")  # fmt: skip
    answer = raw_request(collector, head, b"zz\r\n{}\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b'{"error":"body could not be read (bad chunked encoding)"}')


@pytest.mark.parametrize(
    "body",
    [b"a\r\n{}", b"fffffffffffffffffff\r\n", b"2\r\n{}\r\n"],
    ids=["short", "huge", "no-end"],
)
def test_a_chunked_body_that_ends_early_is_400(collector, body):
    # werkzeug's de-chunker reports a short chunk as full; read() trusting that crashed the process.
    head = (b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n")  # fmt: skip
    answer = raw_request(collector, head, body)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'{"error":"body could not be read (' in answer
    assert collector.get("/healthz").status_code == 200


def test_a_lying_content_length_is_a_clear_400(collector):
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=10)
    conn.putrequest("POST", "/v1/reports")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "banana")
    conn.endheaders()
    conn.send(b"{}")
    r = conn.getresponse()
    assert r.status == 400 and json.loads(r.read())["error"].startswith("body is not valid JSON")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", "/v1/reports", 405),
        ("PUT", "/v1/stats", 405),
        ("POST", "/v1/stats", 405),
        ("GET", "/v1/nothing", 404),
        ("GET", "/v1/reports/not-a-uuid", 404),
        ("GET", "/v1/reports/0b9e4a52-8a1d-4d7e-9a52-3f0c2a9e1b11", 404),
    ],
)
def test_unknown_routes_and_methods_are_json_errors(collector, method, path, status):
    r = requests.request(method, collector.url + path, timeout=10)
    assert r.status_code == status
    assert r.headers["Content-Type"] == "application/json" and r.json()["error"]
    if status == 405:
        assert "GET" in r.headers["Allow"]


@pytest.mark.parametrize("limit", ["-1", "x", "%C2%B2", "9999999999"])  # %C2%B2: "²" is a digit
def test_list_refuses_a_bad_limit(collector, limit):
    r = collector.get(f"/v1/reports?limit={limit}")
    assert r.status_code == 400
    assert r.json() == {"error": "query parameter limit must be a non-negative integer"}


def test_healthz(collector):
    r = collector.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
