"""The peer policy of the local API: who may read, who may change, and how groups are found."""

import dataclasses
import grp
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tagstat import access
from tagstat.access import AccessPolicy, PermissionDenied, peer_groups
from tagstat.config import Config, load_config
from tagstat.control import ControlServer, PeerCred
from tagstat.errors import ConfigError

NOBODY = 65534
IS_ROOT = os.geteuid() == 0


def a_group(exclude=()) -> grp.struct_group:
    """An existing group other than root's and nobody's, to stand in for tagstat-admin."""
    for g in grp.getgrall():
        if g.gr_gid not in (0, NOBODY, *exclude) and access.group_gid(g.gr_name) == g.gr_gid:
            return g
    pytest.skip("no spare group on this system to use as the admin group")


def policy(**config) -> AccessPolicy:
    cfg = Config(**config)
    return AccessPolicy(lambda: cfg, daemon_uid=4242)


def stranger(groups=frozenset()) -> PeerCred:
    return PeerCred(pid=1, uid=54321, gid=54321, groups=frozenset(groups))


# -- decisions ----------------------------------------------------------------


@pytest.mark.parametrize("op", ["get_status", "set_status", "get_report", "some_future_op"])
def test_root_and_the_daemons_own_user_may_do_anything(op):
    p = policy()
    assert p.authorize(op, PeerCred(1, 0, 0, frozenset()))
    assert p.authorize(op, PeerCred(1, 4242, 4242, frozenset()))


def test_a_reader_may_read_but_not_change():
    g = a_group()
    p = policy(reader_group=g.gr_name, admin_group="tagstat-no-such-group")
    for op in ("get_status", "get_report", "devices", "sessions"):
        assert p.authorize(op, stranger({g.gr_gid}))
    with pytest.raises(PermissionDenied) as err:
        p.authorize("set_status", stranger({g.gr_gid}))
    assert str(err.value) == (
        "permission denied: set_status needs membership of group tagstat-no-such-group "
        "(no such group on this system) (uid 54321)"
    )


def test_an_admin_may_read_and_change():
    g = a_group()
    p = policy(reader_group="tagstat-no-such-group", admin_group=g.gr_name)
    assert p.authorize("set_status", stranger({g.gr_gid}))
    assert p.authorize("get_report", stranger({g.gr_gid}))


def test_the_primary_gid_counts():
    g = a_group()
    p = policy(admin_group=g.gr_name)
    assert p.authorize("set_status", PeerCred(1, 54321, g.gr_gid, frozenset()))


def test_refusal_names_op_group_and_uid():
    g = a_group()
    with pytest.raises(PermissionDenied) as err:
        policy(admin_group=g.gr_name).authorize("set_status", stranger())
    assert str(err.value) == (
        f"permission denied: set_status needs membership of group {g.gr_name} (uid 54321)"
    )
    with pytest.raises(PermissionDenied) as err:
        policy(reader_group=g.gr_name).authorize("get_report", stranger())
    assert "get_report needs membership of group " + g.gr_name in str(err.value)


def test_unknown_ops_need_admin_the_policy_fails_closed():
    g = a_group()
    with pytest.raises(PermissionDenied):
        policy(reader_group=g.gr_name).authorize("wipe_everything", stranger({g.gr_gid}))


def test_a_peer_the_kernel_cannot_name_is_refused():
    with pytest.raises(PermissionDenied, match="cannot name"):
        policy().authorize("get_status", None)


def test_a_reload_applies_at_once():
    g = a_group()
    holder = {"config": Config(admin_group="tagstat-no-such-group")}
    p = AccessPolicy(lambda: holder["config"], daemon_uid=4242)
    with pytest.raises(PermissionDenied):
        p.authorize("set_status", stranger({g.gr_gid}))
    holder["config"] = Config(admin_group=g.gr_name)
    assert p.authorize("set_status", stranger({g.gr_gid}))


# -- where the groups come from ---------------------------------------------


def test_groups_from_the_kernel_win():
    peer = PeerCred(os.getpid(), os.getuid(), 7, frozenset({11, 12}))
    assert peer_groups(peer) == {7, 11, 12}


def test_groups_from_proc_when_the_kernel_did_not_say():
    peer = PeerCred(os.getpid(), os.getuid(), os.getgid(), None)
    assert peer_groups(peer) == {os.getgid(), *os.getgroups()}


def test_a_reused_pid_is_not_trusted_the_database_answers():
    # our own pid, but a peer uid that does not own it: as if the pid had been reused
    peer = PeerCred(os.getpid(), NOBODY, NOBODY, None)
    assert access._from_proc(peer) is None
    assert peer_groups(peer) == {NOBODY, *os.getgrouplist("nobody", NOBODY)}


