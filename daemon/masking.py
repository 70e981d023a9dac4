"""Masking: where device data enters, serial numbers and identifying text leave.

Invariant 1 of tagstat is that no Time Tagger serial number reaches the disk, a
log line, a report or the network in clear text, and no host name, user name,
address or file name does either. A ``Masker`` holds the install secret, every
serial it has seen in a USB descriptor and the keyed digests of serials seen on
this install before. ``device_id`` turns a serial into a keyed pseudonym
(HMAC-SHA256), stable for one install and useless elsewhere; ``scrub`` and
``scrub_text`` rewrite whatever the device says before anything behind the
boundary sees it, in three stages:

1. Structural identifiers, on the raw text, so that no placeholder can cut one
   in two and leave a piece behind: URLs (``scheme://...``, ``www.`` hosts),
   paths (POSIX, ``~/``, ``C:\\``, UNC, and relative: ``./x``, ``../x``, three
   or more segments with a letter, or two whose last is a file name, so that
   ``MB/s``, ``1/2`` and ``2024/05/17`` survive), e-mail, MAC, IPv6
   (validated by ``ipaddress``, so times survive), IPv4 (a port survives),
   dotted host names (two or more labels of letters, digits and ``-``, the last
   2-63 letters in one case), then file names. A file name is NAME.EXT: EXT is
   1-10 letters and digits starting with a letter, all in one case, and NAME
   holds a letter or ``_``, or EXT is a common data or document extension
   (``_DATA_EXTENSIONS``). So ``1.30``, ``v2.22.6``, ``1.5e9``, ``2.5V`` and
   ``done.Next`` survive, and ``e.g.`` is an abbreviation, not a file. A
   two-label host whose last label is such an extension is a file.
2. Serials: learned ones exactly, in any case, even inside longer tokens; then
   windows of runs of letters and digits whose keyed digest is a known serial's;
   then every serial-shaped token, ``\\d{4}[0-9A-Za-z]{6}``, anywhere and in any
   case (a number of ten or more digits is masked too: it can carry an identifier).
3. This machine's own host names and its local user names.

Placeholders are bracketed (``[serial]``, ``[path]``, ...) and never rewritten
again; passes repeat until nothing changes, so scrubbing is idempotent.
``MaskingLogFilter`` masks the serials in every log record as the last line of
defence.
"""

import getpass
import hashlib
import hmac
import ipaddress
import logging
import os
import pwd
import re
import secrets
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

from tagstat.errors import StoreError
from tagstat.fsutil import fsync_dir

log = logging.getLogger(__name__)

SECRET_BYTES = 32
DEVICE_ID_HEX = 16

# The reference pattern is \b\d{4}[0-9A-Z]{6}\b. Ours has no boundaries and any
# case: texts write serials in lower case and glue them to other words
# ("ref-2066wiiu2v", "x2066WIIU2Vy", "1809000LGG_run3").
SERIAL_PATTERN = re.compile(r"\d{4}[0-9A-Za-z]{6}")
# tagstat's own random ids (report and session ids in log lines) are canonical UUIDs, and a
# third of them hold a serial-shaped run of hex digits: the shape pass leaves them whole.
# A serial this install has seen is still masked inside one.
_UUID = re.compile(
    r"((?<![0-9A-Za-z-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"(?![0-9A-Za-z-]))"
)

_MIN_NAME_CHARS = 3
_MIN_LEARNED_CHARS = 6  # a shorter "serial" would erase ordinary digits everywhere
_NOT_IDENTIFYING_USERS = frozenset({"nobody", "nfsnobody"})
_DEVICE_ID = re.compile(rf"[0-9a-f]{{{DEVICE_ID_HEX}}}")

# Placeholders this module (and the poller's "[id:...]") writes; text inside them
# is never scrubbed again.
_PLACEHOLDER = re.compile(
    r"(\[(?:serial(?::[0-9a-f]{8})?|id:[0-9a-f]{8}|url|path|file|email|ip|mac|host|user)\])"
)

# NAME.EXT with one of these is a file even when NAME is all digits ("3.h5"),
# and a two-label "host" ending in one ("data.csv") is a file, not a host.
_DATA_EXTENSIONS = frozenset(
    "ttbin ttres csv tsv txt dat bin raw h5 hdf5 npy npz mat json toml yaml yml xml ini cfg "
    "conf log out py ipynb png jpg jpeg gif bmp tif tiff svg pdf doc docx xls xlsx odt ods "
    "md rst html zip gz tgz bz2 xz tar tdms sqlite db pkl parquet".split()
)
_LETTER = re.compile(r"[^\W\d]")  # a letter of any script, or "_"

