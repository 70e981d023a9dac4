"""Logging for tagstatd: readable lines, masked, and the daemon's own warnings kept.

Under systemd (``JOURNAL_STREAM`` names the device and inode of our stderr)
lines go to stderr with a journald priority prefix (``<3>`` error, ``<4>``
warning, ``<6>`` info, ``<7>`` debug) and no timestamp, since the journal
stamps each entry itself; otherwise they are readable lines with a time.
Every handler carries the masking filter, the last line of defence against a
serial reaching a log. The daemon's own warnings stay in the log: the report
only counts them (``tagstat.daemon_counters``).
"""

import logging
import os
import sys

from tagstat.masking import MaskingLogFilter

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
# syslog priorities (sd-daemon.h): what journald reads from a "<N>" line prefix
_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def under_journald(stream=None, env=None) -> bool:
    """True if ``stream`` is the journal stream systemd gave us (not a redirect)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalFormatter(logging.Formatter):
    """Each line (tracebacks too) prefixed with the record's journald priority."""

    def __init__(self):
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def formatter_for(stream=None) -> logging.Formatter:
    return JournalFormatter() if under_journald(stream) else logging.Formatter(HUMAN_FORMAT)


def early_logging(level: str = "INFO") -> None:
    """Logging before the install secret (and so masking) exists: nothing device-related."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(sys.stderr))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def setup_logging(masker, level: str = "INFO", stream=None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(handler.stream))
    mask = MaskingLogFilter(masker)
    handler.addFilter(mask)
    root.addHandler(handler)
    root.setLevel(level.upper())
