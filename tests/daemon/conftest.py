"""Unit and in-process tests run without tagstat's kill switches in the environment.

The project's own CI sets CI=true, and a developer may have DO_NOT_TRACK=1: either would
force every in-process tagstatd service to Disabled (tagstat.killswitch). Tests of the
switches set them explicitly with monkeypatch.
"""

import pytest

from tagstat import killswitch


@pytest.fixture(autouse=True)
def _no_kill_switches(monkeypatch):
    for name in (*killswitch.SWITCHES, *killswitch.CI_VARIABLES):
        monkeypatch.delenv(name, raising=False)
