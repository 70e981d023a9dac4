"""Kill switches: which variables count, and that they beat the stored status in tagstatd
(in process, on a simulated Time Tagger) and in a client, before any socket I/O."""

import pytest
from service_sim import T0, poll

from tagstat import client as api
from tagstat import killswitch
from tagstat.clock import ManualClock
from tagstat.errors import DaemonNotRunningError
from tagstat.status import UsageStatisticsStatus as S

ALL = (*killswitch.SWITCHES, *killswitch.CI_VARIABLES)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ALL:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value", ["1", "true", "yes", " 1 ", "TRUE", "anything"])
def test_a_switch_is_on_for_any_value_but_empty_0_or_false(value):
    assert killswitch.daemon_switch({"DO_NOT_TRACK": value}, allow_in_ci=True).kind == "disable"


@pytest.mark.parametrize("value", ["", "0", "false", "False", " 0 "])
def test_empty_0_and_false_mean_off(value):
    env = {"DO_NOT_TRACK": value, "TAGSTAT_DISABLE": value, "CI": value}
    assert killswitch.daemon_switch(env, allow_in_ci=False) is None
    assert killswitch.client_switch(env) is None


def test_tagstat_disable_is_reported_first_and_hard_switches_beat_allow_in_ci():
    env = {"DO_NOT_TRACK": "1", "TAGSTAT_DISABLE": "1", "CI": "true"}
    switch = killswitch.daemon_switch(env, allow_in_ci=True)
    assert (switch.variable, switch.setting) == ("TAGSTAT_DISABLE", "TAGSTAT_DISABLE=1")


@pytest.mark.parametrize("name", killswitch.CI_VARIABLES)
def test_each_ci_variable_disables_the_daemon_unless_allowed(name):
    switch = killswitch.daemon_switch({name: "true"}, allow_in_ci=False)
    assert switch.kind == "ci" and switch.variable == name
    assert "allow_in_ci = true" in switch.reason()
    assert killswitch.daemon_switch({name: "true"}, allow_in_ci=True) is None
    assert killswitch.client_switch({name: "true"}) is None  # the daemon's decision


def test_a_value_that_may_name_a_host_is_not_repeated():
    switch = killswitch.daemon_switch({"JENKINS_URL": "https://ci.lab.example/"}, allow_in_ci=False)
    assert switch.value is None and switch.setting == "JENKINS_URL"
    assert "example" not in str(switch.to_dict())


def test_a_generic_build_number_is_not_taken_for_ci():
    assert killswitch.daemon_switch({"BUILD_NUMBER": "7"}, allow_in_ci=False) is None


def test_refusals_say_what_to_do():
    daemon = killswitch.Switch("DO_NOT_TRACK", "1", "disable", "daemon")
    ci = killswitch.Switch("CI", "true", "ci", "daemon")
    client = killswitch.Switch("TAGSTAT_DISABLE", "1", "disable", "client")
    assert "restart tagstatd" in str(killswitch.refusal(daemon, "Collecting"))
    assert "allow_in_ci = true" in str(killswitch.refusal(ci, "Collecting"))
    assert "unset TAGSTAT_DISABLE" in str(killswitch.refusal(client, "Collecting"))


def test_from_dict_takes_only_what_it_knows():
    assert killswitch.Switch.from_dict(None) is None
    assert killswitch.Switch.from_dict({"variable": 3}) is None
    s = killswitch.Switch.from_dict({"variable": "CI", "value": ["x"], "kind": "evil"})
    assert (s.variable, s.value, s.kind, s.where) == ("CI", None, "disable", "daemon")


# -- the client side: decided before any socket I/O --------------------------------------


@pytest.mark.parametrize("name", killswitch.SWITCHES)
def test_client_with_a_switch_sees_disabled_and_cannot_switch_collection_on(
    name, monkeypatch, tmp_path
):
    monkeypatch.setenv(name, "1")
    monkeypatch.setenv("TAGSTAT_HOME", str(tmp_path))  # no daemon there
    assert api.getUsageStatisticsStatus() == S.Disabled
    for status in (S.Collecting, S.CollectingAndUploading):
        with pytest.raises(killswitch.KillSwitchOn, match=f"{name}=1 in this program"):
            api.setUsageStatisticsStatus(status)
    with pytest.raises(DaemonNotRunningError):  # Disabled is allowed: it goes to tagstatd
        api.setUsageStatisticsStatus(S.Disabled)


