"""Writes of collected data that survive a full disk: an episode, not a crash.

Between the recorder (and the daemon's counters and measurement events) and the
store sits ``WriteBack``. A write goes straight to the store; when the store
cannot be written because the disk is full, the file system is read-only, an
I/O error occurred or another process holds the database locked, an
*episode* starts: it is logged once at error level with the database's path
and what to do, the write is held in memory, and so is every later one, in
order, while tagstatd goes on polling and answering. ``flush`` (called by the
poll loop) retries with a back-off of 1 s doubling to 60 s; when a retry
succeeds everything held is written and the episode ends with one log line.

What is held is bounded, so a long episode costs bounded memory and any loss
is bounded and counted:

- sessions, device records and settings the poller keeps (message-log
  cursors, serial lengths) are upserts: only the latest state of each is
  held (a session checkpointed every 10 s during an hour-long episode is one
  entry), at most ``MAX_SESSIONS`` sessions;
- sensor readings, messages and measurement events are held as they came, at
  most ``LIMITS`` of each; beyond that the oldest go first and are counted as
  lost;
- the daemon's counts are summed per status.

A write that fails for any other reason (a bug, a constraint) is logged and
dropped, never retried forever and never fatal. Reads pass straight through to
the store. Not thread-safe by itself: the service calls it under its lock.
"""

import collections
import dataclasses
import logging
import sqlite3

from tagstat.errors import StoreError

log = logging.getLogger(__name__)

# SQLite's primary result codes that mean "cannot write now, can later": BUSY, LOCKED,
# READONLY, IOERR, FULL, CANTOPEN.
TRANSIENT_CODES = frozenset({5, 6, 8, 10, 13, 14})
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
MAX_SESSIONS = 10_000
# Per kind of held write, the most kept: at the default intervals 2,000 sensor readings
# are 5.5 hours of one device. Sizes measured by tests/daemon/test_store_writeback.py.
LIMITS = {"sensors": 2_000, "messages": 2_000, "measurements": 5_000}


def transient(exc: BaseException) -> bool:
    """Whether a StoreError comes from a condition that can pass (full disk, read-only)."""
    cause = exc
    while cause is not None:
        if isinstance(cause, sqlite3.Error):
            code = getattr(cause, "sqlite_errorcode", None)
            return code is not None and code & 0xFF in TRANSIENT_CODES
        cause = cause.__cause__
    return False


