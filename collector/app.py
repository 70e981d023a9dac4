"""The collector's WSGI application: routes, answers, and the never-a-500-for-bad-input wrapper.

``create_app(db_path, ...)`` builds it; any WSGI server can serve it, and
``tagstat.collector.cli`` serves it with werkzeug's threaded server. A POST
goes through ``intake`` (content type, encoding, size limits), then
``schema`` (the documented fields and their types), then ``storage`` (stored
once). Bad input of any kind is a ``Rejected`` or a werkzeug HTTP error and
is answered 4xx with ``{"error": reason}``; only a fault of the server itself
(a broken disk, a bug) is logged with its traceback and answered 500, and a
database busy past its timeout is answered 503 with ``Retry-After``. At most
``max_concurrent_posts`` bodies are decoded at once, which bounds memory.
"""

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tagstat.collector.errors import Rejected
from tagstat.collector.intake import Limits, parse_json, read_body
from tagstat.collector.schema import canonical_uuid, parse_report
from tagstat.collector.storage import BUSY_TIMEOUT_S, CollectorStore

log = logging.getLogger(__name__)

BUSY_RETRY_AFTER_S = 5
DEFAULT_LIMITS = Limits()
POST_SLOT_WAIT_S = 10.0  # a POST waits this long for a decoding slot before a 503
_ROUTES = Map(
    [
        Rule("/v1/reports", methods=["POST"], endpoint="post_report"),
        Rule("/v1/reports", methods=["GET"], endpoint="list_reports"),
        Rule("/v1/reports/<report_id>", methods=["GET"], endpoint="get_report"),
        Rule("/v1/stats", methods=["GET"], endpoint="stats"),
        Rule("/healthz", methods=["GET"], endpoint="healthz"),
    ],
    strict_slashes=False,
)


def create_app(
    db_path: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    max_concurrent_posts: int = 8,
    utc_now=lambda: dt.datetime.now(dt.UTC),
) -> "CollectorApp":
    """The collector as a WSGI application over the database at ``db_path``."""
    return CollectorApp(CollectorStore(db_path), limits, max_concurrent_posts, utc_now)


class CollectorApp:
    """The WSGI callable: one request in, one response out."""

    def __init__(self, store: CollectorStore, limits: Limits, max_concurrent_posts: int, utc_now):
        self.store = store
        self.limits = limits
        self._utc_now = utc_now
        self._post_slots = threading.BoundedSemaphore(max_concurrent_posts)

    def __call__(self, environ, start_response):
        return self._answer(Request(environ))(environ, start_response)

    def _answer(self, request: Request) -> Response:
        try:
            endpoint, args = _ROUTES.bind_to_environ(request.environ).match()
            return getattr(self, "_" + endpoint)(request, **args)
        except Rejected as exc:
            log.info("refused %s %s: %s %s", request.method, request.path, exc.status, exc.reason)
            return _error(exc.status, exc.reason)
        except HTTPException as exc:  # no route, wrong method, client went away mid-body
            response = _error(exc.code or 400, exc.description or exc.name)
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
            return response
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                return self._fault(request)
            log.warning("database busy past %s s; asking the client to retry", BUSY_TIMEOUT_S)
            return _error(503, "database busy, retry later", retry_after_s=BUSY_RETRY_AFTER_S)
        except Exception:
            return self._fault(request)

    @staticmethod
    def _fault(request: Request) -> Response:
        log.exception("error while answering %s %s", request.method, request.path)
        return _error(500, "internal error of the collector (see its log)")

    def _post_report(self, request: Request) -> Response:
        if not self._post_slots.acquire(timeout=POST_SLOT_WAIT_S):
            return _error(503, "too many reports at once, retry later", BUSY_RETRY_AFTER_S)
        try:
            body, wire_bytes = read_body(request, self.limits)
            report = parse_report(parse_json(body))
        finally:
            self._post_slots.release()
        key = request.headers.get("Idempotency-Key")
        if key is not None and canonical_uuid(key.strip()) != report.report_id:
            raise Rejected(400, "Idempotency-Key header does not equal the body's report_id")
        outcome = self.store.ingest(report, body, wire_bytes, self._utc_now())
        log.info("%s %s report %s (%d bytes)", outcome.status, report.kind, report.report_id,
                 len(body))  # fmt: skip
        return _json(outcome.to_json())

    def _list_reports(self, request: Request) -> Response:
        limit = _query_int(request, "limit")
        offset = _query_int(request, "offset") or 0
        return _json({"reports": self.store.list_reports(limit=limit, offset=offset)})

    def _get_report(self, request: Request, report_id: str) -> Response:
        canonical = canonical_uuid(report_id)
        body = self.store.body(canonical) if canonical else None
        if body is None:
            return _error(404, "no report with that report_id")
        return Response(body, mimetype="application/json")

    def _stats(self, request: Request) -> Response:
        return _json(self.store.stats())

    def _healthz(self, request: Request) -> Response:
        started = time.monotonic()
        self.store.check()
        return _json({"status": "ok", "db_ms": round((time.monotonic() - started) * 1000, 1)})


def _query_int(request: Request, name: str) -> int | None:
    text = request.args.get(name)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 9:  # "²".isdigit() is True
        raise Rejected(400, f"query parameter {name} must be a non-negative integer")
    return int(text)


def _json(data: dict, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status, mimetype="application/json")


def _error(status: int, reason: str, retry_after_s: int | None = None) -> Response:
    response = _json({"error": reason}, status)
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response
