"""Device errors: a small hierarchy that says what went wrong and what to do."""

from tagstat.errors import TagstatError


class DeviceError(TagstatError):
    """A Time Tagger could not be read."""


class DeviceNotFoundError(DeviceError):
    """No such Time Tagger is attached."""


class DeviceGoneError(DeviceError):
    """The device disappeared (unplugged) during or before a transfer."""


class DeviceAccessDeniedError(DeviceError):
    """The OS refused access to the device node."""


class DeviceBusyError(DeviceError):
    """The device or its node is busy; try again at the next poll."""


class DeviceTimeoutError(DeviceError):
    """A transfer did not complete within its timeout."""


class ProtocolError(DeviceError):
    """A reply was short, oversized or garbled."""
