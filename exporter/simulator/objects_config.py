"""Transport configuration objects: receive and send connectors, accepted domains, AD permissions.

Property names, order and wire shapes follow the Exchange 2019 captures (Get-ReceiveConnector,
Get-SendConnector, Get-AcceptedDomain), built from the scenario's specs (``orgconfig``).
``Get-ADPermission``'s ``ADAcePresentationObject`` has no capture: its shape is inferred.

Shapes worth knowing: IP values are ``System.Net.IPAddress`` objects (IPv4: ``Address`` as I64 in
network byte order read little-endian; IPv6: ``ScopeId`` instead) with ``IPAddressToString`` in
``<MS>``; ``IPRange`` carries its bounds, ``RangeFormat``, ``Size`` (the address count written as
an IPv6 address) and ``Expression`` as strings. A smart host given by name holds ``IPAddress.Any``
as its Address, the same instance as the connector's ``SourceIPAddress``, so the send connector's
``SourceIPAddress`` is a ``<Ref>`` into the SmartHosts list, as in the real capture.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from psrpcore.types import PSInt64, PSObject, add_note_property

from exporter.simulator.objects import (
    SERVER_ROLE_MEMBERS,
    SERVER_ROLE_TYPE,
    ad_object_id,
    admin_group_dn,
    byte_quantified_size,
    created_times,
    enhanced_timespan,
    enum_value,
    ex_object,
    exchange_config_dn,
    exchange_object_version,
    flags_value,
    fqdn_object,
    mvp_strings,
    object_state,
    organization_id,
    schema_category,
    server_id,
    typed_list,
    unlimited_bytes,
    unlimited_int,
)
from exporter.simulator.orgconfig import (
    ACCEPTED_DOMAIN_TYPES,
    AUTH_MECHANISMS,
    PERMISSION_GROUPS,
    TLS_AUTH_LEVELS,
    AcceptedDomainSpec,
    ReceiveConnectorSpec,
    SendConnectorSpec,
    parse_binding,
    parse_ip_range,
)
from exporter.simulator.scenario import Scenario, ServerSpec
from exporter.simulator.timeline import Timeline

__all__ = [
    "ACCEPT_ANY_RECIPIENT",
    "ANONYMOUS_LOGON",
    "RECEIVE_CONNECTOR_TYPE_NAMES",
    "SEND_CONNECTOR_TYPE_NAMES",
    "AccessEntry",
    "accepted_domain",
    "ad_permission",
    "ad_tail",
    "connector_permissions",
    "ip_address",
    "ip_range",
    "receive_connector",
    "receive_connector_dn",
    "receive_connector_guid",
    "receive_connector_id",
    "send_connector",
]

_DATA = "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
_DIRECTORY = "Microsoft.Exchange.Data.Directory, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
_CONFIG = "Microsoft.Exchange.Data.Directory.SystemConfiguration"
_AD_CONFIG_CHAIN = [
    f"{_CONFIG}.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
RECEIVE_CONNECTOR_TYPE_NAMES = [f"{_CONFIG}.ReceiveConnector", *_AD_CONFIG_CHAIN]
SEND_CONNECTOR_TYPE_NAMES = [
    f"{_CONFIG}.SmtpSendConnectorConfig",
    f"{_CONFIG}.MailGateway",
    f"{_CONFIG}.SendConnector",
    f"{_CONFIG}.ADLegacyVersionableObject",
    *_AD_CONFIG_CHAIN,
]
ACCEPTED_DOMAIN_TYPE_NAMES = [f"{_CONFIG}.AcceptedDomain", *_AD_CONFIG_CHAIN]
ACE_TYPE_NAMES = [
    "Microsoft.Exchange.Management.RecipientTasks.ADAcePresentationObject",
    "Microsoft.Exchange.Management.RecipientTasks.AcePresentationObject",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
_AD_OBJECT_ID = "Microsoft.Exchange.Data.Directory.ADObjectId"
_ROUTING_GROUP = "Exchange Routing Group (DWBGZMFD01QNBJR)"
_MESSAGE_RATE_SOURCE = {"None": 0, "IPAddress": 1, "User": 2, "All": 3}
_PROTOCOL_LOGGING = {"None": 0, "Verbose": 1}
_SIZE_MODE = {"Disabled": 0, "Enabled": 1, "EnabledWithoutValue": 2}
_EXTENDED_PROTECTION = {"None": 0, "Allow": 1, "Require": 2}
_SEND_AUTH = {"None": 0, "BasicAuth": 2, "BasicAuthRequireTLS": 4, "ExchangeServer": 8, "ExternalAuthoritative": 16}
_ERROR_POLICIES = {"Default": 0, "DowngradeDnsFailures": 1, "DowngradeCustomFailures": 2, "UpgradeCustomFailures": 4}
_CONNECTOR_TYPE = {"Default": 0, "XPremises": 1}
_REGION = {"NotSpecified": 0}
_AD_RIGHTS = {"ExtendedRight": 256}
_INHERITANCE = {"None": 0, "All": 1, "Descendents": 2, "SelfAndChildren": 3, "Children": 4}


def _mvp(item_type: str, assembly: str, values: Iterable[Any]) -> Any:
    """A ``MultiValuedProperty<item_type>`` holding ``values``."""
    return typed_list(
        [
            f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{item_type}, {assembly}]]",
            "Microsoft.Exchange.Data.MultiValuedPropertyBase",
            "System.Object",
        ],
        values,
    )


def _enum(type_name: str, members: dict[str, int], name: str) -> Any:
    return enum_value(type_name, members, name)


# ---------------------------------------------------------------------------------------------
# IP addresses, bindings, ranges
# ---------------------------------------------------------------------------------------------


def ip_address(text: str) -> PSObject:
    """A ``System.Net.IPAddress`` as PowerShell serialises it."""
    address = ipaddress.ip_address(text)
    flags: list[tuple[str, Any]] = []
    if address.version == 4:
        head: list[tuple[str, Any]] = [
            ("Address", PSInt64(int.from_bytes(address.packed, "little"))),
            ("AddressFamily", "InterNetwork"),
        ]
        v6 = None
    else:
        head = [("AddressFamily", "InterNetworkV6"), ("ScopeId", PSInt64(0))]
        v6 = address
    flags = [
        ("IsIPv6Multicast", bool(v6 and v6.is_multicast)),
        ("IsIPv6LinkLocal", bool(v6 and v6.is_link_local)),
        ("IsIPv6SiteLocal", bool(v6 and v6.is_site_local)),
        ("IsIPv6Teredo", bool(v6 and v6.teredo)),
        ("IsIPv4MappedToIPv6", bool(v6 and v6.ipv4_mapped)),
    ]
    obj = ex_object(["System.Net.IPAddress", "System.Object"], head + flags, address.compressed, serialization=False)
    add_note_property(obj, "IPAddressToString", address.compressed)
    return obj


def ip_binding(text: str) -> PSObject:
    """An ``IPBinding`` (``0.0.0.0:25``, ``[::]:25``)."""
    binding = parse_binding(text)
    return ex_object(
        ["Microsoft.Exchange.Data.IPBinding", "System.Net.IPEndPoint", "System.Net.EndPoint", "System.Object"],
        [
            ("Port", binding.port),
            ("AddressFamily", "InterNetwork" if binding.address.version == 4 else "InterNetworkV6"),
            ("Address", ip_address(binding.address.compressed)),
        ],
        binding.display,
    )


def ip_range(text: str) -> PSObject:
    """An ``IPRange`` whose ToString is Exchange's notation (single address, CIDR or ``low-high``)."""
    spec = parse_ip_range(text)
    return ex_object(
        ["Microsoft.Exchange.Data.IPRange", "System.Object"],
        [
            ("LowerBound", spec.lower.compressed),
            ("UpperBound", spec.upper.compressed),
            ("RangeFormat", spec.format),
            ("Size", spec.size),
            ("Expression", spec.expression),
        ],
        spec.expression,
    )


