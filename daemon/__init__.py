"""tagstat: usage statistics for Swabian Time Tagger instruments.

The public API mirrors the vendor's names and values. The calls talk to the
running ``tagstatd`` over its control socket; importing this package is cheap
and opens nothing.
"""

from tagstat.status import UsageStatisticsStatus

__version__ = "0.1.0"

__all__ = [
    "UsageStatisticsStatus",
    "getUsageStatisticsReport",
    "getUsageStatisticsStatus",
    "record_measurement",
    "setUsageStatisticsStatus",
    "track_measurement",
    "__version__",
]


def __getattr__(name):
    # The client module pulls in socket/json only when a call is made.
    if name in ("getUsageStatisticsReport", "getUsageStatisticsStatus", "setUsageStatisticsStatus"):
        from tagstat import client

        return getattr(client, name)
    # Applications import tagstat to report measurements: load that part only when used.
    if name in ("track_measurement", "record_measurement"):
        from tagstat import measurements

        globals()[name] = value = getattr(measurements, name)  # later calls skip this hook
        return value
    raise AttributeError(f"module 'tagstat' has no attribute {name!r}")