def test_client_without_a_switch_asks_the_daemon(monkeypatch, tmp_path):
    monkeypatch.setenv("TAGSTAT_HOME", str(tmp_path))
    with pytest.raises(DaemonNotRunningError):
        api.getUsageStatisticsStatus()


# -- the daemon side, in process ------------------------------------------------------------


def test_without_a_switch_the_simulated_device_is_recorded(service_factory):
    service = service_factory()
    service.set_status(S.CollectingAndUploading, True)
    poll(service)
    assert service.store.devices() and service.keeper.forced_by is None


@pytest.mark.parametrize("env", [{"TAGSTAT_DISABLE": "1"}, {"DO_NOT_TRACK": "1"}, {"CI": "true"}])
def test_a_daemon_switch_beats_a_stored_collecting_and_uploading(env, service_factory, monkeypatch):
    service = service_factory()
    service.set_status(S.CollectingAndUploading, True)
    service_factory.stop(service)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    service = service_factory()
    status = service.get_status()
    assert (status["status"], status["stored_name"]) == (0, "CollectingAndUploading")
    assert status["forced_by"]["variable"] == next(iter(env))
    poll(service)
    assert service.store.devices() == [] and service.store.sessions() == []
    assert service.poller.attached() == []  # USB was not even scanned
    assert service.outbox.sendable_kinds() == ()  # nothing leaves, not even deletions
    assert service.record_measurements([{"type": "Counter"}])["stored"] == 0
    assert "forced by" in service.status_line()


def test_set_status_under_a_daemon_switch_refuses_collecting_and_stores_disabled(
    service_factory, monkeypatch
):
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    service = service_factory()
    with pytest.raises(killswitch.KillSwitchOn, match="DO_NOT_TRACK=1 in tagstatd"):
        service.set_status(S.Collecting, True)
    assert service.keeper.current == S.Collecting  # unchanged: the stored status
    service.set_status(S.Disabled, True)
    assert service.get_status()["stored_name"] == "Disabled"


def test_allow_in_ci_lets_the_daemon_collect_and_a_reload_applies_it(
    service_factory, monkeypatch, tmp_path
):
    monkeypatch.setenv("CI", "true")
    service = service_factory(allow_in_ci=True)
    poll(service)
    assert service.store.devices() and service.keeper.forced_by is None
    (tmp_path / "tagstat.toml").write_text("allow_in_ci = false\n")
    assert service.reload()
    assert service.keeper.forced_by.variable == "CI"
    assert service.poller.attached() == []  # forgotten: nothing is polled any more
    (tmp_path / "tagstat.toml").write_text("allow_in_ci = true\n")
    assert service.reload() and service.keeper.effective == S.Collecting


def test_a_switch_neither_cancels_waiting_reports_nor_withdraws_consent(
    service_factory, monkeypatch
):
    # A hand-driven clock: on the wall clock a slow poll let a second period end before
    # the stop, and the test saw two reports waiting instead of one.
    clock = ManualClock(T0)
    service = service_factory(clock, upload_interval_s=1)
    service.set_status(S.CollectingAndUploading, True)
    for _ in range(8):
        clock.t += 0.05
        service.poll_once()
    service.checkpoint()
    assert service.outbox.close_period() is not None
    user_id = service.keeper.user_id
    service_factory.stop(service)  # within the next period: it holds nothing new
    monkeypatch.setenv("TAGSTAT_DISABLE", "1")
    service = service_factory(clock, upload_interval_s=1)
    assert [e.state for e in service.store.outbox_pending("usage")] == ["pending"]
    assert service.keeper.user_id == user_id and service.outbox.next_to_send() is None
    assert service.outbox.close_period() is None  # no period closes under the switch
