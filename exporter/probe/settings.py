"""Configuration of the synthetic mail-flow probe (``collectors.mailflow_probe``), off by default.

``internal``: Test-Mailflow runs, each from a source Mailbox server (``-Identity``) to a target server,
database or address (or the source's own system mailbox). ``inbound``: messages sent from the exporter's
host to a probe address through the domain's published MX, then looked for in message tracking.
Probe names are the ``probe`` label: they are configured, so the label stays bounded; the addresses are
never labels.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from exporter.settings_types import HostName, Interval, Timeout, _Model

#: Most probes of each kind (each is one series per metric and one poll per interval).
MAX_PROBES = 50
#: Test-Mailflow's -ExecutionTimeout is an Int32 of seconds; Exchange's shell default is 240.
MAX_EXECUTION_TIMEOUT = 1800
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ADDRESS = re.compile(r"^[^@\s<>]{1,64}@[A-Za-z0-9.-]{1,253}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("a probe name is 1-63 letters, digits, '.', '_' or '-' (it is the probe label)")
    return value


def _check_address(value: str) -> str:
    value = value.strip()
    if not _ADDRESS.match(value):
        raise ValueError(f"not an SMTP address: {value[:80]!r}")
    return value


ProbeName = Annotated[str, AfterValidator(_check_name)]
Address = Annotated[str, AfterValidator(_check_address)]


class InternalProbe(_Model):
    """One Test-Mailflow run: from ``source`` to at most one of the targets (none: its own system mailbox)."""

    name: ProbeName
    source: str = Field(min_length=1, max_length=253)  # -Identity: a Mailbox server
    target_server: str | None = Field(default=None, min_length=1, max_length=253)  # -TargetMailboxServer
    target_database: str | None = Field(default=None, min_length=1, max_length=253)  # -TargetDatabase
    target_address: Address | None = None  # -TargetEmailAddress
    execution_timeout: int = Field(default=120, ge=5, le=MAX_EXECUTION_TIMEOUT)  # -ExecutionTimeout (seconds)

    @model_validator(mode="after")
    def _one_target(self) -> InternalProbe:
        given = [n for n in ("target_server", "target_database", "target_address") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give at most one of target_server, target_database, target_address (got {given})")
        return self


class InboundProbe(_Model):
    """One message from the exporter's host to ``recipient`` through ``domain``'s MX."""

    name: ProbeName
    domain: HostName  # whose MX records are used
    recipient: Address  # the probe mailbox (a mailbox in the organisation, or a transport rule's sink)
    sender: Address  # MAIL FROM and From:
    port: int = Field(default=25, ge=1, le=65535)
    helo_name: HostName | Literal[""] = ""  # default: the exporter host's FQDN
    smtp_timeout: Timeout = 30.0  # each SMTP step
    deliver_timeout: Timeout = 300.0  # from the end of DATA until DELIVER must be in the tracking log
    tracking_every: Timeout = 10.0  # how often tracking is searched meanwhile
    max_mx_hosts: int = Field(default=5, ge=1, le=50)  # tried in preference order until one accepts a connection


class MailflowProbeSettings(_Model):
    """``collectors.mailflow_probe``: off by default; each probe runs once per ``interval``."""

    enabled: bool = False
    interval: Interval = 900.0
    internal: list[InternalProbe] = Field(default_factory=list, max_length=MAX_PROBES)
    inbound: list[InboundProbe] = Field(default_factory=list, max_length=MAX_PROBES)

    @model_validator(mode="after")
    def _unique_names(self) -> MailflowProbeSettings:
        names = [p.name.lower() for p in self.internal] + [p.name.lower() for p in self.inbound]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"probe names must be unique (case-insensitive): {', '.join(twice)}")
        return self
