"""A full disk is an episode, not a crash: tagstatd keeps polling and answering, holds what it
cannot write (bounded), logs once, retries with a back-off, and writes everything when it can.

The failure is real SQLite's: ``PRAGMA query_only`` makes every write fail with
SQLITE_READONLY, as a file system remounted read-only does; a full disk (SQLITE_FULL) is the
same episode, tested on a real small file system in tests/e2e/test_full_disk.py."""

import datetime as dt
import logging
import sqlite3

import pytest
from service_sim import DEVICE, T0, SimService

from tagstat import explain
from tagstat.errors import StoreError
from tagstat.records import SessionRecord
from tagstat.status import UsageStatisticsStatus as S
from tagstat.store_writeback import LIMITS, RETRY_MAX_S, WriteBack, transient

RATE = 20_000_000
ULTRA = DEVICE | {"rate": [[0, RATE]], "messages": [[0.5, "warning", "overflow"]], "loop_s": 3}


@pytest.fixture
def sim(tmp_path):
    s = SimService(tmp_path / "home", ULTRA, checkpoint_s=1.0)
    yield s
    s.close()


def fill(store) -> None:
    """From now on every write to the database fails, as on a read-only file system."""
    store._db.execute("PRAGMA query_only = ON")


def free(store) -> None:
    store._db.execute("PRAGMA query_only = OFF")


def poll_until_holding(sim, limit=600) -> int:
    for n in range(1, limit):
        sim.poll(1)
        sim.service.checkpoint()
        if sim.service.writes.holding:
            return n
    raise AssertionError("the read-only database never refused a write")


def stored_bytes(sim) -> int:
    return sum(s.bytes_total for s in sim.service.store.sessions())


