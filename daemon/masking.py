"""Masking: where device data enters, serial numbers and identifying text leave.

Invariant 1 of tagstat is that no Time Tagger serial number reaches the disk, a
log line, a report or the network in clear text. A ``Masker`` holds the install
secret and every serial it has seen in a USB descriptor. ``device_id`` turns a
serial into a keyed pseudonym (HMAC-SHA256), stable for one install and useless
elsewhere; ``scrub`` and ``scrub_text`` rewrite whatever the device says before
anything behind the boundary sees it: exact learned serials first, then
anything serial-shaped, then paths, e-mail, IP and MAC addresses, host names and
user names. Placeholders are bracketed (``[serial]``, ``[path]``, ...) and never
rewritten again, so scrubbing is idempotent. ``MaskingLogFilter`` applies the
same rules to every log record as the last line of defence.
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

# The reference pattern is \b\d{4}[0-9A-Z]{6}\b. Ours is a superset: "_" and
# non-ASCII letters count as separators, so "1809000LGG_run3.ttbin" is caught too.
SERIAL_PATTERN = re.compile(r"(?<![0-9A-Za-z])\d{4}[0-9A-Z]{6}(?![0-9A-Za-z])")

_MIN_NAME_CHARS = 3
_MIN_LEARNED_CHARS = 6  # a shorter "serial" would erase ordinary digits everywhere
_NOT_IDENTIFYING_USERS = frozenset({"nobody", "nfsnobody"})

# Placeholders this module writes; text inside them is never scrubbed again.
_PLACEHOLDER = re.compile(r"(\[(?:serial(?::[0-9a-f]{8})?|path|email|ip|mac|host|user)\])")

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
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\w|\.\d)"
)
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])((?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?)"
    r"(%[\w.-]+)?(?![\w:])"
)
_MAC = re.compile(
    r"(?<![\w:-])[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}(?![\w:-])"
)


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
    ):
        if len(secret) < 16:
            raise ValueError("the masking secret must be at least 16 bytes")
        self._secret = bytes(secret)
        self._lock = threading.Lock()
        self._learned: dict[str, str] = {}  # upper-case serial -> masked form
        self._learned_re: re.Pattern | None = None
        self._hosts_re = _words_pattern(discover_hostnames() if hostnames is None else hostnames)
        self._users_re = _words_pattern(discover_usernames() if usernames is None else usernames)

    def __repr__(self) -> str:
        return f"<Masker with {len(self._learned)} learned serials>"  # never the secret

    def device_id(self, serial: str) -> str:
        """The keyed pseudonym of ``serial``: 16 hex characters of HMAC-SHA256."""
        self.learn(serial)
        return self._digest(serial)

    def _digest(self, serial: str) -> str:
        mac = hmac.new(self._secret, serial.strip().upper().encode(), hashlib.sha256)
        return mac.hexdigest()[:DEVICE_ID_HEX]

    def learn(self, serial: str) -> None:
        """Remember a serial seen in a USB descriptor, to replace it exactly everywhere."""
        key = serial.strip().upper()
        if len(key) < _MIN_LEARNED_CHARS or key in self._learned:
            return
        with self._lock:
            learned = dict(self._learned)
            learned[key] = self.masked_serial(key)
            alternatives = sorted(learned, key=len, reverse=True)  # longest first
            pattern = re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)
            self._learned, self._learned_re = learned, pattern

    def masked_serial(self, serial: str) -> str:
        return f"[serial:{self._digest(serial)[:8]}]"

    def scrub_text(self, text: str) -> str:
        # A placeholder can expose a new match (a user name that ended "alice/x"
        # becomes "[user]/x", a path), so passes repeat until nothing changes.
        # Every change turns unmasked text into placeholders, so this ends.
        while True:
            scrubbed = self._scrub_once(text)
            if scrubbed == text:
                return text
            text = scrubbed

    def scrub_serials(self, text: str) -> str:
        """Only serials: learned ones exactly, then serial-shaped tokens.

        For the daemon's own log lines, whose paths and host names are the
        admin's to read; device texts and the report use ``scrub_text``.
        """
        learned, learned_re = self._learned, self._learned_re
        if learned_re is not None:
            text = _outside(learned_re, lambda m: learned[m.group().upper()], text)
        return _outside(SERIAL_PATTERN, "[serial]", text)

    def _scrub_once(self, text: str) -> str:
        text = self.scrub_serials(text)
        text = _outside(_PATHS, "[path]", text)
        text = _outside(_EMAIL, "[email]", text)
        text = _outside(_MAC, "[mac]", text)
        text = _outside(_IPV4, "[ip]", text)
        text = _outside(_IPV6_CANDIDATE, _ipv6_or_same, text)
        if self._hosts_re is not None:
            text = _outside(self._hosts_re, "[host]", text)
        if self._users_re is not None:
            text = _outside(self._users_re, "[user]", text)
        return text

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


def _outside(pattern: re.Pattern, repl, text: str) -> str:
    """``pattern.sub`` applied only to the text between existing placeholders."""
    parts = _PLACEHOLDER.split(text)
    for i in range(0, len(parts), 2):
        if parts[i]:
            parts[i] = pattern.sub(repl, parts[i])
    return "".join(parts)


def _ipv6_or_same(match: re.Match) -> str:
    # The candidate pattern also matches times such as "22:57:32"; only real
    # addresses are replaced.
    try:
        ipaddress.IPv6Address(match.group(1))
    except ValueError:
        return match.group()
    return "[ip]"


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