def _smtp_x509_identifier(value: str) -> PSObject:
    """An ``SmtpX509Identifier`` from its text ``<I>issuer<S>subject``."""
    issuer, _, subject = value.removeprefix("<I>").partition("<S>")
    common_name = next((p[3:] for p in subject.split(",") if p.strip().upper().startswith("CN=")), subject)
    return ex_object(
        ["Microsoft.Exchange.Data.SmtpX509Identifier", "System.Object"],
        [("CertificateSubject", subject), ("CertificateIssuer", issuer), ("SubjectCommonName", common_name)],
        value,
    )


def _ad_tail(
    scenario: Scenario,
    timeline: Timeline,
    *,
    name: str,
    version: str,
    identity: PSObject,
    dn: str,
    guid: uuid.UUID,
    category: str,
    classes: Sequence[str],
    changed_minutes_ago: float | None = None,
) -> list[tuple[str, Any]]:
    """AdminDisplayName ... ObjectState: the AD properties that close every configuration object
    (WhenChanged ``changed_minutes_ago`` before the scenario start when given)."""
    created, changed = created_times(dn, timeline)
    if changed_minutes_ago is not None:
        changed = timeline.local(timeline.origin.start - changed_minutes_ago * 60).replace(microsecond=0)
    return [
        ("AdminDisplayName", ""),
        ("ExchangeVersion", exchange_object_version(version)),
        ("Name", name),
        ("DistinguishedName", dn),
        ("Identity", identity),
        ("Guid", guid),
        ("ObjectCategory", schema_category(scenario, category)),
        ("ObjectClass", mvp_strings(classes)),
        ("WhenChanged", changed),
        ("WhenCreated", created),
        ("WhenChangedUTC", changed.astimezone(datetime.UTC)),
        ("WhenCreatedUTC", created.astimezone(datetime.UTC)),
        ("OrganizationId", organization_id()),
        ("Id", identity),  # the same object: a <Ref>, as Exchange writes it
        ("OriginatingServer", scenario.organisation.dc_fqdn),
        ("IsValid", True),
        ("ObjectState", object_state("Unchanged")),
    ]


