"""Who is on the other end of a control connection, as the kernel reports it.

Part of the local API (``tagstat.control``): ``SO_PEERCRED`` gives the peer's
pid, uid and gid, ``SO_PEERGROUPS`` its supplementary groups as of connect(),
race-free unlike /proc/<pid>. The access policy (``tagstat.access``) decides with
these; the connection limits count by uid.
"""

import dataclasses
import errno
import socket
import struct


@dataclasses.dataclass(frozen=True)
class PeerCred:
    """Who is on the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] | None = None  # supplementary gids (SO_PEERGROUPS), if known


def peer_cred(sock: socket.socket) -> PeerCred | None:
    """The peer's pid/uid/gid via SO_PEERCRED (Linux); None where unsupported."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return PeerCred(*struct.unpack("3i", raw), groups=_peer_groups(sock))


# SO_PEERGROUPS (Linux 4.13+): the peer's supplementary groups as of connect(),
# race-free unlike /proc/<pid>. Python may not name the constant.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


def peer_uid(sock: socket.socket) -> int | None:
    """Only the uid (one getsockopt): all a connection about to be refused needs."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return struct.unpack("3i", raw)[1]


def _peer_groups(sock: socket.socket) -> frozenset[int] | None:
    for count in (256, 65536):  # few groups first; NGROUPS_MAX if they do not fit
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, count * 4)
        except OSError as exc:
            if exc.errno == errno.ERANGE:
                continue
            return None
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return None
