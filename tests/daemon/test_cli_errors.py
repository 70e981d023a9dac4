"""What a newcomer's mistakes get from the CLI and from Paths: one line that says what to do.

In-process through cli.main(argv): --home/--socket after the command, a home that does
not exist (never created by the CLI), a socket path too long for AF_UNIX, a closed
stdout (exit 141, silent) and Ctrl-C (exit 130, one line). Paths.ensure's messages for a
home that is a file or cannot be written. The real processes, as another user too, are
tests/e2e/test_newcomer_errors.py.
"""

import shutil
import tempfile
from pathlib import Path

import pytest

from tagstat import cli, firstrun, paths
from tagstat.client import Client
from tagstat.control import ControlServer
from tagstat.errors import TagstatError
from tagstat.fields import current as current_schema
from tagstat.paths import SOCKET_PATH_MAX_BYTES, Paths
from tagstat.status import UsageStatisticsStatus as Status

COMMANDS = [["status"], ["report"], ["devices"], ["sessions"], ["uploads"], ["uploads", "show",
            "r1"], ["setup"], ["explain"], ["purge"], ["export", "f"]]  # fmt: skip


class Controller:
    """Just enough of the service for `tagstat status`."""

    def __init__(self):
        self.calls = []

    def get_status(self):
        self.calls.append("get_status")
        return {"status": 1, "name": Status.Collecting.name, "persistent": True}

    def get_report(self):
        return '{"sessions": []}'


@pytest.fixture
def home():
    d = Path(tempfile.mkdtemp(prefix="tce-", dir="/tmp"))  # noqa: S108 - AF_UNIX path limit
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(home):
    with ControlServer(home / "control.sock", Controller()) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_env_home(monkeypatch):
    monkeypatch.delenv("TAGSTAT_HOME", raising=False)


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# -- --home and --socket before and after the command --------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("option", ["--home", "--socket"])
def test_location_options_work_after_every_command(command, option):
    args = cli.build_parser().parse_args([*command, option, "/somewhere"])
    assert str(getattr(args, option[2:])) == "/somewhere"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_the_top_level_value_is_not_overwritten_by_the_command(command):
    args = cli.build_parser().parse_args(["--home", "/a", "--socket", "/s", *command])
    assert (args.home, str(args.socket)) == ("/a", "/s")


def test_home_after_status_is_not_read_as_a_status_word():
    args = cli.build_parser().parse_args(["status", "--home", "/a"])
    assert args.status is None and args.home == "/a"