#: The closing AD properties, for the configuration objects built in other modules (objects_policy).
ad_tail = _ad_tail


def _guid(*parts: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, "|".join(p.lower() for p in parts))


# ---------------------------------------------------------------------------------------------
# Get-ReceiveConnector
# ---------------------------------------------------------------------------------------------


def receive_connector_dn(scenario: Scenario, server: ServerSpec, spec: ReceiveConnectorSpec) -> str:
    """``CN=<name>,CN=SMTP Receive Connectors,CN=Protocols,CN=<server>,CN=Servers,...``."""
    return admin_group_dn(
        scenario, f"CN={spec.name}", "CN=SMTP Receive Connectors", "CN=Protocols", f"CN={server.name}", "CN=Servers"
    )


def receive_connector_guid(scenario: Scenario, server: ServerSpec, spec: ReceiveConnectorSpec) -> uuid.UUID:
    """The connector's objectGUID, its ``Guid`` property (stable for a scenario)."""
    return _guid("receive-connector", server.name, spec.name, scenario.organisation.domain)


def receive_connector_id(scenario: Scenario, server: ServerSpec, spec: ReceiveConnectorSpec) -> PSObject:
    """The connector's ``ADObjectId`` (ToString ``SERVER\\Name``), as its Identity and in its ACEs."""
    return ad_object_id(
        scenario,
        receive_connector_dn(scenario, server, spec),
        spec.identity(server.name),
        spec.name,
        receive_connector_guid(scenario, server, spec),
        parent="SMTP Receive Connectors",
    )


