"""Open-relay risk of a receive connector, from its settings and (optionally) its AD permissions.

Three ways a connector relays for strangers (reference/exchange-cmdlets.md section 3.2):

* ``externally_secured``: AuthMechanism ExternalAuthoritative with PermissionGroups ExchangeServers
  ("Externally Secured Servers" holds ms-Exch-SMTP-Accept-Any-Recipient) while RemoteIPRanges
  reaches beyond the trusted networks: every such address may relay without authenticating.
* ``anonymous_relay``: anonymous senders (AnonymousUsers or Custom ACLs) from beyond the trusted
  networks AND ``NT AUTHORITY\\ANONYMOUS LOGON`` holds ms-Exch-SMTP-Accept-Any-Recipient on the
  connector. That right is only visible through ``Get-ADPermission``; when it cannot be read (the
  account lacks the cmdlet, or the check is switched off) the connector is reported as
  ``anonymous_relay_unverified``: unknown, not safe.
* ``exchange_users_cleartext``: ExchangeUsers from beyond the trusted networks without TLS
  protecting the logon (no Tls, or BasicAuth without BasicAuthRequireTLS, and RequireTLS off):
  passwords cross the internet in clear text and a guessed one relays.

The default frontend connector (AnonymousUsers, internet-wide, no Accept-Any-Recipient grant) and
the default client connectors (ExchangeUsers with TLS) carry no risk. Disabled connectors accept
nothing and carry no risk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.exchange.clixml import as_bool, flatten
from exporter.exchange.iprange import AddressRange, outside

REASONS = ("externally_secured", "anonymous_relay", "anonymous_relay_unverified", "exchange_users_cleartext")
ANONYMOUS = "NT AUTHORITY\\ANONYMOUS LOGON"
ACCEPT_ANY_RECIPIENT = "ms-exch-smtp-accept-any-recipient"


@dataclass(frozen=True)
class RelayInputs:
    """The receive-connector settings the relay rules read."""

    enabled: bool
    ranges: Sequence[AddressRange]
    permission_groups: frozenset[str]
    auth_mechanism: frozenset[str]
    require_tls: bool


def untrusted_addresses(conn: RelayInputs, trusted: Sequence[AddressRange]) -> int:
    """Addresses the connector accepts from that are outside the trusted networks."""
    return outside(conn.ranges, trusted)


def needs_permission_check(conn: RelayInputs, trusted: Sequence[AddressRange]) -> bool:
    """True if only the AD permissions can tell whether anonymous senders may relay here."""
    anonymous = bool(conn.permission_groups & {"AnonymousUsers", "Custom"})
    return conn.enabled and anonymous and untrusted_addresses(conn, trusted) > 0


def anonymous_may_relay(aces: Iterable[Any]) -> bool:
    """From ``Get-ADPermission -User "NT AUTHORITY\\ANONYMOUS LOGON"`` output: is Accept-Any-Recipient
    allowed (granted by an Allow ACE and not removed by a Deny ACE)?"""
    allowed = denied = False
    for ace in aces:
        props = flatten(ace)  # -User already filtered server-side (a localized DC prints another name)
        rights = props.get("ExtendedRights") or []
        names = {str(r).strip().lower() for r in (rights if isinstance(rights, list) else [rights])}
        if ACCEPT_ANY_RECIPIENT in names:
            if as_bool(props.get("Deny")):
                denied = True
            else:
                allowed = True
    return allowed and not denied


def assess(conn: RelayInputs, trusted: Sequence[AddressRange], anonymous_relay: bool | None) -> Mapping[str, bool]:
    """Every reason in :data:`REASONS` mapped to True when it applies.

    ``anonymous_relay`` is the Get-ADPermission answer: True/False, or None when it was not read.
    """
    risks = dict.fromkeys(REASONS, False)
    if not conn.enabled:
        return risks
    wide = untrusted_addresses(conn, trusted) > 0
    if not wide:
        return risks
    groups, auth = conn.permission_groups, conn.auth_mechanism
    risks["externally_secured"] = "ExternalAuthoritative" in auth and "ExchangeServers" in groups
    if needs_permission_check(conn, trusted):
        risks["anonymous_relay"] = anonymous_relay is True
        risks["anonymous_relay_unverified"] = anonymous_relay is None
    if "ExchangeUsers" in groups and not conn.require_tls:
        cleartext_basic = "BasicAuth" in auth and "BasicAuthRequireTLS" not in auth
        risks["exchange_users_cleartext"] = "Tls" not in auth or cleartext_basic
    return risks
