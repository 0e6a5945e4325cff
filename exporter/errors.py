"""The package's exception hierarchy. Every error a user can meet derives from MailflowError."""

from __future__ import annotations


class MailflowError(Exception):
    """Base of every error raised by mailflow-exporter."""


class ConfigError(MailflowError):
    """The configuration is invalid; the message lists every problem with its field path."""


class CollectorError(MailflowError):
    """A poll failed. ``reason`` is a short, fixed label value (bounded cardinality)."""

    reason: str = "other"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ParseError(CollectorError):
    """Cmdlet output could not be understood."""

    reason = "parse"