def receive_connector(
    scenario: Scenario, server: ServerSpec, spec: ReceiveConnectorSpec, timeline: Timeline
) -> PSObject:
    """A Get-ReceiveConnector result shaped like the Exchange 2019 capture."""
    identity = receive_connector_id(scenario, server, spec)
    dn = receive_connector_dn(scenario, server, spec)
    guid = receive_connector_guid(scenario, server, spec)
    seconds = datetime.timedelta(seconds=1)
    return ex_object(
        RECEIVE_CONNECTOR_TYPE_NAMES,
        [
            ("AuthMechanism", flags_value(f"{_CONFIG}.AuthMechanisms", AUTH_MECHANISMS, spec.auth_mechanism)),
            ("Banner", ""),
            ("BinaryMimeEnabled", True),
            ("Bindings", _mvp("Microsoft.Exchange.Data.IPBinding", _DATA, [ip_binding(b) for b in spec.bindings])),
            ("ChunkingEnabled", True),
            ("DefaultDomain", None),
            ("DeliveryStatusNotificationEnabled", True),
            ("EightBitMimeEnabled", True),
            ("SmtpUtf8Enabled", True),
            ("BareLinefeedRejectionEnabled", False),
            ("DomainSecureEnabled", spec.domain_secure_enabled),
            ("EnhancedStatusCodesEnabled", True),
            ("LongAddressesEnabled", False),
            ("OrarEnabled", False),
            ("SuppressXAnonymousTls", False),
            ("ProxyEnabled", False),
            ("AdvertiseClientSettings", False),
            ("Fqdn", fqdn_object(spec.fqdn or server.fqdn)),
            ("ServiceDiscoveryFqdn", None),
            (
                "TlsCertificateName",
                None if spec.tls_certificate_name is None else _smtp_x509_identifier(spec.tls_certificate_name),
            ),
            ("Comment", ""),
            ("Enabled", spec.enabled),
            ("ConnectionTimeout", enhanced_timespan(600 * seconds)),
            ("ConnectionInactivityTimeout", enhanced_timespan(300 * seconds)),
            ("MessageRateLimit", unlimited_int(spec.message_rate_limit)),
            (
                "MessageRateSource",
                _enum(f"{_CONFIG}.MessageRateSourceFlags", _MESSAGE_RATE_SOURCE, spec.message_rate_source),
            ),
            ("MaxInboundConnection", unlimited_int(5000)),
            ("MaxInboundConnectionPerSource", unlimited_int(spec.max_inbound_connection_per_source)),
            ("MaxInboundConnectionPercentagePerSource", spec.max_inbound_connection_percentage_per_source),
            ("MaxHeaderSize", byte_quantified_size(256 << 10)),
            ("MaxHopCount", 60),
            ("MaxLocalHopCount", 5),
            ("MaxLogonFailures", 3),
            ("MaxMessageSize", byte_quantified_size(spec.max_message_size_bytes)),
            ("MaxProtocolErrors", unlimited_int(5)),
            ("MaxRecipientsPerMessage", spec.max_recipients_per_message),
            (
                "PermissionGroups",
                flags_value("Microsoft.Exchange.Data.PermissionGroups", PERMISSION_GROUPS, spec.permission_groups),
            ),
            ("PipeliningEnabled", True),
            (
                "ProtocolLoggingLevel",
                _enum("Microsoft.Exchange.Data.ProtocolLoggingLevel", _PROTOCOL_LOGGING, spec.protocol_logging_level),
            ),
            (
                "RemoteIPRanges",
                _mvp("Microsoft.Exchange.Data.IPRange", _DATA, [ip_range(r) for r in spec.remote_ip_ranges]),
            ),
            ("RequireEHLODomain", False),
            ("RequireTLS", spec.require_tls),
            ("EnableAuthGSSAPI", spec.enable_auth_gssapi),
            (
                "ExtendedProtectionPolicy",
                _enum(f"{_CONFIG}.ExtendedProtectionPolicySetting", _EXTENDED_PROTECTION, "None"),
            ),
            ("LiveCredentialEnabled", False),
            ("TlsDomainCapabilities", _mvp("Microsoft.Exchange.Data.SmtpReceiveDomainCapabilities", _DATA, [])),
            ("Server", server_id(scenario, server)),
            ("TransportRole", flags_value(SERVER_ROLE_TYPE, SERVER_ROLE_MEMBERS, [spec.transport_role])),
            ("RejectReservedTopLevelRecipientDomains", False),
            ("RejectReservedSecondLevelRecipientDomains", False),
            ("RejectSingleLabelRecipientDomains", False),
            ("AcceptConsumerMail", False),
            ("SizeEnabled", _enum("Microsoft.Exchange.Data.SizeMode", _SIZE_MODE, spec.size_enabled)),
            ("TarpitInterval", enhanced_timespan(spec.tarpit_seconds * seconds)),
            ("AuthTarpitInterval", enhanced_timespan(5 * seconds)),
            ("MaxAcknowledgementDelay", enhanced_timespan(30 * seconds)),
            *_ad_tail(
                scenario,
                timeline,
                name=spec.name,
                version="0.1 (8.0.535.0)",
                identity=identity,
                dn=dn,
                guid=guid,
                category="ms-Exch-Smtp-Receive-Connector",
                classes=["top", "msExchSmtpReceiveConnector"],
            ),
        ],
        spec.identity(server.name),
    )


