"""Get-TransportRule, Get-EmailAddressPolicy and Get-NetworkConnectionInfo output objects.

No captures of these cmdlets were available: property names follow the cmdlets' documentation (the
New-/Set-TransportRule parameters that Get-TransportRule shows as properties, Set-EmailAddressPolicy's
parameters, Get-NetworkConnectionInfo's five documented fields); type names, property order and
the wire form of each value are inferred from how Exchange serialises its other configuration
objects (docs/fidelity.md lists what is inferred).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from psrpcore.types import PSObject

from exporter.simulator.objects import (
    ad_object_id,
    enum_value,
    ex_object,
    exchange_config_dn,
    mvp_strings,
    object_state,
    typed_list,
)
from exporter.simulator.objects_config import ad_tail, ip_address
from exporter.simulator.orgpolicy import (
    RULE_MODES,
    RULE_STATES,
    EmailAddressPolicySpec,
    NetworkAdapterSpec,
    TransportRuleSpec,
)
from exporter.simulator.scenario import Scenario
from exporter.simulator.timeline import Timeline

__all__ = [
    "EMAIL_ADDRESS_POLICY_TYPE_NAMES",
    "NETWORK_CONNECTION_INFO_TYPE_NAMES",
    "TRANSPORT_RULE_TYPE_NAMES",
    "email_address_policy",
    "email_address_policy_guid",
    "network_connection_info",
    "transport_rule",
    "transport_rule_dn",
    "transport_rule_guid",
]

_RULES = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks"
_CONFIG = "Microsoft.Exchange.Data.Directory.SystemConfiguration"
TRANSPORT_RULE_TYPE_NAMES = [
    f"{_RULES}.TransportRule",
    f"{_RULES}.RulePresentationObjectBase",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
EMAIL_ADDRESS_POLICY_TYPE_NAMES = [
    f"{_CONFIG}.EmailAddressPolicy",
    f"{_CONFIG}.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
NETWORK_CONNECTION_INFO_TYPE_NAMES = [
    "Microsoft.Exchange.Management.SystemConfigurationTasks.NetworkConnectionInfo",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]

#: Exchange's default rejection text (New-TransportRule -RejectMessageReasonText docs).
_REJECT_TEXT = "Delivery not authorized, message refused"
_IP_ARRAY = ["System.Net.IPAddress[]", "System.Array", "System.Object"]


def _guid(*parts: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, "|".join(p.lower() for p in parts))


def transport_rule_guid(scenario: Scenario, spec: TransportRuleSpec) -> uuid.UUID:
    """The rule's Guid (stable per organisation and name)."""
    return _guid("transport-rule", spec.name, scenario.organisation.domain)


def transport_rule_dn(scenario: Scenario, spec: TransportRuleSpec) -> str:
    """Where Exchange stores transport rules: ``CN=TransportVersioned,CN=Rules,CN=Transport Settings``."""
    return exchange_config_dn(scenario, f"CN={spec.name}", "CN=TransportVersioned", "CN=Rules", "CN=Transport Settings")


def _changed(timeline: Timeline, minutes_ago: float | None, days: float) -> datetime.datetime:
    start = timeline.origin.start
    seconds = days * 86400 if minutes_ago is None else minutes_ago * 60
    return timeline.local(start - seconds).replace(microsecond=0)


def _rule_description(spec: TransportRuleSpec) -> str:
    actions = []
    if spec.reject_text is not None or spec.reject_status_code is not None:
        code = spec.reject_status_code or "5.7.1"
        text = spec.reject_text or _REJECT_TEXT
        actions.append(f"Reject the message with the explanation '{text}' and the enhanced status code '{code}'")
    if spec.delete_message:
        actions.append("Delete the message without notifying the recipient or sender")
    if spec.redirect_to:
        actions.append(f"Redirect the message to '{', '.join(spec.redirect_to)}'")
    if spec.quarantine:
        actions.append("Deliver the message to the hosted quarantine")
    if spec.moderate_by:
        actions.append(f"Forward the message for approval to '{', '.join(spec.moderate_by)}'")
    lines = ["If the message:", "\tIs received from 'Outside the organization'", "Take the following actions:"]
    return "\r\n".join(lines + [f"\t{a}" for a in actions or ["Set audit severity level to 'Low'"]]) + "\r\n"


def _recipients(values: tuple[str, ...]) -> Any:
    return mvp_strings(values) if values else None


