"""Measurement events on the daemon's side: check what arrives, decide its status, summarise.

Applications send measurement events over the control socket
(``record_measurements``). The daemon trusts none of it: ``validate`` rebuilds
each event from the allowlists in ``tagstat.measurement_schema`` and drops
events whose stamps are not plausible; ``lowest_status`` stores an event under
the lowest status in force at any moment between its start and its arrival, so
a measurement that ran before consent to upload can never be uploaded, and one
that overlapped ``Disabled`` is not kept at all; ``summarize`` turns the stored
events into the report's ``measurements[]``: per measurement type the count,
total duration, errors by class, indicator min/median/max and the distinct
configuration values seen.
"""

import dataclasses
import datetime as dt
import json
import statistics
from collections import Counter, defaultdict

from tagstat import measurement_schema as schema

MAX_EVENTS_PER_REQUEST = 1000  # the 64 KiB request limit allows fewer anyway
MAX_CONFIG_VALUES = 20  # distinct values listed per configuration key, most frequent first
CLOCK_SKEW_S = 300.0  # an event may end this far after its arrival (same host: slack only)
_MAX_STAMP_CHARS = 40


@dataclasses.dataclass(frozen=True)
class MeasurementEvent:
    """One finished measurement, already minimised."""

    type: str  # an allowlisted class name, or "Other"
    start: dt.datetime
    end: dt.datetime
    duration_s: float
    error: str | None  # the exception class name; None when it succeeded
    config: dict
    indicators: dict


def validate(raw_events: list, now: dt.datetime) -> tuple[list[MeasurementEvent], int]:
    """The acceptable events among ``raw_events``, and how many were refused.

    Too many events in one request is the sender's bug and raises ValueError.
    """
    if len(raw_events) > MAX_EVENTS_PER_REQUEST:
        raise ValueError(
            f"too many measurement events in one request "
            f"({len(raw_events)} > {MAX_EVENTS_PER_REQUEST})"
        )
    events = [_event(raw, now) for raw in raw_events]
    accepted = [e for e in events if e is not None]
    return accepted, len(events) - len(accepted)


def _event(raw, now: dt.datetime) -> MeasurementEvent | None:
    if not isinstance(raw, dict):
        return None
    start, end = _stamp(raw.get("start")), _stamp(raw.get("end"))
    if start is None or end is None or end < start:
        return None
    if (end - now).total_seconds() > CLOCK_SKEW_S:
        return None
    span_s = (end - start).total_seconds()
    duration_s = schema.duration(raw.get("duration_s"))
    if duration_s is None or duration_s > span_s + 1.0:
        duration_s = schema.duration(span_s)
    if duration_s is None:
        return None
    error = raw.get("error")
    return MeasurementEvent(
        type=schema.measurement_type(raw.get("type")),
        start=start,
        end=end,
        duration_s=duration_s,
        error=None if error is None else schema.error_class(error),
        config=schema.config(raw.get("config")),
        indicators=schema.indicators(raw.get("indicators")),
    )


def _stamp(value) -> dt.datetime | None:
    """An ISO 8601 stamp with a time zone, in UTC; None for anything else."""
    if not isinstance(value, str) or len(value) > _MAX_STAMP_CHARS:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None  # a local time would be misread by the hours of the UTC offset
    return stamp.astimezone(dt.UTC)


def lowest_status(start: dt.datetime, changes, current: int) -> int:
    """The lowest status in force at any time from ``start`` until now.

    ``changes`` are the recorded status changes (``StatusChange``), oldest first.
    """
    lowest_at_start = None
    lowest = int(current)
    for change in changes:
        if change.at <= start:
            lowest_at_start = change.new  # the last change at or before the start is in force
            continue
        # Both sides of a later change were in force within the span.
        before = change.new if change.old is None else change.old
        lowest = min(lowest, change.new, before)
    return min(lowest, lowest_at_start) if lowest_at_start is not None else lowest


def summarize(events: list[MeasurementEvent]) -> list[dict]:
    """The report's ``measurements[]``: one entry per type, in name order."""
    by_type: dict[str, list[MeasurementEvent]] = defaultdict(list)
    for event in events:
        by_type[event.type].append(event)
    return [_entry(name, group) for name, group in sorted(by_type.items())]


def _entry(name: str, events: list[MeasurementEvent]) -> dict:
    errors = Counter(e.error for e in events if e.error is not None)
    return {
        "type": name,
        "count": len(events),
        "total_duration_s": round(sum(e.duration_s for e in events), 3),
        "errors": dict(sorted(errors.items())),
        "indicators": _indicator_stats(events),
        "config": _config_values(events),
    }


def _indicator_stats(events: list[MeasurementEvent]) -> dict:
    values: dict[str, list[float]] = defaultdict(list)
    for event in events:
        for key, value in event.indicators.items():
            values[key].append(value)
    return {
        key: {"min": min(vs), "median": schema.number(statistics.median(vs)), "max": max(vs)}
        for key, vs in sorted(values.items())
    }


def _config_values(events: list[MeasurementEvent]) -> dict:
    # Count by JSON text, so that True, 1 and 1.0 stay distinct values.
    counts: dict[str, Counter] = defaultdict(Counter)
    for event in events:
        for key, value in event.config.items():
            counts[key][json.dumps(value)] += 1
    return {
        key: [
            {"value": json.loads(text), "count": n}
            for text, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[
                :MAX_CONFIG_VALUES
            ]
        ]
        for key, counter in sorted(counts.items())
    }
