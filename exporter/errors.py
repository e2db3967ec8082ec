"""The project's own exceptions.

libvirt's exceptions never leave :mod:`exporter.source`; they are turned into
:class:`SourceError` (or a subclass) there.
"""

from __future__ import annotations


class ExporterError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(ExporterError):
    """A configuration value is missing, malformed or out of range.

    ``key`` names the setting (``libvirt.poll_interval``) so that the one-line
    message printed at start-up tells the operator exactly what to fix.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class SourceError(ExporterError):
    """A libvirt call failed.  ``code`` is libvirt's error code, if any."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectionLost(SourceError):
    """The connection to libvirt is gone (daemon stopped, socket closed)."""


class DomainGone(SourceError):
    """The domain vanished between listing it and asking about it."""


class Unsupported(SourceError):
    """The connection's driver does not implement the call."""
