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
    "setUsageStatisticsStatus",
    "__version__",
]


def __getattr__(name):
    # The client module pulls in socket/json only when a call is made.
    if name in ("getUsageStatisticsReport", "getUsageStatisticsStatus", "setUsageStatisticsStatus"):
        from tagstat import client

        return getattr(client, name)
    raise AttributeError(f"module 'tagstat' has no attribute {name!r}")
