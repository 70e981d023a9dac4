"""Fixtures shared by every tier: what tests that run a process as another uid need."""

import os
import subprocess
import sys

import pytest

NOBODY = 65534


@pytest.fixture(scope="session")
def other_uid_python() -> str:
    """A Python interpreter that uid ``nobody`` can run, for clients as another user.

    The venv's ``python`` lies inside the clone, whose parent folders that uid may not
    traverse (a clone in a folder of mode 0700); the interpreter it links to is found
    instead. Clients run with ``-I`` and the standard library only. Skips, saying why,
    when not root or when no interpreter is reachable.
    """
    if os.geteuid() != 0:
        pytest.skip("running a client as another uid needs root")
    candidates = dict.fromkeys(
        [
            os.path.realpath(sys.executable),
            getattr(sys, "_base_executable", ""),
            "/usr/bin/python3",
        ]  # fmt: skip
    )
    tried = []
    for python in (c for c in candidates if c):
        try:
            probe = [python, "-I", "-c", "import json, socket"]
            done = subprocess.run(probe, user=NOBODY, group=NOBODY, cwd="/",
                                  capture_output=True, timeout=30)  # fmt: skip
        except OSError as e:
            tried.append(f"{python}: {e.strerror}")
            continue
        if done.returncode == 0:
            return python
        tried.append(f"{python}: exit {done.returncode}")
    pytest.skip(f"no Python that uid {NOBODY} can run ({'; '.join(tried)})")
