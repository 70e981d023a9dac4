"""tagstatd as systemd runs it: sd_notify, SIGTERM, SIGHUP, the policy cap, hostile clients.

Each test runs the real daemon as a subprocess on a simulated Time Tagger. The
notify socket is a real AF_UNIX datagram socket bound by the test, as systemd
binds it; the database is read with sqlite3 after the daemon has exited.
"""

import datetime as dt
import json
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagstat.clock import parse_iso
from tagstat.errors import ApiError

pytestmark = pytest.mark.e2e

DEVICE = {"serial": "1740000JEH", "model": "Time Tagger Ultra", "usb_speed": "super",
          "rate": [[0, 50e6]]}  # fmt: skip
NOBODY = 65534


class NotifyListener:
    """What systemd would receive on NOTIFY_SOCKET: (monotonic time, message) pairs."""

    def __init__(self, home: Path):
        self.path = home / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[tuple[float, str]] = []

    def wait_for(self, predicate, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                text = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), text))
            if predicate(text):
                return text
        raise AssertionError(f"no such notify message; got {[m for _, m in self.messages]}")


def start(daemons, home, write_scenario, env=None, config: str | None = None):
    if config is not None:
        (home / "tagstat.toml").write_text(config)
    sc = write_scenario(home / "s.toml", [DEVICE])
    return daemons(sc, env).start()


