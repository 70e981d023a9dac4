"""The daemon's side of measurement events: checking, status, storage, retention and report."""

import datetime as dt

import pytest

from tagstat import measurement_data as md
from tagstat import store as store_module
from tagstat.clock import iso
from tagstat.records import StatusChange
from tagstat.report import build_report
from tagstat.status import UsageStatisticsStatus
from tagstat.store import Store

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)


def raw(at=T0, seconds=2.0, **fields):
    event = {"type": "Correlation", "start": iso(at),
             "end": iso(at + dt.timedelta(seconds=seconds)), "duration_s": seconds, "error": None,
             "config": {"binwidth": 1000}, "indicators": {"cpu_time_s": 0.5}}  # fmt: skip
    return event | fields


def event(type_="Correlation", start=T0, seconds=1.0, error=None, config=None, indicators=None):
    return md.MeasurementEvent(type_, start, start + dt.timedelta(seconds=seconds), seconds,
                               error, config or {}, indicators or {})  # fmt: skip


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "t.db")
    yield s
    s.close()


# -- validate --------------------------------------------------------------------------


def test_a_good_event_is_kept():
    (e,), rejected = md.validate([raw()], now=T0 + dt.timedelta(minutes=1))
    assert rejected == 0
    assert e == event(seconds=2.0, config={"binwidth": 1000}, indicators={"cpu_time_s": 0.5})


def test_the_daemon_minimises_again_whatever_the_socket_brings():
    evil = raw(type="/home/alice/run.py", error="FileNotFoundError: /home/alice/1740000JEH",
               config={"binwidth": 1000, "file": "/home/alice/x", "resolution": "my text"},
               indicators={"events_processed": "many", "cpu_time_s": 1}, user="alice")  # fmt: skip
    (e,), _ = md.validate([evil], now=T0)
    assert (e.type, e.error, e.config, e.indicators) == (
        "Other",
        "Exception",
        {"binwidth": 1000},
        {"cpu_time_s": 1},
    )


@pytest.mark.parametrize(
    "bad",
    [
        "not an event", None, [1], {},
        raw(start="yesterday"), raw(start="2026-03-01T12:00:00"),  # no time zone
        raw(start="2026-03-01T12:00:00.000Z" + " " * 40), raw(start=1740000000),
        raw(seconds=-1.0),  # ends before it starts
        raw(at=T0 + dt.timedelta(hours=1)),  # ends in the future
    ],
)  # fmt: skip
def test_implausible_events_are_refused(bad):
    assert md.validate([bad], now=T0) == ([], 1)


def test_a_duration_that_does_not_fit_its_stamps_is_replaced_by_their_span():
    (e,), _ = md.validate([raw(seconds=3.0, duration_s=10**6)], now=T0 + dt.timedelta(hours=1))
    assert e.duration_s == 3.0
    (e,), _ = md.validate([raw(seconds=3.0, duration_s="3")], now=T0 + dt.timedelta(hours=1))
    assert e.duration_s == 3.0


def test_too_many_events_in_one_request_is_an_error():
    with pytest.raises(ValueError, match="too many measurement events"):
        md.validate([raw()] * (md.MAX_EVENTS_PER_REQUEST + 1), now=T0)


# -- the status an event is stored under -----------------------------------------------


def change(minutes, old, new):
    return StatusChange(T0 + dt.timedelta(minutes=minutes), old, new, True, "api")


def test_lowest_status_since_the_event_began():
    changes = [change(-60, None, 1), change(10, 1, 2)]
    assert md.lowest_status(T0, changes, current=2) == 1  # began before consent to upload
    assert md.lowest_status(T0 + dt.timedelta(minutes=11), changes, current=2) == 2
    with_pause = [*changes, change(20, 2, 0), change(21, 0, 2)]
    assert md.lowest_status(T0 + dt.timedelta(minutes=15), with_pause, current=2) == 0
    assert md.lowest_status(T0, [], current=1) == 1
    assert md.lowest_status(T0 - dt.timedelta(days=1), changes, current=2) == 1


# -- summarize -------------------------------------------------------------------------


