"""Sends the outbox to the collector: the only module that imports requests.

One background thread sends due entries one at a time, oldest first, as
``POST <upload_url>/v1/reports`` with the stored JSON bytes gzip-compressed
(deterministically: mtime 0), the ``report_id`` in an ``Idempotency-Key``
header, TLS verification on, proxies from the environment honoured and
connect and read timeouts. 2xx is delivered (a collector's ``duplicate``
too: it already had it); other 4xx except 408 and 429 is rejected and never
retried; 408, 429, 5xx, redirects and network errors are retried later, the
delay from ``urllib3.util.Retry`` (exponential, with jitter, capped) and never
sooner than ``Retry-After``. The schedule lives in the outbox rows, never in
a sleeping thread, so it survives restarts. Every attempt is audited. The
thread sleeps on a condition until the next attempt is due or ``wake()`` is
called, holds no lock of the service's, and at ``stop()`` gets a few seconds
to finish (and to flush due entries), after which it is abandoned: its entry
stays pending, and resending it later is harmless.
"""

import dataclasses
import datetime as dt
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable

import requests
from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry
from urllib3.util.retry import RequestHistory

import tagstat
from tagstat.clock import Clock
from tagstat.config import Config
from tagstat.records import OutboxEntry, UploadAttempt

log = logging.getLogger(__name__)