def test_a_full_database_loses_nothing_and_the_api_goes_on(sim, caplog):
    sim.poll(3)
    fill(sim.service.store)
    poll_until_holding(sim)
    full_at = sim.clock.t
    sim.poll(120)  # two minutes of a full disk
    state = sim.service.get_status()
    assert state["storage"]["error"] == "attempt to write a readonly database"
    assert state["storage"]["held_writes"] > 0 and state["storage"]["lost"] == {}
    shown = "\n".join(explain.status_lines(state, None))  # tagstat status
    assert f"Database: {sim.service.store.path} cannot be written since" in shown
    assert "Database:" in explain.render(explain.explanation(state))  # tagstat explain
    assert "writes held" in sim.service.status_line()  # systemctl status
    (open_session,) = [s for s in sim.service.list_sessions() if s["open"]]
    assert open_session["bytes"] == RATE * (full_at + 120 - T0.timestamp() - 1)  # held, shown
    assert sim.service.get_report()  # reads still answer
    errors = [r for r in caplog.records if "cannot write the database" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # once per episode
    assert str(sim.service.store.path) in errors[0].getMessage()

    free(sim.service.store)
    sim.clock.t += RETRY_MAX_S  # the next retry is due
    sim.poll(1)
    assert sim.service.flush_writes() is True  # what the poll loop calls every round
    assert sim.service.writes.holding is False and sim.service.get_status()["storage"] is None
    sim.service.checkpoint()
    assert stored_bytes(sim) == RATE * (sim.clock.t - T0.timestamp() - 1)  # every byte
    messages = sim.service.store.messages()
    elapsed = sim.clock.t - T0.timestamp()
    assert messages[0].count == int((elapsed - 0.5) // 3) + 1  # one every 3 s, all kept
    assert any("can be written again" in r.getMessage() for r in caplog.records)


def test_retries_back_off_and_each_costs_no_new_log_line(sim, caplog):
    sim.poll(2)
    fill(sim.service.store)
    poll_until_holding(sim)
    delays = []
    for _ in range(8):
        episode = sim.service.writes.episode
        delays.append(round(episode.retry_at - sim.clock.t))
        sim.clock.t = episode.retry_at
        sim.service.flush_writes()
    assert delays[:6] == [1, 2, 4, 8, 16, 32] and delays[6:] == [60, 60]
    assert sum("cannot write the database" in r.getMessage() for r in caplog.records) == 1


def test_a_period_closes_whole_once_the_database_can_be_written(tmp_path):
    sim = SimService(tmp_path / "home", ULTRA, upload_interval_s=30.0, checkpoint_s=1.0)
    try:
        sim.set_status(S.CollectingAndUploading)
        sim.poll(5)
        fill(sim.service.store)
        poll_until_holding(sim)
        sim.poll(40)  # the period is due, but its data is in memory
        sim.service.close_period_if_due()
        assert sim.service.store.outbox_pending() == []
        retry_at = sim.service.writes.episode.retry_at
        sim.service.close_period_if_due()  # again at once: no new attempt before the back-off
        assert sim.service.writes.episode.retry_at == retry_at
        free(sim.service.store)
        sim.clock.t += RETRY_MAX_S
        sim.service.close_period_if_due()
        (entry,) = sim.service.store.outbox_pending()
        (session,) = __import__("json").loads(entry.body)["sessions"]
        assert session["bytes"] == RATE * (sim.clock.t - RETRY_MAX_S - T0.timestamp() - 1)
    finally:
        sim.close()


def test_stopping_during_an_episode_says_what_is_lost_and_does_not_raise(sim, caplog):
    sim.poll(2)
    fill(sim.service.store)
    poll_until_holding(sim)
    sim.poll(5)
    sim.close()  # no exception: the daemon exits 0 and is not restarted in a loop
    lost = [r.getMessage() for r in caplog.records if "which are lost" in r.getMessage()]
    assert len(lost) == 1 and "still cannot be written" in lost[0]


# -- the bounds, over a store that refuses on demand -----------------------------------------


def real_full_error() -> StoreError:
    """The StoreError the store raises for SQLITE_FULL, made by a real full database."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")
    try:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 10)
    except sqlite3.Error as exc:
        error = StoreError(f"database t.db: write failed: {exc}")
        error.__cause__ = exc
        return error
    raise AssertionError("the capped database took every row")


class Refusing:
    """A store whose writes fail like a full disk while ``full`` is set; it records writes."""

    path = "t.db"

    def __init__(self):
        self.full, self.written = True, []

    def __getattr__(self, name):
        def write(*args, **kwargs):
            if self.full:
                raise real_full_error()
            self.written.append((name, args))

        return write


class Clock:
    t = 0.0

    def monotonic(self):
        return self.t

    def utc_now(self):
        return T0 + dt.timedelta(seconds=self.t)


def test_held_writes_are_bounded_oldest_first_and_losses_counted():
    store, clock = Refusing(), Clock()
    wb = WriteBack(store, clock)
    for i in range(LIMITS["sensors"] + 500):
        wb.record_sensors("d", T0, 1, {"t": float(i)})
    session = SessionRecord("s", "d", 1, T0, T0, 1.0, 1, 1, 1.0, 1.0, "super", {}, True, None,
                            "b", 0, 0, 0, T0)  # fmt: skip
    for n in range(100):  # a session checkpointed 100 times is held once
        wb.save_session(session.__class__(**{**session.__dict__, "bytes_total": n}))
    assert wb.held() == LIMITS["sensors"] + 1 and wb.episode.lost == {"sensors": 500}
    store.full, clock.t = False, 1.0
    assert wb.flush() is True and wb.episode is None
    sensors = [args[3]["t"] for name, args in store.written if name == "record_sensors"]
    assert sensors == [float(i) for i in range(500, LIMITS["sensors"] + 500)]  # the newest
    (saved,) = [args[0] for name, args in store.written if name == "save_sessions"]
    assert [s.bytes_total for s in saved] == [99]


def test_a_write_that_fails_for_another_reason_is_dropped_not_held(caplog):
    class Broken(Refusing):
        def __getattr__(self, name):
            def write(*args, **kwargs):
                raise StoreError("database t.db: write failed: UNIQUE constraint failed")

            return write

    wb = WriteBack(Broken(), Clock())
    wb.record_message("d", "warning", "x", T0, 1)
    assert wb.holding is False and wb.held() == 0
    assert "dropped" in caplog.text


@pytest.mark.parametrize(
    ("code", "expected"), [(13, True), (8, True), (10, True), (5, True), (19, False), (1, False)]
)
def test_which_sqlite_errors_are_an_episode(code, expected):
    cause = sqlite3.OperationalError("x")
    cause.sqlite_errorcode = code
    error = StoreError("x")
    error.__cause__ = cause
    assert transient(error) is expected
