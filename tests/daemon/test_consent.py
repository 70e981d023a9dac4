"""Versioned consent: what is asked when, what an answer changes, and that uploads leave out
fields newer than the consent, in tagstatd's service on a simulated Time Tagger."""

import datetime as dt
import json

import pytest
from service_sim import poll

from tagstat import killswitch
from tagstat.clock import Clock
from tagstat.consent import ConsentKeeper
from tagstat.errors import PolicyError
from tagstat.fields import REAL, TEST_SCHEMA_ENV, current
from tagstat.status import UsageStatisticsStatus as S
from tagstat.store import Store

V = REAL.version  # the schema version of this tagstat
BUMP = json.dumps({"version": V + 1, "since": {"measurements[]": V + 1}})


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (*killswitch.SWITCHES, *killswitch.CI_VARIABLES, TEST_SCHEMA_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keeper(tmp_path):
    store = Store.open(tmp_path / "t.db")
    yield ConsentKeeper(store, Clock(), REAL)
    store.close()


def test_a_new_install_is_asked_once(keeper):
    assert keeper.needs(S.Collecting) == "first_run"
    keeper.record(agreed=None, asked=V, by="prompt")  # "no"
    assert keeper.needs(S.Collecting) is None
    assert keeper.get().asked_version == V and keeper.get().upload is False
    assert keeper.get().by == "prompt"


def test_a_no_is_not_asked_again_when_the_schema_grows(keeper):
    keeper.record(agreed=None, asked=V, by="prompt")
    keeper.schema = current({TEST_SCHEMA_ENV: BUMP})
    assert keeper.needs(S.Collecting) is None


def test_a_yes_is_asked_again_about_new_fields_only(keeper):
    keeper.record(agreed=V, asked=V, by="prompt")
    assert keeper.needs(S.CollectingAndUploading) is None
    keeper.schema = current({TEST_SCHEMA_ENV: BUMP})
    assert keeper.needs(S.CollectingAndUploading) == "new_fields"
    described = keeper.describe(S.CollectingAndUploading)
    assert described["left_out"][0] == "measurements[]" and described["agreed_version"] == V
    keeper.record(agreed=V, asked=V + 1, by="prompt")  # "no" to the new fields: not again
    assert keeper.needs(S.CollectingAndUploading) is None
    assert keeper.describe(S.CollectingAndUploading)["left_out"][0] == "measurements[]"


def test_uploading_without_a_record_counts_as_consent_to_version_1(keeper):
    assert keeper.agreed(S.CollectingAndUploading) == 1
    assert keeper.agreed(S.Collecting) is None
    # so the fields schema 2 added are asked about, and left out until agreed
    assert keeper.needs(S.CollectingAndUploading) == "new_fields"
    assert "host.ram_gib" in keeper.describe(S.CollectingAndUploading)["left_out"]


def test_status_changes_agree_and_withdraw(keeper):
    keeper.status_changed(S.Collecting, S.CollectingAndUploading, by="api")
    assert (keeper.get().agreed_version, keeper.get().by) == (V, "api")
    keeper.status_changed(S.CollectingAndUploading, S.Collecting, by="cli")
    assert keeper.get().agreed_version is None and keeper.get().asked_version == V
    assert keeper.describe(S.Collecting)["answered_by"] == "cli"


def test_an_unknown_source_of_a_decision_is_refused(keeper):
    with pytest.raises(ValueError, match="unknown consent source 'someone'"):
        keeper.record(agreed=None, asked=V, by="someone")
    keeper._store.set_setting("consent", {"agreed_version": V, "by": "hacker"})
    assert keeper.get().by is None  # a garbled record names nobody


def test_a_garbled_record_reads_as_none(keeper):
    keeper._store.set_setting("consent", ["not", "a", "record"])
    assert keeper.needs(S.Collecting) == "first_run"
    keeper._store.set_setting("consent", {"agreed_version": "1", "asked_version": True})
    assert keeper.get().agreed_version is None


# -- the service --------------------------------------------------------------------------


def measurement(service) -> dict:
    now = service.clock.utc_now()
    start = (now - dt.timedelta(milliseconds=1)).isoformat()
    event = {"type": "Counter", "start": start, "end": now.isoformat(), "duration_s": 0.001}
    return service.record_measurements([event])


def test_yes_sets_uploading_and_no_goes_back_to_collecting(service_factory):
    service = service_factory()
    state = service.set_consent(V, True, False, False)
    assert state["name"] == "CollectingAndUploading"
    assert state["consent"]["agreed_version"] == V and state["consent"]["needs"] is None
    assert state["consent"]["answered_by"] == "prompt"
    state = service.set_consent(V, False, False, False)
    assert state["name"] == "Collecting" and state["consent"]["agreed_version"] is None
    assert state["consent"]["answered_by"] == "prompt"
    # nothing was sent (no upload_url): nothing to ask a collector to delete
    assert service.store.outbox_pending("deletion") == []


def test_dry_run_and_refusals_record_nothing(service_factory, monkeypatch):
    service = service_factory()
    assert service.set_consent(V, True, False, True)["consent"]["needs"] == "first_run"
    with pytest.raises(ValueError, match=f"schema is version {V}"):
        service.set_consent(V + 1, True, False, False)
    with pytest.raises(ValueError):
        service.set_consent(True, True, False, False)  # a bool is not a version
    service_factory.stop(service)
    service = service_factory(max_status="Collecting")
    assert service.get_status()["consent"]["upload_allowed"] is False
    with pytest.raises(PolicyError):
        service.set_consent(V, True, False, False)
    assert service.get_status()["consent"]["needs"] == "first_run"
    service_factory.stop(service)
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    service = service_factory()
    with pytest.raises(killswitch.KillSwitchOn):
        service.set_consent(V, True, False, False)
    assert service.set_consent(V, False, False, False)["consent"]["asked_version"] == V


def test_a_schema_bump_leaves_new_fields_out_of_uploads_until_agreed(service_factory, monkeypatch):
    service = service_factory(upload_interval_s=1)
    service.set_consent(V, True, False, False)
    service_factory.stop(service)
    monkeypatch.setenv(TEST_SCHEMA_ENV, BUMP)  # an upgrade whose next schema adds measurements
    service = service_factory(upload_interval_s=1)
    state = service.get_status()["consent"]
    assert (state["needs"], state["schema_version"], state["agreed_version"]) == (
        "new_fields", V + 1, V,
    )  # fmt: skip
    poll(service)
    assert measurement(service)["stored"] == 1
    shown = json.loads(service.get_report())  # what the next upload would hold
    assert "measurements" not in shown and shown["schema_version"] == V and shown["sessions"]
    first = service.outbox.close_period()
    body = json.loads(service.store.outbox_get(first).body)
    assert "measurements" not in body and body["devices"]

    service.set_consent(V + 1, False, True, False)  # "no" to the new fields: not asked again
    assert service.get_status()["consent"]["needs"] is None
    assert service.keeper.current == S.CollectingAndUploading  # still uploading the old ones

    service.set_consent(V + 1, True, True, False)  # then "yes"
    assert measurement(service)["stored"] == 1
    shown = json.loads(service.get_report())
    assert shown["measurements"][0]["type"] == "Counter" and shown["schema_version"] == V + 1
    second = service.outbox.close_period()
    assert json.loads(service.store.outbox_get(second).body)["measurements"]


# -- tagstat explain, from get_status and DATA.md ------------------------------------------


def test_explain_says_where_uploads_go_and_what_is_left_out():
    from tagstat.explain import explanation, render

    consent = {"schema_version": 2, "agreed_version": 1, "needs": "new_fields",
               "left_out": ["measurements[]", "measurements[].type"]}  # fmt: skip
    state = {"name": "CollectingAndUploading", "stored_name": "CollectingAndUploading",
             "upload": {"endpoint": "https://stats.example"}, "consent": consent}  # fmt: skip
    facts = explanation(state)
    assert facts["upload_to"] == "https://stats.example" and facts["kill_switches"] == []
    assert (
        "measurements[]" not in facts["fields_uploaded"]
        and "sessions[]" in facts["fields_uploaded"]
    )
    text = render(facts)
    assert "Uploaded: only data collected while the status was 2; to https://stats.example" in text
    assert "Left out of uploads until you agree" in text
    state["upload"] = {"endpoint": None}
    assert "nowhere yet: no upload_url" in render(explanation(state))
    off = {"name": "Disabled", "stored_name": "Collecting", "forced_by": {"variable": "CI",
           "value": "true", "kind": "ci"}, "consent": {"agreed_version": None}}  # fmt: skip
    text = render(explanation(off))
    assert "Uploaded: nothing; to nowhere." in text and "Kill switch: CI=true" in text
    assert "What a report holds" not in text  # Disabled collects nothing
