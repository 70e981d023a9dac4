"""`tagstat status`, `tagstat explain` and `tagstat setup` agree on the consent record: whether
anything was decided, by whom (the prompt, `tagstat status`, a program, the site's policy),
when, and for which schema version. Each state comes from a real service's get_status."""

import pytest

from tagstat import explain, firstrun
from tagstat.fields import REAL
from tagstat.status import UsageStatisticsStatus as S

V = REAL.version


def texts(service) -> dict[str, str]:
    state = service.get_status()
    return {
        "status": "\n".join(explain.status_lines(state, None)),
        "explain": explain.render(explain.explanation(state)),
        "setup": firstrun.first_run_text(state),
    }


def sentence(service) -> str:
    return explain.consent_sentence(service.get_status()["consent"])


def assert_all_say(service, *parts):
    said = sentence(service)
    for part in parts:
        assert part in said, said
    for name, text in texts(service).items():
        assert said in " ".join(text.split()), f"{name} does not say: {said}"


def test_nothing_decided_yet_is_said_everywhere(service_factory):
    service = service_factory()
    said = texts(service)
    assert "Consent: not decided yet" in said["status"] and "not decided yet" in said["explain"]
    assert "Nothing has been decided about uploading them yet." in said["setup"]


@pytest.mark.parametrize(
    ("origin", "words"),
    [("cli", "with `tagstat status`"), ("api", "by a program through the API")],
)
def test_a_status_change_is_a_decision_and_names_who_made_it(service_factory, origin, words):
    service = service_factory()
    service.set_status(S.CollectingAndUploading, True, origin=origin)
    assert_all_say(service, f"uploads agreed for report schema {V}", words, "2026-")
    service.set_status(S.Collecting, True, origin=origin)
    assert_all_say(service, f"uploads declined for report schema {V}", words)
    setup = texts(service)["setup"]
    assert "not decided" not in setup and "has not asked" not in setup


def test_the_prompt_is_named(service_factory):
    service = service_factory()
    service.set_consent(V, False, False, False)
    assert_all_say(service, f"uploads declined for report schema {V}", "at the prompt")
    service.set_consent(V, True, False, False)
    assert_all_say(service, f"uploads agreed for report schema {V}", "at the prompt")


def test_a_site_policy_is_named(service_factory):
    service = service_factory()
    service.set_status(S.CollectingAndUploading, True, origin="cli")
    service.config = type(service.config)(**{**vars(service.config), "max_status": "Collecting"})
    service.enforce_status_cap()
    assert service.keeper.current == S.Collecting
    assert_all_say(service, f"uploads declined for report schema {V}", "by the site's max_status")


def test_uploading_from_before_consent_was_recorded_says_so(service_factory):
    service = service_factory()
    service.keeper.set(S.CollectingAndUploading, True)  # as an older tagstat left it
    said = sentence(service)
    assert "schema 1" in said and "before tagstat recorded consent" in said