def test_a_uid_without_passwd_entry_has_its_primary_gid_only():
    assert peer_groups(PeerCred(999_999, 987_654, 987_654, None)) == {987_654}


# -- configuration ------------------------------------------------------------


def test_policy_keys_defaults():
    c = Config()
    assert (c.reader_group, c.admin_group, c.max_status) == (
        "tagstat", "tagstat-admin", "CollectingAndUploading",
    )  # fmt: skip


def test_policy_keys_are_checked(tmp_path):
    conf = tmp_path / "tagstat.toml"
    conf.write_text('max_status = "collecting"\nadmin_group = "lab-admins"\nlog_level = "debug"\n')
    c = load_config(conf, {})
    assert (c.max_status, c.admin_group, c.log_level) == ("Collecting", "lab-admins", "DEBUG")
    for line, key in [
        ('max_status = "Uploading"', "max_status"),
        ('admin_group = "rm -rf"', "admin_group"),
        ('reader_group = ""', "reader_group"),
        ('log_level = "LOUD"', "log_level"),
    ]:
        conf.write_text(line + "\n")
        with pytest.raises(ConfigError, match=f"^{key} in {conf}"):
            load_config(conf, {})


# -- a real socket, a client running as another uid ---------------------------


class Controller:
    def __init__(self):
        self.status = 1

    def get_status(self):
        return {"status": self.status, "name": "x", "persistent": True, "since": None}

    def set_status(self, status, persistent, origin="api"):
        self.origin = origin
        self.status = int(status)
        return self.get_status()


CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
print(s.makefile().readline())
"""


def as_user(python: str, path: Path, request: dict, extra_groups=()) -> dict:
    out = subprocess.run(
        [python, "-I", "-c", CLIENT, str(path), json.dumps(request)],
        user=NOBODY, group=NOBODY, extra_groups=list(extra_groups),
        capture_output=True, text=True, timeout=20, check=True, cwd="/",
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.fixture
def reachable_server():
    """A ControlServer with the real policy on a socket any uid may connect to."""
    d = Path(tempfile.mkdtemp(prefix="tga-", dir="/tmp"))  # noqa: S108 - short AF_UNIX path
    d.chmod(0o755)
    admin = a_group()
    cfg = Config(reader_group="tagstat-no-such-group", admin_group=admin.gr_name)
    ctl = Controller()
    server = ControlServer(
        d / "c.sock", ctl, socket_mode=0o666, authorize=AccessPolicy(lambda: cfg).authorize
    )
    with server:
        yield server.socket_path, ctl, admin
    shutil.rmtree(d, ignore_errors=True)


def test_another_uid_is_refused_on_a_real_socket(reachable_server, other_uid_python):
    path, ctl, admin = reachable_server
    reply = as_user(other_uid_python, path, {"op": "set_status", "status": 0, "persistent": True})
    assert reply["ok"] is False and reply["error"]["type"] == "PermissionDenied"
    assert reply["error"]["message"] == (
        f"permission denied: set_status needs membership of group {admin.gr_name} (uid {NOBODY})"
    )
    reply = as_user(other_uid_python, path, {"op": "get_status"})
    assert reply["error"]["message"].startswith("permission denied: get_status needs")
    assert ctl.status == 1


def test_a_member_of_the_admin_group_may_set_the_status(reachable_server, other_uid_python):
    path, ctl, admin = reachable_server
    request = {"op": "set_status", "status": 0, "persistent": True}
    reply = as_user(other_uid_python, path, request, extra_groups=[admin.gr_gid])
    assert reply["ok"] is True and ctl.status == 0


def test_the_socket_gets_the_reader_group_and_mode_0660(tmp_path):
    g = a_group(exclude=(os.getgid(),))
    if not IS_ROOT and g.gr_gid not in os.getgroups():
        pytest.skip("giving the socket to a group needs root or membership of it")
    d = Path(tempfile.mkdtemp(prefix="tgs-", dir="/tmp"))  # noqa: S108
    try:
        with ControlServer(d / "c.sock", Controller(), socket_group=g.gr_name) as server:
            st = server.socket_path.stat()
            assert (st.st_mode & 0o777, st.st_gid) == (0o660, g.gr_gid)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_missing_socket_group_is_a_warning_not_an_error(caplog):
    d = Path(tempfile.mkdtemp(prefix="tgs-", dir="/tmp"))  # noqa: S108
    try:
        with ControlServer(d / "c.sock", Controller(), socket_group="tagstat-no-such-group"):
            pass
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert "group tagstat-no-such-group does not exist" in caplog.text


def test_peer_cred_carries_the_supplementary_groups():
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        from tagstat.control import peer_cred

        cred = peer_cred(a)
    assert dataclasses.astuple(cred)[:3] == (os.getpid(), os.geteuid(), os.getegid())
    assert cred.groups == frozenset(os.getgroups())
