"""The server objects: Get-ExchangeServer (``ExchangeServer``) and Get-TransportService (``TransportServer``).

Built from the generic builders in ``objects`` (ADObjectId, ServerVersion, EnhancedTimeSpan, ...):
the ExchangeServer object is shaped like the real Exchange 2019 capture, the TransportServer object
carries the settings monitoring reads.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from psrpcore.types import PSObject

from exporter.simulator.objects import (
    _ADMIN_GROUP,
    SERVER_ROLE_MEMBERS,
    SERVER_ROLE_TYPE,
    _created,
    _domain_dn,
    _server_dn,
    ad_object_id,
    byte_quantified_size,
    enhanced_timespan,
    enum_value,
    ex_object,
    exchange_object_version,
    flags_value,
    local_long_full_path,
    mvp_strings,
    object_state,
    organization_id,
    schema_category,
    server_version,
    typed_list,
    unlimited_int,
)
from exporter.simulator.objects_config import ip_address
from exporter.simulator.orgpolicy import DNS_PROTOCOLS, ServerDnsSpec
from exporter.simulator.scenario import Scenario, ServerSpec
from exporter.simulator.timeline import Timeline

__all__ = [
    "EXCHANGE_SERVER_TYPE_NAMES",
    "TRANSPORT_SERVER_TYPE_NAMES",
    "exchange_server",
    "transport_dns_properties",
    "transport_server",
]
#: ``MultiValuedProperty<IPAddress>`` (ExternalDNSServers, InternalDNSServers).
_MVP_IP = [
    "Microsoft.Exchange.Data.MultiValuedProperty`1[[System.Net.IPAddress, System, Version=4.0.0.0, Culture=neutral, "
    "PublicKeyToken=b77a5c561934e089]]",
    "Microsoft.Exchange.Data.MultiValuedPropertyBase",
    "System.Object",
]

EXCHANGE_SERVER_TYPE_NAMES = [
    "Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
TRANSPORT_SERVER_TYPE_NAMES = [
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.TransportServer",
    "Microsoft.Exchange.Data.Directory.ADLegacyVersionableObject",
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
_SERVER_EDITION = {
    "Unknown": 0,
    "Standard": 1,
    "StandardEvaluation": 2,
    "Enterprise": 3,
    "EnterpriseEvaluation": 4,
    "Coexistence": 5,
}


def exchange_server(scenario: Scenario, server: ServerSpec, timeline: Timeline) -> PSObject:
    """A Get-ExchangeServer result shaped like the Exchange 2019 capture."""
    org = scenario.organisation
    dn = _server_dn(scenario, server)
    config_canon = f"{org.domain}/Configuration"
    identity = ad_object_id(scenario, dn, server.name, server.name, server.guid)
    site = ad_object_id(
        scenario,
        f"CN={server.site},CN=Sites,CN=Configuration,{_domain_dn(org.domain)}",
        f"{config_canon}/Sites/{server.site}",
        server.site,
        uuid.uuid5(uuid.NAMESPACE_DNS, f"site.{server.site}.{org.domain}"),
    )
    category = schema_category(scenario, "ms-Exch-Exchange-Server")
    addresses = typed_list(
        [
            "Microsoft.Exchange.Data.NetworkAddressCollection",
            "Microsoft.Exchange.Data.ProtocolAddressCollection`1[[Microsoft.Exchange.Data.NetworkAddress, "
            "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
            "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.NetworkAddress, "
            "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
            "Microsoft.Exchange.Data.MultiValuedPropertyBase",
            "System.Object",
        ],
        [
            ex_object(
                [
                    "Microsoft.Exchange.Data.CustomNetworkAddress",
                    "Microsoft.Exchange.Data.NetworkAddress",
                    "Microsoft.Exchange.Data.ProtocolAddress",
                    "System.Object",
                ],
                [("ProtocolType", proto), ("AddressString", address)],
                f"{proto}:{address}",
                serialization=False,
            )
            for proto, address in [
                ("ncacn_vns_spp", server.name),
                ("netbios", server.name),
                ("ncacn_np", server.name),
                ("ncacn_spx", server.name),
                ("ncacn_ip_tcp", server.fqdn),
                ("ncalrpc", server.name),
            ]
        ],
    )
    created, changed = _created(server, timeline)
    roles = [r for r in server.server_role if r != "None"] or ["None"]
    edition = server.edition if server.edition in _SERVER_EDITION else "Standard"
    return ex_object(
        EXCHANGE_SERVER_TYPE_NAMES,
        [
            ("Name", server.name),
            ("DataPath", local_long_full_path(r"C:\Program Files\Microsoft\Exchange Server\V15\Mailbox")),
            ("Domain", org.domain),
            ("Edition", enum_value("Microsoft.Exchange.Data.ServerEditionType", _SERVER_EDITION, edition)),
            (
                "ExchangeLegacyDN",
                f"/o={org.name}/ou={_ADMIN_GROUP}/cn=Configuration/cn=Servers/cn={server.name}",
            ),
            ("ExchangeLegacyServerRole", 0),
            ("Fqdn", server.fqdn),
            ("CustomerFeedbackEnabled", False),
            ("InternetWebProxy", None),
            ("InternetWebProxyBypassList", None),
            ("IsHubTransportServer", server.is_hub_transport),
            ("IsClientAccessServer", server.is_client_access),
            ("IsExchange2007OrLater", True),
            ("IsEdgeServer", server.is_edge),
            ("IsMailboxServer", server.is_mailbox),
            ("IsE14OrLater", True),
            ("IsE15OrLater", True),
            ("IsProvisionedServer", False),
            ("IsUnifiedMessagingServer", "UnifiedMessaging" in roles),
            ("IsFrontendTransportServer", server.is_frontend_transport),
            ("NetworkAddress", addresses),
            ("OrganizationalUnit", f"{org.domain}/{server.name}"),
            ("AdminDisplayVersion", server_version(server)),
            ("Site", site),
            (
                "ServerRole",
                flags_value(SERVER_ROLE_TYPE, SERVER_ROLE_MEMBERS, roles),
            ),
            ("ErrorReportingEnabled", False),
            ("MitigationsEnabled", True),
            ("StaticDomainControllers", mvp_strings([])),
            ("StaticGlobalCatalogs", mvp_strings([])),
            ("StaticConfigDomainController", ""),
            ("StaticExcludedDomainControllers", mvp_strings([])),
            ("MonitoringGroup", ""),
            ("CurrentDomainControllers", mvp_strings([org.dc_fqdn])),
            ("CurrentGlobalCatalogs", mvp_strings([org.dc_fqdn])),
            ("CurrentConfigDomainController", org.dc_fqdn),
            ("ProductID", ""),
            ("IsExchangeTrialEdition", False),
            ("IsExpiredExchangeTrialEdition", False),
            ("MailboxProvisioningAttributes", None),
            ("RemainingTrialPeriod", enhanced_timespan(datetime.timedelta(0))),
            ("MitigationsApplied", None),
            ("MitigationsBlocked", None),
            ("DataCollectionEnabled", False),
            ("Identity", identity),
            ("IsValid", True),
            ("ExchangeVersion", exchange_object_version()),
            ("DistinguishedName", dn),
            ("Guid", server.guid),
            ("ObjectCategory", category),
            ("ObjectClass", mvp_strings(["top", "server", "msExchExchangeServer"])),
            ("WhenChanged", changed),
            ("WhenCreated", created),
            ("WhenChangedUTC", changed.astimezone(datetime.UTC)),
            ("WhenCreatedUTC", created.astimezone(datetime.UTC)),
            ("OrganizationId", organization_id()),
            ("Id", identity),
            ("OriginatingServer", org.dc_fqdn),
            ("ObjectState", object_state("Unchanged")),
        ],
        server.name,
    )


def transport_dns_properties(dns: ServerDnsSpec) -> list[tuple[str, Any]]:
    """The External/InternalDNS* properties of a TransportServer (Set-TransportService's parameters)."""
    option = "Microsoft.Exchange.Data.Directory.SystemConfiguration.ProtocolOption"
    return [
        ("ExternalDNSAdapterEnabled", dns.external_adapter_enabled),
        ("ExternalDNSAdapterGuid", dns.external_adapter_guid),
        ("ExternalDNSProtocolOption", enum_value(option, DNS_PROTOCOLS, dns.external_protocol)),
        ("ExternalDNSServers", typed_list(_MVP_IP, [ip_address(a) for a in dns.external_dns_servers])),
        ("ExternalIPAddress", None),
        ("InternalDNSAdapterEnabled", dns.internal_adapter_enabled),
        ("InternalDNSAdapterGuid", dns.internal_adapter_guid),
        ("InternalDNSProtocolOption", enum_value(option, DNS_PROTOCOLS, dns.internal_protocol, twin=1)),
        ("InternalDNSServers", typed_list(_MVP_IP, [ip_address(a) for a in dns.internal_dns_servers])),
    ]


def transport_server(scenario: Scenario, server: ServerSpec, timeline: Timeline) -> PSObject:
    """A Get-TransportService result (``TransportServer``) with the settings monitoring reads."""
    org = scenario.organisation
    dn = _server_dn(scenario, server)
    identity = ad_object_id(scenario, dn, server.name, server.name, server.guid)
    logs = r"C:\Program Files\Microsoft\Exchange Server\V15\TransportRoles\Logs"
    created, changed = _created(server, timeline)
    days = datetime.timedelta(days=1)
    minutes = datetime.timedelta(minutes=1)
    return ex_object(
        TRANSPORT_SERVER_TYPE_NAMES,
        [
            ("Name", server.name),
            ("AdminDisplayVersion", server_version(server)),
            ("MessageTrackingLogEnabled", server.message_tracking_log_enabled),
            ("MessageTrackingLogMaxAge", enhanced_timespan(30 * days)),
            ("MessageTrackingLogMaxDirectorySize", byte_quantified_size(1000 * (1 << 20))),
            ("MessageTrackingLogMaxFileSize", byte_quantified_size(10 * (1 << 20))),
            ("MessageTrackingLogPath", local_long_full_path(server.message_tracking_log_path)),
            ("MessageTrackingLogSubjectLoggingEnabled", True),
            ("ConnectivityLogEnabled", True),
            ("ConnectivityLogPath", local_long_full_path(logs + r"\Hub\Connectivity")),
            ("ReceiveProtocolLogPath", local_long_full_path(logs + r"\Hub\ProtocolLog\SmtpReceive")),
            ("SendProtocolLogPath", local_long_full_path(logs + r"\Hub\ProtocolLog\SmtpSend")),
            ("QueueLogPath", local_long_full_path(logs + r"\Hub\QueueViewer")),
            ("PipelineTracingEnabled", False),
            ("DelayNotificationTimeout", enhanced_timespan(4 * 60 * minutes)),
            ("MessageExpirationTimeout", enhanced_timespan(2 * days)),
            ("MessageRetryInterval", enhanced_timespan(15 * minutes)),
            ("OutboundConnectionFailureRetryInterval", enhanced_timespan(10 * minutes)),
            ("TransientFailureRetryInterval", enhanced_timespan(5 * minutes)),
            ("TransientFailureRetryCount", 6),
            ("MaxConcurrentMailboxDeliveries", 20),
            ("MaxConcurrentMailboxSubmissions", 20),
            ("MaxOutboundConnections", unlimited_int(1000)),
            ("MaxPerDomainOutboundConnections", unlimited_int(20)),
            *transport_dns_properties(server.effective_dns),
            ("Identity", identity),
            ("IsValid", True),
            ("ExchangeVersion", exchange_object_version("0.1 (8.0.535.0)")),
            ("DistinguishedName", dn),
            ("Guid", server.guid),
            ("WhenChanged", changed),
            ("WhenCreated", created),
            ("WhenChangedUTC", changed.astimezone(datetime.UTC)),
            ("WhenCreatedUTC", created.astimezone(datetime.UTC)),
            ("OrganizationId", organization_id()),
            ("Id", identity),
            ("OriginatingServer", org.dc_fqdn),
            ("ObjectState", object_state("Unchanged")),
        ],
        server.name,
    )
