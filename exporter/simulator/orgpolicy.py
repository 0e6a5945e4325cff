"""Organisation policies and each server's DNS: transport rules, email address policies, network adapters.

The frozen specs here are what Get-TransportRule, Get-EmailAddressPolicy, Get-NetworkConnectionInfo
and the DNS settings of Get-TransportService report; :class:`PolicyConfigParser` reads them from a
scenario (``OrgConfigParser`` inherits it). Exchange's defaults when a scenario leaves them out: no
transport rules (setup creates none), one email address policy ``Default Policy`` (priority
Lowest, ``SMTP:@<organisation domain>``, applied), and one network adapter per server whose DNS
server is the domain controller, with ExternalDNSAdapterEnabled/InternalDNSAdapterEnabled true and
the all-zero adapter GUID ("any adapter"), as Set-TransportService documents the defaults.

Scenario keys (organisation level)::

    transport_rules:          # Get-TransportRule
      - {name, priority (default: list order), state: Enabled|Disabled, mode: Enforce|Audit|AuditAndNotify,
         reject_text, reject_status_code (e.g. "5.7.1"), delete_message: false, redirect_to: [addr],
         quarantine: false, moderate_by: [addr], changed_minutes_ago}
    email_address_policies:   # Get-EmailAddressPolicy
      - {name, priority (a number; the last, "Lowest", is the default policy), templates:
         ["SMTP:@contoso.com", "smtp:%m@fabrikam.com"] (upper-case SMTP: the primary), applied: true,
         recipient_filter, changed_minutes_ago}

Per server: ``dns: {adapters: [{name, dns_servers: [ip], ip_addresses: [ip], guid}],
external_adapter_enabled: true, external_adapter_guid, external_dns_servers: [ip],
external_protocol: Any|UseUdpOnly|UseTcpOnly, internal_adapter_enabled: true, internal_dns_servers}``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.simulator.fields import FieldReader, ScenarioError

__all__ = [
    "DNS_PROTOCOLS",
    "RULE_MODES",
    "RULE_STATES",
    "ZERO_GUID",
    "EmailAddressPolicySpec",
    "NetworkAdapterSpec",
    "PolicyConfigParser",
    "ServerDnsSpec",
    "TransportRuleSpec",
    "check_policy_domains",
    "default_dns",
    "default_email_address_policies",
]

#: ``RuleState`` and ``RuleMode`` (Get-/New-TransportRule docs: -State Enabled|Disabled; -Mode
#: Audit|AuditAndNotify|Enforce). The numbers are inferred.
RULE_STATES: dict[str, int] = {"Enabled": 0, "Disabled": 1}
RULE_MODES: dict[str, int] = {"Audit": 0, "AuditAndNotify": 1, "Enforce": 2}
#: ``ProtocolOption`` of ExternalDNSProtocolOption (Set-TransportService: Any, UseUdpOnly, UseTcpOnly).
DNS_PROTOCOLS: dict[str, int] = {"Any": 0, "UseUdpOnly": 1, "UseTcpOnly": 2}
ZERO_GUID = uuid.UUID(int=0)
_STATUS = re.compile(r"^5\.7\.(?:[1-9]|[1-9][0-9]{1,2})$")  # New-TransportRule: 5.7.1 or 5.7.900-5.7.999
_TEMPLATE = re.compile(r"^(?P<kind>smtp):(?P<local>[^@\s]*)@(?P<domain>[A-Za-z0-9*][A-Za-z0-9.*-]*)$", re.IGNORECASE)


@dataclass(frozen=True)
class TransportRuleSpec:
    """One transport (mail flow) rule and the delivery-affecting actions the exporter reads."""

    name: str
    priority: int
    state: str = "Enabled"
    mode: str = "Enforce"
    reject_text: str | None = None
    reject_status_code: str | None = None
    delete_message: bool = False
    redirect_to: tuple[str, ...] = ()
    quarantine: bool = False
    moderate_by: tuple[str, ...] = ()
    changed_minutes_ago: float | None = None


@dataclass(frozen=True)
class EmailAddressPolicySpec:
    """One email address policy: its SMTP templates (``SMTP:`` the primary) and whether it is applied."""

    name: str
    priority: int | None  # None: Lowest (the default policy)
    templates: tuple[str, ...]
    applied: bool = True
    recipient_filter: str = "Alias -ne $null"
    changed_minutes_ago: float | None = None

    @property
    def primary(self) -> str:
        """The primary SMTP template (``SMTP:`` in upper case), or the first one."""
        return next((t for t in self.templates if t.startswith("SMTP:")), self.templates[0])


@dataclass(frozen=True)
class NetworkAdapterSpec:
    """One network adapter as Get-NetworkConnectionInfo lists it."""

    name: str
    dns_servers: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    guid: uuid.UUID
    mac_address: str


@dataclass(frozen=True)
class ServerDnsSpec:
    """A server's adapters and its Transport service's DNS settings (Set-TransportService)."""

    adapters: tuple[NetworkAdapterSpec, ...]
    external_adapter_enabled: bool = True
    external_adapter_guid: uuid.UUID = ZERO_GUID
    external_dns_servers: tuple[str, ...] = ()
    external_protocol: str = "Any"
    internal_adapter_enabled: bool = True
    internal_adapter_guid: uuid.UUID = ZERO_GUID
    internal_dns_servers: tuple[str, ...] = ()
    internal_protocol: str = "Any"


def _adapter_guid(server: str, name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, f"adapter|{server.lower()}|{name.lower()}")


def _mac(guid: uuid.UUID) -> str:
    return "-".join(f"{b:02X}" for b in (b"\x00\x15\x5d" + guid.bytes[:3]))  # Hyper-V's OUI


def default_dns(server: str) -> ServerDnsSpec:
    """One adapter ``Ethernet0`` using the domain controller (192.0.2.10) as DNS; Exchange's defaults."""
    guid = _adapter_guid(server, "Ethernet0")
    address = f"192.0.2.{21 + guid.bytes[-1] % 200}"
    return ServerDnsSpec((NetworkAdapterSpec("Ethernet0", ("192.0.2.10",), (address,), guid, _mac(guid)),))


