"""Exceptions raised by the simulator link. All derive from :class:`SimError`."""

from __future__ import annotations


class SimError(RuntimeError):
    """Any failure of the simulator or of the link to it."""


class SimTimeoutError(SimError, TimeoutError):
    """The simulator did not answer in time (a hung page or browser)."""


class SimCrashedError(SimError):
    """The browser process died or the page closed the connection."""


class SimProtocolError(SimError):
    """A message did not follow the wire protocol (either direction)."""


class SimRequestError(SimError, ValueError):
    """The simulator rejected a request; ``code`` is its machine-readable reason."""

    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code


class SimStateError(SimError):
    """The environment was used out of order (e.g. ``step`` before ``reset``, or after ``close``)."""


class SimActionError(SimError, ValueError):
    """An action of the wrong shape or with non-finite values."""
