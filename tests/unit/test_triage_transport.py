"""Back pressure diagnostics parsing and the transport triage rules (back pressure, shadow redundancy held
for an unreachable server, server clocks) on hand-built facts of the collectors' own result types."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.errors import CollectorError, ParseError
from exporter.exchange.back_pressure import BackPressureResult, parse_resource_throttling, render_back_pressure
from exporter.exchange.queues import QueueInfo, aggregate, primary_server
from exporter.exchange.tracking import TrackingResult
from exporter.triage.facts import Facts
from exporter.triage.rules import RULES
from exporter.triage.rules_transport import back_pressure, server_clock_skew, shadow_for_unreachable_server

NOW = 1_800_000_000.0
RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
QUEUE = r"C:\Program Files\Microsoft\Exchange Server\V15\TransportRoles\data\Queue"


def diagnostics(levels: dict[str, str], aggregate_use: str = "Low", paused: tuple[str, ...] = ()) -> str:
    """A ResourceThrottling result as Exchange writes it (CRLF, two-space indent)."""
    meters = [("PrivateBytes", ""), ("SystemMemory", ""), ("UsedDiskSpace", QUEUE), ("UsedVersionBuckets", QUEUE)]
    lines = ["<Diagnostics>", "  <ProcessInfo>", "    <serverName>EX01</serverName>", "  </ProcessInfo>"]
    lines += ["  <Components>", "    <ResourceThrottling>", "      <ResourceTracker>"]
    lines.append(f"        <AggregateUse>{aggregate_use}</AggregateUse>")
    for name, path in meters:
        resource = f"{name}[{path}]" if path else name
        level = levels.get(name, "Low")
        lines += [
            f'        <ResourceMeter Resource="{resource}">',
            f"          <CurrentResourceUse>{level}</CurrentResourceUse>",
            "          <PreviousResourceUse>Low</PreviousResourceUse>",
            "          <PressureTransitions>[PressureTransitions: MediumToHigh=99]</PressureTransitions>",
            f"          <Pressure>{99 if level == 'High' else 33}</Pressure>",
            "        </ResourceMeter>",
        ]
    lines += ["      </ResourceTracker>", "      <ResourceLevelMediator>"]
    for observer in ("SmtpIn", "Pickup", "Categorizer"):
        state = "true" if observer in paused else "false"
        lines += [f'        <ResourceLevelObserver Name="{observer}">', f"          <Paused>{state}</Paused>"]
        lines += ["        </ResourceLevelObserver>"]
    lines += ["      </ResourceLevelMediator>", "    </ResourceThrottling>", "  </Components>", "</Diagnostics>"]
    return "\r\n".join(lines)


def state(server: str = "EX01", **kw: object) -> BackPressureResult:
    return parse_resource_throttling(diagnostics(**kw), server)  # type: ignore[arg-type]


def test_the_diagnostics_parse_into_meters_levels_and_paused_parts() -> None:
    result = state(levels={"UsedDiskSpace": "High", "SystemMemory": "High"}, paused=("SmtpIn", "Pickup"))
    assert result.aggregate == "Low" and result.level == "High" and result.paused == ("SmtpIn", "Pickup")
    disk = next(m for m in result.meters if m.resource == "UsedDiskSpace")
    assert (disk.path, disk.level, disk.previous, disk.pressure) == (QUEUE, "High", "Low", 99.0)
    assert [m.resource for m in result.throttling()] == ["UsedDiskSpace"]  # SystemMemory does not throttle
    families = {f.name: f for f in render_back_pressure([result])}
    samples = families["mailflow_transport_resource_use"].samples
    use = {(s.labels["resource"], s.labels["path"]): s.value for s in samples}
    assert use[("UsedDiskSpace", QUEUE)] == 2 and use[("SystemMemory", "")] == 2 and use[("PrivateBytes", "")] == 0
    paused = {s.labels["observer"]: s.value for s in families["mailflow_transport_resource_observer_paused"].samples}
    assert paused == {"SmtpIn": 1.0, "Pickup": 1.0, "Categorizer": 0.0}


def test_an_unreachable_process_or_an_odd_document_fails_the_poll() -> None:
    error = "<error>ProcessAccessManager RPC Error 6BA</error><message>The RPC server is unavailable</message>"
    with pytest.raises(CollectorError, match="RPC Error 6BA The RPC server is unavailable"):
        parse_resource_throttling(f"<Diagnostics>{error}</Diagnostics>", "EX01")
    with pytest.raises(ParseError, match="no ResourceThrottling"):
        parse_resource_throttling("<Diagnostics><ProcessLocator /></Diagnostics>", "EX01")
    with pytest.raises(ParseError, match="not XML"):
        parse_resource_throttling("<Diagnostics", "EX01")


def submission(server: str, count: int, incoming: float = 0.0, outgoing: float = 0.0) -> QueueInfo:
    return QueueInfo(
        identity=f"{server}\\Submission", server=server, kind="submission", delivery_type="Undefined",
        next_hop_domain="Submission", next_hop_category="Internal", status="Ready", message_count=count,
        deferred_count=0, incoming_rate=incoming, outgoing_rate=outgoing, retry_count=0, next_retry_time=None,
        last_error=None,
    )  # fmt: skip


def shadow(server: str, primary_fqdn: str, count: int) -> QueueInfo:
    return replace(
        submission(server, count),
        identity=f"{server}\\Shadow\\12",
        kind="shadow",
        delivery_type="ShadowRedundancy",
        next_hop_domain=primary_fqdn,
    )


def facts(queues: list[QueueInfo], failures: dict[str, dict[str, str]] | None = None, **results: object) -> Facts:
    by_server: dict[str, list[QueueInfo]] = {}
    for q in queues:
        by_server.setdefault(q.server, []).append(q)
    queue_results = {s: aggregate(s, qs, 20) for s, qs in by_server.items()}
    return Facts({"queues": queue_results, **results}, failures or {}, NOW)  # type: ignore[dict-item]


def test_back_pressure_is_named_with_its_resource_and_the_submission_queue() -> None:
    queues = [submission("EX01", 480, incoming=2.5, outgoing=0.5), submission("EX02", 2), submission("EX03", 0)]
    high = state(levels={"UsedDiskSpace": "High"}, paused=("SmtpIn",))
    (finding,) = back_pressure(facts(queues, back_pressure={"EX01": high, "EX02": state("EX02", levels={})}))
    assert (finding.rule, finding.severity, finding.step) == ("back_pressure_high", "critical", "queues")
    assert finding.title == "EX01 is under back pressure: Submission 480 and growing; UsedDiskSpace High"
    assert "EX01: paused by back pressure: SmtpIn" in finding.evidence
    assert "the other servers' Submission queues hold 2, 0" in finding.evidence
    assert finding.next_step.startswith("EX01 refuses all new mail until it recovers: free disk space on the drive")
    medium = state(levels={"UsedVersionBuckets": "Medium"})
    (finding,) = back_pressure(facts(queues, back_pressure={"EX01": medium}))
    assert (finding.rule, finding.severity) == ("back_pressure_medium", "warning")
    assert finding.title.endswith("UsedVersionBuckets Medium")
    assert "mail from outside the organisation" in finding.next_step


def test_a_submission_backlog_alone_on_one_server_is_reported_without_blaming_resources() -> None:
    growing = [submission("EX01", 150, incoming=1.0, outgoing=0.2), submission("EX02", 3)]
    (finding,) = back_pressure(facts(growing, back_pressure={"EX01": state(levels={"SystemMemory": "High"})}))
    assert (finding.rule, finding.severity) == ("submission_backlog", "warning")
    assert finding.title == "EX01's Submission queue is backing up: 150 and growing"
    assert finding.next_step.startswith("Not back pressure")
    # Unknown state: says why it could not be read.
    failed = {"back_pressure": {"EX01": "permission: Get-ExchangeDiagnosticInfo is not available to svc"}}
    (finding,) = back_pressure(facts(growing, failed))
    assert any("could not be read (permission: Get-ExchangeDiagnosticInfo" in e for e in finding.evidence)
    # Not alone (every server backs up: an organisation-wide cause), not growing, or small: no finding.
    everywhere = [*growing[:1], submission("EX02", 140, incoming=1.0)]
    assert back_pressure(facts(everywhere)) == []
    assert back_pressure(facts([submission("EX01", 150, incoming=0.1, outgoing=0.2), submission("EX02", 0)])) == []
    assert back_pressure(facts([submission("EX01", 90, incoming=1.0), submission("EX02", 0)])) == []
    assert back_pressure(facts([submission("EX01", 600), submission("EX02", 0)]))[0].rule == "submission_backlog"


def test_shadow_messages_held_for_an_unreachable_server_name_it() -> None:
    queues = [
        shadow("EX01", "ex02.contoso.sim", 80),
        shadow("EX03", "EX02.contoso.sim", 40),
        shadow("EX02", "ex01.contoso.sim", 5),
    ]
    down = {"queues": {"EX02": "connection: cannot connect: refused"}, "tracking": {"EX02": "timeout: no answer"}}
    (finding,) = shadow_for_unreachable_server(facts(queues, down))
    assert (finding.rule, finding.severity) == ("shadow_for_unreachable_server", "warning")
    assert finding.title == "EX02 is unreachable; EX01 and EX03 hold 120 shadow message(s) for it"
    assert finding.evidence[0] == "EX01: 80 message(s) in EX01\\Shadow\\12 (shadow for ex02.contoso.sim, Ready)"
    assert "EX02 does not answer: queues: connection: cannot connect: refused" in finding.evidence
    # A server that answers, or fails for another reason (a role, a broken cmdlet), holds nothing up.
    assert shadow_for_unreachable_server(facts(queues)) == []
    assert shadow_for_unreachable_server(facts(queues, {"queues": {"EX02": "permission: Get-Queue ..."}})) == []


def test_primary_server_matches_names_hosts_and_first_labels() -> None:
    servers = {"EX01": "ex01.contoso.sim", "EX02": "10.0.0.2", "mbx3": "mbx3"}
    assert primary_server("EX01.CONTOSO.SIM", servers) == "EX01"
    assert primary_server("ex02.contoso.sim.", servers) == "EX02"
    assert primary_server("MBX3.contoso.sim", servers) == "mbx3"
    assert primary_server("ex09.contoso.sim", servers) is None


def tracked(server: str, skew: float | None) -> TrackingResult:
    return TrackingResult(
        server=server, events={}, failures={}, latency_buckets=(0,), latency_sum=0.0, stuck=0, last_event=None,
        truncated_polls=0, evictions=0, skipped_seconds=0.0, new_events=0, clock_skew=skew,
    )  # fmt: skip


def test_a_skewed_server_clock_or_a_skewed_exporter_clock() -> None:
    results = {s: tracked(s, v) for s, v in (("EX01", 0.4), ("EX02", -425.0), ("EX03", 61.0))}
    (finding,) = server_clock_skew(facts([], tracking=results))
    assert (finding.rule, finding.severity) == ("server_clock_skew", "warning")
    assert finding.title == "EX02's clock is 7 minute(s) behind the exporter's"
    assert "other servers: EX01 +0 s, EX03 +61 s" in finding.evidence
    ahead = {s: tracked(s, v) for s, v in (("EX01", 421.0), ("EX02", 419.0))}
    (finding,) = server_clock_skew(facts([], tracking=ahead))
    assert finding.rule == "exporter_clock_skew"
    assert finding.title == "The exporter's clock is 7 minute(s) behind every Exchange server's"
    assert server_clock_skew(facts([], tracking={"EX01": tracked("EX01", 119.0), "EX02": tracked("EX02", None)})) == []


def test_the_rules_are_registered_and_their_runbook_sections_exist() -> None:
    assert {back_pressure, shadow_for_unreachable_server, server_clock_skew} <= set(RULES)
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)
    }
    for anchor in ("back-pressure", "shadow-redundancy-held-for-an-unreachable-server", "server-clock-skew"):
        assert anchor in anchors
