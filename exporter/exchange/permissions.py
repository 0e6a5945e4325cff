"""The Exchange management role that grants each cmdlet the exporter runs: one table for the code, the
README's permissions section (tests/unit/test_permissions.py keeps them equal) and the triage.

An Exchange remote session holds only the cmdlets of its account's RBAC roles (plus a few PowerShell
commands every session has). A cmdlet outside them fails exactly like an unknown name: a
``CommandNotFoundException`` error record, "The term 'X' is not recognized as the name of a cmdlet...".
The exporter reports that as ``reason="permission"``, naming the cmdlet and the role to assign.

The roles are Exchange's built-in ones; which role holds which cmdlet comes from Exchange's built-in
role definitions (Exchange 2013 CU23, ``CannedRoles_Enterprise``, read from a decompilation; an
administrator checks a build with ``Get-ManagementRoleEntry "*\\Get-Queue"``). Of the roles holding a
cmdlet, the table names the one of the minimal set the README documents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "CMDLET_ROLES",
    "COMMAND_NOT_FOUND",
    "REQUIRED_ROLES",
    "missing_message",
    "parse_missing",
    "role_of",
]

#: The fully qualified error id of PowerShell's error for a command the session does not have.
COMMAND_NOT_FOUND = "CommandNotFoundException"

#: (collector, cmdlet, role) for every cmdlet the exporter runs.
CMDLET_ROLES: tuple[tuple[str, str, str], ...] = (
    ("discovery", "Get-ExchangeServer", "View-Only Configuration"),
    ("queues", "Get-Queue", "View-Only Configuration"),
    ("back_pressure", "Get-ExchangeDiagnosticInfo", "View-Only Configuration"),
    ("tracking", "Get-MessageTrackingLog", "Message Tracking"),
    ("receive_connectors", "Get-ReceiveConnector", "View-Only Configuration"),
    ("receive_connectors", "Get-ADPermission", "View-Only Configuration"),
    ("send_connectors", "Get-SendConnector", "View-Only Configuration"),
    ("accepted_domains", "Get-AcceptedDomain", "View-Only Configuration"),
    ("transport_rules", "Get-TransportRule", "View-Only Configuration"),
    ("email_address_policies", "Get-EmailAddressPolicy", "View-Only Configuration"),
    ("transport_dns", "Get-TransportService", "View-Only Configuration"),
    ("transport_dns", "Get-NetworkConnectionInfo", "View-Only Configuration"),
    ("components", "Get-ServerComponentState", "View-Only Configuration"),
    ("database_copies", "Get-MailboxDatabaseCopyStatus", "View-Only Configuration"),
    ("certificates", "Get-ExchangeCertificate", "View-Only Configuration"),
    ("service_health", "Test-ServiceHealth", "Monitoring"),
    ("mailflow_probe", "Test-Mailflow", "Monitoring"),
    ("mailflow_probe", "Get-MessageTrackingLog", "Message Tracking"),
)

#: The roles the monitoring account needs, in the README's order.
REQUIRED_ROLES: tuple[str, ...] = ("View-Only Configuration", "Message Tracking", "Monitoring")

_ROLE_OF: Mapping[str, tuple[str, str]] = {c.lower(): (c, r) for _, c, r in CMDLET_ROLES}
_MESSAGE = re.compile(
    r"^(?P<cmdlet>[A-Za-z]+-[A-Za-z0-9]+) is not available to (?P<account>.*?): "
    r"(?:assign the (?P<role>.+) role|no role of this account grants it)$"
)


def role_of(cmdlet: str) -> str | None:
    """The role that grants ``cmdlet`` (case-insensitive), or None for a cmdlet the exporter does not run."""
    entry = _ROLE_OF.get(cmdlet.lower())
    return entry[1] if entry else None


def missing_message(cmdlet: str, account: str) -> str:
    """The failure text for a cmdlet the session does not have (``parse_missing`` reads it back)."""
    entry = _ROLE_OF.get(cmdlet.lower())
    name, role = entry if entry else (cmdlet, None)
    grant = f"assign the {role} role" if role else "no role of this account grants it"
    return f"{name} is not available to {account or 'this account'}: {grant}"


def parse_missing(message: str) -> tuple[str, str, str | None] | None:
    """``(cmdlet, account, role)`` of a ``missing_message`` text (role None when unknown), else None."""
    match = _MESSAGE.match(message.strip())
    if match is None:
        return None
    return match["cmdlet"], match["account"], match["role"]
