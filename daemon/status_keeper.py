"""The usage-statistics status, the install's user id, and their history.

The persistent status lives in the store's settings; a change made with
``persistent_config=False`` is held in memory only and is gone when the
daemon restarts, as with the vendor's API. Every change is recorded with its
time, because uploads depend on when consent was given. A new install starts
at the configured ``initial_status`` (``Collecting``: local only).
"""

import threading
import uuid

from tagstat.clock import iso
from tagstat.records import StatusChange
from tagstat.status import UsageStatisticsStatus


class StatusKeeper:
    def __init__(self, store, clock, initial_status: UsageStatisticsStatus):
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._temporary: UsageStatisticsStatus | None = None
        # A kill switch in force (tagstat.killswitch.Switch), set by the service. It makes
        # the effective status Disabled without touching the stored one.
        self.forced_by = None
        stored = store.get_setting("status")
        if stored is None:
            self._persistent = initial_status
            store.set_setting("status", int(initial_status))
            store.add_status_change(
                StatusChange(clock.utc_now(), None, int(initial_status), True, "install")
            )
        else:
            self._persistent = UsageStatisticsStatus.parse(stored)
        if store.get_setting("user_id") is None:
            store.set_setting("user_id", str(uuid.uuid4()))

    @property
    def user_id(self) -> str:
        return self._store.get_setting("user_id")

    def rotate_user_id(self) -> str:
        """Replace the user id (on opting out), so later reports cannot be linked to earlier."""
        user_id = str(uuid.uuid4())
        self._store.set_setting("user_id", user_id)
        return user_id

    @property
    def current(self) -> UsageStatisticsStatus:
        t = self._temporary
        return t if t is not None else self._persistent

    @property
    def effective(self) -> UsageStatisticsStatus:
        """What tagstat does now: ``current``, or Disabled while a kill switch is in force."""
        return UsageStatisticsStatus.Disabled if self.forced_by is not None else self.current

    @property
    def is_temporary(self) -> bool:
        return self._temporary is not None

    def set(self, status, persistent: bool, reason: str = "api", at=None) -> UsageStatisticsStatus:
        """Change the status (recorded at ``at``, default now); returns the previous one."""
        status = UsageStatisticsStatus.parse(status)
        at = at or self._clock.utc_now()
        with self._lock:
            old = self.current
            if persistent:
                self._persistent = status
                self._temporary = None
                self._store.set_setting("status", int(status))
            else:
                self._temporary = status
            change = StatusChange(at, int(old), int(status), persistent, reason)
            self._store.add_status_change(change)
        return old

    def lower_to(self, cap, reason: str = "policy", at=None) -> UsageStatisticsStatus | None:
        """Lower the persistent and temporary status to ``cap``; the old status if it changed.

        A lower temporary status stays in force: a cap never raises collection.
        """
        cap = UsageStatisticsStatus.parse(cap)
        with self._lock:
            old = self.current
            if self._persistent > cap:
                self._persistent = cap
                self._store.set_setting("status", int(cap))
            if self._temporary is not None and self._temporary > cap:
                self._temporary = cap
            if self.current == old:
                return None
            self._store.add_status_change(
                StatusChange(at or self._clock.utc_now(), int(old), int(self.current),
                             not self.is_temporary, reason)
            )  # fmt: skip
        return old

    def since(self):
        """When the status in force was set."""
        changes = self._store.status_changes()
        return changes[-1].at if changes else None

    def describe(self) -> dict:
        """The effective status; under a kill switch also the switch and the stored status."""
        since = self.since()
        cur, forced = self.effective, self.forced_by
        return {
            "status": int(cur),
            "name": cur.name,
            "persistent": not self.is_temporary,
            "since": iso(since) if since else None,
            "forced_by": forced.to_dict() if forced is not None else None,
            "stored_status": int(self.current),
            "stored_name": self.current.name,
        }
