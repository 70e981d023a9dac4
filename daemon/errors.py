"""The project's error hierarchy.

Every error tagstat raises on purpose derives from ``TagstatError``; its
message says what went wrong and, where there is one, what to do about it.
The CLI turns these into a message and a non-zero exit code.
"""


class TagstatError(Exception):
    """Base class of every error tagstat raises on purpose."""


class ConfigError(TagstatError):
    """A configuration file or environment override is invalid."""


class ScenarioError(TagstatError):
    """A simulator scenario file is invalid (names the file, device and key)."""


class StoreError(TagstatError):
    """The database could not be opened or written."""


class CorruptDatabaseError(StoreError):
    """The database file is not a valid SQLite database; it was moved aside."""


class DaemonNotRunningError(TagstatError):
    """No tagstatd answers on the control socket."""


class ApiError(TagstatError):
    """The daemon answered a request with an error."""


class PolicyError(TagstatError):
    """The site's policy (``max_status``) does not allow the request."""
