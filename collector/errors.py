"""The collector's errors, under the project's common base class.

``Rejected`` is bad input from a client: it carries the HTTP status (4xx) and a
reason that names the problem without echoing the client's data, so it can be
logged and sent back as it is. ``CollectorError`` is everything else the
collector refuses on purpose, such as a database it cannot use.
"""

from tagstat.errors import TagstatError


class CollectorError(TagstatError):
    """The collector cannot do what was asked (the message says why)."""


class Rejected(CollectorError):
    """A request the collector refuses: an HTTP status and a reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