# Every pattern below starts only where no longer token of its kind could (the
# lookbehinds) or does bounded work at each start, so a failed attempt is never
# repeated along a run of characters, and no match exposes another at its left
# for the next pass (_MAC, _ipv6_or_same): scrubbing stays linear in the length
# of the text.
_URL = re.compile(
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"'`{}|\\^]*"
    r"|(?<![\w.-])[Ww]{3}\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?:[/?#:][^\s<>\"'`{}|\\^]*)?"
)
_URL_TAIL = ".,;:!?)]}"  # punctuation after a URL belongs to the sentence

_PATH_CHAR = r"[^\s'\"<>|\[\](){}:;,*?]"
_PATH_END = r"[^\s'\"<>|\[\](){}:;,*?.]"  # a full stop after a path ends the sentence
_WIN_DIR = r"[^\s\\/'\"<>|\[\]:*?]+(?: [^\s\\/'\"<>|\[\]:*?]+)*[\\/]"  # may hold single spaces
_PATHS = re.compile(
    "|".join(
        (
            rf"(?<![\w/~.])/{_PATH_CHAR}*{_PATH_END}",  # POSIX absolute
            rf"(?<![\w/~.])~[\w.-]*/(?:{_PATH_CHAR}*{_PATH_END})?",  # home-relative
            rf"(?<![A-Za-z0-9])[A-Za-z]:[\\/](?:{_WIN_DIR})*(?:{_PATH_CHAR}*{_PATH_END})?",
            rf"\\\\[^\s\\]+\\(?:{_WIN_DIR})*(?:{_PATH_CHAR}*{_PATH_END})?",  # UNC
        )
    )
)
# Candidates only: "MB/s", "1/2" and "input/output" look the same (_relative_path_or_same).
_SEGMENT = r"[\w.+~@%-]+"
_RELATIVE_PATH = re.compile(rf"(?<![\w.+~@%-]){_SEGMENT}(?:[\\/]{_SEGMENT})+")
_SEPARATOR = re.compile(r"[\\/]")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# A colon may stand before or after an address ("hwaddr:00:1a:..., nic ::1: down"),
# but a MAC never starts inside a longer chain of groups: each pass would peel
# six groups off its end, and a long chain would take quadratic time.
_MAC = re.compile(
    r"(?<!\w)(?<![:-][0-9A-Fa-f]{2}[:-])(?<!^[0-9A-Fa-f]{2}[:-])"
    r"[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}(?!\w|[:-]\w)"
)
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w.])((?:[0-9A-Fa-f]{0,4}:){2,8}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?)"
    r"(%[\w-]+(?:\.[\w-]+)*)?(?![\w:]|\.\d)"  # "::ffff:10.0.0.1" is one address, not "::ffff:10"
)
_GROUP_BEFORE = re.compile(r"(?:^|[^\w.])[0-9A-Fa-f]{1,4}:\Z")  # "ab:" before a candidate
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\w|\.\d)"
)
# The last label in one case: "done.Next" ends a sentence, it is not a host.
_HOST = re.compile(r"(?<![\w.-])(?:[A-Za-z0-9-]+\.)+(?:[a-z]{2,63}|[A-Z]{2,63})(?![A-Za-z0-9-])")
_FILE_NAME = re.compile(
    r"(?P<name>[\w+~-]+(?:\.[\w+~-]+)*)\.(?P<ext>[a-z][a-z0-9]{0,9}|[A-Z][A-Z0-9]{0,9})"
)
_FILE = re.compile(rf"(?<![\w.+~-]){_FILE_NAME.pattern}(?![A-Za-z0-9])")
_ABBREVIATION = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # "e.g", "i.e", "U.S.A", before a "."


def load_or_create_secret(path: Path) -> bytes:
    """The install secret: read it, or create it once, atomically, with mode 0600."""
    path = Path(path)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_secret(path)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode & 0o777
            data = f.read(SECRET_BYTES + 1)
            if mode & 0o077:
                _tighten(path, f.fileno(), mode)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StoreError(
            f"cannot read the secret file {path}: {e.strerror}; "
            "check that it is a file readable by the tagstat user"
        ) from e
    if len(data) != SECRET_BYTES:
        raise StoreError(
            f"the secret file {path} holds {len(data)} bytes instead of {SECRET_BYTES}; "
            "move it aside to make a new one: device ids will change"
        )
    return data


def _tighten(path: Path, fd: int, mode: int) -> None:
    try:
        os.fchmod(fd, 0o600)
    except OSError as e:
        log.warning("secret file %s has mode %o and could not be made 0600: %s", path, mode, e)
    else:
        log.warning("secret file %s had mode %o; set it to 0600", path, mode)


