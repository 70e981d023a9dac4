"""Who may do what on the control socket: the peer policy of the local API.

Each connection's peer is identified by the kernel (``SO_PEERCRED``: pid,
uid, gid). Reading (status, report, devices, sessions, uploads) and sending
measurement events are for root, the daemon's own user and members of
``reader_group`` or ``admin_group``. Everything else, including ops added
later, changes something and is for root, the daemon's own user and members
of ``admin_group`` only: an op not listed in ``READ_OPS`` or
``APPLICATION_OPS`` needs admin, so the policy fails closed.

A peer's groups are its primary gid plus its supplementary groups, taken from
the first source that answers: ``SO_PEERGROUPS`` (read by ``tagstat.control``;
the kernel's record at connect time, race-free); the ``Groups:`` line of
``/proc/<pid>/status`` (the groups the process really has, which differ from
the group database until the user logs in again after ``usermod -aG``; only
trusted while that pid still has the peer's uid, since a pid can be reused);
last the passwd/group database (``getgrouplist``), which is all there is when
/proc hides other users' processes (``ProtectProc=invisible``). A refusal is
a ``PermissionDenied`` naming the op, the group needed and the uid.
"""

import grp
import logging
import os
import pwd
from collections.abc import Callable

from tagstat.errors import TagstatError

log = logging.getLogger(__name__)

READ_OPS = frozenset({"get_status", "get_report", "devices", "sessions"}) | frozenset(
    {"pending_report", "uploads", "upload_body"}  # what was and will be uploaded: the report
)
# Sent by applications that run measurements (tagstat.measurements): it adds data but
# changes no setting, so whoever may read may send it.
APPLICATION_OPS = frozenset({"record_measurements"})
_READER_OPS = READ_OPS | APPLICATION_OPS


class PermissionDenied(TagstatError):
    """The peer may not call this op; the message names the op, group and uid."""


class AccessPolicy:
    """Decides per op and peer; ``config`` is called each time so a reload applies at once."""

    def __init__(self, config: Callable[[], object], daemon_uid: int | None = None):
        self._config = config
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid

    def authorize(self, op: str, peer) -> bool:
        """True if allowed; raises ``PermissionDenied`` saying why not."""
        if peer is None:
            raise PermissionDenied(f"permission denied: {op} from a peer the kernel cannot name")
        if peer.uid in (0, self.daemon_uid):
            return True
        config = self._config()
        needed = [config.admin_group] if op not in _READER_OPS else [
            config.reader_group, config.admin_group
        ]  # fmt: skip
        gids = {gid for name in needed if (gid := group_gid(name)) is not None}
        if gids & peer_groups(peer):
            return True
        missing = " (no such group on this system)" if group_gid(needed[0]) is None else ""
        raise PermissionDenied(
            f"permission denied: {op} needs membership of group {needed[0]}{missing} "
            f"(uid {peer.uid})"
        )


def group_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def peer_groups(peer) -> set[int]:
    """The peer's primary and supplementary gids, from the best source available."""
    for source in (_from_kernel, _from_proc, _from_database):
        groups = source(peer)
        if groups is not None:
            return {peer.gid, *groups}
    return {peer.gid}


def _from_kernel(peer) -> set[int] | None:
    groups = getattr(peer, "groups", None)  # SO_PEERGROUPS, read by tagstat.control
    return set(groups) if groups is not None else None


def _from_proc(peer) -> set[int] | None:
    try:
        with open(f"/proc/{peer.pid}/status", encoding="ascii", errors="replace") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None  # gone, or hidden from us (ProtectProc=invisible)
    uids = fields.get("Uid", "").split()
    if str(peer.uid) not in uids[:2]:  # real or effective uid: else the pid was reused
        return None
    try:
        return {int(g) for g in fields.get("Groups", "").split()}
    except ValueError:
        return None


def _from_database(peer) -> set[int] | None:
    try:
        user = pwd.getpwuid(peer.uid)
        return set(os.getgrouplist(user.pw_name, user.pw_gid))
    except (KeyError, OSError):
        return None  # a uid without a passwd entry has only its primary gid
