"""Kill switches: environment variables that turn tagstat off, whatever is stored.

``TAGSTAT_DISABLE`` and the common ``DO_NOT_TRACK`` switch tagstat off when
set to anything but the empty string, ``0`` or ``false``. In tagstatd's
environment they make the daemon's effective status ``Disabled`` (the stored
status is kept, so removing the switch restores it); in an application's or
the CLI's environment they make that process see ``Disabled``, refuse to
switch collection on, and send no measurement events. A continuous-integration
environment (``CI_VARIABLES``) does the same to tagstatd unless its
configuration sets ``allow_in_ci = true``: CI machines run tests, not
experiments, and their usage would only distort the statistics. This module
only reads the environment it is given (the process's own by default) and
imports nothing heavy: the application-side measurement API checks it on
every call.
"""

import dataclasses
import os
import re
from collections.abc import Mapping

from tagstat.errors import TagstatError

# In order of precedence: the first one set is the one reported.
SWITCHES = ("TAGSTAT_DISABLE", "DO_NOT_TRACK")
# Set by the well-known CI services (each documents it as always set in its jobs).
# Deliberately short: a generic name such as BUILD_NUMBER is set by too much else.
CI_VARIABLES = (
    "CI",  # GitHub Actions, GitLab, Travis, CircleCI, Buildkite, Woodpecker, ...
    "CONTINUOUS_INTEGRATION",  # Travis, AppVeyor
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE",
    "CIRCLECI",
    "TRAVIS",
    "JENKINS_URL",  # Jenkins
    "TEAMCITY_VERSION",  # TeamCity
    "TF_BUILD",  # Azure Pipelines
)
_OFF_VALUES = ("", "0", "false")
# A value shown as is ("DO_NOT_TRACK=1"); anything else (a CI URL can name a host) is
# only said to be set.
_SHOWABLE = re.compile(r"[A-Za-z0-9_.-]{1,16}")
WHERE = {"daemon": "tagstatd's environment", "client": "this program's environment"}


class KillSwitchOn(TagstatError):
    """A collecting status was asked for while a kill switch is in force."""


@dataclasses.dataclass(frozen=True)
class Switch:
    """One kill switch in force: the variable, its value if harmless to show, and where."""

    variable: str
    value: str | None
    kind: str  # "disable" (TAGSTAT_DISABLE, DO_NOT_TRACK) or "ci"
    where: str  # "daemon" or "client"

    @property
    def setting(self) -> str:
        """``DO_NOT_TRACK=1``, or ``JENKINS_URL`` for a value not worth repeating."""
        return f"{self.variable}={self.value}" if self.value is not None else self.variable

    def reason(self) -> str:
        """Why collection is off, as a clause: 'forced by DO_NOT_TRACK=1 in ...'."""
        text = f"forced by {self.setting} in {WHERE[self.where]}"
        if self.kind == "ci":
            text += " (a CI environment; allow_in_ci = true in the configuration permits it)"
        return text

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "setting": self.setting, "reason": self.reason()}

    @classmethod
    def from_dict(cls, raw) -> "Switch | None":
        """A switch reported by tagstatd; None for anything that is not one."""
        if not isinstance(raw, dict) or not isinstance(raw.get("variable"), str):
            return None
        value = raw.get("value") if isinstance(raw.get("value"), str) else None
        kind = raw.get("kind") if raw.get("kind") in ("disable", "ci") else "disable"
        return cls(raw["variable"][:64], value, kind, "daemon")


def _is_set(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _OFF_VALUES


def _switch(env: Mapping[str, str], names, kind: str, where: str) -> Switch | None:
    for name in names:
        value = env.get(name)
        if _is_set(value):
            shown = value.strip()
            return Switch(name, shown if _SHOWABLE.fullmatch(shown) else None, kind, where)
    return None


def active(env: Mapping[str, str] | None = None) -> str | None:
    """The name of the first kill switch set in ``env``, or None when none is."""
    env = os.environ if env is None else env
    switch = _switch(env, SWITCHES, "disable", "client")
    return switch.variable if switch else None


def describe(env: Mapping[str, str] | None = None) -> str | None:
    """A sentence saying which switch is in force, or None when none is."""
    name = active(env)
    if name is None:
        return None
    return f"{name} is set in the environment, so tagstat is off for this process"


def client_switch(env: Mapping[str, str] | None = None) -> Switch | None:
    """The switch that turns tagstat off for this (client) process, if any.

    CI variables do not count here: whether CI disables tagstat is the daemon's
    configuration (``allow_in_ci``), and only the daemon reads it.
    """
    return _switch(os.environ if env is None else env, SWITCHES, "disable", "client")


def daemon_switch(env: Mapping[str, str] | None = None, *, allow_in_ci: bool) -> Switch | None:
    """The switch that forces tagstatd to ``Disabled``, if any; the hard ones first."""
    env = os.environ if env is None else env
    found = _switch(env, SWITCHES, "disable", "daemon")
    if found is None and not allow_in_ci:
        found = _switch(env, CI_VARIABLES, "ci", "daemon")
    return found


def refusal(switch: Switch, status_name: str) -> KillSwitchOn:
    """The error for asking for a collecting status while ``switch`` is in force."""
    if switch.where == "client":
        fix = f"unset {switch.variable} (or set it to 0) in this environment"
    elif switch.kind == "ci":
        fix = "set allow_in_ci = true in tagstatd's configuration and reload it"
    else:
        fix = f"remove {switch.variable} from tagstatd's environment and restart tagstatd"
    return KillSwitchOn(
        f"cannot set {status_name}: tagstat is Disabled, {switch.reason()}; "
        f"the status was not changed. To collect, {fix}"
    )
