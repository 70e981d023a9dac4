"""A newcomer's first mistakes, on the real tagstatd and tagstat: one line that says what to do.

Each case exits with a documented code (1 for errors, 130 for Ctrl-C, 141 for a closed
stdout), prints no traceback and names the path. Cases that need a non-root user run the
process as ``nobody`` (root can write anywhere, so a read-only directory proves nothing
for it); they are skipped when the tests do not run as root, or when ``nobody`` cannot
reach this checkout's interpreter.
"""

import os
import pwd
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import wait_for

from tagstat import killswitch
from tagstat.paths import SOCKET_PATH_MAX_BYTES

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SYSTEM_ADVICE = ("without --home, tagstatd is the system instance, which runs as the service "
                 "user: start it with `sudo systemctl start tagstatd`, or pass --home DIR to "
                 "run one of your own")  # fmt: skip


def environ() -> dict:
    """This environment without kill switches or TAGSTAT_HOME (tests name the home)."""
    skip = (*killswitch.SWITCHES, "TAGSTAT_HOME")
    return {k: v for k, v in os.environ.items() if k not in skip} | {"TAGSTAT_ALLOW_IN_CI": "true"}


def run(program: str, *args, user: pwd.struct_passwd | None = None, stdout=subprocess.PIPE):
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    return subprocess.run([str(BIN / program), *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=environ(), cwd="/", timeout=30,
                          **as_user)  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The one line on stderr; the process must have exited 1 without a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, proc.stderr)
    return lines[0]


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    """The user ``nobody``, once it is known to be able to run tagstatd from here."""
    if os.geteuid() != 0:
        pytest.skip("runs tagstatd as user nobody, which needs root")
    try:
        user = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user nobody to run tagstatd as")
    try:
        probe = run("python", "-c", "import tagstat.tagstatd", user=user)
    except OSError as exc:
        probe = subprocess.CompletedProcess([], 1, "", str(exc))
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run {BIN / 'python'} with tagstat (is a parent of the "
                    f"checkout mode 0700?): {probe.stderr.strip()[-200:]}")  # fmt: skip
    return user


@pytest.fixture
def base():
    """A directory every user may enter (tempfile's are 0700), for homes to go in."""
    d = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))  # noqa: S108 - AF_UNIX path limit
    d.chmod(0o755)
    yield d
    for p in (d, *d.rglob("*")):  # give back what the test made read-only, to delete it
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    subprocess.run(["rm", "-rf", str(d)], check=False)


# -- tagstatd -------------------------------------------------------------------------


def test_tagstatd_as_a_user_without_home_says_to_use_the_service(nobody):
    line = one_line_error(run("tagstatd", user=nobody))
    assert "/var/lib/tagstat" in line and line.endswith(SYSTEM_ADVICE)
    assert ("cannot create /var/lib/tagstat: permission denied for user nobody; " in line
            or "/var/lib/tagstat is not writable by user nobody; " in line)  # fmt: skip


def test_tagstatd_on_a_read_only_home_says_it_must_be_writable(nobody, base):
    home = base / "ro"
    home.mkdir(mode=0o555)
    home.chmod(0o555)  # whatever the umask
    line = one_line_error(run("tagstatd", "--home", home, user=nobody))
    assert line.endswith(f"ERROR tagstat.tagstatd: {home} is not writable by user nobody; "
                         "tagstatd keeps its database and control socket there, so it must "
                         "be writable: fix its permissions or pass another --home")  # fmt: skip
    assert list(home.iterdir()) == []


def test_tagstatd_on_a_home_it_cannot_create_says_so(nobody, base):
    parent = base / "ro"
    parent.mkdir(mode=0o555)
    parent.chmod(0o555)
    line = one_line_error(run("tagstatd", "--home", parent / "new", user=nobody))
    assert line.endswith(f"cannot create {parent / 'new'}: permission denied for user nobody; "
                         "create it, or pass a --home in a directory you can write")  # fmt: skip


def test_tagstatd_on_a_home_that_is_a_file_says_so(base):
    file = base / "tagstat.toml"
    file.write_text("")
    line = one_line_error(run("tagstatd", "--home", file, "--simulate"))
    assert line.endswith(f"ERROR tagstat.tagstatd: {file} is a file, not a directory; pass a "
                         "--home that is a directory, or one that does not exist yet "
                         "(tagstatd creates it)")  # fmt: skip


def test_tagstatd_on_a_socket_path_too_long_says_its_length_and_creates_nothing(base):
    home = base / ("h" * 100)
    n = len(os.fsencode(home / "control.sock"))
    assert n > SOCKET_PATH_MAX_BYTES
    line = one_line_error(run("tagstatd", "--home", home, "--simulate"))
    assert line.endswith(f"ERROR tagstat.tagstatd: the control socket path {home}/control.sock "
                         f"is {n} bytes, and Unix socket paths are limited to 107 bytes: use "
                         "a shorter --home")  # fmt: skip
    assert not home.exists()


# -- tagstat --------------------------------------------------------------------------


def test_tagstat_on_a_socket_path_too_long_says_its_length(base):
    home = base / ("h" * 100)
    n = len(os.fsencode(home / "control.sock"))
    line = one_line_error(run("tagstat", "status", "--home", home))
    assert line == (f"tagstat: error: the control socket path {home}/control.sock is {n} "
                    "bytes, and Unix socket paths are limited to 107 bytes: use a shorter "
                    "--home (TAGSTAT_HOME) or --socket")  # fmt: skip


