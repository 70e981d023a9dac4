"""What tagstat does now, in words: ``tagstat explain`` and the privacy lines of ``tagstat status``.

Everything said here comes from tagstatd's answer to ``get_status`` (the
effective status, any kill switch, the upload endpoint, the consent record)
and from the shipped ``docs/DATA.md`` (``tagstat.datadoc``): the status
table says what each status collects and uploads, the report table what each
field is. So the explanation and the documentation cannot disagree. A kill
switch in this program's own environment (``tagstat.killswitch``) is shown
too: it turns applications started from here off, not tagstatd.
"""

import textwrap

from tagstat import datadoc
from tagstat.fields import parent
from tagstat.killswitch import Switch

WIDTH = 88
UPLOADING = "CollectingAndUploading"


def explanation(state: dict, client_switch: Switch | None = None) -> dict:
    """The facts, as JSON-ready data (``tagstat explain --json``)."""
    status = str(state.get("name", "?"))
    collected, uploaded = datadoc.status_rows().get(status, ("?", "?"))
    consent = state.get("consent") if isinstance(state.get("consent"), dict) else {}
    endpoint = (state.get("upload") or {}).get("endpoint") if status == UPLOADING else None
    left_out = consent.get("left_out") or []
    rows = datadoc.field_rows()
    switches = [s for s in (Switch.from_dict(state.get("forced_by")), client_switch) if s]
    return {
        "status": status,
        "stored_status": state.get("stored_name", status),
        "kill_switches": [s.to_dict() for s in switches],
        "collected": collected,
        "uploaded": uploaded,
        "upload_to": endpoint,
        "upload_url_configured": bool((state.get("upload") or {}).get("endpoint")),
        "consent": consent,
        "fields_collected": [] if status == "Disabled" else list(rows),
        "fields_uploaded": [p for p in rows if p not in left_out] if status == UPLOADING else [],
        "never_collected": " ".join(datadoc.paragraphs(datadoc.section("Never collected"))),
        "storage": state.get("storage"),
        "source": "docs/DATA.md",
    }


def render(facts: dict) -> str:
    """``explanation()`` as text for a terminal."""
    out = [f"Status: {facts['status']}" + _stored_note(facts)]
    out += [
        f"Kill switch: {s['setting']} is set; tagstat is Disabled, {s['reason']}."
        for s in facts["kill_switches"]
    ]
    out.append(f"Collected: {facts['collected']}.")
    if facts.get("storage"):
        out += wrap(storage_sentence(facts["storage"]))
    where = facts["upload_to"] or "nowhere"
    if facts["status"] == UPLOADING and not facts["upload_to"]:
        where = "nowhere yet: no upload_url is configured, so reports wait on this computer"
    out.append(f"Uploaded: {facts['uploaded']}; to {where}.")
    out.append(consent_sentence(facts["consent"]))
    if facts["fields_collected"]:
        out += ["", "What a report holds (docs/DATA.md):", *field_lines(facts["fields_collected"])]
    if facts["status"] == UPLOADING:
        left_out = [p for p in facts["fields_collected"] if p not in facts["fields_uploaded"]]
        if left_out:
            out += [
                "",
                "Left out of uploads until you agree (tagstat setup):",
                *field_lines(left_out),
            ]
    out += ["", *wrap(f"Never collected: {facts['never_collected']}")]
    return "\n".join(out)


def _stored_note(facts: dict) -> str:
    if facts["stored_status"] != facts["status"]:
        return f" (the stored status {facts['stored_status']} returns when the switch is removed)"
    return ""


# Who recorded the decision (tagstat.consent.BY), in words.
BY_WORDS = {
    "prompt": "at the prompt of tagstat setup",
    "cli": "with `tagstat status`",
    "api": "by a program through the API (setUsageStatisticsStatus)",
    "policy": "by the site's max_status",
}


def decided(consent: dict) -> bool:
    """Whether anything was decided about uploads, by anyone."""
    return consent.get("asked_version") is not None or consent.get("agreed_version") is not None