@dataclasses.dataclass
class Episode:
    since: object  # datetime (UTC): when the first write failed
    error: str  # what SQLite said, e.g. "database or disk is full"
    retry_at: float  # monotonic seconds
    delay_s: float = RETRY_FIRST_S
    lost: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class WriteBack:
    """The store's write methods for collected data, held in memory while it cannot write."""

    def __init__(self, store, clock):
        self._store = store
        self._clock = clock
        self.episode: Episode | None = None
        self._sessions: dict[str, object] = {}  # session_id -> latest SessionRecord
        self._devices: dict[str, object] = {}  # device_id -> latest DeviceRecord
        self._settings: dict[str, object] = {}  # key -> latest value
        self._held = {kind: collections.deque() for kind in LIMITS}
        self._counts: dict[int, collections.Counter] = {}  # status -> counts
        self._counts_at = None

    def __getattr__(self, name):  # reads (and anything not held) go to the store
        return getattr(self._store, name)

    # -- the writes ---------------------------------------------------------------------

    def save_session(self, rec) -> None:
        self.save_sessions([rec])

    def save_sessions(self, recs) -> None:
        recs = list(recs)
        if recs and not self._try(lambda: self._store.save_sessions(recs)):
            for rec in recs:
                self._sessions.pop(rec.session_id, None)  # re-insert: newest last
                self._sessions[rec.session_id] = rec
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
                self.episode.lost["sessions"] += 1

    def set_setting(self, key: str, value) -> None:
        if not self._try(lambda: self._store.set_setting(key, value)):
            self._settings[key] = value

    def get_setting(self, key: str, default=None):
        if key in self._settings:  # held: newer than the stored one
            return self._settings[key]
        return self._store.get_setting(key, default)

    def upsert_device(self, rec) -> None:
        if not self._try(lambda: self._store.upsert_device(rec)):
            self._devices[rec.device_id] = rec

    def record_sensors(self, *args) -> None:
        self._write("sensors", "record_sensors", args)

    def record_message(self, *args, **kwargs) -> None:
        self._write("messages", "record_message", args, kwargs)

    def record_measurements(self, events, received_at) -> int:
        events = list(events)
        if events and not self._try(lambda: self._store.record_measurements(events, received_at)):
            for event in events:  # held one by one, so the limit counts events
                self._hold("measurements", ("record_measurements", ([event], received_at), {}))
        return len(events)

    def record_daemon_counts(self, at, status: int, counts: dict[str, int]) -> None:
        if not self._try(lambda: self._store.record_daemon_counts(at, status, counts)):
            self._counts.setdefault(status, collections.Counter()).update(counts)
            self._counts_at = at

    def sessions_with_held(self) -> list:
        """Every stored session, with the latest state of those held in memory."""
        by_id = {s.session_id: s for s in self._store.sessions()}
        by_id.update(self._sessions)
        return sorted(by_id.values(), key=lambda s: (s.start, s.session_id))

    # -- the episode ----------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return self.episode is not None

    def held(self) -> int:
        """How many writes wait in memory."""
        queued = sum(len(q) for q in self._held.values())
        coalesced = len(self._sessions) + len(self._devices) + len(self._settings)
        return queued + coalesced + len(self._counts)

    def flush(self, force: bool = False) -> bool:
        """Write what is held, if a retry is due (or ``force``); True when nothing is held."""
        episode = self.episode
        if episode is None:
            return True
        if not force and self._clock.monotonic() < episode.retry_at:
            return False
        try:
            self._write_held()
        except StoreError:  # transient only: _write_held drops what fails otherwise
            episode.delay_s = min(RETRY_MAX_S, episode.delay_s * 2)
            episode.retry_at = self._clock.monotonic() + episode.delay_s
            return False
        self.episode = None
        lost = ", ".join(f"{n} {kind}" for kind, n in sorted(episode.lost.items()))
        log.warning("the database %s can be written again (it could not since %s): what was "
                    "held is saved%s", self._store.path, episode.since,
                    f"; lost for lack of memory: {lost}" if lost else "")  # fmt: skip
        return True

    def clear(self) -> None:
        """Forget what is held (a purge deletes everything collected before it)."""
        self._sessions.clear()
        self._devices.clear()
        self._settings.clear()
        for queue in self._held.values():
            queue.clear()
        self._counts.clear()

    def describe(self) -> dict | None:
        """For ``tagstat status`` and ``explain``: the episode, or None."""
        e = self.episode
        if e is None:
            return None
        return {
            "database": str(self._store.path),
            "since": e.since.isoformat(timespec="seconds") if e.since else None,
            "error": e.error,
            "held_writes": self.held(),
            "lost": dict(e.lost),
            "retry_in_s": round(max(0.0, e.retry_at - self._clock.monotonic()), 1),
        }

    # -- internals ----------------------------------------------------------------------

    def _write(self, kind: str, method: str, args, kwargs=None) -> None:
        if not self._try(lambda: getattr(self._store, method)(*args, **(kwargs or {}))):
            self._hold(kind, (method, args, kwargs or {}))

    def _hold(self, kind: str, call) -> None:
        queue = self._held[kind]
        queue.append(call)
        if len(queue) > LIMITS[kind]:
            queue.popleft()
            self.episode.lost[kind] += 1

    def _try(self, write) -> bool:
        """Write now unless an episode holds writes; False if the write must be held."""
        if self.episode is not None:
            return False
        try:
            write()
        except StoreError as exc:
            if not transient(exc):
                log.error("a write to the database failed and is dropped: %s", exc)
                return True
            self._begin(exc)
            return False
        return True

    def _begin(self, exc: StoreError) -> None:
        cause = exc.__cause__ or exc
        self.episode = Episode(
            since=self._clock.utc_now(),
            error=str(cause),
            retry_at=self._clock.monotonic() + RETRY_FIRST_S,
        )
        log.error(
            "cannot write the database %s: %s. tagstatd goes on collecting and holds what it "
            "cannot write in memory (see docs/ADMIN.md for the limits), and retries; free "
            "space on its file system, or make it writable, and nothing held is lost",
            self._store.path, cause,
        )  # fmt: skip

    def _write_held(self) -> None:
        """Write held records oldest first; each is forgotten once it is written."""
        while self._settings:
            key = next(iter(self._settings))
            self._guarded(self._store.set_setting, key, self._settings[key])
            del self._settings[key]
        while self._devices:
            device_id = next(iter(self._devices))
            self._guarded(self._store.upsert_device, self._devices[device_id])
            del self._devices[device_id]
        if self._sessions:
            self._guarded(self._store.save_sessions, list(self._sessions.values()))
            self._sessions.clear()
        for queue in self._held.values():
            while queue:
                method, args, kwargs = queue[0]
                self._guarded(getattr(self._store, method), *args, **kwargs)
                queue.popleft()
        while self._counts:
            status = next(iter(self._counts))
            self._guarded(self._store.record_daemon_counts, self._counts_at, status,
                          dict(self._counts[status]))  # fmt: skip
            del self._counts[status]

    @staticmethod
    def _guarded(write, *args, **kwargs) -> None:
        """Raise only a transient failure; drop (and log) anything else."""
        try:
            write(*args, **kwargs)
        except StoreError as exc:
            if transient(exc):
                raise
            log.error("a held write could not be saved and is dropped: %s", exc)