def rows(home: Path, sql: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(home / "tagstat.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_ready_status_watchdog_and_stopping_on_a_real_notify_socket(home, daemons, write_scenario):
    listener = NotifyListener(home)
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"}
    sc = write_scenario(home / "s.toml", [DEVICE])
    d = daemons(sc, env).start(wait=False)
    ready = listener.wait_for(lambda m: "READY=1" in m)
    assert ready == "READY=1\nSTATUS=polling 1 Time Tagger, status Collecting"
    d.wait_ready()  # READY=1 came after the first poll, and the socket answers
    first = time.monotonic()
    while time.monotonic() - first < 2.0:
        listener.wait_for(lambda m: m == "WATCHDOG=1")
    pings = [t for t, m in listener.messages if m == "WATCHDOG=1" and t >= first]
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert len(pings) >= 6, pings
    assert max(gaps) < 0.4, f"a watchdog gap reached WATCHDOG_USEC: {gaps}"
    d.proc.send_signal(signal.SIGTERM)
    assert listener.wait_for(lambda m: "STOPPING=1" in m) == "STOPPING=1\nSTATUS=stopping"
    assert d.proc.wait(5) == 0


def test_status_line_follows_the_status(home, daemons, write_scenario):
    listener = NotifyListener(home)
    d = start(daemons, home, write_scenario, {"NOTIFY_SOCKET": str(listener.path)})
    listener.wait_for(lambda m: "READY=1" in m)
    d.client.set_status("Disabled")
    listener.wait_for(lambda m: m == "STATUS=status Disabled: collecting nothing")
    assert d.stop() == 0


def test_sigterm_exits_zero_within_5_s_with_the_checkpoint_flushed(home, daemons, write_scenario):
    # Checkpoints only at exit; get_status does not checkpoint (report and sessions would).
    d = start(daemons, home, write_scenario, {"TAGSTAT_CHECKPOINT_S": "3600"})
    time.sleep(2.0)  # let the session run: the point is what the last polls left
    d.client.status()
    signalled = dt.datetime.now(dt.UTC)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    (session,) = rows(home, 'SELECT "end", open, duration_s FROM sessions')
    assert session["open"] == 1 and session["duration_s"] > 1.0
    # The last poll before the signal was at most a poll interval (0.25 s) earlier.
    assert parse_iso(session["end"]) >= signalled - dt.timedelta(seconds=0.25 + 0.5)


def test_sighup_applies_a_changed_setting(home, daemons, write_scenario):
    d = start(daemons, home, write_scenario)
    d.client.set_status("CollectingAndUploading")
    (home / "tagstat.toml").write_text('max_status = "Collecting"\n')
    d.proc.send_signal(signal.SIGHUP)
    d.wait_until(lambda: d.client.status()["name"] == "Collecting", what="the cap applied")
    with pytest.raises(ApiError, match="max_status"):
        d.client.set_status("CollectingAndUploading")
    assert d.stop() == 0
    log = d.stderr()
    assert "configuration reloaded: max_status 'CollectingAndUploading' -> 'Collecting'" in log
    (change,) = rows(home, "SELECT old, new, reason FROM status_changes WHERE reason='policy'")
    assert (change["old"], change["new"]) == (2, 1)


def test_sighup_with_a_broken_config_keeps_the_running_one(home, daemons, write_scenario):
    d = start(daemons, home, write_scenario, config='max_status = "Collecting"\n')
    (home / "tagstat.toml").write_text('max_status = "Disabled"\npoll_interval_s = "fast"\n')
    d.proc.send_signal(signal.SIGHUP)
    d.wait_until(lambda: "configuration not reloaded" in d.stderr(), what="the error logged")
    assert d.proc.poll() is None
    assert d.client.status()["name"] == "Collecting"  # the old config: max_status unchanged
    assert d.stop() == 0
    line = next(x for x in d.stderr().splitlines() if "configuration not reloaded" in x)
    assert "ERROR" in line and "poll_interval_s in" in line and "must be a number" in line


def test_under_journald_lines_carry_priorities_and_no_time(home, daemons, write_scenario):
    log = home / "stderr.log"
    log.touch()
    st = log.stat()
    d = start(daemons, home, write_scenario, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    (home / "tagstat.toml").write_text("poll_interval_s = [1]\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_until(lambda: "configuration not reloaded" in d.stderr(), what="the error logged")
    assert d.stop() == 0
    lines = d.stderr().splitlines()
    assert (
        "<6>tagstat.tagstatd: tagstatd started: status Collecting, socket "
        + str(home / "control.sock")
        in lines
    )
    assert any(x.startswith("<3>tagstat.service: configuration not reloaded") for x in lines)
    assert all(x[:3] in ("<3>", "<4>", "<6>", "<7>") for x in lines), lines


def test_a_configuration_error_at_start_exits_78(home, daemons, write_scenario):
    (home / "tagstat.toml").write_text("pol_interval_s = 1\n")
    d = daemons(write_scenario(home / "s.toml", [DEVICE])).start(wait=False)
    assert d.proc.wait(20) == 78  # RestartPreventExitStatus=78: no restart loop
    assert "unknown key 'pol_interval_s'" in d.stderr()


def test_policy_cap_at_start_up_via_api_and_cli(home, daemons, write_scenario, run_cli):
    first = start(daemons, home, write_scenario)
    first.client.set_status("CollectingAndUploading")
    assert first.stop() == 0
    second = start(daemons, home, write_scenario, config='max_status = "Collecting"\n')
    assert second.client.status()["name"] == "Collecting"  # lowered before the first poll
    refused = run_cli(home, "status", "collecting-and-uploading", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "tagstat: error: status CollectingAndUploading is above this site's cap Collecting "
        "(max_status in the tagstat configuration); ask the lab's admin"
    )
    assert run_cli(home, "status", "disabled").returncode == 0  # below the cap is fine
    assert second.stop() == 0
    reasons = [r["reason"] for r in rows(home, "SELECT reason FROM status_changes ORDER BY id")]
    assert reasons == ["install", "api", "policy", "cli"]  # who changed it


# -- hostile clients ------------------------------------------------------------

junk = st.one_of(
    st.binary(max_size=512),
    st.text(max_size=256).map(str.encode),
    st.builds(
        lambda v: json.dumps(v).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=10,
        ),
    ),  # fmt: skip
    st.builds(
        lambda op, extra: json.dumps({"op": op, **extra}).encode(),
        st.sampled_from(["get_status", "set_status", "nope", "", "devices"]),
        st.dictionaries(
            st.sampled_from(["status", "persistent", "x"]),
            st.integers() | st.text(max_size=5) | st.none(),
            max_size=3,
        ),
    ),  # fmt: skip
    st.integers(65_000, 300_000).map(lambda n: b"{" + b"x" * n),  # oversized
)


def send_raw(path: Path, data: bytes, newline: bool) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        try:
            s.sendall(data + (b"\n" if newline else b""))
            s.shutdown(socket.SHUT_WR)  # EOF: the daemon need not wait out its timeout
        except (BrokenPipeError, ConnectionResetError):
            pass  # it refused an oversized line before reading it all; its reply is there
        return s.makefile("rb").readline()


def test_2000_malformed_or_oversized_messages_leave_the_daemon_answering(
    home, daemons, write_scenario
):
    d = start(daemons, home, write_scenario)
    path = home / "control.sock"
    sent = []

    @settings(max_examples=2000, deadline=5000, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(data=junk, newline=st.booleans())
    def hammer(data, newline):
        reply = send_raw(path, data, newline)
        sent.append(1)
        assert json.loads(reply)["ok"] in (True, False), reply  # an answer, never silence

    hammer()
    assert len(sent) >= 2000
    assert d.proc.poll() is None
    assert d.client.status()["status"] in (0, 1)  # (a generated request may set Disabled)
    assert d.stop() == 0


# -- the real daemon and a client running as another uid -------------------------


def test_real_daemon_refuses_a_reader_that_is_not_an_admin(
    home, daemons, write_scenario, other_uid_python
):
    import grp

    reader = next(g for g in grp.getgrall() if g.gr_gid not in (0, NOBODY))
    cfg = f'reader_group = "{reader.gr_name}"\nadmin_group = "tagstat-no-such-group"\n'
    home.chmod(0o755)  # the home holds the socket; the group's 0660 is the real gate
    d = start(daemons, home, write_scenario, config=cfg)
    assert (home / "control.sock").stat().st_gid == reader.gr_gid
    client = [other_uid_python, "-I", "-c", CLIENT, str(home / "control.sock")]

    def as_nobody(request: dict, groups) -> dict:
        out = subprocess.run([*client, json.dumps(request)], user=NOBODY, group=NOBODY,
                             extra_groups=groups, capture_output=True, text=True, timeout=20,
                             cwd="/")  # fmt: skip
        return json.loads(out.stdout) if out.returncode == 0 else {"connect": out.stderr}

    assert "Permission denied" in as_nobody({"op": "get_status"}, [])["connect"]
    assert as_nobody({"op": "get_status"}, [reader.gr_gid])["ok"] is True
    refused = as_nobody({"op": "set_status", "status": 0, "persistent": True}, [reader.gr_gid])
    assert refused["error"] == {
        "type": "PermissionDenied",
        "message": "permission denied: set_status needs membership of group "
        f"tagstat-no-such-group (no such group on this system) (uid {NOBODY})",
    }
    assert d.client.status()["name"] == "Collecting"
    assert d.stop() == 0


CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
print(s.makefile().readline())
"""