def consent_sentence(consent: dict) -> str:
    """One line about the consent record, for ``status``, ``explain`` and ``setup`` alike:
    what was decided, for which report schema, by whom and when."""
    if not consent:
        return "Consent: unknown (tagstatd is older than this tagstat)."
    version, agreed = consent.get("schema_version"), consent.get("agreed_version")
    who = _who(consent)
    if consent.get("needs") == "new_fields":
        return (
            f"Consent: uploads are agreed for report schema {agreed}{who}; schema {version} "
            "has new fields that need consent and are left out until then (tagstat setup):"
        )
    if agreed is not None and consent.get("left_out"):
        return (
            f"Consent: uploads are agreed for report schema {agreed}; the newer fields of "
            f"schema {version} were declined{who} and are left out (tagstat setup asks again)."
        )
    if agreed is not None:
        return f"Consent: uploads agreed for report schema {agreed}{who}."
    if not decided(consent):
        return "Consent: not decided yet; `tagstat setup` shows what is collected and asks."
    return f"Consent: uploads declined for report schema {consent['asked_version']}{who}."


def _who(consent: dict) -> str:
    by, at = consent.get("answered_by"), consent.get("answered_at")
    if by is None and at is None:
        return " (uploading was on before tagstat recorded consent)"
    words = f" {BY_WORDS[by]}" if by in BY_WORDS else ""
    return f"{words}, {_when(at)}" if at else words


def _when(stamp) -> str:
    text = str(stamp)
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 and text[10] == "T" else text


def status_lines(state: dict, client_switch: Switch | None) -> list[str]:
    """What ``tagstat status`` adds: switches in force and the consent state."""
    lines = []
    forced = Switch.from_dict(state.get("forced_by"))
    if forced is not None:
        lines.append(f"Disabled ({forced.reason()}; stored status: {state.get('stored_name')})")
    if client_switch is not None:
        lines.append(
            f"Disabled for this program ({client_switch.reason()}): applications started "
            f"from here see Disabled and send nothing; tagstatd's status is {state.get('name')}"
        )
    if isinstance(state.get("storage"), dict):
        lines.append(storage_sentence(state["storage"]))
    consent = state.get("consent")
    if isinstance(consent, dict):
        lines.append(consent_sentence(consent))
        if consent.get("needs") == "new_fields":
            lines += field_lines(consent.get("left_out") or [])
    return lines


def storage_sentence(storage: dict) -> str:
    """A full-disk episode (tagstat.store_writeback), for ``status`` and ``explain``."""
    lost = storage.get("lost") or {}
    lost_text = ", ".join(f"{n} {kind}" for kind, n in sorted(lost.items()))
    return (
        f"Database: {storage.get('database')} cannot be written since {storage.get('since')} "
        f"({storage.get('error')}); {storage.get('held_writes')} writes are held in memory "
        f"and retried in {storage.get('retry_in_s')} s"
        + (f"; lost for lack of memory: {lost_text}" if lost_text else "")
        + ". Free space on its file system (or make it writable): nothing held is lost."
    )


def field_lines(paths: list[str]) -> list[str]:
    """Fields as DATA.md describes them: each top-level one, its parts listed under it."""
    rows = datadoc.field_rows()
    lines, wanted = [], set(paths)
    for path in paths:
        if parent(path) in wanted:
            continue  # listed with its parent
        row = rows.get(path)
        what = row.what if row else "(not described in this tagstat's DATA.md)"
        lines += wrap(f"{path}: {what}", indent="  ")
        parts = [p.removeprefix(path).lstrip(".") for p in paths if _under(p, path)]
        if parts:
            lines += wrap("parts: " + ", ".join(parts), indent="      ")
    return lines


def _under(path: str, top: str) -> bool:
    up = parent(path)
    while up is not None:
        if up == top:
            return True
        up = parent(up)
    return False


def wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")
