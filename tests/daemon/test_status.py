"""Status words: the documented names in any case, joined by - or _, and 0, 1, 2; nothing else."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagstat.status import UsageStatisticsStatus as S

ACCEPTED = {
    S.Disabled: ["Disabled", "disabled", "DISABLED", "dIsAbLeD", "0", 0, S.Disabled],
    S.Collecting: ["Collecting", "collecting", "COLLECTING", "1", 1],
    S.CollectingAndUploading: [
        "CollectingAndUploading", "collectinganduploading", "COLLECTINGANDUPLOADING",
        "collecting-and-uploading", "Collecting-And-Uploading", "COLLECTING_AND_UPLOADING",
        "collecting_and_uploading", "2", 2,
    ],
}  # fmt: skip

REJECTED = [
    "-2", "+2", "- 2", " 2", "2 ", "02", "2.0", "0x2", "²", "٢", "",
    "collecting and uploading", "collecting-and_uploading", "collecting--and--uploading",
    "-collecting-and-uploading", "collecting-and-uploading-", "collecting-anduploading",
    "c-ollecting", "collecting_", "_disabled", "dis-abled", "disabled\n", " collecting",
    "Collecting And Uploading", "uploading", "enabled", "on", "off", "none", "null",
    3, -1, 99, True, False, None, 2.0, 1.5, [2], {"status": 2}, b"2",
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"), [(v, s) for s, values in ACCEPTED.items() for v in values]
)
def test_documented_spellings_are_accepted(value, expected):
    assert S.parse(value) is expected


@pytest.mark.parametrize("value", REJECTED, ids=repr)
def test_anything_else_is_a_value_error_naming_the_allowed_values(value):
    with pytest.raises(ValueError) as info:
        S.parse(value)
    message = str(info.value)
    assert "Disabled (0), Collecting (1), CollectingAndUploading (2)" in message
    assert "collecting-and-uploading" in message


def _canonical(text: str) -> S | None:
    """The rule, written independently of the parser: a digit, or the words joined by one
    separator, in any case."""
    if text in ("0", "1", "2"):
        return S(int(text))
    low = text.lower()
    for status, words in (
        (S.Disabled, ["disabled"]),
        (S.Collecting, ["collecting"]),
        (S.CollectingAndUploading, ["collecting", "and", "uploading"]),
    ):
        if low in {sep.join(words) for sep in ("", "-", "_")}:
            return status
    return None


pieces = st.sampled_from(
    ["collecting", "COLLECTING", "and", "And", "uploading", "Uploading", "disabled",
     "-", "_", " ", "+", "0", "1", "2", "ing", "x"]
)  # fmt: skip


@given(st.lists(pieces, max_size=6).map("".join))
def test_accepted_exactly_when_the_rule_says_so(text):
    expected = _canonical(text)
    if expected is None:
        with pytest.raises(ValueError):
            S.parse(text)
    else:
        assert S.parse(text) is expected


def test_cli_names_are_the_joined_words():
    assert [s.cli_name for s in S] == ["disabled", "collecting", "collecting-and-uploading"]
