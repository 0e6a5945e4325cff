"""The package's exception hierarchy. Every error a user can meet derives from MailflowError."""

from __future__ import annotations


class MailflowError(Exception):
    """Base of every error raised by mailflow-exporter."""


class ConfigError(MailflowError):
    """The configuration is invalid; the message lists every problem with its field path."""


class CollectorError(MailflowError):
    """A poll failed. ``reason`` is a short, fixed label value (bounded cardinality); the message is
    plain language for people (never a library's repr). ``endpoint`` and ``server`` name the Exchange
    endpoint the poll went through and the server it belongs to ("" when none was involved)."""

    reason: str = "other"
    endpoint: str = ""
    server: str = ""

    def __init__(self, message: str, reason: str | None = None, *, endpoint: str = "", server: str = "") -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if endpoint:
            self.endpoint = endpoint
        if server:
            self.server = server


class ParseError(CollectorError):
    """Cmdlet output could not be understood."""

    reason = "parse"
