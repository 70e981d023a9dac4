"""Helpers for the checks of the systemd unit, sysusers entry, udev rule and installer."""

import os
import shutil

import pytest


def need(tool: str) -> str:
    """The path of ``tool``; skips with the reason if missing, but fails under CI=true."""
    path = shutil.which(tool)
    if path:
        return path
    reason = f"{tool} not found: apt-get install systemd"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run this check, not skip it)")
    pytest.skip(reason)
