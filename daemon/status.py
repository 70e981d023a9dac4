"""The usage-statistics status, with the vendor's names and values."""

import enum
import re

# The documented spellings: the vendor's names in any case, and the same words
# joined by "-" or "_" (the CLI's collecting-and-uploading). Nothing is deleted
# or guessed before matching, so "-2" or "collecting and uploading" are errors.
_WORDS = {
    0: ("disabled",),
    1: ("collecting",),
    2: ("collecting", "and", "uploading"),
}
_DIGITS = re.compile(r"[012]")


class UsageStatisticsStatus(enum.IntEnum):
    """What tagstat may do: nothing, collect locally, or collect and upload."""

    Disabled = 0
    Collecting = 1
    CollectingAndUploading = 2

    @classmethod
    def parse(cls, value) -> "UsageStatisticsStatus":
        """Accept a member, its int value (0, 1, 2, as an int or its one digit), its name in
        any case, or the name's words joined by ``-`` or ``_`` in any case.

        Anything else raises ValueError listing the allowed values.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
            return cls(value)
        if isinstance(value, str):
            if _DIGITS.fullmatch(value):
                return cls(int(value))
            key = value.lower()
            for number, words in _WORDS.items():
                if key in ("".join(words), "-".join(words), "_".join(words)):
                    return cls(number)
        raise ValueError(f"invalid usage statistics status {_shown(value)}; allowed: {allowed()}")

    @property
    def cli_name(self) -> str:
        return "-".join(_WORDS[self.value])


def allowed() -> str:
    """The allowed values, as an error message lists them."""
    names = ", ".join(f"{m.name} ({m.value})" for m in UsageStatisticsStatus)
    return f"{names}; names in any case, words also joined by - or _ (collecting-and-uploading)"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
