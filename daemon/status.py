"""The usage-statistics status, with the vendor's names and values."""

import enum


class UsageStatisticsStatus(enum.IntEnum):
    """What tagstat may do: nothing, collect locally, or collect and upload."""

    Disabled = 0
    Collecting = 1
    CollectingAndUploading = 2

    @classmethod
    def parse(cls, value) -> "UsageStatisticsStatus":
        """Accept a member, its int value, its name or the CLI's kebab-case name.

        Anything else raises ValueError listing the allowed values.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        if isinstance(value, str):
            key = value.strip().replace("-", "").replace("_", "").lower()
            for member in cls:
                if member.name.lower() == key or str(member.value) == key:
                    return member
        allowed = ", ".join(f"{m.name} ({m.value})" for m in cls)
        raise ValueError(f"invalid usage statistics status {value!r}; allowed: {allowed}")

    @property
    def cli_name(self) -> str:
        return {0: "disabled", 1: "collecting", 2: "collecting-and-uploading"}[self.value]
