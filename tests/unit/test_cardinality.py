"""Every collector's labels stay bounded: 100,000 unique values through parse -> result -> render.

The objects are built as pypsrp deserialises Exchange's CLIXML (``GenericComplexObject`` with
adapted properties, enums as objects with a ToString), and message tracking events as the CLIXML
text the session's fast decoder reads, so each collector's real parse path runs. The bounds
asserted are the ones docs/metrics.md documents in its "Cardinality" section.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from pypsrp.complex_objects import GenericComplexObject

from exporter.cardinality import OTHER, StickyCap, keep_top
from exporter.dnscheck.baseline import BaselineStore
from exporter.dnscheck.collectors import DomainCheckCollector, Sources
from exporter.exchange.accepted_domains import (
    AcceptedDomainResult,
    cap_accepted_domains,
    parse_accepted_domain,
    render_accepted_domains,
)
from exporter.exchange.back_pressure import (
    OBSERVERS,
    RESOURCES,
    cap_back_pressure,
    parse_resource_throttling,
    render_back_pressure,
)
from exporter.exchange.certificates import CertificateResult, cap_certificates, parse_certificate, render_certificates
from exporter.exchange.components import (
    STATES,
    ComponentState,
    component_result,
    parse_component,
    render_components,
)
from exporter.exchange.database_copies import (
    DatabaseCopyResult,
    cap_database_copies,
    parse_database_copy,
    render_database_copies,
)
from exporter.exchange.lasterror import CATEGORIES
from exporter.exchange.queues import (
    DELIVERY_TYPES,
    QUEUE_STATUSES,
    aggregate,
    parse_queue,
    render_queues,
    with_shadow_primaries,
)
from exporter.exchange.receive_connectors import (
    ReceiveConnectorResult,
    cap_receive_connectors,
    parse_receive_connector,
    render_receive_connectors,
)
from exporter.exchange.relay import REASONS
from exporter.exchange.send_connectors import (
    SendConnectorResult,
    cap_send_connectors,
    parse_send_connector,
    render_send_connectors,
)
from exporter.exchange.service_health import (
    ServiceHealthResult,
    cap_service_health,
    parse_role_services,
    render_service_health,
)
from exporter.exchange.tracking import TrackingCollector, TrackingOptions, WatermarkStore, decode_event, render_tracking
from exporter.netsim.dns_server import DemoDNS
from exporter.settings import DnsSettings

pytestmark = pytest.mark.timeout(300)

UNIQUE = 100_000
T0 = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
# Documented per-label bounds (docs/metrics.md, "Cardinality"): enum sets plus "other".
DELIVERY_TYPE_VALUES = len(DELIVERY_TYPES) + 1
NEXT_HOP_CATEGORY_VALUES = 3
ERROR_CATEGORIES = len(CATEGORIES)


def wire(types: Iterable[str], **props: Any) -> GenericComplexObject:
    """An object as pypsrp deserialises an Exchange object: type names and adapted properties."""
    obj = GenericComplexObject()
    obj.types = list(types)
    obj.adapted_properties = dict(props)
    return obj


def enum(type_name: str, name: str, value: int = 0) -> GenericComplexObject:
    """An enum member as pypsrp deserialises it: ToString the name, the value as the property set."""
    obj = GenericComplexObject()
    obj.types = [type_name, "System.Enum", "System.ValueType", "System.Object"]
    obj.to_string = name
    obj.property_sets = [value]
    return obj


def text_object(type_name: str, text: str) -> GenericComplexObject:
    """An Exchange value type (QueueIdentity, Fqdn...) that arrives as its ToString only."""
    obj = GenericComplexObject()
    obj.types = [type_name, "System.Object"]
    obj.to_string = text
    return obj


def samples(families: Iterable[Metric]) -> dict[str, list[dict[str, str]]]:
    """Family name -> the label sets of its samples."""
    return {f.name: [s.labels for s in f.samples] for f in families}


def values(found: dict[str, list[dict[str, str]]], family: str, label: str) -> set[str]:
    return {labels[label] for labels in found[family]}


def total(found: dict[str, list[dict[str, str]]]) -> int:
    return sum(len(v) for v in found.values())


# --- queues -----------------------------------------------------------------------------------------

QUEUE_TYPES = (
    "Microsoft.Exchange.Data.QueueViewer.PropertyBagBasedQueueInfo",
    "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
)
KNOWN_TYPES = ("DnsConnectorDelivery", "SmartHostConnectorDelivery", "SmtpDeliveryToMailbox", "SmtpRelayToDag")


def queue_object(i: int, epoch: int = 0) -> GenericComplexObject:
    """Queue ``i``: every free-form value unique (next hop, LastError codes), every fourth a shadow
    queue, every third an unknown DeliveryType, every fifth an unknown NextHopCategory. ``epoch``
    changes every LastError code, as a remote server answering differently on every retry would."""
    shadow = i % 4 == 0
    delivery_type = "ShadowRedundancy" if shadow else KNOWN_TYPES[i % len(KNOWN_TYPES)]
    if i % 3 == 0:
        delivery_type = f"FutureDelivery{i}"
    code = i + epoch * UNIQUE
    return wire(
        QUEUE_TYPES,
        Identity=text_object(
            "Microsoft.Exchange.Data.QueueViewer.QueueIdentity", f"EX01\\Shadow\\{i}" if shadow else f"EX01\\{i}"
        ),
        DeliveryType=enum("Microsoft.Exchange.Data.DeliveryType", delivery_type, 99),
        NextHopDomain=f"primary{i}.contoso.sim" if shadow else f"d{i}.example",
        NextHopCategory=enum(
            "Microsoft.Exchange.Data.QueueViewer.NextHopCategory", f"Category{i}" if i % 5 == 0 else "External", 1
        ),
        Status=enum("Microsoft.Exchange.Data.QueueViewer.QueueStatus", "Retry", 3),
        MessageCount=i % 97,
        LastError=f"{400 + code % 100} 4.{code % 1000}.{code // 1000 % 1000} Remote said no ({code})",
        RetryCount=3,
    )


def queue_bound(kinds: int, max_domains: int, max_last_errors: int) -> dict[str, int]:
    """docs/metrics.md: per server, label sets G <= kinds x (N + delivery types x categories);
    status 6G; last_error_info <= L + G x LastError categories; last_error_messages <= G x categories."""
    groups = kinds * (max_domains + DELIVERY_TYPE_VALUES * NEXT_HOP_CATEGORY_VALUES)
    return {
        "mailflow_queue_messages": groups,
        "mailflow_queue_status": groups * len(QUEUE_STATUSES),
        "mailflow_queue_last_error_info": max_last_errors + groups * ERROR_CATEGORIES,
        "mailflow_queue_last_error_messages": groups * ERROR_CATEGORIES,
        "mailflow_queue_next_hop_domains_folded": 1,
    }


def test_queue_labels_stay_bounded_with_100k_unique_values() -> None:
    queues = [parse_queue(queue_object(i), "EX01") for i in range(UNIQUE)]
    result = aggregate("EX01", queues, max_domains=20, max_last_errors=50)
    found = samples(render_queues([result]))
    bound = queue_bound(kinds=2, max_domains=20, max_last_errors=50)
    for family, most in bound.items():
        assert len(found[family]) <= most, (family, len(found[family]), most)
    assert total(found) <= 6 * bound["mailflow_queue_messages"] + sum(bound.values())
    # Every queue is in Retry: one status series per label set, not one per possible status.
    assert len(found["mailflow_queue_status"]) == len(found["mailflow_queue_messages"])
    assert values(found, "mailflow_queue_status", "status") == {"Retry"}
    for kind in ("delivery", "shadow"):  # N own next hops per kind, the rest "other"
        hops = {s["next_hop_domain"] for s in found["mailflow_queue_messages"] if s["queue_kind"] == kind}
        assert len(hops - {OTHER}) == 20 and OTHER in hops
    assert values(found, "mailflow_queue_messages", "delivery_type") <= {*DELIVERY_TYPES, OTHER}
    assert values(found, "mailflow_queue_messages", "next_hop_category") == {"External", OTHER}
    codes = values(found, "mailflow_queue_last_error_info", "enhanced_code")
    assert len(codes - {OTHER}) <= 50 and OTHER in codes
    assert len(values(found, "mailflow_queue_last_error_info", "smtp_code") - {OTHER}) <= 50
    # Folded, not dropped: every queue and message is still counted.
    assert sum(g.queues for g in result.groups.values()) == UNIQUE
    assert sum(g.messages for g in result.groups.values()) == sum(i % 97 for i in range(UNIQUE))
    assert sum(sum(g.errors.values()) for g in result.groups.values()) == UNIQUE
    assert result.folded["next_hop_domain"] == UNIQUE - 40
    assert result.folded["delivery_type"] == len(range(0, UNIQUE, 3))
    assert result.folded["next_hop_category"] == len(range(0, UNIQUE, 5))
    assert result.folded["enhanced_code"] >= UNIQUE - 50


def test_a_code_that_changes_every_poll_stays_within_the_cap() -> None:
    """Each poll's live set is at most the cap; the series Prometheus sees come and go by at most
    the cap per poll (the old ones go stale), never one per queue per poll."""
    seen: set[str] = set()
    for epoch in range(5):
        queues = [parse_queue(queue_object(i, epoch), "EX01") for i in range(2000)]
        found = samples(render_queues([aggregate("EX01", queues, max_domains=20, max_last_errors=50)]))
        live = {(s["next_hop_domain"], s["enhanced_code"]) for s in found["mailflow_queue_last_error_info"]}
        codes = {code for _, code in live}
        assert len(codes - {OTHER}) <= 50
        seen |= codes
        assert len(found["mailflow_queue_last_error_info"]) <= queue_bound(2, 20, 50)["mailflow_queue_last_error_info"]
    assert len(seen - {OTHER}) <= 5 * 50


def test_next_hop_cap_keeps_most_messages_per_kind_and_real_names_unchanged() -> None:
    shadows = [
        wire(
            QUEUE_TYPES,
            Identity=text_object("Microsoft.Exchange.Data.QueueViewer.QueueIdentity", f"EX01\\Shadow\\{i}"),
            DeliveryType=enum("Microsoft.Exchange.Data.DeliveryType", "ShadowRedundancy", 10),
            NextHopDomain=f"EX{i:02d}.contoso.sim",
            NextHopCategory=enum("Microsoft.Exchange.Data.QueueViewer.NextHopCategory", "Internal", 0),
            MessageCount=i,
        )
        for i in range(1, 8)
    ]
    result = aggregate("EX01", [parse_queue(o, "EX01") for o in shadows], max_domains=3)
    hops = {key[4]: g.messages for key, g in result.groups.items()}
    assert hops == {"EX07.contoso.sim": 7, "EX06.contoso.sim": 6, "EX05.contoso.sim": 5, OTHER: 1 + 2 + 3 + 4}
    assert result.folded_domains == 4


def test_shadow_primary_info_stays_within_the_next_hop_cap() -> None:
    """Every shadow next hop names a polled server (FQDNs whose first label is a server name): only those
    that keep their own series are joined, so the info series stay within max_next_hop_domains."""
    shadows = [
        wire(
            QUEUE_TYPES,
            Identity=text_object("Microsoft.Exchange.Data.QueueViewer.QueueIdentity", f"EX01\\Shadow\\{i}"),
            DeliveryType=enum("Microsoft.Exchange.Data.DeliveryType", "ShadowRedundancy", 10),
            NextHopDomain=f"EX02.site{i}.contoso.sim",
            NextHopCategory=enum("Microsoft.Exchange.Data.QueueViewer.NextHopCategory", "Internal", 0),
            MessageCount=i % 50,
        )
        for i in range(UNIQUE)
    ]
    result = aggregate("EX01", [parse_queue(o, "EX01") for o in shadows], max_domains=20)
    joined = with_shadow_primaries(result, {"EX02": "ex02.contoso.sim"})
    found = samples(render_queues([joined]))["mailflow_queue_shadow_primary_info"]
    assert len(found) == 20 and {s["primary"] for s in found} == {"EX02"}
    assert {s["next_hop_domain"] for s in found} <= {key[4] for key in result.groups} - {OTHER}


def throttling_xml(meters: Iterable[tuple[str, str]], observers: Iterable[str]) -> str:
    """A ResourceThrottling diagnostic result with these (resource, level) meters and observers (paused)."""
    body = "".join(
        f'<ResourceMeter Resource="{r}"><CurrentResourceUse>{level}</CurrentResourceUse>'
        f"<PreviousResourceUse>Low</PreviousResourceUse><Pressure>{i}</Pressure></ResourceMeter>"
        for i, (r, level) in enumerate(meters)
    )
    watchers = "".join(
        f'<ResourceLevelObserver Name="{o}"><Paused>{str(i % 2 == 0).lower()}</Paused></ResourceLevelObserver>'
        for i, o in enumerate(observers)
    )
    return (
        "<Diagnostics><Components><ResourceThrottling><ResourceTracker><AggregateUse>Medium</AggregateUse>"
        f"{body}</ResourceTracker><ResourceLevelMediator>{watchers}</ResourceLevelMediator></ResourceThrottling>"
        "</Components></Diagnostics>"
    )


def test_back_pressure_labels_stay_bounded_with_100k_unique_values() -> None:
    levels = ("Low", "Medium")  # one meter at High: it must keep its series
    meters = [
        (f"UsedDiskSpace[D:\\Queue{i}]" if i % 2 else f"Meter{i}[E:\\x{i}]", levels[i % 2]) for i in range(UNIQUE)
    ]
    text = throttling_xml(
        [*meters, ("UsedVersionBuckets[C:\\Queue\\mail.que]", "High")], [f"Obs{i}" for i in range(UNIQUE)]
    )
    result = cap_back_pressure(parse_resource_throttling(text, "EX01"), 50)
    found = samples(render_back_pressure([result]))
    for family in ("mailflow_transport_resource_use", "mailflow_transport_resource_pressure"):
        assert len(found[family]) <= 50 + len(RESOURCES) + 1, (family, len(found[family]))
        assert values(found, family, "resource") <= {*RESOURCES, OTHER}
    assert len(found["mailflow_transport_resource_observer_paused"]) <= len(OBSERVERS) + 1
    assert values(found, "mailflow_transport_resource_observer_paused", "observer") == {OTHER}
    use = {(s["resource"], s["path"]): s for s in found["mailflow_transport_resource_use"]}
    assert ("UsedVersionBuckets", "C:\\Queue\\mail.que") in use  # the highest level keeps its own series
    assert len([k for k in use if k[1] != OTHER]) == 50
    assert result.folded == {"resource": UNIQUE // 2, "path": UNIQUE + 1 - 50, "observer": UNIQUE}


# --- message tracking --------------------------------------------------------------------------------

EVENT = (
    '<Obj RefId="0"><TN RefId="0"><T>Selected.Microsoft.Exchange.Management.TransportLogSearchTasks.'
    "MessageTrackingEvent</T><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>"
    '<ToString>@{{...}}</ToString><MS><DT N="Timestamp">{ts}</DT><S N="EventId">FAIL</S><S N="Source">ROUTING</S>'
    '<S N="InternalMessageId">{i}</S><S N="MessageId">&lt;m{i}@ex01&gt;</S>'
    '<Obj N="RecipientStatus" RefId="1"><TN RefId="1"><T>System.String[]</T><T>System.Array</T>'
    "<T>System.Object</T></TN><LST><S>{status}</S></LST></Obj></MS></Obj>"
)


def test_tracking_failure_codes_stay_bounded_with_100k_unique_values(tmp_path: Path) -> None:
    options = TrackingOptions(
        interval=60.0,
        overlap=120.0,
        max_window=3600.0,
        initial_lookback=300.0,
        stuck_after=900.0,
        forget_after=86400.0,
        max_tracked_messages=1000,
        buckets=(1.0, 60.0),
        result_size="Unlimited",
        select=True,
        max_failure_codes=50,
    )
    collector = TrackingCollector(None, options, WatermarkStore(tmp_path / "marks.json"))  # type: ignore[arg-type]
    kinds = ("550 5.{a}.{b} User unknown", "554 5.{a}.{b} Message rejected as spam", "552 5.{a}.{b} Mailbox full")
    results = []
    for half in range(2):  # two polls: the cap holds across polls (counters keep their series)
        events = []
        for i in range(half * UNIQUE // 2, (half + 1) * UNIQUE // 2):
            status = kinds[i % 3].format(a=i % 1000, b=i // 1000)
            ts = (T0 + timedelta(milliseconds=i)).isoformat()
            event = decode_event(EVENT.format(ts=ts, i=i, status=status))
            assert event is not None
            events.append(event)
        end = T0 + timedelta(seconds=UNIQUE)
        results.append(collector.ingest("EX01", events, T0, end))
    found = samples(render_tracking(results[-1:], options.buckets))
    # docs/metrics.md: failures <= max_failure_codes + LastError categories (the folded ones).
    assert len(found["mailflow_tracking_failures"]) <= 50 + ERROR_CATEGORIES
    codes = values(found, "mailflow_tracking_failures", "enhanced_code")
    assert len(codes - {OTHER}) <= 50 and OTHER in codes
    assert sum(results[-1].failures.values()) == UNIQUE  # every failed recipient still counted
    assert results[0].folded["enhanced_code"] == UNIQUE // 2 - 50
    assert results[1].folded["enhanced_code"] == UNIQUE // 2


# --- receive and send connectors ------------------------------------------------------------------------


def receive_object(i: int) -> GenericComplexObject:
    return wire(
        ("Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector", "System.Object"),
        Name=f"App relay {i}",
        Identity=f"EX01\\App relay {i}",
        Enabled=i % 2 == 0,
        TransportRole=enum("Microsoft.Exchange.Data.Directory.SystemConfiguration.ServerRole", f"Role{i}", 32),
        Bindings=[f"0.0.0.0:{1024 + i % 60000}"],
        RemoteIPRanges=[f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"],
        PermissionGroups="ExchangeServers",
        AuthMechanism="Tls",
        Server="EX01",
    )


def test_receive_connector_labels_stay_bounded_with_100k_unique_values() -> None:
    connectors = tuple(parse_receive_connector(receive_object(i), "EX01") for i in range(UNIQUE))
    risky = {c.name: {"anonymous_relay": c.name == "App relay 99999"} for c in connectors}
    found_result = ReceiveConnectorResult("EX01", connectors, risky, {}, None, ())
    result = cap_receive_connectors(found_result, 100)
    found = samples(render_receive_connectors([result]))
    # docs/metrics.md: per server, connectors <= max_connectors + "other".
    for family in ("mailflow_receive_connector_enabled", "mailflow_receive_connector_info"):
        assert len(found[family]) <= 101
    assert len(found["mailflow_receive_connector_open_relay_risk"]) <= 101 * len(REASONS)
    assert values(found, "mailflow_receive_connector_info", "transport_role") == {OTHER}
    enabled = {s["connector"]: s for s in found["mailflow_receive_connector_enabled"]}
    assert "App relay 99999" in enabled  # a connector at risk is never folded away
    assert result.folded == {"connector": UNIQUE - 100, "transport_role": UNIQUE}


def test_send_connector_labels_stay_bounded_with_100k_unique_values() -> None:
    objects = (
        wire(
            ("Microsoft.Exchange.Data.Directory.SystemConfiguration.SmtpSendConnectorConfig", "System.Object"),
            Name=f"Partner {i}",
            Enabled=True,
            SmartHosts=[f"relay{i}.example"],
            AddressSpaces=[f"SMTP:p{i}.example;1"],
            SourceIPAddress=f"198.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
            Port=25,
        )
        for i in range(UNIQUE)
    )
    connectors = tuple(parse_send_connector(o) for o in objects)
    result = cap_send_connectors(SendConnectorResult(connectors, ()), 100)
    found = samples(render_send_connectors([result]))
    for family in ("mailflow_send_connector_enabled", "mailflow_send_connector_info"):
        assert len(found[family]) == 101
    assert len(result.kept_connectors()) == 100  # the DNS checks take outbound IPs from these only
    assert result.folded == {"connector": UNIQUE - 100}


# --- accepted domains, components, database copies, certificates, service health ----------------------


def test_accepted_domain_labels_stay_bounded_with_100k_unique_values() -> None:
    objects = [
        wire(
            ("Microsoft.Exchange.Data.Directory.SystemConfiguration.AcceptedDomain", "System.Object"),
            DomainName=text_object("Microsoft.Exchange.Data.SmtpDomainWithSubdomains", f"d{i:06d}.example"),
            DomainType=enum("Microsoft.Exchange.Data.Directory.SystemConfiguration.AcceptedDomainType", f"T{i}", 0),
            Default=i == UNIQUE - 1,
        )
        for i in range(UNIQUE)
    ]
    domains = tuple(sorted((parse_accepted_domain(o) for o in objects), key=lambda d: d.domain))
    result = cap_accepted_domains(AcceptedDomainResult(domains), 1000)
    found = samples(render_accepted_domains([result]))
    # docs/metrics.md: domains <= max_domains + "other" per (type, default); types: 3 + "other".
    assert len(found["mailflow_accepted_domain_info"]) <= 1000 + 4 * 2
    assert len(found["mailflow_accepted_domains"]) == 4
    assert "d099999.example" in values(found, "mailflow_accepted_domain_info", "domain")  # the default domain
    assert len(result.dns_domains()) == 1000  # the DNS checks' domain label is bounded by the same cap


def test_component_labels_stay_bounded_with_100k_unique_values() -> None:
    objects = [
        wire(
            ("Microsoft.Exchange.Management.SystemConfigurationTasks.ServerComponentStatePresentationObject",),
            Component=f"Component{i}",
            State=enum("Microsoft.Exchange.Data.ServiceState", "Inactive" if i % 1000 == 0 else "Active", 1),
            LocalStates=[f"Requestor:Maintenance; State:Inactive; Timestamp:1/1/2026 {i}"],
            ServerWideOfflineIsOffline=False,
        )
        for i in range(UNIQUE)
    ]
    result = component_result("EX01", [parse_component(o, "EX01") for o in objects], None, 100)
    found = samples(render_components([result]))
    # docs/metrics.md: with "*", components <= max_components, one series each (the current state), and
    # "other" once per state its components are in.
    assert len(found["mailflow_server_component_state"]) <= 100 + len(STATES) + 1
    assert len(found["mailflow_server_component_requester_state"]) <= 101 * 5 * 3
    inactive = {s["component"] for s in found["mailflow_server_component_state"] if s["state"] == "Inactive"}
    assert len(inactive) == 100  # the 100 components not Active kept first; the folded rest are all Active
    folded = [s for s in found["mailflow_server_component_state"] if s["component"] == OTHER]
    assert folded == [{"server": "EX01", "component": OTHER, "state": "Active"}]
    assert result.folded == {"component": UNIQUE - 100, "state": 0}


def test_component_state_outside_the_documented_set_is_other_and_counted() -> None:
    states = [
        ComponentState("EX01", "HubTransport", "Unknown", False, {}),
        ComponentState("EX01", "FrontendTransport", "Active", False, {}),
    ]
    result = component_result("EX01", states, None, 100)
    found = samples(render_components([result]))
    assert found["mailflow_server_component_state"] == [
        {"server": "EX01", "component": "FrontendTransport", "state": "Active"},
        {"server": "EX01", "component": "HubTransport", "state": OTHER},  # not Active: the alert sees it
    ]
    assert result.folded == {"component": 0, "state": 1}


def test_database_copy_labels_stay_bounded_with_100k_unique_values() -> None:
    objects = [
        wire(
            ("Microsoft.Exchange.Management.SystemConfigurationTasks.DatabaseCopyStatusEntry", "System.Object"),
            Identity=f"DB{i}\\EX01",
            DatabaseName=f"DB{i}",
            MailboxServer="EX01",
            Status=enum("Microsoft.Exchange.Management.SystemConfigurationTasks.CopyStatus", f"State{i}", 0),
            CopyQueueLength=i % 7,
            ReplayQueueLength=0,
            ContentIndexState="Healthy",
        )
        for i in range(UNIQUE)
    ]
    copies = tuple(parse_database_copy(o, "EX01") for o in objects)
    result = cap_database_copies(DatabaseCopyResult("EX01", copies), 200)
    found = samples(render_database_copies([result]))
    # docs/metrics.md: copies <= max_databases + "other"; one status series per kept copy, its current status
    # (one of the 16 CopyStatus values, else "other").
    assert len(found["mailflow_database_copy_status"]) == 200
    assert len(found["mailflow_database_copy_queue_length"]) <= 201
    assert values(found, "mailflow_database_copy_status", "status") == {OTHER}
    assert result.folded == {"database": UNIQUE - 200, "status": UNIQUE}
    other = [s for s in found["mailflow_database_copy_queue_length"] if s["database"] == OTHER]
    assert other == [{"database": OTHER, "server": "EX01"}]


def test_certificate_labels_stay_bounded_with_100k_unique_values() -> None:
    objects = [
        wire(
            ("System.Management.Automation.PSCustomObject", "System.Object"),
            Thumbprint=f"{i:040X}",
            Subject=f"CN=host{i}.example",
            Issuer=f"CN=Issuer {i}",
            NotAfter=T0 + timedelta(days=i % 800),
            Services="SMTP" if i == UNIQUE - 1 else "None",
            Status=f"Status{i}",
            IsSelfSigned=False,
        )
        for i in range(UNIQUE)
    ]
    certs = tuple(parse_certificate(o, "EX01") for o in objects)
    result = cap_certificates(CertificateResult("EX01", certs), 50)
    found = samples(render_certificates([result]))
    # docs/metrics.md: certificates <= max_certificates + "other".
    assert len(found["mailflow_certificate_expiry_timestamp_seconds"]) == 51
    assert len(found["mailflow_certificate_info"]) == 51
    assert f"{UNIQUE - 1:040X}" in values(found, "mailflow_certificate_info", "thumbprint")  # bound to SMTP
    assert values(found, "mailflow_certificate_info", "status") == {OTHER}


def test_service_health_labels_stay_bounded_with_100k_unique_values() -> None:
    objects = [
        wire(
            ("Microsoft.Exchange.Monitoring.ExchangeServicesStatus", "System.Object"),
            Role=f"Role {i} Server Role" if i else "Hub Transport Server Role",
            RequiredServicesRunning=True,
            ServicesRunning=[f"MSExchangeService{i}", "W3Svc"],
            ServicesNotRunning=[],
        )
        for i in range(UNIQUE // 10)
    ]
    roles = tuple(parse_role_services(o, "EX01") for o in objects)
    result = cap_service_health(ServiceHealthResult("EX01", roles), 100)
    found = samples(render_service_health([result]))
    # docs/metrics.md: roles: 4 + "other"; services <= max_services + "other" per role.
    assert values(found, "mailflow_service_health_required_running", "role") == {"HubTransport", OTHER}
    assert len(found["mailflow_service_health_service_running"]) <= 100 + 5
    assert result.folded["service"] == len({(r.role != "HubTransport", s) for r in roles for s in r.running}) - 100


# --- DNS checks ------------------------------------------------------------------------------------------


def test_dns_mx_hosts_are_capped_per_domain(tmp_path: Path) -> None:
    """A real DNS answer holds at most a few thousand MX records (64 KiB over TCP); the cap keeps the
    most preferred ``max_mx_hosts`` labelled and resolved, the rest only counted."""
    mx = "".join(f"@ IN MX {i} mx{i:04d}\nmx{i:04d} IN A 192.0.2.{i % 250 + 1}\n" for i in range(1500))
    zone = "$ORIGIN big.example.\n$TTL 300\n@ IN SOA ns1.big.example. hostmaster.big.example. 1 3600 600 86400 300\n"
    zone += "@ IN NS ns1.big.example.\nns1 IN A 127.0.0.1\n" + mx
    with DemoDNS({"big.example": zone}) as dns:
        settings = DnsSettings(resolvers=[dns.address], port=dns.port, timeout=10, max_mx_hosts=20)
        sources = Sources(settings, lambda _name: {})
        collector = DomainCheckCollector(settings, sources, BaselineStore(tmp_path / "b.json", 0, time.time))
        result = collector.poll("big.example")
    found = samples(collector.render({"big.example": result}))
    hosts = values(found, "mailflow_dns_mx_host_resolves", "host")
    assert hosts == {f"mx{i:04d}.big.example" for i in range(20)}
    assert found["mailflow_dns_mx_records"] and result.mx.records == 1500
    assert result.folded == {"host": 1480}


def test_dns_targets_from_exchange_are_bounded_by_the_exchange_caps() -> None:
    """Domains come from the accepted domains within their cap, outbound IPs from the send
    connectors within theirs (plus what the configuration lists)."""
    domains = tuple(
        parse_accepted_domain(wire(("AcceptedDomain",), DomainName=f"d{i:06d}.example")) for i in range(UNIQUE)
    )
    accepted = cap_accepted_domains(AcceptedDomainResult(domains), 1000)
    connectors = tuple(
        parse_send_connector(
            wire(
                ("SmtpSendConnectorConfig",),
                Name=f"P{i}",
                Enabled=True,
                SourceIPAddress=f"203.1.{i // 256 % 256}.{i % 256}",
            )
        )
        for i in range(UNIQUE)
    )
    sent = cap_send_connectors(SendConnectorResult(connectors, ()), 100)
    latest = {"accepted_domains": {"organization": accepted}, "send_connectors": {"organization": sent}}
    sources = Sources(DnsSettings(domains=["contoso.example"]), lambda name: latest.get(name, {}))
    assert len(sources.domains()) == 1000 + 1
    assert len(sources.outbound()) <= 100


# --- the mechanism ---------------------------------------------------------------------------------------


def test_keep_top_and_sticky_cap() -> None:
    weights = {"a": 1, "b": 3, "c": 3, "d": 2, "e": 3}
    assert keep_top(weights, 2, lambda v: -weights[v]) == {"b", "c"}  # heaviest first, ties by value
    assert keep_top(weights, 4, lambda v: -weights[v]) == {"b", "c", "d", "e"}
    assert keep_top(["a", "a", "b"], 5, lambda v: 0) == {"a", "b"}
    cap = StickyCap(3)
    assert [cap.admit(v) for v in ("a", "b", "c", "d", "a", "e")] == [True, True, True, False, True, False]
    assert cap.take_refused() == 2 and cap.take_refused() == 0