@pytest.mark.parametrize("where", ["before", "after"])
def test_tagstat_on_a_home_that_does_not_exist_creates_nothing(base, where):
    typo = base / "tagstat-hme"
    args = ["--home", typo, "status"] if where == "before" else ["status", "--home", typo]
    line = one_line_error(run("tagstat", *args))
    assert line == (f"tagstat: error: no tagstatd answers on {typo}/control.sock: {typo} does "
                    "not exist; is the path right?")  # fmt: skip
    assert not typo.exists()


def test_tagstat_status_with_home_after_the_command_shows_that_home(home, daemons):
    daemons().start()
    shown = run("tagstat", "status", "--home", home)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout.startswith("status: Collecting (1), persistent")
    via_socket = run("tagstat", "status", "--json", "--socket", home / "control.sock")
    assert via_socket.returncode == 0 and '"name": "Collecting"' in via_socket.stdout


@pytest.mark.parametrize("command", ["status", "explain", "report"])
def test_tagstat_into_a_closed_pipe_exits_141_quietly(home, daemons, command):
    daemons().start()
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -1` after its line: every write fails with EPIPE
    try:
        proc = run("tagstat", "--home", home, command, stdout=write_end)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_tagstat_report_into_head_says_nothing_on_stderr(home, daemons):
    daemons().start()
    line = f"set -o pipefail; {BIN / 'tagstat'} --home {home} report | head -1"
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=environ(),
                          timeout=30)  # fmt: skip
    assert proc.stdout.strip() and proc.stderr == ""
    assert proc.returncode in (0, 141)  # 141 if head left before tagstat wrote: a race


# -- Ctrl-C ---------------------------------------------------------------------------


class Terminal:
    """The real `tagstat` on a pseudo-terminal (stdin, stdout and stderr). Ctrl-C is
    SIGINT sent to it, as the terminal driver would to its foreground process."""

    def __init__(self, home: Path, *args):
        self.master, slave = os.openpty()
        command = [str(BIN / "tagstat"), "--home", str(home), *args]
        self.proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave,
                                     env=environ())  # fmt: skip
        os.close(slave)
        self.seen = b""

    def read_until(self, marker: bytes | None, timeout_s: float = 30.0) -> str:
        """Output until ``marker`` appears, or (None) until the terminal closes."""
        deadline = time.monotonic() + timeout_s
        while marker is None or marker not in self.seen:
            left = max(0.0, deadline - time.monotonic())
            if not select.select([self.master], [], [], left)[0]:
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the program exited and its terminal closed
                break
            if not chunk:
                break
            self.seen += chunk
        assert marker is None or marker in self.seen, self.seen
        return self.seen.decode(errors="replace").replace("\r\n", "\n")

    def ctrl_c(self) -> tuple[int, str]:
        wait_blocked(self.proc)
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(30)
        out = self.read_until(None, timeout_s=5)
        os.close(self.master)
        return rc, out


def wait_blocked(proc: subprocess.Popen) -> None:
    """Until ``proc`` sleeps in its read. A SIGINT that came just before the read began
    would only set Python's flag, and the read would then wait for input forever."""

    def sleeping() -> bool:
        with open(f"/proc/{proc.pid}/stat") as f:
            return f.read().rpartition(") ")[2].startswith("S")

    wait_for(sleeping, f"tagstat (pid {proc.pid}) to wait")


def ctrl_c_at_the_question(home, *args) -> tuple[int, str]:
    """Run ``tagstat ARGS`` on a terminal, press Ctrl-C at its [y/N]; (exit code, output)."""
    term = Terminal(home, *args)
    try:
        term.read_until(b"[y/N] ")
        return term.ctrl_c()
    finally:
        term.proc.kill()


def test_ctrl_c_at_the_consent_question_records_nothing(home, daemons):
    d = daemons().start()
    assert d.client.status()["consent"]["needs"] == "first_run"
    rc, out = ctrl_c_at_the_question(home, "status")
    assert rc == 130 and "Traceback" not in out
    assert out.endswith("[y/N] \ntagstat: interrupted; nothing recorded\n")
    assert d.client.status()["consent"]["needs"] == "first_run"  # still unanswered


def test_ctrl_c_at_the_purge_question_deletes_nothing(home, daemons):
    d = daemons().start()
    d.wait_until(lambda: d.client.devices(), what="the simulated Time Tagger")
    d.client.set_consent(d.client.status()["consent"]["schema_version"], False)  # asked before
    rc, out = ctrl_c_at_the_question(home, "purge")
    assert rc == 130 and "Traceback" not in out
    assert out.endswith("[y/N] \ntagstat: interrupted; nothing was deleted\n")
    assert d.client.devices()  # nothing was deleted


def test_ctrl_c_while_waiting_for_tagstatd_is_one_line(base):
    path = base / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen()
        proc = subprocess.Popen([str(BIN / "tagstat"), "--socket", str(path), "status"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=environ())  # fmt: skip
        try:
            conn, _ = silent.accept()  # tagstat is now waiting for an answer that never comes
            with conn:
                wait_blocked(proc)
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert (proc.returncode, out, err) == (130, "", "\ntagstat: interrupted\n")