# ---------------------------------------------------------------------------------------------
# Get-SendConnector
# ---------------------------------------------------------------------------------------------


def _address_space(text: str) -> PSObject:
    """An ``AddressSpace`` from ``TYPE:address;cost`` (type SMTP and cost 1 when left out)."""
    kind, sep, rest = text.partition(":")
    if not sep:
        kind, rest = "SMTP", text
    address, _, cost_text = rest.partition(";")
    cost = int(cost_text) if cost_text.strip().isdigit() else 1
    wildcard = address.startswith("*")
    domain = address if address == "*" else address.removeprefix("*.")
    return ex_object(
        ["Microsoft.Exchange.Data.AddressSpace", "System.Object"],
        [
            ("Address", address),
            ("Type", kind),
            ("Cost", cost),
            ("IncludeSubDomains", wildcard),
            ("Domain", domain),
            ("IsSmtpType", kind.upper() == "SMTP"),
            ("IsX400Type", kind.upper() == "X400"),
            ("X400Address", None),
        ],
        f"{kind}:{address};{cost}",
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def smart_host_display(host: str) -> str:
    """How Exchange shows a smart host: an IP address in brackets, a name as it is."""
    return f"[{host}]" if _is_ip(host) else host


def _smart_host(host: str, any_address: PSObject) -> PSObject:
    is_ip = _is_ip(host)
    return ex_object(
        ["Microsoft.Exchange.Data.SmartHost", "System.Object"],
        [
            ("Address", ip_address(host) if is_ip else any_address),
            ("IsIPAddress", is_ip),
            ("Domain", None if is_ip else host),
        ],
        smart_host_display(host),
    )


def send_connector(scenario: Scenario, spec: SendConnectorSpec, timeline: Timeline) -> PSObject:
    """A Get-SendConnector result (``SmtpSendConnectorConfig``) shaped like the Exchange 2019 capture."""
    domain = scenario.organisation.domain
    sources = [
        s for s in scenario.servers if spec.source_transport_servers is None or s.name in spec.source_transport_servers
    ]
    routing_dn = admin_group_dn(scenario, f"CN={_ROUTING_GROUP}", "CN=Routing Groups")
    dn = f"CN={spec.name},CN=Connections,{routing_dn}"
    guid = _guid("send-connector", spec.name, domain)
    identity = ad_object_id(scenario, dn, spec.name, spec.name, guid, parent="Connections")
    any_address = ip_address("0.0.0.0")  # IPAddress.Any: one instance, as in .NET
    smart_hosts = [_smart_host(h, any_address) for h in spec.smart_hosts]
    home = sources[0] if sources else scenario.servers[0]
    home_dn = f"CN=Microsoft MTA,{admin_group_dn(scenario, f'CN={home.name}', 'CN=Servers')}"
    server_ids = typed_list(
        [
            f"Microsoft.Exchange.Data.Directory.ADMultiValuedProperty`1[[{_AD_OBJECT_ID}, {_DIRECTORY}]]",
            f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{_AD_OBJECT_ID}, {_DIRECTORY}]]",
            "Microsoft.Exchange.Data.MultiValuedPropertyBase",
            "System.Object",
        ],
        [server_id(scenario, s) for s in sources],
    )
    return ex_object(
        SEND_CONNECTOR_TYPE_NAMES,
        [
            ("DNSRoutingEnabled", spec.dns_routing_enabled),
            ("TlsDomain", None),
            (
                "TlsAuthLevel",
                None
                if spec.tls_auth_level is None
                else _enum("Microsoft.Exchange.Data.TlsAuthLevel", TLS_AUTH_LEVELS, spec.tls_auth_level),
            ),
            ("ErrorPolicies", _enum("Microsoft.Exchange.Data.ErrorPolicies", _ERROR_POLICIES, "Default")),
            (
                "SmartHosts",
                _mvp("Microsoft.Exchange.Data.SmartHost", _DATA, smart_hosts),
            ),
            ("Port", spec.port),
            ("ConnectionInactivityTimeOut", enhanced_timespan(datetime.timedelta(minutes=10))),
            ("ForceHELO", False),
            ("FrontendProxyEnabled", False),
            ("IgnoreSTARTTLS", False),
            ("CloudServicesMailEnabled", spec.cloud_services_mail_enabled),
            ("Fqdn", None if spec.fqdn is None else fqdn_object(spec.fqdn)),
            ("TlsCertificateName", None),
            ("RequireTLS", spec.require_tls),
            ("RequireOorg", False),
            ("Enabled", spec.enabled),
            ("ProtocolLoggingLevel", _enum("Microsoft.Exchange.Data.ProtocolLoggingLevel", _PROTOCOL_LOGGING, "None")),
            ("SmartHostAuthMechanism", _enum(f"{_CONFIG}.SmtpSendConnectorConfig+AuthMechanisms", _SEND_AUTH, "None")),
            ("AuthenticationCredential", None),
            ("UseExternalDNSServersEnabled", spec.use_external_dns_servers),
            ("DomainSecureEnabled", False),
            ("SourceIPAddress", any_address),
            ("SmtpMaxMessagesPerConnection", 20),
            ("ConnectorType", _enum("Microsoft.Exchange.Data.SendConnectorType", _CONNECTOR_TYPE, "Default")),
            ("SmartHostsString", ",".join(smart_host_display(h) for h in spec.smart_hosts)),
            ("CertificateSubject", None),
            ("Region", _enum("Microsoft.Exchange.Data.SendConnectorRegion", _REGION, "NotSpecified")),
            (
                "AddressSpaces",
                _mvp("Microsoft.Exchange.Data.AddressSpace", _DATA, [_address_space(a) for a in spec.address_spaces]),
            ),
            ("ConnectedDomains", _mvp("Microsoft.Exchange.Data.ConnectedDomain", _DATA, [])),
            ("IsScopedConnector", False),
            ("IsSmtpConnector", True),
            ("Comment", ""),
            (
                "SourceRoutingGroup",
                ad_object_id(
                    scenario,
                    routing_dn,
                    _ROUTING_GROUP,
                    _ROUTING_GROUP,
                    _guid("routing-group", domain),
                    parent="Routing Groups",
                ),
            ),
            ("SourceTransportServers", server_ids),
            (
                "HomeMTA",
                ad_object_id(
                    scenario, home_dn, "Microsoft MTA", "Microsoft MTA", _guid("mta", home.name), parent=home.name
                ),
            ),
            ("HomeMtaServerId", server_id(scenario, home)),
            ("MaxMessageSize", unlimited_bytes(35 << 20)),
            *_ad_tail(
                scenario,
                timeline,
                name=spec.name,
                version="0.1 (8.0.535.0)",
                identity=identity,
                dn=dn,
                guid=guid,
                category="ms-Exch-Routing-SMTP-Connector",
                classes=["top", "msExchConnector", "mailGateway", "msExchRoutingSMTPConnector"],
            ),
        ],
        spec.name,
    )