def test_summary_per_type():
    events = [
        event(seconds=1.0, indicators={"events_processed": 100}, config={"binwidth": 1000}),
        event(seconds=2.0, indicators={"events_processed": 900}, config={"binwidth": 1000}),
        event(
            seconds=3.0,
            error="RuntimeError",
            indicators={"events_processed": 200},
            config={"binwidth": 10, "test_signal": True},
        ),  # fmt: skip
        event("Countrate", error="RuntimeError"),
        event("Countrate", error="TimeoutError", config={"test_signal": 1}),
    ]
    correlation, countrate = md.summarize(events)
    assert correlation == {
        "type": "Correlation",
        "count": 3,
        "total_duration_s": 6.0,
        "errors": {"RuntimeError": 1},
        "indicators": {"events_processed": {"min": 100, "median": 200, "max": 900}},
        "config": {
            "binwidth": [{"value": 1000, "count": 2}, {"value": 10, "count": 1}],
            "test_signal": [{"value": True, "count": 1}],
        },
    }
    assert countrate["errors"] == {"RuntimeError": 1, "TimeoutError": 1}
    assert countrate["config"] == {"test_signal": [{"value": 1, "count": 1}]}  # 1 is not True


def test_median_of_an_even_count_and_bounded_config_values():
    events = [event(indicators={"cpu_time_s": v}, config={"n_bins": v}) for v in range(1, 31)]
    (entry,) = md.summarize(events)
    assert entry["indicators"]["cpu_time_s"] == {"min": 1, "median": 15.5, "max": 30}
    assert len(entry["config"]["n_bins"]) == md.MAX_CONFIG_VALUES
    assert md.summarize([]) == []


# -- store, retention, report ----------------------------------------------------------


def test_store_round_trip_with_since_and_status(store):
    early, late = event(start=T0), event("Counter", start=T0 + dt.timedelta(hours=2))
    assert store.record_measurements([(early, 1)], early.end) == 1
    assert store.record_measurements([(late, 2)], late.end) == 1
    assert store.measurements() == [early, late]
    assert store.measurements(since=T0 + dt.timedelta(hours=1)) == [late]
    assert store.measurements(min_status=2) == [late]
    assert store.record_measurements([], T0) == 0


def test_a_period_takes_the_events_received_in_it(store):
    """An event that ended before the period but arrived in it is not lost."""
    late_arrival = event(start=T0)
    store.record_measurements([(late_arrival, 2)], T0 + dt.timedelta(hours=3))
    assert store.measurements(since=T0 + dt.timedelta(hours=2)) == [late_arrival]
    assert store.measurements(since=T0 + dt.timedelta(hours=4)) == []


def test_prune_by_age_and_by_row_count(store, monkeypatch):
    old = event(start=T0 - dt.timedelta(days=200))
    store.record_measurements([(old, 1)] + [(event(start=T0 + dt.timedelta(seconds=i)), 1)
                                            for i in range(5)], T0)  # fmt: skip
    monkeypatch.setattr(store_module, "MAX_MEASUREMENT_ROWS", 3)
    removed = store.prune(T0, 180 * 86400, 1 << 30, 1000)
    assert removed["measurements"] == 3  # the old one by age, then the two oldest by count
    assert [m.start for m in store.measurements()] == [T0 + dt.timedelta(seconds=i)
                                                       for i in (2, 3, 4)]  # fmt: skip


def test_purge_removes_measurements(store):
    store.record_measurements([(event(), 1)], T0)
    store.purge_collected()
    assert store.measurements() == []


def report(store, **kw):
    return build_report(store, user_id="u", status=UsageStatisticsStatus.Collecting, host=None,
                        now=T0 + dt.timedelta(days=1), **kw)  # fmt: skip


def test_report_holds_measurements_and_the_upload_view_only_consented_ones(store):
    store.record_measurements([(event(start=T0 - dt.timedelta(hours=1)), 1),
                               (event("Counter", error="ValueError"), 2)], T0)  # fmt: skip
    r = report(store)
    assert [m["type"] for m in r["measurements"]] == ["Correlation", "Counter"]
    assert r["period"]["start"] == iso(T0 - dt.timedelta(hours=1))
    (counter,) = report(store, min_status=2)["measurements"]
    assert counter["errors"] == {"ValueError": 1}
