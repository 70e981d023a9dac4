"""The consent prompt: on the first interactive ``tagstat`` run, and in ``tagstat setup``.

The first time someone runs ``tagstat`` on a terminal (stdin and stdout both
TTYs) and tagstatd has no answer for its report schema, this shows what is
collected (from the shipped ``docs/DATA.md``), what is never collected, an
example report built by the real builder from synthetic data, and where
uploads would go, then asks whether to upload; the default is no. The answer
is recorded in tagstatd with the schema version it covers (``set_consent``,
an admin op), so it is never asked again for that version. When the schema
has grown while uploading, only the new fields are shown and asked about.
Nothing is asked without a terminal, under a kill switch (here or in
tagstatd), when the site's ``max_status`` forbids uploads, or when this user
may not answer (then one line says who can); ``tagstat setup`` asks again on
request and says clearly why it cannot when it cannot.
"""

import json
import sys

from tagstat import datadoc, explain, killswitch
from tagstat.errors import ApiError, TagstatError
from tagstat.example_report import example_report
from tagstat.fields import current as current_schema

INLINE_CHARS = 72  # JSON containers up to this long are printed on one line


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def before_command(client, args) -> None:
    """Ask the first-run question if this run is the one to ask it; else do nothing."""
    if args.command == "setup" or not interactive() or killswitch.client_switch():
        return
    if args.command == "status" and getattr(args, "status", None) is not None:
        return  # setting the status is itself the answer
    try:
        state = client.status()
    except TagstatError:
        return  # the command itself will say that tagstatd does not answer
    consent = state.get("consent")
    if not isinstance(consent, dict) or not consent.get("needs") or not _can_upload(state):
        return
    if not _may_answer(client, consent):
        print(
            "tagstat: whether to upload usage statistics has not been decided yet; a member "
            "of the admin group can run `tagstat setup`",
            file=sys.stderr,
        )
        return
    ask(client, state, consent["needs"])


def setup(client) -> None:
    """``tagstat setup``: show what is collected and ask, even if asked before."""
    if not interactive():
        raise TagstatError(
            "tagstat setup asks a question and needs a terminal (stdin and stdout are not "
            "both one); from a script, choose with `tagstat status collecting-and-uploading` "
            "or `tagstat status collecting`, and read `tagstat explain` first"
        )
    switch = killswitch.client_switch()
    if switch is not None:
        raise killswitch.refusal(switch, "CollectingAndUploading")
    state = client.status()
    consent = state.get("consent")
    if not isinstance(consent, dict):
        raise TagstatError("this tagstatd does not record consent; restart it after upgrading")
    forced = killswitch.Switch.from_dict(state.get("forced_by"))
    if forced is not None:
        raise killswitch.refusal(forced, "CollectingAndUploading")
    if not consent.get("upload_allowed"):
        print(explain.render(explain.explanation(state)))
        raise TagstatError(
            "this site does not allow uploads (max_status in the tagstat "
            "configuration); there is nothing to agree to"
        )
    _check_versions(consent)
    client.set_consent(consent["schema_version"], False, dry_run=True)  # may this user answer?
    # Uploading with fields left out: the open question is those fields, not uploading.
    uploading = state.get("stored_name") == "CollectingAndUploading"
    ask(client, state, "new_fields" if uploading and consent.get("left_out") else "first_run")


def ask(client, state: dict, question: str) -> None:
    consent = state["consent"]
    version = consent["schema_version"]
    if question == "new_fields":
        print(new_fields_text(consent))
        prompt = "Upload these new fields too? [y/N] "
    else:
        print(first_run_text(state))
        prompt = "Upload usage statistics collected from now on? [y/N] "
    answer = _answer(prompt)
    if answer is None:
        print("\nno answer; nothing recorded")
        return
    try:
        after = client.set_consent(version, answer, new_fields=question == "new_fields")
    except ApiError as exc:  # permission denied, a policy, a kill switch set meanwhile
        print(f"tagstat: your answer was not recorded: {exc}", file=sys.stderr)
        return
    print(_recorded(answer, question, after))


def _answer(prompt: str) -> bool | None:
    """True for y/yes, False for anything else (Enter: the default, no); None on EOF.
    Ctrl-C stops the whole command (the CLI exits 130 saying nothing was recorded)."""
    try:
        text = input(prompt)
    except EOFError:
        return None
    except KeyboardInterrupt:
        raise KeyboardInterrupt("nothing recorded") from None
    return text.strip().lower() in ("y", "yes")


def _recorded(answer: bool, question: str, after: dict) -> str:
    status = after.get("name", "?")
    if question == "new_fields":
        what = "the new fields will be uploaded" if answer else "the new fields stay left out"
    else:
        what = "uploads are on" if answer else "nothing will be uploaded"
    return (
        f"Recorded: {what}; status {status}. Change it any time with `tagstat setup` "
        "or `tagstat status`; `tagstat explain` says what happens now."
    )


def first_run_text(state: dict) -> str:
    endpoint = (state.get("upload") or {}).get("endpoint")
    where = endpoint or "the collector an admin names in upload_url (none is set yet)"
    consent = state.get("consent") or {}
    now = (
        explain.consent_sentence(consent) if explain.decided(consent)
        else "Nothing has been decided about uploading them yet."
    )  # fmt: skip
    lines = [
        "tagstat keeps usage statistics of the Time Taggers on this computer, locally",
        f"(status {state.get('name', '?')}). It can also upload them.",
        *explain.wrap(now),
        "",
        "What a report holds (docs/DATA.md):",
        *explain.field_lines(list(datadoc.field_rows())),
        "",
        *explain.wrap("Never collected: " + explain.explanation(state)["never_collected"]),
        "",
        "An example report: what one upload would hold for one Time Tagger and a few minutes",
        "(made by tagstat's own code from a simulated instrument; the serial is masked as it",
        "would be, the host is invented):",
        compact_json(example_report(current_schema(), state["consent"]["schema_version"])),
        "",
        f"If you agree, reports go to {where}, once per upload period, and only data",
        "collected from now on; data collected before is never uploaded.",
    ]
    return "\n".join(lines)


def new_fields_text(consent: dict) -> str:
    new = consent.get("left_out") or []
    lines = [
        f"The usage report has new fields (report schema {consent['schema_version']}); you "
        f"agreed to upload schema {consent.get('agreed_version')}.",
        "Until you agree, uploads leave these out:",
        *explain.field_lines(new),
    ]
    return "\n".join(lines)


def _can_upload(state: dict) -> bool:
    consent = state.get("consent") or {}
    return (
        bool(consent.get("upload_allowed")) and not state.get("forced_by") and _same_schema(consent)
    )


def _same_schema(consent: dict) -> bool:
    return consent.get("schema_version") == current_schema().version


def _check_versions(consent: dict) -> None:
    if not _same_schema(consent):
        raise TagstatError(
            f"tagstatd uses report schema {consent.get('schema_version')} but this tagstat "
            f"knows schema {current_schema().version}; restart tagstatd after upgrading "
            "(systemctl restart tagstatd), then run tagstat setup again"
        )


def _may_answer(client, consent: dict) -> bool:
    try:
        client.set_consent(consent["schema_version"], False, dry_run=True)
    except TagstatError:
        return False  # PermissionDenied, or the daemon went away: not this run
    return True


def compact_json(value, indent: str = "") -> str:
    """Pretty JSON that keeps short objects and lists on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(flat) + len(indent) <= INLINE_CHARS or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, list):
        items = [inner + compact_json(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    items = [f"{inner}{json.dumps(k)}: {compact_json(v, inner)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + f"\n{indent}}}"