# ---------------------------------------------------------------------------------------------
# Get-AcceptedDomain
# ---------------------------------------------------------------------------------------------


def _smtp_domain_with_subdomains(text: str) -> PSObject:
    star = text == "*"
    wildcard = text.startswith("*")
    domain = text if star else text.removeprefix("*.")
    return ex_object(
        ["Microsoft.Exchange.Data.SmtpDomainWithSubdomains", "System.Object"],
        [
            ("Address", text),
            ("IncludeSubDomains", wildcard),
            ("Domain", domain),
            ("SmtpDomain", None if star else domain),
            ("IsStar", star),
        ],
        text,
    )


def accepted_domain(scenario: Scenario, spec: AcceptedDomainSpec, timeline: Timeline) -> PSObject:
    """A Get-AcceptedDomain result shaped like the Exchange 2019 capture."""
    dn = exchange_config_dn(scenario, f"CN={spec.name}", "CN=Accepted Domains", "CN=Transport Settings")
    guid = _guid("accepted-domain", spec.name, scenario.organisation.domain)
    identity = ad_object_id(scenario, dn, spec.name, spec.name, guid, parent="Accepted Domains")
    return ex_object(
        ACCEPTED_DOMAIN_TYPE_NAMES,
        [
            ("DomainName", _smtp_domain_with_subdomains(spec.domain)),
            ("CatchAllRecipientID", None),
            ("DomainType", _enum(f"{_CONFIG}.AcceptedDomainType", ACCEPTED_DOMAIN_TYPES, spec.type)),
            ("MatchSubDomains", spec.match_subdomains),
            ("AddressBookEnabled", spec.address_book_enabled),
            ("Default", spec.default),
            ("EmailOnly", False),
            ("ExternallyManaged", False),
            ("AuthenticationType", None),
            ("LiveIdInstanceType", None),
            ("PendingRemoval", False),
            ("PendingCompletion", False),
            ("FederatedOrganizationLink", None),
            ("MailFlowPartner", None),
            ("OutboundOnly", False),
            ("PendingFederatedAccountNamespace", False),
            ("PendingFederatedDomain", False),
            ("IsCoexistenceDomain", False),
            ("PerimeterDuplicateDetected", False),
            ("IsDefaultFederatedDomain", False),
            ("EnableNego2Authentication", False),
            ("InitialDomain", False),
            *_ad_tail(
                scenario,
                timeline,
                name=spec.name,
                version="0.20 (15.0.0.0)",
                identity=identity,
                dn=dn,
                guid=guid,
                category="ms-Exch-Accepted-Domain",
                classes=["top", "msExchAcceptedDomain"],
                changed_minutes_ago=spec.changed_minutes_ago,
            ),
        ],
        spec.name,
    )


