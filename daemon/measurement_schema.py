"""What a measurement event may hold: the allowlists and the functions that enforce them.

Applications tell tagstat which Time Tagger measurements they run. What they
send is minimised twice with the same functions: by the application before
anything leaves its process (``tagstat.measurements``), and again by the daemon
on whatever arrives over the socket, which it never trusts
(``tagstat.measurement_data``). A measurement type outside the allowlist
becomes ``Other``; an exception class name that does not look like one becomes
``Exception``; configuration keeps only allowlisted keys whose values are
numbers, booleans or, for enumerated settings, one of the listed names, so free
text, paths, serial numbers and nested objects never pass. Numbers are kept to
four significant digits, so not even a number can carry an identifier whole.
``docs/DATA.md`` lists every name here, and a test checks that it does.
"""

import math
import numbers
import re
import sys
from collections.abc import Mapping

OTHER_TYPE = "Other"
GENERIC_ERROR = "Exception"

# Time Tagger measurement class names (the vendor's Python API).
MEASUREMENT_TYPES = frozenset(
    {
        "Coincidence", "Coincidences", "Combiner", "ConstantFractionDiscriminator",
        "CountBetweenMarkers", "Counter", "Countrate", "Correlation", "CustomMeasurement",
        "DelayedChannel", "Dump", "EventGenerator", "FileWriter", "Flim",
        "FrequencyCounter", "FrequencyStability", "GatedChannel", "Histogram",
        "Histogram2D", "HistogramLogBins", "Sampler", "Scope", "StartStop",
        "SynchronizedMeasurements", "TimeDifferences", "TimeDifferencesND", "TimeTagStream",
        "TriggerOnCountrate",
    }
)  # fmt: skip

# Enumerated settings and the names each may take (the vendor's enum member names).
ENUM_VALUES: dict[str, frozenset[str]] = {
    "resolution": frozenset({"Standard", "HighResA", "HighResB", "HighResC"}),
    "channel_edge": frozenset(
        {
            "All",
            "Rising",
            "Falling",
            "HighResAll",
            "HighResRising",
            "HighResFalling",
            "StandardAll",
            "StandardRising",
            "StandardFalling",
        }
    ),  # fmt: skip
    "coincidence_timestamp": frozenset({"Last", "Average", "First", "ListedFirst"}),
    "tagger": frozenset(
        {"TimeTagger20", "TimeTaggerUltra", "TimeTaggerX", "TimeTaggerVirtual", "TimeTaggerNetwork"}
    ),  # fmt: skip
}

# Numeric or boolean settings (times in picoseconds, as in the vendor's API).
NUMERIC_KEYS = frozenset(
    {
        "channel_count", "binwidth", "binwidth_1", "binwidth_2", "n_bins", "n_bins_1",
        "n_bins_2", "n_values", "n_histograms", "n_max_events", "exp_start", "exp_stop",
        "coincidence_window", "sampling_interval", "fitting_window", "averaging_periods",
        "test_signal",
    }
)  # fmt: skip

CONFIG_KEYS = NUMERIC_KEYS | frozenset(ENUM_VALUES)

# Performance indicators: non-negative numbers, units in the name.
INDICATORS = ("events_processed", "events_per_s", "cpu_time_s", "dropped_events")

SIGNIFICANT_DIGITS = 4
MAX_ABS_NUMBER = 1e18  # beyond any real setting; also keeps integers exact in SQLite
MAX_DURATION_S = 366 * 86400.0

_ERROR_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,80}")
# A run shaped like a serial (the reference pattern is \d{4}[0-9A-Z]{6}), in any case and
# even inside an identifier such as "Err_1740000JEH" or "err1740000jeh".
_SERIAL_SHAPED = re.compile(r"\d{4}[0-9A-Za-z]{6}")


def measurement_type(name) -> str:
    """The name if it is an allowlisted measurement class, else ``Other``."""
    return name if isinstance(name, str) and name in MEASUREMENT_TYPES else OTHER_TYPE


def error_class(name) -> str:
    """An exception class name, or ``Exception`` when it does not look like a plain one."""
    if not isinstance(name, str) or not _ERROR_CLASS.fullmatch(name):
        return GENERIC_ERROR
    return GENERIC_ERROR if _SERIAL_SHAPED.search(name) else name


def number(value) -> int | float | bool | None:
    """A finite number kept to four significant digits, a bool as is, else None.

    Integral and real types other than int and float (numpy scalars, say) are
    converted first; anything else (text, None, containers) is not a number.
    """
    if isinstance(value, bool):
        return value
    try:
        if isinstance(value, numbers.Integral):
            return _integer(int(value))
        if isinstance(value, numbers.Real):
            return _real(float(value))
    except (TypeError, ValueError, OverflowError):
        pass
    return None


def _integer(value: int) -> int | None:
    if abs(value) > MAX_ABS_NUMBER:
        return None
    digits = len(str(abs(value)))
    return value if digits <= SIGNIFICANT_DIGITS else round(value, SIGNIFICANT_DIGITS - digits)


def _real(value: float) -> float | None:
    if not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
        return None
    if abs(value) < sys.float_info.min:
        # a subnormal cannot hold four significant digits exactly: it is zero here
        return 0.0
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def config(raw) -> dict:
    """The allowlisted part of a measurement's configuration."""
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in CONFIG_KEYS:
            continue
        if isinstance(value, str):
            if value in ENUM_VALUES.get(key, ()):
                out[key] = value
            continue
        kept = number(value)
        if kept is not None:
            out[key] = kept
    return out


def indicators(raw) -> dict:
    """The allowlisted performance indicators: non-negative numbers only."""
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for name in INDICATORS:
        value = raw.get(name)
        if isinstance(value, bool):
            continue
        kept = number(value)
        if kept is not None and kept >= 0:
            out[name] = kept
    return out


def duration(value) -> float | None:
    """A duration in seconds, to the millisecond; None when not a plausible one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value <= MAX_DURATION_S:
        return None
    return round(float(value), 3)
