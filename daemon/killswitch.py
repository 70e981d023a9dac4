"""Kill switches: environment variables that turn tagstat off for one process.

``TAGSTAT_DISABLE`` and the common ``DO_NOT_TRACK`` switch tagstat off when
set to anything but the empty string or ``0``. They always win over the
stored status. This module only reads the environment it is given (the
process's own by default), so the application-side API, the daemon and the
CLI can all ask the same question. It imports nothing heavy: the
application-side measurement API checks it on every call.
"""

import os
from collections.abc import Mapping

# In order of precedence: the first one set is the one reported.
SWITCHES = ("TAGSTAT_DISABLE", "DO_NOT_TRACK")
_OFF_VALUES = ("", "0")


def active(env: Mapping[str, str] | None = None) -> str | None:
    """The name of the first kill switch set in ``env``, or None when none is."""
    env = os.environ if env is None else env
    for name in SWITCHES:
        value = env.get(name)
        if value is not None and value.strip() not in _OFF_VALUES:
            return name
    return None


def describe(env: Mapping[str, str] | None = None) -> str | None:
    """A sentence saying which switch is in force, or None when none is."""
    name = active(env)
    if name is None:
        return None
    return f"{name} is set in the environment, so tagstat is off for this process"