# ---------------------------------------------------------------------------------------------
# Get-ADPermission (inferred shape: no capture)
# ---------------------------------------------------------------------------------------------
ANONYMOUS_LOGON = "NT AUTHORITY\\ANONYMOUS LOGON"
AUTHENTICATED_USERS = "NT AUTHORITY\\Authenticated Users"
EXTERNALLY_SECURED = "MS Exchange\\Externally Secured Servers"
ACCEPT_ANY_RECIPIENT = "ms-Exch-SMTP-Accept-Any-Recipient"
_ANONYMOUS_RIGHTS = (
    "ms-Exch-SMTP-Submit",
    "ms-Exch-SMTP-Accept-Any-Sender",
    "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
    "ms-Exch-Accept-Headers-Routing",
)
_EXTERNALLY_SECURED_RIGHTS = (
    "ms-Exch-SMTP-Submit",
    ACCEPT_ANY_RECIPIENT,
    "ms-Exch-Bypass-Anti-Spam",
    "ms-Exch-Bypass-Message-Size-Limit",
    "ms-Exch-SMTP-Accept-Exch50",
    "ms-Exch-Accept-Headers-Routing",
    "ms-Exch-SMTP-Accept-Any-Sender",
    "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
    "ms-Exch-SMTP-Accept-Authentication-Flag",
)
_AUTHENTICATED_RIGHTS = (
    "ms-Exch-SMTP-Submit",
    ACCEPT_ANY_RECIPIENT,
    "ms-Exch-Bypass-Anti-Spam",
    "ms-Exch-Accept-Headers-Routing",
)