REPORTS_PATH = "/v1/reports"
SHUTDOWN_UPLOAD_WAIT_S = 3.0  # how long a stopping daemon waits for an upload in flight
ERROR_PAUSE_S = 60.0  # after an unexpected error in the upload thread
MAX_IDLE_WAIT_S = 300.0  # re-read the schedule at least this often (the wall clock may jump)
MAX_ANSWER_BYTES = 64 * 1024  # a collector's answer is a line of JSON; read no more
MAX_DETAIL_CHARS = 200
_MAX_DOUBLINGS = 60  # beyond this the cap has long been reached; keeps 2**n a float


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt came to: delivered, duplicate, rejected or retry."""

    result: str
    http_status: int | None
    detail: str
    retry_after_s: float | None = None


def backoff_s(attempts: int, initial_s: float, max_s: float, retry_after_s=None) -> float:
    """Delay before the next attempt after ``attempts`` failed ones.

    urllib3's Retry computes ``backoff_factor * 2**(n-1)`` plus up to
    ``backoff_jitter`` for n consecutive errors, capped at ``backoff_max``; with
    a factor of initial/2 the first retry waits ``initial_s``, then doubles.
    """
    n = min(max(1, attempts), _MAX_DOUBLINGS) + 1
    retry = Retry(
        total=None,
        backoff_factor=initial_s / 2,
        backoff_max=max_s,
        backoff_jitter=initial_s,
        history=tuple(RequestHistory("POST", None, None, None, None) for _ in range(n)),
    )
    delay = retry.get_backoff_time()
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))  # not sooner than asked, not past the cap
    return delay


def classify(status: int, headers, answer: bytes) -> Outcome:
    """The policy: what an HTTP answer means for the report."""
    if 200 <= status < 300:
        said = _answer_field(answer, "status")
        return Outcome("duplicate" if said == "duplicate" else "delivered", status, said or "")
    detail = f"HTTP {status}"
    error = _answer_field(answer, "error")
    if error:
        detail += f": {error}"
    if status in (408, 429) or status >= 500:
        return Outcome("retry", status, detail, _retry_after_s(headers.get("Retry-After")))
    if 300 <= status < 400:
        # Not followed: a redirect could carry the report somewhere not configured.
        return Outcome("retry", status, f"{detail}: redirects are not followed; fix upload_url")
    if 400 <= status < 500:
        return Outcome("rejected", status, detail)
    return Outcome("retry", status, detail)


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return Retry(total=None).parse_retry_after(value)  # seconds or an HTTP date
    except InvalidHeader:
        return None  # an unreadable header: fall back to our own backoff


def _answer_field(answer: bytes, key: str) -> str | None:
    try:
        value = json.loads(answer.decode("utf-8")).get(key)
    except (ValueError, AttributeError):
        return None
    return _short(str(value)) if value is not None else None


def _short(text: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text[:MAX_DETAIL_CHARS]


class Uploader:
    def __init__(
        self,
        store,
        config: Config,
        clock: Clock,
        kinds: Callable[[], tuple[str, ...]] = lambda: ("usage", "deletion"),
        session: requests.Session | None = None,
    ):
        self._store = store
        self._config = config
        self._clock = clock
        self._kinds = kinds  # which kinds may be sent now (usage only with consent)
        self._session = session or _new_session()
        self._url = config.upload_url + REPORTS_PATH if config.upload_url else None
        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self.in_flight: str | None = None  # the report id on the wire, if any

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration; a newly set upload_url starts the thread."""
        with self._cond:
            self._config = config
            self._url = config.upload_url + REPORTS_PATH if config.upload_url else None
        if (
            self._url
            and not self._stopping
            and (self._thread is None or not self._thread.is_alive())
        ):
            self.start()
        self.wake()

    @property
    def configured(self) -> bool:
        return self._url is not None

    def start(self) -> None:
        if not self.configured:
            log.info("no upload_url configured: reports stay queued")
            return
        self._thread = threading.Thread(target=self._run, name="tagstat-upload", daemon=True)
        self._thread.start()
        log.info("uploading to %s", self._url)

    def wake(self) -> None:
        """Something was queued or the status changed: look at the outbox now."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def stop(self, wait_s: float = SHUTDOWN_UPLOAD_WAIT_S) -> bool:
        """Let due entries go out for up to ``wait_s``, then stop; False if abandoned."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + wait_s
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(wait_s)
        if self._thread.is_alive():
            log.warning("abandoning upload of %s in flight; it stays queued", self.in_flight)
            return False
        return True

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not (self._stopping and time.monotonic() >= self._deadline):
            try:
                if self.send_due():
                    continue
                if self._stopping:
                    return
                self._sleep()
            except Exception as e:
                if self._stopping:  # the store closed under an upload abandoned at shutdown
                    log.debug("upload thread ends: %s", e)
                    return
                # A full disk or a bug must not end uploads for good: log, pause, go on.
                log.exception("upload thread failed (%s); trying again in %g s", e, ERROR_PAUSE_S)
                with self._cond:
                    self._cond.wait(ERROR_PAUSE_S)

    def _sleep(self) -> None:
        due = self._store.outbox_earliest_attempt(self._kinds())
        timeout = MAX_IDLE_WAIT_S
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self._clock.utc_now()).total_seconds()))
        with self._cond:
            if not self._woken and not self._stopping:
                self._cond.wait(timeout)
            self._woken = False

    def send_due(self) -> bool:
        """Send the oldest due entry, if any, and record the outcome; True if one was sent."""
        if not self.configured:
            return False
        entry = self._store.outbox_next_due(self._clock.utc_now(), self._kinds())
        if entry is None:
            return False
        self.in_flight = entry.report_id
        try:
            outcome = self.post(entry)
        finally:
            self.in_flight = None
        self._record(entry, outcome)
        return True

    def post(self, entry: OutboxEntry) -> Outcome:
        """One HTTP attempt; never raises for anything the network or the collector does."""
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Idempotency-Key": entry.report_id,
            "User-Agent": f"tagstat/{tagstat.__version__}",
        }
        timeout = (self._config.upload_connect_timeout_s, self._config.upload_read_timeout_s)
        try:
            with self._session.post(
                self._url,
                data=gzip.compress(entry.body, mtime=0),
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                verify=True,
                stream=True,  # so a huge answer is not read whole
            ) as response:
                answer = response.raw.read(MAX_ANSWER_BYTES, decode_content=True) or b""
                status, answer_headers = response.status_code, response.headers
        except Exception as e:
            # requests' errors, and urllib3's own (ProtocolError, ReadTimeoutError) when the
            # connection breaks while the answer is read: all mean "try again later".
            return Outcome("retry", None, _short(f"{type(e).__name__}: {e}"))
        return classify(status, answer_headers, answer)

    def _record(self, entry: OutboxEntry, outcome: Outcome) -> None:
        now = self._clock.utc_now()
        attempts = entry.attempts + 1
        attempt = UploadAttempt(
            now, entry.report_id, entry.size_bytes, outcome.result, outcome.http_status,
            outcome.detail or None,
        )  # fmt: skip
        if outcome.result in ("delivered", "duplicate"):
            self._store.outbox_record(
                attempt, "delivered", attempts=attempts, delivered_at=now, last_error=None
            )
            duplicate = outcome.result == "duplicate"
            again = " (again: the collector already had it)" if duplicate else ""
            log.info("report %s delivered%s", entry.report_id, again)
        elif outcome.result == "rejected":
            self._store.outbox_record(
                attempt, "rejected", attempts=attempts, last_error=outcome.detail
            )
            log.warning("report %s rejected, not retried: %s", entry.report_id, outcome.detail)
        else:
            delay = backoff_s(attempts, self._config.upload_backoff_initial_s,
                              self._config.upload_backoff_max_s, outcome.retry_after_s)  # fmt: skip
            self._store.outbox_record(
                attempt, attempts=attempts, last_error=outcome.detail,
                next_attempt_at=now + dt.timedelta(seconds=delay),
            )  # fmt: skip
            log.warning("upload of report %s failed (%s); next try in %.0f s",
                        entry.report_id, outcome.detail, delay)  # fmt: skip


def _new_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = True  # HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, as users expect
    return session