def test_command_help_lists_home_and_socket(capsys):
    assert cli.main(["status", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--home DIR" in out and "--socket PATH" in out


def test_status_home_after_the_command_shows_that_home(server, home, capsys):
    rc, out, err = run(capsys, "status", "--home", str(home))
    assert (rc, err) == (0, "")
    assert out.startswith("status: Collecting (1), persistent")
    assert server.controller.calls == ["get_status"]


# -- a home that is not there: the CLI never creates one -----------------------------


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_a_home_that_does_not_exist_is_named_and_not_created(home, capsys, before):
    missing = home / "typo"
    argv = ["--home", str(missing), "status"] if before else ["status", "--home", str(missing)]
    rc, out, err = run(capsys, *argv)
    assert rc == 1 and out == ""
    assert err == (f"tagstat: error: no tagstatd answers on {missing}/control.sock: "
                   f"{missing} does not exist; is the path right?\n")  # fmt: skip
    assert not missing.exists()


def test_a_home_that_is_a_file_is_named(home, capsys):
    file = home / "notes.txt"
    file.write_text("x")
    rc, _, err = run(capsys, "--home", str(file), "explain")
    assert rc == 1
    assert err == (f"tagstat: error: no tagstatd answers on {file}/control.sock: {file} is "
                   "a file, not a directory; is the path right?\n")  # fmt: skip


def test_an_existing_home_without_daemon_says_to_start_one(home, capsys):
    rc, _, err = run(capsys, "status", "--home", str(home))
    assert rc == 1 and "is tagstatd running?" in err and "tagstatd --home DIR" in err


# -- a socket path too long for AF_UNIX ----------------------------------------------


@pytest.mark.parametrize("option", ["--home", "--socket"])
def test_a_socket_path_too_long_says_its_length_and_the_limit(home, capsys, option):
    long_dir = home / ("d" * 120)
    sock = long_dir / "control.sock" if option == "--home" else long_dir
    rc, out, err = run(capsys, "status", option, str(long_dir))
    n = len(str(sock).encode())
    assert rc == 1 and out == ""
    assert err == (f"tagstat: error: the control socket path {sock} is {n} bytes, and Unix "
                   "socket paths are limited to 107 bytes: use a shorter --home "
                   "(TAGSTAT_HOME) or --socket\n")  # fmt: skip
    assert not long_dir.exists()


# -- a closed stdout: exit 141, nothing on stderr ------------------------------------


class ClosedPipe:
    """A stdout whose reader has gone (`| head -1` done); no file descriptor."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def isatty(self):
        return False


@pytest.mark.parametrize("command", ["status", "explain", "report"])
def test_a_closed_stdout_exits_141_quietly(server, home, capsys, monkeypatch, command):
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert cli.main(["--home", str(home), command]) == cli.EXIT_BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""


# -- Ctrl-C: exit 130, one line -------------------------------------------------------


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_a_command_exits_130_with_one_line(home, capsys, monkeypatch):
    monkeypatch.setattr(Client, "status", interrupt)
    rc, out, err = run(capsys, "--home", str(home), "status")
    assert (rc, out, err) == (130, "", "\ntagstat: interrupted\n")


def test_ctrl_c_at_the_purge_question_deletes_nothing(home, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", interrupt)
    monkeypatch.setattr(Client, "purge", lambda self: pytest.fail("purged"))
    rc, _, err = run(capsys, "--home", str(home), "purge")
    assert (rc, err) == (130, "\ntagstat: interrupted; nothing was deleted\n")


def test_ctrl_c_at_the_consent_question_records_nothing(home, capsys, monkeypatch):
    answers = []
    version = current_schema().version
    state = {"name": "Collecting", "consent": {"needs": "first_run", "upload_allowed": True,
                                               "schema_version": version}}  # fmt: skip
    monkeypatch.setattr(firstrun, "interactive", lambda: True)
    monkeypatch.setattr(firstrun, "first_run_text", lambda state: "what is collected")
    monkeypatch.setattr(Client, "status", lambda self: state)
    monkeypatch.setattr(Client, "set_consent", lambda self, *a, **kw: answers.append(kw) or {})
    monkeypatch.setattr("builtins.input", interrupt)
    rc, out, err = run(capsys, "--home", str(home), "status")
    assert (rc, out) == (130, "what is collected\n")
    assert err == "\ntagstat: interrupted; nothing recorded\n"
    assert answers == [{"dry_run": True}]  # asked whether this user may answer; no answer


def test_end_of_input_at_the_consent_question_is_still_no_answer(monkeypatch):
    def end_of_input(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", end_of_input)
    assert firstrun._answer("? ") is None


# -- Paths.ensure: tagstatd's home ----------------------------------------------------


def test_a_home_that_is_a_file_cannot_be_ensured(home):
    file = home / "f"
    file.write_text("")
    with pytest.raises(TagstatError) as info:
        Paths.for_home(file).ensure()
    assert str(info.value) == (f"{file} is a file, not a directory; pass a --home that is a "
                               "directory, or one that does not exist yet (tagstatd creates "
                               "it)")  # fmt: skip


def test_a_home_under_a_file_names_the_file(home):
    file = home / "f"
    file.write_text("")
    with pytest.raises(TagstatError, match=f"^cannot create {file}/sub: {file} is a file, not"):
        Paths.for_home(file / "sub").ensure()


def test_ensure_creates_a_missing_home(home):
    Paths.for_home(home / "a" / "b").ensure()
    assert (home / "a" / "b").is_dir()


def test_an_unwritable_home_is_named(home, monkeypatch):
    monkeypatch.setattr(paths.os, "access", lambda path, mode: False)  # root writes anyway
    with pytest.raises(TagstatError) as info:
        Paths.for_home(home).ensure()
    assert str(info.value).startswith(f"{home} is not writable by user ")
    assert str(info.value).endswith("so it must be writable: fix its permissions or pass "
                                    "another --home")  # fmt: skip


@pytest.fixture
def system_dirs(home, monkeypatch):
    """The system paths moved into ``home``: nothing in /var/lib or /run is touched."""
    for name in ("SYSTEM_CONFIG_DIR", "SYSTEM_STATE_DIR", "SYSTEM_RUNTIME_DIR"):
        monkeypatch.setattr(paths, name, home / name.lower())
    return Paths.system()


def test_the_system_instance_not_writable_says_to_use_the_service(system_dirs, monkeypatch):
    assert system_dirs.is_system and not Paths.for_home("/x").is_system
    monkeypatch.setattr(paths.os, "access", lambda path, mode: False)
    with pytest.raises(TagstatError) as info:
        system_dirs.ensure()
    message = str(info.value)
    assert message.startswith(f"{system_dirs.state_dir} is not writable by user ")
    assert "system instance" in message and "sudo systemctl start tagstatd" in message
    assert "--home DIR" in message


def test_the_system_instance_not_creatable_says_to_use_the_service(system_dirs, monkeypatch):
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(TagstatError) as info:
        system_dirs.ensure()
    assert str(info.value).startswith(f"cannot create {system_dirs.state_dir}: permission "
                                      "denied for user ")  # fmt: skip
    assert "sudo systemctl start tagstatd" in str(info.value)


@pytest.mark.parametrize("extra", [0, 1, 20])
def test_check_socket_limit_is_107_bytes(extra):
    base = "/" + "h" * (SOCKET_PATH_MAX_BYTES - len("/control.sock") - 1 + extra)
    p = Paths.for_home(base)
    assert len(str(p.socket).encode()) == SOCKET_PATH_MAX_BYTES + extra
    if not extra:
        p.check_socket()
        return
    with pytest.raises(TagstatError) as info:
        p.check_socket()
    assert str(info.value) == (f"the control socket path {p.socket} is {107 + extra} bytes, "
                               "and Unix socket paths are limited to 107 bytes: use a "
                               "shorter --home")  # fmt: skip
