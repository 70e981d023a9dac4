"""Serving the collector: werkzeug's threaded HTTP server, a clean stop, plain request logs.

``CollectorServer`` is werkzeug's ``ThreadedWSGIServer`` (one thread per
connection) on a socket bound here, because werkzeug's own bind prints and
exits the process when the port is taken. It counts connections from the
moment they are accepted until their answer is sent and the socket closed, so
``stop`` can stop accepting and then give the ones in flight a few seconds:
a report acknowledged as stored has its answer on the wire before the
process exits. Request lines go through this module's logger, plain and
short, since a request line is client text.
"""

import functools
import logging
import socket
import threading

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from tagstat.collector.errors import CollectorError

log = logging.getLogger(__name__)

MAX_LOGGED_PATH_CHARS = 80
POLL_INTERVAL_S = 0.1  # how long shutdown() may wait for the accept loop to notice


class CollectorServer(ThreadedWSGIServer):
    """The threaded server on ``host:port`` (port 0: a free port, see ``port``)."""

    def __init__(self, host: str, port: int, app):
        with _listen(host, port) as sock:  # werkzeug duplicates the descriptor
            super().__init__(host, port, app, handler=_Handler, fd=sock.fileno())
        self._in_flight = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        """Serve in a background thread."""
        serve = functools.partial(self.serve_forever, poll_interval=poll_interval_s)
        self._thread = threading.Thread(target=serve, name="collector-http", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float) -> bool:
        """Stop accepting; wait up to ``grace_s`` for connections in flight (False: some remain)."""
        self.shutdown()
        with self._idle:
            finished = self._idle.wait_for(lambda: self._in_flight == 0, timeout=grace_s)
        self.server_close()
        return finished

    # socketserver calls process_request in the accept loop, then
    # process_request_thread in the connection's own thread.
    def process_request(self, request, client_address) -> None:
        self._count(+1)  # before the thread starts, so stop() cannot miss it
        log.debug("connection from %s", client_address[0])
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._count(-1)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._count(-1)  # the answer is sent and the socket closed

    def _count(self, delta: int) -> None:
        with self._idle:
            self._in_flight += delta
            self._idle.notify_all()


class _Handler(WSGIRequestHandler):
    """werkzeug's handler, logging one plain line per request through this module's logger."""

    def log_request(self, code="-", size="-") -> None:
        code = getattr(code, "value", code)
        path = self.path[:MAX_LOGGED_PATH_CHARS]
        log.info("%s %s %s %s", self.address_string(), self.command, path, code)

    def log(self, type: str, message: str, *args) -> None:  # werkzeug's errors and notices
        log.log(logging.ERROR if type == "error" else logging.INFO, "http: " + message, *args)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise CollectorError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
