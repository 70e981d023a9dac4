"""What the report says about a device's calibration: a fleet view that no unit can be told by.

A Time Tagger's calibration table (per-channel delays and offsets, a reference
clock offset, a date) is as particular to one unit as its serial: two installs
that saw the same unit would send the same values, and could be linked. The raw
table stays on this computer (``tagstat devices --calibration``). The report
carries only:

- ``status``: the table's own status word ("OK"), or ``other`` if it is not a
  short word;
- ``age_days``: the table's age in days, in steps of 30 days, counted from
  its date moved back by 0 to 29 days, a keyed offset per device and install;
  so the day on which the step changes does not reveal the date either;
- ``channels``: how many channels the table describes;
- ``quantities``: for each numeric quantity of the per-channel entries (at most
  16), the median over the channels, kept to one significant digit of the
  quantity's largest magnitude on any channel (delays of 1,003 to 1,229 ps give
  a median of 1,000; offsets of -30 to +30 ps a median of 0). Such a figure
  says whether a table is sane, but most units of one model share it: over
  3,000 simulated units per model, the most common summary covers 65–84 % of
  them and the rarest still more than 1 % (``tests/daemon/test_calibration.py``).

Scalars outside the channel table (a reference clock's offset, say) are
unit-specific and are left out. ``summarize`` runs where the table enters
(``tagstat.poller``), on the masked table; ``report_view`` adds the age when
a report is built.
"""

import datetime as dt
import math
import re
import statistics

AGE_STEP_DAYS = 30
MAX_QUANTITIES = 16
MAX_KEY_CHARS = 40
_STATUS_WORD = re.compile(r"[A-Za-z][A-Za-z0-9 _-]{0,23}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def summarize(table: dict, age_offset_days: int) -> dict:
    """The summary of a (masked) calibration table, as stored; ``report_view`` shows it."""
    if not isinstance(table, dict):
        return {}
    entries = _channel_entries(table)
    return {
        "status": _status(table),
        "age_origin": _origin(table, age_offset_days),
        "channels": len(entries),
        "quantities": _quantities(entries),
    }


def report_view(summary: dict, now: dt.datetime) -> dict | None:
    """The report's ``devices[].calibration``: status, age in days, channels, quantities."""
    if not summary:
        return None
    return {
        "status": summary.get("status"),
        "age_days": _age_days(summary.get("age_origin"), now),
        "channels": summary.get("channels", 0),
        "quantities": summary.get("quantities", {}),
    }


def _status(table: dict) -> str | None:
    for key, value in table.items():
        if str(key).lower() in ("status", "state"):
            text = str(value).strip()
            return text if _STATUS_WORD.fullmatch(text) else "other"
    return None


def _origin(table: dict, offset_days: int) -> str | None:
    """The table's date moved back by the keyed offset (ISO date), or None without a date."""
    for key, value in table.items():
        if "date" in str(key).lower() and isinstance(value, str):
            found = _DATE.match(value.strip())
            if found:
                try:
                    day = dt.date.fromisoformat(found.group())
                except ValueError:
                    continue
                return (day - dt.timedelta(days=offset_days % AGE_STEP_DAYS)).isoformat()
    return None


def _age_days(origin, now: dt.datetime) -> int | None:
    if not isinstance(origin, str):
        return None
    try:
        days = (now.date() - dt.date.fromisoformat(origin)).days
    except ValueError:
        return None
    return max(0, days) // AGE_STEP_DAYS * AGE_STEP_DAYS


def _channel_entries(table: dict) -> list[dict]:
    """The largest collection (a dict or list, anywhere in the table) of per-channel dicts."""
    best: list[dict] = []
    stack = [table]
    while stack:
        node = stack.pop()
        items = list(node.values()) if isinstance(node, dict) else node
        entries = [v for v in items if isinstance(v, dict)]
        if len(entries) > len(best) and len(entries) == len(items) and len(entries) > 1:
            best = entries
        stack.extend(v for v in items if isinstance(v, dict | list))
    return best


def _quantities(entries: list[dict]) -> dict:
    values: dict[str, list[float]] = {}
    for entry in entries:
        for key, value in entry.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                if math.isfinite(value):
                    values.setdefault(str(key)[:MAX_KEY_CHARS], []).append(float(value))
    return {key: _rounded(vs) for key, vs in sorted(values.items())[:MAX_QUANTITIES]}


def _rounded(values: list[float]) -> dict:
    largest = max(abs(v) for v in values)
    step = 10.0 ** math.floor(math.log10(largest)) if largest > 0 else 1.0
    return {"median": _number(round(statistics.median(values) / step) * step)}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(f"{value:.3g}")
