"""Log lines: journald priority prefixes under systemd, readable lines otherwise."""

import io
import logging
import os

import pytest

from tagstat.logsetup import JournalFormatter, under_journald


def record(level: int, msg: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("tagstat.x", level, __file__, 1, msg, (), exc_info)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"),
     (logging.ERROR, "<3>"), (logging.CRITICAL, "<3>")],
)  # fmt: skip
def test_each_level_gets_its_journald_priority(level, prefix):
    assert JournalFormatter().format(record(level, "hello")) == f"{prefix}tagstat.x: hello"


def test_every_line_of_a_traceback_keeps_the_priority():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        text = JournalFormatter().format(record(logging.ERROR, "failed", sys.exc_info()))
    lines = text.splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_journal_stream_must_match_our_stderr(tmp_path):
    with open(tmp_path / "err", "w") as f:
        st = os.fstat(f.fileno())
        assert under_journald(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        # inherited by a process whose stderr was redirected elsewhere: not the journal
        assert not under_journald(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not under_journald(f, {"JOURNAL_STREAM": "garbage"})
        assert not under_journald(f, {})
    assert not under_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})
