"""The ``tagstat`` command: a thin layer over ``tagstat.client.Client``.

Each subcommand makes one call to the running tagstatd and prints the result,
as a table for people or as JSON (``--json``) for scripts. Expected failures
(``TagstatError``, ``ValueError``) become ``tagstat: error: MESSAGE`` on
stderr and exit code 1; usage errors exit 2 as argparse does. Ctrl-C exits
130 (128 + SIGINT) with one line, ``tagstat: interrupted`` and what was left
undone (a question's ``KeyboardInterrupt("nothing recorded")``). Output cut
off by a closed pipe (``tagstat report | head -1``) exits 141 (128 + SIGPIPE,
the status a shell shows for a C program stopped the same way) and prints
nothing more.
``--home`` and ``--socket`` are understood before and after the command. The
CLI never creates a home: only tagstatd does. Display strings (MB/s,
h:mm:ss, short ids) are built here and nowhere else.
"""

import argparse
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tagstat import export
from tagstat.client import Client
from tagstat.clock import parse_iso
from tagstat.errors import TagstatError
from tagstat.explain import explanation, render, status_lines
from tagstat.firstrun import before_command, setup
from tagstat.killswitch import client_switch
from tagstat.paths import Paths
from tagstat.status import UsageStatisticsStatus

BYTES_PER_MB = 1_000_000
SHORT_ID_CHARS = 12
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `yes` in `yes | head -1`
_STATUS_NAMES = "{" + ",".join(m.cli_name for m in UsageStatisticsStatus) + "}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 usage, 130 Ctrl-C, 141 pipe)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt as exc:
        undone = f"; {exc.args[0]}" if exc.args else ""
        print(f"\ntagstat: interrupted{undone}", file=sys.stderr)  # after the ^C echo
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors
        sys.stdout.flush()
        return exc.code if isinstance(exc.code, int) else 2
    try:
        client = _client(args)
        before_command(client, args)  # the first interactive run asks about uploads
        args.run(client, args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit where it would be a traceback
    except (TagstatError, ValueError) as exc:
        print(f"tagstat: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _stdout_closed() -> int:
    """The recipe of Python's signal docs ("Note on SIGPIPE"): point stdout at /dev/null,
    so the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a descriptor (tests)
        pass
    return EXIT_BROKEN_PIPE


def _location_options(default) -> argparse.ArgumentParser:
    """--home and --socket, at the top level (default None) and after every command
    (default SUPPRESS, so that a command's parser does not overwrite the top-level value)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--home", metavar="DIR", default=default,
                   help="a non-system instance (as TAGSTAT_HOME)")  # fmt: skip
    p.add_argument("--socket", metavar="PATH", type=Path, default=default,
                   help="the control socket to use")  # fmt: skip
    return p


def _command(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A command's parser; every command takes --home and --socket too, after its name."""
    return sub.add_parser(name, parents=[_location_options(argparse.SUPPRESS)], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagstat",
        description="Show and set what tagstatd collects about Time Taggers.",
        parents=[_location_options(None)],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "status",
        help="show or set the usage statistics status",
        description="With no argument, show the status; with one, set it.",
    )
    p.add_argument(
        "status", nargs="?", type=_status_arg, metavar=_STATUS_NAMES, help="the status to set"
    )
    p.add_argument(
        "--temporary", action="store_true", help="keep the new status only until tagstatd restarts"
    )
    _add_json(p)
    p.set_defaults(run=cmd_status)

    p = _command(
        sub,
        "report",
        help="print the usage report",
        description="Print the usage report that would be uploaded.",
        epilog="Under collecting-and-uploading: exactly what the next upload would hold "
        "(data of the current period only). Otherwise: all data kept locally; none is sent.",
    )
    p.add_argument("--json", action="store_true", help="print it compact, exactly as returned")
    p.add_argument(
        "--pending",
        action="store_true",
        help="print, byte for byte, the body the next upload will send (JSON; it travels "
        "gzip-compressed)",
    )
    p.set_defaults(run=cmd_report)

    p = _command(
        sub,
        "devices",
        help="list the Time Taggers seen",
        description="List the Time Taggers seen (serial numbers masked).",
        epilog="--calibration also prints each device's calibration table as read from it "
        "(masked). It stays on this computer: reports carry only a summary (docs/DATA.md).",
    )
    p.add_argument(
        "--calibration", action="store_true", help="also show each device's calibration table"
    )
    _add_json(p)
    p.set_defaults(run=cmd_devices)

    p = _command(
        sub,
        "sessions",
        help="list usage sessions",
        description="List usage sessions with their data rates.",
    )
    _add_json(p)
    p.set_defaults(run=cmd_sessions)
    _add_uploads(sub)
    _add_privacy(sub)
    _add_purge_export(sub)
    return parser


def _add_privacy(sub) -> None:
    p = _command(
        sub,
        "setup",
        help="see what is collected and choose whether to upload it",
        description="Show what is collected and ask whether to upload it (default: no).",
        epilog="Shows docs/DATA.md's fields, an example report and where uploads would go. "
        "Needs a terminal and membership of the admin group. Also asked once on the first "
        "interactive run, and again when the report gains fields; never without a terminal. "
        "Scripts use `tagstat status` instead.",
    )
    p.set_defaults(run=lambda client, args: setup(client))
    p = _command(
        sub,
        "explain",
        help="say in words what is collected, what is uploaded and where",
        description="Say what is collected, what is uploaded and where, for the status now.",
        epilog="Also any kill switch in force (TAGSTAT_DISABLE, DO_NOT_TRACK, a CI "
        "environment) and the consent given, in the words of docs/DATA.md.",
    )
    _add_json(p)
    p.set_defaults(run=cmd_explain)


def cmd_explain(client: Client, args: argparse.Namespace) -> None:
    facts = explanation(client.status(), client_switch())
    if args.json:
        _print_json(facts)
    else:
        print(render(facts))


def _add_uploads(sub) -> None:
    p = _command(
        sub,
        "uploads",
        help="list upload attempts, or show what one sent",
        description="List upload attempts and results, or show what one report sent.",
        epilog="`tagstat uploads show ID` prints the exact JSON bytes stored for one report. "
        "On the wire they travel gzip-compressed; the JSON is what the collector receives "
        "after decompressing.",
    )
    _add_json(p)
    p.set_defaults(run=cmd_uploads)
    shows = p.add_subparsers(dest="uploads_command", metavar="show ID")
    s = _command(
        shows,
        "show",
        help="print the exact bytes stored and sent for one report (sent gzip-compressed)",
        description="Print the exact JSON bytes stored for one report (sent gzip-compressed).",
    )
    s.add_argument("report_id", metavar="ID", help="a report id, or a unique prefix of one")
    s.set_defaults(run=cmd_upload_show)


def _add_purge_export(sub) -> None:
    p = _command(
        sub,
        "purge",
        help="delete all collected data; keep the settings; make a new user id",
        description="Delete all collected data; keep the settings; make a new user id.",
        epilog="Deletes sessions, devices, sensor data, messages, measurements and the "
        "usage reports in the outbox (waiting ones are cancelled), leaving no copy in the "
        "database file. Settings, consent, status and its history stay. If reports of the "
        "old user id were delivered or exported, a deletion request for it is queued. "
        "Asks for confirmation on a terminal; without one, needs --yes.",
    )
    p.add_argument("--yes", action="store_true", help="purge without asking")
    p.set_defaults(run=cmd_purge)

    p = _command(
        sub,
        "export",
        help="write the pending uploads to FILE (for a lab without network)",
        description="Write the pending uploads to FILE, for `tagstat-collector import`.",
        epilog="Writes the usage reports and deletion requests waiting for upload (JSON "
        "Lines, mode 0600; format in docs/DATA.md) and marks them delivered-by-export, so "
        "they are not uploaded. Under collecting-and-uploading the current upload period "
        "is closed first. With nothing pending, no file is written.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the file to write")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(run=cmd_export)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _status_arg(text: str) -> UsageStatisticsStatus:
    try:
        return UsageStatisticsStatus.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _client(args: argparse.Namespace) -> Client:
    return Client(args.socket or Paths.resolve(args.home).socket)


def cmd_status(client: Client, args: argparse.Namespace) -> None:
    if args.status is None:
        result = client.status()
    else:
        result = client.set_status(args.status, persistent=not args.temporary, origin="cli")
    here = client_switch()  # TAGSTAT_DISABLE or DO_NOT_TRACK in this program's environment
    if args.json:
        _print_json({**result, "client_forced_by": here.to_dict() if here else None})
    else:
        print("\n".join([format_status(result), *status_lines(result, here)]))


def cmd_report(client: Client, args: argparse.Namespace) -> None:
    if args.pending:
        return cmd_pending(client)
    report = client.report()
    if args.json:
        print(report)
        return
    try:
        print(json.dumps(json.loads(report), indent=2, ensure_ascii=False))
    except ValueError:  # the informational text shown before any data exists
        print(report)


def cmd_pending(client: Client) -> None:
    pending = client.pending_report()
    body = pending.get("body")
    if pending.get("pending"):
        _write_exact(body)
        return
    if not pending.get("endpoint"):
        print("# no upload_url configured: nothing is sent", file=sys.stderr)
    if body is None:
        status = pending.get("status", "?")
        print(f"nothing pending; the status is {status}, so nothing would be uploaded")
        return
    print("# nothing pending; the report this period would produce so far:", file=sys.stderr)
    _write_exact(body)


def _write_exact(body) -> None:
    """The body as it is stored: no reformatting; a newline only for a terminal."""
    sys.stdout.write(str(body))
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()


def cmd_uploads(client: Client, args: argparse.Namespace) -> None:
    rows = client.uploads()
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no upload attempts yet")
    else:
        header = ["TIME (UTC)", "REPORT ID", "BYTES", "RESULT", "HTTP", "DETAIL"]
        print(format_table(header, [_upload_row(r) for r in rows]))


def cmd_upload_show(client: Client, args: argparse.Namespace) -> None:
    _write_exact(client.upload_body(args.report_id).get("body", ""))


# -- purge and export (tagstat.purge, tagstat.export) ------------------------------------

PURGE_TIMEOUT_S = 300.0  # rewriting a large database file takes a while
_PURGED = (("sessions", "sessions"), ("devices", "devices"), ("sensor_buckets", "sensor buckets"),
           ("messages", "messages"), ("measurements", "measurements"),
           ("usage_reports", "usage reports"))  # fmt: skip


def cmd_purge(client: Client, args: argparse.Namespace) -> None:
    if not args.yes and not _confirm_purge():
        print("nothing was deleted")
        return
    result = Client(client.socket_path, timeout_s=PURGE_TIMEOUT_S).purge()
    print(format_purge(result))


def _confirm_purge() -> bool:
    if not sys.stdin.isatty():
        raise TagstatError(
            "purge deletes all collected data and asks first, but stdin is not a "
            "terminal; pass --yes to purge without asking"
        )
    prompt = ("Delete all collected usage data (sessions, devices, sensor data, messages, "
              "measurements, waiting reports)?\nSettings are kept. [y/N] ")  # fmt: skip
    try:
        answer = input(prompt)
    except EOFError:
        return False
    except KeyboardInterrupt:
        raise KeyboardInterrupt("nothing was deleted") from None
    return answer.strip().lower() in ("y", "yes")


def format_purge(result: dict) -> str:
    removed = result.get("removed") or {}
    counts = ", ".join(f"{_text(removed.get(key, 0))} {name}" for key, name in _PURGED)
    lines = [f"purged: {counts}"]
    if result.get("cancelled_reports"):
        lines.append(f"{result['cancelled_reports']} waiting usage report(s) cancelled")
    lines.append(f"settings, consent and status kept; new user id {_text(result.get('user_id'))}")
    if result.get("deletion_request"):
        lines.append(
            "reports of the old user id were delivered to a collector (or exported): "
            f"deletion request {result['deletion_request']} queued; `tagstat uploads` "
            "shows when it goes out"
        )
    else:
        lines.append("no report of the old user id left this computer: no deletion request")
    return "\n".join(lines)


def cmd_export(client: Client, args: argparse.Namespace) -> None:
    path = args.file
    export.check_target(path, args.force)
    begun = client.export_begin()
    lines = export.export_lines(begun)
    if len(lines) == 1:
        print(f"nothing to export: no report or deletion request may be sent now (see "
              f"`tagstat status`); {path} not written")  # fmt: skip
        return
    tmp = export.write_temporary(path, lines)
    try:
        result = client.export_commit(str(begun.get("token")))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    export.place(tmp, path, args.force)
    n = len(lines) - 1
    print(f"exported {n} report(s) to {path}; {_text(result.get('exported'))} marked "
          "delivered-by-export and will not be uploaded")  # fmt: skip
    if result.get("already_delivered"):
        print(f"({result['already_delivered']} were delivered by upload meanwhile; importing "
              "them again is harmless)")  # fmt: skip


def _upload_row(r: dict) -> list[str]:
    return [
        _stamp(r.get("at")),
        _text(r.get("report_id")),
        _text(r.get("size_bytes")),
        _text(r.get("result")),
        _text(r.get("http_status")),
        _text(r.get("detail"))[:60],
    ]


def cmd_devices(client: Client, args: argparse.Namespace) -> None:
    devices = client.devices(calibration=args.calibration)
    if args.json:
        _print_json(devices)
    elif not devices:
        print("no Time Tagger seen yet")
    else:
        header = ["DEVICE", "MODEL", "SERIAL", "LINK", "FIRMWARE", "ATTACHED"]
        print(format_table(header, [_device_row(d) for d in devices]))
        for d in devices if args.calibration else ():
            print(f"\ncalibration of {_short_id(d.get('device_id'))} (kept on this computer):")
            print(json.dumps(d.get("calibration") or {}, indent=2, ensure_ascii=False))


def cmd_sessions(client: Client, args: argparse.Namespace) -> None:
    sessions = client.sessions()
    if args.json:
        _print_json(sessions)
    elif not sessions:
        print("no usage sessions yet")
    else:
        header = [
            "DEVICE",
            "MODEL",
            "START (UTC)",
            "DURATION",
            "MIN MB/s",
            "AVG MB/s",
            "MAX MB/s",
            "OPEN",
        ]
        print(format_table(header, [_session_row(s) for s in sessions]))
        print("(1 MB = 10^6 bytes)")


def format_status(result: dict) -> str:
    value = result.get("status")
    name = result.get("name", "?")
    persistence = "persistent" if result.get("persistent") else "temporary (until restart)"
    since = result.get("since")
    text = f"status: {name} ({value}), {persistence}"
    text += f", since {_stamp(since)}" if since else ""
    upload = result.get("upload")
    return text + ("\n" + format_upload(upload) if isinstance(upload, dict) else "")


def format_upload(u: dict) -> str:
    endpoint = u.get("endpoint") or "none configured (upload_url): reports stay queued"
    pending = f"{_text(u.get('pending'))} waiting"
    if u.get("pending_deletions"):
        pending += f" ({u['pending_deletions']} deletion request(s))"
    last = _stamp(u.get("last_delivery")) if u.get("last_delivery") else "never"
    return f"upload endpoint: {endpoint}\nuploads: {pending}, last delivered {last}"


def _device_row(d: dict) -> list[str]:
    attached = "yes" if d.get("attached") else "no"
    return [
        _short_id(d.get("device_id")),
        _text(d.get("model")),
        _text(d.get("serial")),
        _text(d.get("usb_speed")),
        _text(d.get("firmware")),
        attached,
    ]


def _session_row(s: dict) -> list[str]:
    rate = s.get("data_rate") or {}
    return [
        _short_id(s.get("device_id")),
        _text(s.get("model")),
        _stamp(s.get("start")),
        _duration(s.get("duration_s")),
        _mb_per_s(rate.get("min")),
        _mb_per_s(rate.get("avg")),
        _mb_per_s(rate.get("max")),
        "open" if s.get("open") else "",
    ]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _text(value) -> str:
    return "-" if value is None or value == "" else str(value)


def _short_id(device_id) -> str:
    return _text(device_id)[:SHORT_ID_CHARS]


def _stamp(value) -> str:
    """An ISO stamp as 'YYYY-MM-DD HH:MM:SS' in UTC; anything unparsable as given."""
    try:
        stamp = parse_iso(value)
    except (TypeError, ValueError, AttributeError):
        return _text(value)
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    total = int(seconds)
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def _mb_per_s(bytes_per_s) -> str:
    if not isinstance(bytes_per_s, int | float) or isinstance(bytes_per_s, bool):
        return "-"
    return f"{bytes_per_s / BYTES_PER_MB:.1f}"


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    sys.exit(main())