def _create_secret(path: Path) -> None:
    # Write a temporary file, then hard-link it into place: link never replaces
    # an existing file, so two daemons starting at once agree on one secret.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another start won the race; its secret is the one
        fsync_dir(path.parent)
        log.info("created a new install secret in %s", path)
    finally:
        tmp.unlink(missing_ok=True)


class Masker:
    """Pseudonymises serials and scrubs identifying text; safe to share across threads."""

    def __init__(
        self,
        secret: bytes,
        *,
        hostnames: Iterable[str] | None = None,
        usernames: Iterable[str] | None = None,
        known_serials: Iterable[tuple[int, str]] = (),
    ):
        """``known_serials``: ``serial_entry`` pairs stored by an earlier start.

        Serials are never stored in clear, so a restarted daemon knows the
        devices it met before only by these digests, and finds them in text by
        digesting every window of the right length.
        """
        if len(secret) < 16:
            raise ValueError("the masking secret must be at least 16 bytes")
        self._secret = bytes(secret)
        self._keyed = hmac.new(self._secret, digestmod=hashlib.sha256)  # copied per digest
        self._lock = threading.Lock()
        # upper-case serial -> masked form, and the pattern of them all; one
        # tuple, so a reader never sees a pattern newer than its table
        self._learned: tuple[dict[str, str], re.Pattern | None] = ({}, None)
        self._known = _known_table(known_serials)
        shortest = min((length for length, _ in self._known), default=0)
        self._known_runs = re.compile(rf"[0-9A-Za-z]{{{shortest},}}") if self._known else None
        hosts = _words_pattern(discover_hostnames() if hostnames is None else hostnames)
        users = _words_pattern(discover_usernames() if usernames is None else usernames)
        self._local_names = tuple(
            (pattern, placeholder)
            for pattern, placeholder in ((hosts, "[host]"), (users, "[user]"))
            if pattern is not None
        )

    def __repr__(self) -> str:
        known = sum(len(ids) for _, ids in self._known)
        return f"<Masker with {len(self._learned[0])} learned and {known} known serials>"

    def device_id(self, serial: str) -> str:
        """The keyed pseudonym of ``serial``: 16 hex characters of HMAC-SHA256."""
        self.learn(serial)
        return self._digest(serial)

    def serial_entry(self, serial: str) -> tuple[int, str]:
        """``(length, device_id)``: what a later start needs to mask ``serial`` unseen.

        The service stores these pairs and passes them back as ``known_serials``;
        like ``device_id``, this learns the serial.
        """
        self.learn(serial)
        return len(serial.strip().upper()), self._digest(serial)

    def _digest(self, serial: str) -> str:
        return self._window_digest(serial.strip().upper())

    def _window_digest(self, key: str) -> str:
        mac = self._keyed.copy()
        mac.update(key.encode())
        return mac.hexdigest()[:DEVICE_ID_HEX]

    def learn(self, serial: str) -> bool:
        """Remember a serial seen in a USB descriptor, to replace it exactly everywhere.

        True when the serial was new, so the caller knows to store its
        ``serial_entry``; a serial under 6 characters is ignored.
        """
        key = serial.strip().upper()
        if len(key) < _MIN_LEARNED_CHARS:
            return False
        with self._lock:
            if key in self._learned[0]:
                return False
            learned = dict(self._learned[0])
            learned[key] = self.masked_serial(key)
            alternatives = sorted(learned, key=len, reverse=True)  # longest first
            pattern = re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)
            self._learned = (learned, pattern)
        return True

    def masked_serial(self, serial: str) -> str:
        return f"[serial:{self._digest(serial)[:8]}]"

    def scrub_text(self, text: str) -> str:
        # A placeholder can expose a new match (a user name that ended "alice/x"
        # becomes "[user]/x", a path), so passes repeat until nothing changes.
        # Every change turns unmasked text into placeholders, so this ends.
        clean_runs: set[str] = set()  # searched for known serials in vain: not again
        while True:
            scrubbed = self._scrub_once(text, clean_runs)
            if scrubbed == text:
                return text
            text = scrubbed

    def scrub_serials(self, text: str) -> str:
        """Only serials: learned ones, known digests, then serial-shaped tokens.

        For the daemon's own log lines, whose paths and host names are the
        admin's to read; device texts and the report use ``scrub_text``.
        """
        return self._scrub_serials(text, set())

    def _scrub_once(self, text: str, clean_runs: set[str]) -> str:
        # Structural identifiers first, on the raw text: a serial placeholder
        # inside a path would cut it in two and leave the file name in clear.
        for pattern, repl in _STRUCTURAL:
            text = _outside(pattern, repl, text)
        text = self._scrub_serials(text, clean_runs)
        for pattern, placeholder in self._local_names:
            text = _outside(pattern, placeholder, text)
        return text

    def _scrub_serials(self, text: str, clean_runs: set[str]) -> str:
        learned, learned_re = self._learned
        if learned_re is not None:
            text = _outside(learned_re, lambda m: learned[m.group().upper()], text)
        if self._known_runs is not None:
            text = _outside(self._known_runs, lambda m: self._mask_known(m, clean_runs), text)
        parts = _UUID.split(text)  # odd items are UUIDs
        for i in range(0, len(parts), 2):
            parts[i] = _outside(SERIAL_PATTERN, "[serial]", parts[i])
        return "".join(parts)

    def _mask_known(self, match: re.Match, clean_runs: set[str]) -> str:
        """A run of letters and digits with every known serial in it masked."""
        run = match.group()
        if run in clean_runs:
            return run
        out, end = [], 0
        for start, length, digest in self._known_spans(run):
            clean_runs.add(run[end:start])  # every window in it was searched already
            out += [run[end:start], f"[serial:{digest.hex()[:8]}]"]
            end = start + length
        clean_runs.add(run[end:])
        return "".join(out) + run[end:]

    def _known_spans(self, run: str) -> list[tuple[int, int, bytes]]:
        """``(start, length, device id)`` of the known serials in ``run``, left to right."""
        hits = self._known_hits(run.upper().encode())
        spans, end = [], 0
        for start in sorted(hits):
            if start >= end:  # of two overlapping hits the first wins
                length, digest = hits[start]
                spans.append((start, length, digest))
                end = start + length
        return spans

    def _known_hits(self, key: bytes) -> dict[int, tuple[int, bytes]]:
        """Where known serials start in ``key``: one keyed digest per window."""
        hits: dict[int, tuple[int, bytes]] = {}
        new_mac = self._keyed.copy  # the keyed pads are hashed once, not per window
        for length, digests in self._known:  # longest first: at one start, it wins
            for start in range(len(key) - length + 1):
                mac = new_mac()
                mac.update(key[start : start + length])
                digest = mac.digest()[: DEVICE_ID_HEX // 2]
                if digest in digests:
                    hits.setdefault(start, (length, digest))
        return hits

    def scrub(self, obj):
        """A scrubbed copy of ``obj``: dict keys and values, lists, tuples and sets."""
        if isinstance(obj, str):
            return self.scrub_text(obj)
        if obj is None or isinstance(obj, bool | int | float):
            return obj
        if isinstance(obj, dict):
            return self._scrub_dict(obj)
        if isinstance(obj, list | tuple | set | frozenset):
            return type(obj)(self.scrub(item) for item in obj)
        if isinstance(obj, bytes | bytearray):
            return self.scrub_text(bytes(obj).decode("utf-8", "replace"))
        # Anything else could print a serial; its text is all that leaves.
        return self.scrub_text(str(obj))

    def _scrub_dict(self, obj: dict) -> dict:
        out = {}
        for key, value in obj.items():
            new_key = self.scrub(key)
            if new_key in out:  # two serials masked to the same key: keep both values
                n = 2
                while f"{new_key} ({n})" in out:
                    n += 1
                new_key = f"{new_key} ({n})"
            out[new_key] = self.scrub(value)
        return out


def _known_table(pairs: Iterable[tuple[int, str]]) -> tuple[tuple[int, frozenset[bytes]], ...]:
    """``(length, device ids as bytes)`` groups, longest first."""
    by_length: dict[int, set[bytes]] = {}
    for length, device_id in pairs:
        device_id = str(device_id).lower()
        if not _DEVICE_ID.fullmatch(device_id):
            # The value is not shown: a serial passed here by mistake would be logged.
            raise ValueError("a known serial's device id must be 16 hex digits (serial_entry)")
        if int(length) >= _MIN_LEARNED_CHARS:
            by_length.setdefault(int(length), set()).add(bytes.fromhex(device_id))
    return tuple((n, frozenset(ids)) for n, ids in sorted(by_length.items(), reverse=True))


def _outside(pattern: re.Pattern, repl, text: str) -> str:
    """``pattern.sub`` applied only to the text between existing placeholders."""
    parts = _PLACEHOLDER.split(text)
    for i in range(0, len(parts), 2):
        if parts[i]:
            parts[i] = pattern.sub(repl, parts[i])
    return "".join(parts)


def _url(match: re.Match) -> str:
    text = match.group()
    url = text.rstrip(_URL_TAIL)
    return "[url]" + text[len(url) :]


def _relative_path_or_same(match: re.Match) -> str:
    """``./x``, ``../x``, three or more segments, or two whose last is a file name.

    Two segments without a file name are units and pairs ("MB/s", "TCP/IP",
    "1/2"), and segments without a letter are dates or ratios ("2024/05/17").
    """
    text = match.group()
    path = text.rstrip(".")  # a full stop after a path ends the sentence
    segments = _SEPARATOR.split(path)
    if (
        segments[0] in (".", "..")
        or (len(segments) >= 3 and _LETTER.search(path))
        or _is_file_name(segments[-1])
    ):
        return "[path]" + text[len(path) :]
    return text


def _ipv6_or_same(match: re.Match) -> str:
    """``[ip]`` for a real address; a colon or port after it survives.

    The candidate pattern also matches times such as "22:57:32", and the tail
    of a longer chain of groups, which is no address: masking it would expose
    the next tail to the next pass, and a long chain would take quadratic time.
    """
    if _GROUP_BEFORE.search(match.string, max(0, match.start() - 6), match.start()):
        return match.group()
    address = match.group(1)
    if _is_ipv6(address):
        return "[ip]"
    head, colon, port = address.rpartition(":")  # "::1: refused", "...:0001:8080"
    if not match.group(2) and _is_ipv6(head):
        return f"[ip]{colon}{port}"
    return match.group()


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _host_or_same(match: re.Match) -> str:
    labels = match.group().split(".")
    if len(labels) == 2 and labels[1].lower() in _DATA_EXTENSIONS:
        return match.group()  # "data.csv": the file pass masks it
    return "[host]"


def _file_or_same(match: re.Match) -> str:
    if _ABBREVIATION.fullmatch(match.group()) and match.string.startswith(".", match.end()):
        return match.group()  # "e.g.", "i.e."
    return "[file]" if _is_file(match["name"], match["ext"]) else match.group()


def _is_file_name(text: str) -> bool:
    match = _FILE_NAME.fullmatch(text)
    return match is not None and _is_file(match["name"], match["ext"])


def _is_file(name: str, ext: str) -> bool:
    # A NAME of digits alone is a number ("1.30", "3.x"), unless EXT says data.
    return _LETTER.search(name) is not None or ext.lower() in _DATA_EXTENSIONS


# The structural passes in order: URLs before the paths and hosts inside them,
# paths before the e-mail, addresses and file names inside them, IPv6 before
# IPv4 ("::ffff:10.0.0.1"), host names before file names.
_STRUCTURAL = (
    (_URL, _url),
    (_PATHS, "[path]"),
    (_RELATIVE_PATH, _relative_path_or_same),
    (_EMAIL, "[email]"),
    (_MAC, "[mac]"),
    (_IPV6_CANDIDATE, _ipv6_or_same),
    (_IPV4, "[ip]"),
    (_HOST, _host_or_same),
    (_FILE, _file_or_same),
)


def _words_pattern(names: Iterable[str]) -> re.Pattern | None:
    words = {n.strip() for n in names if n and len(n.strip()) >= _MIN_NAME_CHARS}
    if not words:
        return None
    alternatives = "|".join(map(re.escape, sorted(words, key=len, reverse=True)))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def discover_hostnames() -> set[str]:
    """This machine's name and its first label.

    No ``getfqdn()``: it asks DNS, which on a lab PC with a broken resolver
    would hold up the daemon's start for seconds.
    """
    names = set()
    try:
        name = socket.gethostname()
    except OSError:
        return names
    names.update((name, name.split(".", 1)[0]))
    return names - {"localhost", "localhost.localdomain"}


def discover_usernames() -> set[str]:
    """The current user's names and every local account of a person (uid >= 1000)."""
    names = {os.environ.get(v, "") for v in ("USER", "LOGNAME", "SUDO_USER")}
    try:
        names.add(getpass.getuser())
    except (OSError, KeyError):
        pass
    try:
        names.update(p.pw_name for p in pwd.getpwall() if 1000 <= p.pw_uid < 65534)
    except OSError:
        pass
    return {n for n in names if n and n != "root"} - _NOT_IDENTIFYING_USERS


class MaskingLogFilter(logging.Filter):
    """Scrubs every record a handler writes, tracebacks included."""

    def __init__(self, masker: Masker):
        super().__init__()
        self._masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{logging.Formatter().formatException(record.exc_info)}"
        elif record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{record.stack_info}"
        record.msg = self._masker.scrub_serials(text)
        record.args = None
        record.exc_info = record.exc_text = record.stack_info = None
        return True
