"""The ``tagstat-collector`` command: serve the collector, or print its statistics.

``serve`` runs the WSGI app of ``tagstat.collector.app`` on the threaded
server of ``tagstat.collector.server`` and prints ``listening on http://HOST:PORT`` (port 0 picks a
free port; tests read the line). SIGTERM or SIGINT only set an event; the
main thread then stops accepting, gives requests in flight a few seconds and
exits 0. ``stats`` opens the database and prints what ``GET /v1/stats``
answers. Expected failures (a port in use, a database it cannot use) become
``tagstat-collector: error: MESSAGE`` and exit code 1; usage errors exit 2.
``import FILE`` ingests a ``tagstat export`` file (``tagstat.collector.importer``)
through ``intake.parse_json``, ``schema.parse_report`` and ``CollectorStore.ingest``,
the same path a POST takes, without HTTP; it exits 1 if any report was rejected.
"""

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from tagstat.collector import importer
from tagstat.collector.app import create_app
from tagstat.collector.errors import CollectorError
from tagstat.collector.intake import Limits
from tagstat.collector.server import CollectorServer
from tagstat.collector.storage import CollectorStore

log = logging.getLogger(__name__)

DEFAULT_DB = Path("collector.db")
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
SHUTDOWN_GRACE_S = 5.0  # requests in flight get this long to finish at SIGTERM


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.run(args)
    except (CollectorError, OSError, ValueError) as exc:
        print(f"tagstat-collector: error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagstat-collector",
        description="Receive tagstat usage reports over HTTP and keep them in SQLite.",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="how much to log on stderr (default: info, one line per request)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="run the collector's HTTP service",
        description="Serve POST /v1/reports, GET /v1/reports, GET /v1/stats and GET /healthz.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port; 0 picks a free one")
    _add_db(p)
    p.add_argument(
        "--max-body-bytes", type=_positive, default=Limits.wire_bytes, metavar="N",
        help=f"largest body on the wire (default {Limits.wire_bytes})",
    )  # fmt: skip
    p.add_argument(
        "--max-decoded-bytes", type=_positive, default=Limits.decoded_bytes, metavar="N",
        help=f"largest body after decompression (default {Limits.decoded_bytes})",
    )  # fmt: skip
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser(
        "stats",
        help="print the statistics as JSON",
        description="Print per-model device counts and median data rates (as GET /v1/stats).",
    )
    _add_db(p)
    p.set_defaults(run=cmd_stats)
    _add_import(sub)
    return parser


def _add_import(sub) -> None:
    p = sub.add_parser(
        "import",
        help="store the reports of a `tagstat export` file",
        description="Store the reports and carry out the deletion requests of a file "
        "written by `tagstat export`, with the same checks and deduplication as "
        "POST /v1/reports: importing a file twice stores each report once.",
        epilog="Prints how many were stored, duplicate, deleted, discarded and rejected "
        "(with the line and reason); exits 1 if any was rejected.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the export file")
    _add_db(p)
    p.add_argument(
        "--max-decoded-bytes", type=_positive, default=Limits.decoded_bytes, metavar="N",
        help=f"largest report (default {Limits.decoded_bytes}, as serve)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(run=cmd_import)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db", type=Path, default=DEFAULT_DB, metavar="PATH",
        help=f"the SQLite database (default ./{DEFAULT_DB}; created if missing)",
    )  # fmt: skip


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_serve(args) -> int:
    limits = Limits(wire_bytes=args.max_body_bytes, decoded_bytes=args.max_decoded_bytes)
    app = create_app(args.db, limits=limits)
    server = CollectorServer(args.host, args.port, app)
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    # The kernel gives a process's signal to any thread that does not block it,
    # and Python runs handlers only in the main thread, which would sleep on.
    # The server's threads inherit this mask, so the signal reaches main.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        server.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    print(f"listening on {server.url}", flush=True)
    log.info("storing reports in %s", args.db)
    stop.wait()
    log.info("stopping")
    if not server.stop(SHUTDOWN_GRACE_S):
        log.warning("stopped with requests still in flight after %s s", SHUTDOWN_GRACE_S)
    app.store.close()
    return 0


def cmd_import(args) -> int:
    if not args.file.is_file():
        raise CollectorError(f"no file {args.file}")
    store = CollectorStore(args.db)
    try:
        limits = Limits(decoded_bytes=args.max_decoded_bytes)
        result = importer.import_file(args.file, store, limits=limits)
    finally:
        store.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(importer.format_result(args.file, result))
    return 1 if result.rejected else 0


def cmd_stats(args) -> int:
    if not args.db.exists():
        raise CollectorError(f"no database at {args.db}")
    print(json.dumps(CollectorStore(args.db).stats(), indent=2))
    return 0