def check_policy_domains(policies: tuple[EmailAddressPolicySpec, ...], accepted: set[str]) -> None:
    """Every template's domain must be an accepted domain: New-/Set-EmailAddressPolicy refuse others."""
    for policy in policies:
        for template in policy.templates:
            match = _TEMPLATE.match(template)
            domain = match["domain"].lower() if match else ""
            if domain not in accepted:
                raise ScenarioError(
                    f"email_address_policies {policy.name}: {domain} in {template} is not an accepted domain "
                    "(Exchange refuses an email address policy for a domain it does not accept)"
                )


def default_email_address_policies(domain: str) -> tuple[EmailAddressPolicySpec, ...]:
    """The policy setup creates: ``Default Policy``, priority Lowest, ``SMTP:@<domain>``."""
    return (EmailAddressPolicySpec("Default Policy", None, (f"SMTP:@{domain}",)),)


class PolicyConfigParser(FieldReader):
    """Reads ``transport_rules``, ``email_address_policies`` and a server's ``dns``."""

    POLICY_ORG_KEYS = ("transport_rules", "email_address_policies")
    POLICY_SERVER_KEYS = ("dns",)

    def policy_config(self, top: Mapping[str, Any]) -> dict[str, Any]:
        """The Scenario fields of the policy keys (``None`` = Exchange defaults)."""
        out: dict[str, Any] = {"transport_rules": None, "email_address_policies": None}
        if top.get("transport_rules") is not None:
            out["transport_rules"] = self.transport_rules(top["transport_rules"])
        if top.get("email_address_policies") is not None:
            out["email_address_policies"] = self.email_address_policies(top["email_address_policies"])
        return out

    def _list(self, raw: Any, where: str, keys: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
        if not isinstance(raw, list):
            raise ScenarioError(f"{where}: expected a list")
        out = []
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            entry = self._mapping(item, at)
            self._check_keys(entry, keys, at)
            out.append((at, entry))
        return out

    def _minutes(self, entry: Mapping[str, Any], at: str) -> float | None:
        if entry.get("changed_minutes_ago") is None:
            return None
        minutes = self._num(entry, "changed_minutes_ago", at, 0.0)
        if not 0 <= minutes <= 60 * 24 * 365:
            raise ScenarioError(f"{at}.changed_minutes_ago: must be between 0 and 525600")
        return minutes

    def _named(self, entry: Mapping[str, Any], at: str, seen: set[str]) -> str:
        name = self._str(entry, "name", at, "").strip()
        if not name:
            raise ScenarioError(f"{at}.name: required")
        if name.lower() in seen:
            raise ScenarioError(f"{at}.name: duplicate name {name}")
        seen.add(name.lower())
        return name

    def transport_rules(self, raw: Any) -> tuple[TransportRuleSpec, ...]:
        keys = ["name", "priority", "state", "mode", "reject_text", "reject_status_code", "delete_message",
                "redirect_to", "quarantine", "moderate_by", "changed_minutes_ago"]  # fmt: skip
        specs: list[TransportRuleSpec] = []
        seen: set[str] = set()
        entries = self._list(raw, "transport_rules", keys)
        for index, (at, entry) in enumerate(entries):
            code = entry.get("reject_status_code")
            if code is not None and not _STATUS.match(str(code)):
                raise ScenarioError(f"{at}.reject_status_code: Exchange accepts 5.7.1 or 5.7.900 to 5.7.999")
            specs.append(
                TransportRuleSpec(
                    name=self._named(entry, at, seen),
                    priority=self._int(entry, "priority", at, index),
                    state=self._choice(self._str(entry, "state", at, "Enabled"), list(RULE_STATES), f"{at}.state"),
                    mode=self._choice(self._str(entry, "mode", at, "Enforce"), list(RULE_MODES), f"{at}.mode"),
                    reject_text=entry.get("reject_text") and self._str(entry, "reject_text", at, ""),
                    reject_status_code=None if code is None else str(code),
                    delete_message=self._bool(entry, "delete_message", at, False),
                    redirect_to=self._strs(entry, "redirect_to", at),
                    quarantine=self._bool(entry, "quarantine", at, False),
                    moderate_by=self._strs(entry, "moderate_by", at),
                    changed_minutes_ago=self._minutes(entry, at),
                )
            )
        priorities = sorted(s.priority for s in specs)
        if priorities != list(range(len(specs))):
            # Exchange keeps rule priorities dense: 0..n-1 (New-TransportRule -Priority shifts the rest).
            raise ScenarioError("transport_rules: priorities must be 0 to n-1, each once")
        return tuple(sorted(specs, key=lambda s: s.priority))

    def email_address_policies(self, raw: Any) -> tuple[EmailAddressPolicySpec, ...]:
        keys = ["name", "priority", "templates", "applied", "recipient_filter", "changed_minutes_ago"]
        specs: list[EmailAddressPolicySpec] = []
        seen: set[str] = set()
        entries = self._list(raw, "email_address_policies", keys)
        for index, (at, entry) in enumerate(entries):
            templates = self._strs(entry, "templates", at)
            if not templates:
                raise ScenarioError(f"{at}.templates: at least one SMTP template such as SMTP:@contoso.com")
            for template in templates:
                if not _TEMPLATE.match(template):
                    raise ScenarioError(f"{at}.templates: {template!r} is not an SMTP template (SMTP:%g.%s@domain)")
            if sum(t.startswith("SMTP:") for t in templates) > 1:
                raise ScenarioError(f"{at}.templates: only one primary (upper-case SMTP:) template")
            last = index == len(entries) - 1
            specs.append(
                EmailAddressPolicySpec(
                    name=self._named(entry, at, seen),
                    priority=None if last else self._int(entry, "priority", at, index + 1, minimum=1),
                    templates=templates,
                    applied=self._bool(entry, "applied", at, True),
                    recipient_filter=self._str(entry, "recipient_filter", at, "Alias -ne $null"),
                    changed_minutes_ago=self._minutes(entry, at),
                )
            )
        return tuple(specs)

    def server_dns(self, data: Mapping[str, Any], where: str, server: str) -> ServerDnsSpec | None:
        """A server's ``dns`` key (None: the defaults of ``default_dns``)."""
        if data.get("dns") is None:
            return None
        at = f"{where}.dns"
        dns = self._mapping(data["dns"], at)
        self._check_keys(dns, ["adapters", "external_adapter_enabled", "external_adapter_guid",
                               "external_dns_servers", "external_protocol", "internal_adapter_enabled",
                               "internal_dns_servers"], at)  # fmt: skip
        adapters: list[NetworkAdapterSpec] = []
        for a_at, entry in self._list(dns.get("adapters") or [], f"{at}.adapters",
                                      ["name", "dns_servers", "ip_addresses", "guid"]):  # fmt: skip
            name = self._str(entry, "name", a_at, "").strip() or f"Ethernet{len(adapters)}"
            guid = self._guid(entry["guid"], f"{a_at}.guid") if "guid" in entry else _adapter_guid(server, name)
            adapters.append(
                NetworkAdapterSpec(
                    name,
                    self._ips(entry, "dns_servers", a_at),
                    self._ips(entry, "ip_addresses", a_at) or ("192.0.2.21",),
                    guid,
                    _mac(guid),
                )
            )
        if not adapters:
            adapters = list(default_dns(server).adapters)
        raw_guid = dns.get("external_adapter_guid")
        ext_guid = ZERO_GUID if raw_guid is None else self._guid(raw_guid, f"{at}.external_adapter_guid")
        return ServerDnsSpec(
            adapters=tuple(adapters),
            external_adapter_enabled=self._bool(dns, "external_adapter_enabled", at, True),
            external_adapter_guid=ext_guid,
            external_dns_servers=self._ips(dns, "external_dns_servers", at),
            external_protocol=self._choice(
                self._str(dns, "external_protocol", at, "Any"), list(DNS_PROTOCOLS), f"{at}.external_protocol"
            ),
            internal_adapter_enabled=self._bool(dns, "internal_adapter_enabled", at, True),
            internal_dns_servers=self._ips(dns, "internal_dns_servers", at),
        )

    def _ips(self, data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        out = []
        for text in self._strs(data, key, where):
            try:
                out.append(str(ipaddress.ip_address(text.strip())))
            except ValueError:
                raise ScenarioError(f"{where}.{key}: {text!r} is not an IP address") from None
        return tuple(out)