def transport_rule(scenario: Scenario, spec: TransportRuleSpec, timeline: Timeline) -> PSObject:
    """A Get-TransportRule result: the rule's state, mode, priority and delivery-affecting actions."""
    dn = transport_rule_dn(scenario, spec)
    guid = transport_rule_guid(scenario, spec)
    identity = ad_object_id(scenario, dn, spec.name, spec.name, guid, parent="TransportVersioned")
    changed = _changed(timeline, spec.changed_minutes_ago, 30 + guid.bytes[0] % 60)
    rejects = spec.reject_text is not None or spec.reject_status_code is not None
    return ex_object(
        TRANSPORT_RULE_TYPE_NAMES,
        [
            ("Priority", spec.priority),
            ("DlpPolicy", None),
            ("DlpPolicyId", uuid.UUID(int=0)),
            ("Comments", None),
            ("ManuallyModified", False),
            ("ActivationDate", None),
            ("ExpiryDate", None),
            ("Description", _rule_description(spec)),
            ("RuleVersion", ex_object(["System.Version", "System.Object"], [], "15.0.3.0", serialization=False)),
            ("Conditions", None),
            ("Exceptions", None),
            ("Actions", None),
            ("State", enum_value(f"{_RULES}.RuleState", RULE_STATES, spec.state)),
            ("Mode", enum_value("Microsoft.Exchange.MessagingPolicies.Rules.RuleMode", RULE_MODES, spec.mode)),
            ("RuleErrorAction", "Ignore"),
            ("SenderAddressLocation", "Header"),
            ("RuleSubType", "None"),
            ("UseLegacyRegex", False),
            ("FromScope", "NotInOrganization"),
            ("ModerateMessageByUser", _recipients(spec.moderate_by)),
            ("ModerateMessageByManager", False),
            ("RedirectMessageTo", _recipients(spec.redirect_to)),
            ("RejectMessageEnhancedStatusCode", (spec.reject_status_code or "5.7.1") if rejects else None),
            (
                "RejectMessageReasonText",
                (spec.reject_text or _REJECT_TEXT) if rejects else None,
            ),
            ("DeleteMessage", spec.delete_message),
            ("Quarantine", spec.quarantine),
            ("StopRuleProcessing", False),
            ("Identity", identity),
            ("DistinguishedName", dn),
            ("Guid", guid),
            ("ImmutableId", guid),
            ("OrganizationId", None),
            ("Name", spec.name),
            ("IsValid", True),
            ("WhenChanged", changed),
            ("WhenChangedUTC", changed.astimezone(datetime.UTC)),
            ("ExchangeVersion", None),
            ("ObjectState", object_state("Unchanged")),
        ],
        spec.name,
    )


def email_address_policy_guid(scenario: Scenario, spec: EmailAddressPolicySpec) -> uuid.UUID:
    """The policy's Guid (stable per organisation and name)."""
    return _guid("email-address-policy", spec.name, scenario.organisation.domain)


def _priority(spec: EmailAddressPolicySpec) -> PSObject:
    text = "Lowest" if spec.priority is None else str(spec.priority)
    return ex_object([f"{_CONFIG}.EmailAddressPolicyPriority", "System.ValueType", "System.Object"], [], text,
                     serialization=False)  # fmt: skip


def email_address_policy(scenario: Scenario, spec: EmailAddressPolicySpec, timeline: Timeline) -> PSObject:
    """A Get-EmailAddressPolicy result: its templates, priority and whether it was applied."""
    dn = exchange_config_dn(scenario, f"CN={spec.name}", "CN=Recipient Policies")
    guid = email_address_policy_guid(scenario, spec)
    identity = ad_object_id(scenario, dn, spec.name, spec.name, guid, parent="Recipient Policies")
    templates = typed_list(
        ["Microsoft.Exchange.Data.ProxyAddressTemplateCollection",
         "Microsoft.Exchange.Data.ProxyAddressBaseCollection`1[[Microsoft.Exchange.Data.ProxyAddressTemplate, "
         "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
         "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.ProxyAddressTemplate, "
         "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
         "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"],
        spec.templates,
    )  # fmt: skip
    primary = spec.primary.split(":", 1)[1]
    return ex_object(
        EMAIL_ADDRESS_POLICY_TYPE_NAMES,
        [
            ("IncludedRecipients", "AllRecipients" if spec.priority is None else None),
            ("ConditionalDepartment", mvp_strings([])),
            ("ConditionalCompany", mvp_strings([])),
            ("ConditionalStateOrProvince", mvp_strings([])),
            ("RecipientFilterType", "Precanned" if spec.priority is None else "Custom"),
            ("RecipientFilter", spec.recipient_filter),
            ("LdapRecipientFilter", "(mailNickname=*)"),
            ("LastUpdatedRecipientFilter", spec.recipient_filter if spec.applied else None),
            ("RecipientFilterApplied", spec.applied),
            ("RecipientContainer", None),
            ("Priority", _priority(spec)),
            ("EnabledPrimarySMTPAddressTemplate", primary),
            ("EnabledEmailAddressTemplates", templates),
            ("DisabledEmailAddressTemplates", mvp_strings([])),
            ("HasEmailAddressSetting", True),
            ("HasMailboxManagerSetting", False),
            ("NonAuthoritativeDomains", mvp_strings([])),
            *ad_tail(
                scenario,
                timeline,
                name=spec.name,
                version="0.1 (8.0.535.0)",
                identity=identity,
                dn=dn,
                guid=guid,
                category="ms-Exch-Recipient-Policy",
                classes=["top", "msExchRecipientPolicy"],
                changed_minutes_ago=spec.changed_minutes_ago,
            ),
        ],
        spec.name,
    )


def network_connection_info(adapter: NetworkAdapterSpec) -> PSObject:
    """One Get-NetworkConnectionInfo result: the adapter's name, DNS servers, addresses, GUID and MAC."""
    return ex_object(
        NETWORK_CONNECTION_INFO_TYPE_NAMES,
        [
            ("Name", adapter.name),
            ("DnsServers", typed_list(_IP_ARRAY, [ip_address(a) for a in adapter.dns_servers])),
            ("IPAddresses", typed_list(_IP_ARRAY, [ip_address(a) for a in adapter.ip_addresses])),
            ("AdapterGuid", adapter.guid),
            ("MacAddress", adapter.mac_address),
            ("Identity", None),
            ("IsValid", True),
            ("ObjectState", object_state("New")),
        ],
        adapter.name,
    )