AccessEntry = tuple[str, str]  # (principal, extended right)


def connector_permissions(spec: ReceiveConnectorSpec) -> list[AccessEntry]:
    """The ACEs a receive connector's permission groups (and the scenario's grant) put on it."""
    entries: list[AccessEntry] = []
    if "AnonymousUsers" in spec.permission_groups:
        entries += [(ANONYMOUS_LOGON, right) for right in _ANONYMOUS_RIGHTS]
    if spec.anonymous_accept_any_recipient:
        entries.append((ANONYMOUS_LOGON, ACCEPT_ANY_RECIPIENT))  # Add-ADPermission ... -ExtendedRights
    if "ExchangeServers" in spec.permission_groups and "ExternalAuthoritative" in spec.auth_mechanism:
        entries += [(EXTERNALLY_SECURED, right) for right in _EXTERNALLY_SECURED_RIGHTS]
    if "ExchangeUsers" in spec.permission_groups:
        entries += [(AUTHENTICATED_USERS, right) for right in _AUTHENTICATED_RIGHTS]
    return entries


def _id_parameter(kind: str, text: str) -> PSObject:
    """An Exchange identity parameter object (``SecurityPrincipalIdParameter``...) whose ToString is ``text``."""
    tasks = "Microsoft.Exchange.Configuration.Tasks"
    return ex_object([f"{tasks}.{kind}", f"{tasks}.ADIdParameter", "System.Object"], [], text, serialization=False)


def ad_permission(identity: PSObject, principal: str, right: str) -> PSObject:
    """One ``ADAcePresentationObject``: ``principal`` holds the extended ``right`` on the object."""
    tasks = "Microsoft.Exchange.Configuration.Tasks"
    return ex_object(
        ACE_TYPE_NAMES,
        [
            (
                "AccessRights",
                typed_list(
                    ["System.DirectoryServices.ActiveDirectoryRights[]", "System.Array", "System.Object"],
                    [flags_value("System.DirectoryServices.ActiveDirectoryRights", _AD_RIGHTS, ["ExtendedRight"])],
                ),
            ),
            (
                "ExtendedRights",
                typed_list(
                    [
                        f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{tasks}.ExtendedRightIdParameter, "
                        "Microsoft.Exchange.Configuration.ObjectModel, Version=15.0.0.0, Culture=neutral, "
                        "PublicKeyToken=31bf3856ad364e35]]",
                        "Microsoft.Exchange.Data.MultiValuedPropertyBase",
                        "System.Object",
                    ],
                    [_id_parameter("ExtendedRightIdParameter", right)],
                ),
            ),
            ("ChildObjectTypes", None),
            ("InheritedObjectType", None),
            ("Properties", None),
            ("Deny", False),
            (
                "InheritanceType",
                _enum("System.DirectoryServices.ActiveDirectorySecurityInheritance", _INHERITANCE, "None"),
            ),
            ("User", _id_parameter("SecurityPrincipalIdParameter", principal)),
            ("Identity", identity),
            ("IsInherited", False),
            ("IsValid", True),
            ("ObjectState", object_state("New")),
        ],
        identity.PSObject.to_string,
    )
