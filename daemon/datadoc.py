"""docs/DATA.md as data: the one description of what tagstat collects, read at run time.

The package carries DATA.md itself (``daemon/DATA.md`` is a symlink to
``docs/DATA.md``; a wheel holds its text), so the consent prompt, ``tagstat
explain`` and the documentation can never disagree: this module reads the
report's field table (path, since, what, why), the status table and any
section, and turns Markdown into plain terminal text. Nothing here is cached
across processes; a parse is a few milliseconds.
"""

import dataclasses
import functools
import importlib.resources
import re

_ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \|(.*)\|$", re.M)  # a cell holds no "|"
_STATUS_ROW = re.compile(r"^\| `(\w+)` \| (\d)[^|]* \| (.*?) \| (.*?) \|$", re.M)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


@dataclasses.dataclass(frozen=True)
class FieldRow:
    path: str
    since: int
    what: str
    why: str


@functools.cache
def text() -> str:
    """The shipped DATA.md."""
    return importlib.resources.files("tagstat").joinpath("DATA.md").read_text(encoding="utf-8")


def section(title: str, doc: str | None = None) -> str:
    """The body of the ``##``/``###`` section called ``title``, up to the next heading."""
    doc = text() if doc is None else doc
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", doc, re.M | re.S)
    if match is None:
        raise KeyError(f"DATA.md has no section {title!r}")
    return match.group(1).strip()


def field_rows(doc: str | None = None) -> dict[str, FieldRow]:
    """The report's fields (the table of "The report"), by path, in document order."""
    table = section("The report", doc)
    rows = {}
    for m in _ROW.finditer(table):
        what, why = ([*m[3].split("|"), ""])[:2]
        rows[m[1]] = FieldRow(m[1], int(m[2]), plain(what), plain(why))
    return rows


def status_rows(doc: str | None = None) -> dict[str, tuple[str, str]]:
    """Status name -> (what is collected, what is uploaded), from the status table."""
    table = section("The status decides what happens", doc)
    return {m[1]: (plain(m[3]), plain(m[4])) for m in _STATUS_ROW.finditer(table)}


def plain(markdown: str) -> str:
    """Markdown inline text as terminal text: no backticks, bold or link targets."""
    out = _LINK.sub(r"\1", markdown).replace("`", "").replace("**", "")
    return out.strip()


def paragraphs(markdown: str) -> list[str]:
    """Plain paragraphs (list items kept apart), each joined onto one line."""
    blocks = re.split(r"\n\s*\n|\n(?=- )", markdown.strip())
    return [plain(" ".join(line.strip() for line in b.splitlines())) for b in blocks if b.strip()]
