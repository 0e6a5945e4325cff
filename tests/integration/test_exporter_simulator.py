"""The exporter against the Exchange simulator over real sockets, through the real pypsrp client."""

from __future__ import annotations

import functools
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.exchange.queues import QueueInfo, decode_queue, parse_queue
from exporter.service import Service
from tests.integration.conftest import PASSWORD, SimFactory, raw_pool, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def up(service: Service, target: str, collector: str = "queues") -> float | None:
    return service.registry.get_sample_value("mailflow_collector_up", {"collector": collector, "target": target})


def errors(service: Service, target: str, reason: str) -> float:
    value = service.registry.get_sample_value(
        "mailflow_collector_errors_total", {"collector": "queues", "target": target, "reason": reason}
    )
    return value or 0.0


def queue_labels(server: str, kind: str, dtype: str, category: str, domain: str) -> dict[str, str]:
    return {
        "server": server,
        "queue_kind": kind,
        "delivery_type": dtype,
        "next_hop_category": category,
        "next_hop_domain": domain,
    }


def test_metric_values_match_the_scenario(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    service = service_factory(settings_for(sim, scenario))
    snaps = service.poll_all()
    assert all(s.ok for s in snaps), [(s.target, s.reason, s.message) for s in snaps]
    reg = service.registry
    for i, server in enumerate(("EX01", "EX02")):
        assert up(service, server) == 1.0
        fab = queue_labels(server, "delivery", "DnsConnectorDelivery", "External", "fabrikam.example")
        assert reg.get_sample_value("mailflow_queue_messages", fab) == 17 + i
        assert reg.get_sample_value("mailflow_queue_retries", fab) == 5
        assert reg.get_sample_value("mailflow_queue_status", {**fab, "status": "Retry"}) == 1
        assert reg.get_sample_value("mailflow_queue_status", {**fab, "status": "Active"}) is None  # current only
        assert (
            reg.get_sample_value(
                "mailflow_queue_last_error_info",
                {**fab, "smtp_code": "451", "enhanced_code": "4.4.0", "category": "dns_failure"},
            )
            == 1
        )
        assert reg.get_sample_value("mailflow_queue_next_retry_timestamp_seconds", fab) > time.time() - 3600
        tail = queue_labels(server, "delivery", "DnsConnectorDelivery", "External", "tailspin.example")
        assert (
            reg.get_sample_value(
                "mailflow_queue_last_error_info",
                {**tail, "smtp_code": "451", "enhanced_code": "4.4.397", "category": "connection_refused"},
            )
            == 1
        )
        sub = queue_labels(server, "submission", "Undefined", "Internal", "Submission")
        assert reg.get_sample_value("mailflow_queue_messages", sub) == 3 + i
        assert reg.get_sample_value("mailflow_queue_incoming_rate", sub) == 4.5
        poison = queue_labels(server, "poison", "Undefined", "Internal", "Poison Message")
        assert reg.get_sample_value("mailflow_queue_messages", poison) == 1


def test_fault_on_one_server_marks_only_that_target_down_and_recovers(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory()
    service = service_factory(settings_for(sim, scenario))
    service.poll_all()
    sim.faults.set("EX02", "refused")
    service.poll_all()
    assert up(service, "EX01") == 1.0
    assert up(service, "EX02") == 0.0
    assert errors(service, "EX02", "connection") == 1
    # the last good EX02 result is still served (not yet stale); EX01 is fresh
    sim.faults.clear("EX02")
    service.poll_all()
    assert up(service, "EX02") == 1.0


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("http500", "http_error"),
        ("http401", "auth"),
        ("wsman_fault", "wsman_fault"),
        ("malformed_clixml", "parse"),
        ("error_record", "cmdlet_error"),
    ],
)
def test_each_fault_kind_maps_to_its_reason(
    sim_factory: SimFactory, service_factory: Any, kind: str, reason: str
) -> None:
    sim, scenario = sim_factory()
    backoff = {"exchange": {"auth_failure_backoff": "200ms"}}
    service = service_factory(settings_for(sim, scenario, overrides=backoff))
    service.poll_all()
    sim.faults.set("EX01", kind, cmdlet="Get-Queue" if kind in ("malformed_clixml", "error_record") else None)
    service.poll_all()
    assert up(service, "EX01") == 0.0
    assert errors(service, "EX01", reason) == 1, service.store.states()[("queues", "EX01")].last
    assert up(service, "EX02") == 1.0
    sim.faults.clear()
    time.sleep(0.3)  # let an auth backoff (200 ms) run out
    service.poll_all()
    assert up(service, "EX01") == 1.0


def test_hung_call_times_out_and_recovers(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    service = service_factory(settings_for(sim, scenario, overrides={"exchange": {"defaults": {"call_timeout": 2}}}))
    service.poll_all()
    sim.faults.set("EX01", "hang", cmdlet="Get-Queue")
    started = time.monotonic()
    service.poll_all()
    elapsed = time.monotonic() - started
    assert up(service, "EX01") == 0.0 and errors(service, "EX01", "timeout") == 1
    assert up(service, "EX02") == 1.0
    assert elapsed < 2 + 3  # bounded by call_timeout, not by the hang
    sim.faults.clear()
    service.poll_all()
    assert up(service, "EX01") == 1.0


def test_sessions_are_reused_and_closed_on_shutdown(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory()
    service = Service(settings_for(sim, scenario))
    try:
        for _ in range(4):
            assert all(s.ok for s in service.poll_all())
        stats = sim.stats()
        assert stats["shells_created"] == 2  # one per server, across four polls
        assert stats["shells_open"] == 2
        assert all(s.opened == 1 for s in service.sessions.sessions())
    finally:
        service.stop()
    deadline = time.monotonic() + 5
    while sim.stats()["shells_open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats()["shells_open"] == 0
    assert sim.stats()["shells_closed"] == 2


def test_expired_shell_is_reopened_without_a_failed_poll(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    service = service_factory(settings_for(sim, scenario))
    service.poll_all()
    sim.faults.set("EX01", "shell_expiry")
    snaps = {s.target: s for s in service.poll_all()}
    assert snaps["EX01"].ok, snaps["EX01"]
    assert sim.stats()["shells_created"] == 3


def test_session_limit_is_reported(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory(small_org(session_limit=2))
    held = []
    try:
        for _ in range(2):
            pool = raw_pool(sim)
            pool.open()
            held.append(pool)
        service = service_factory(settings_for(sim, scenario))
        service.poll_all()
        assert up(service, "EX01") == 0.0
        assert errors(service, "EX01", "session_limit") == 1
        assert up(service, "EX02") == 1.0
    finally:
        for pool in held:
            pool.close()


def test_https_with_certificate_validation(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory(tls=True)
    good = service_factory(settings_for(sim, scenario, tls=True))
    assert all(s.ok for s in good.poll_all())
    # Validation is on by default: without the simulator's CA the certificate is rejected.
    bad = service_factory(
        settings_for(sim, scenario, tls=True, overrides={"exchange": {"defaults": {"ca_bundle": None}}})
    )
    snaps = bad.poll_all()
    assert {s.reason for s in snaps} == {"tls"}


def test_discovery_via_seed_polls_every_transport_server(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory(small_org(("EX01", "EX02", "EX03")))
    settings = settings_for(
        sim, scenario, overrides={"exchange": {"discovery": {"enabled": True, "connect": "via_seed"}}}
    )
    only_seed = settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update={"servers": settings.exchange.servers[:1]})}
    )
    service = service_factory(only_seed)
    snaps = service.poll_all()
    assert sorted(s.target for s in snaps if s.collector == "queues") == ["EX01", "EX02", "EX03"]
    assert all(s.ok for s in snaps), [(s.target, s.message) for s in snaps]
    assert (
        service.registry.get_sample_value(
            "mailflow_queue_messages", queue_labels("EX03", "poison", "Undefined", "Internal", "Poison Message")
        )
        == 1
    )
    assert (
        service.registry.get_sample_value(
            "mailflow_exchange_server_info",
            {
                "server": "EX03",
                "fqdn": "ex03.contoso.sim",
                "version": scenario.servers[2].version,
                "site": scenario.servers[2].site,
            },
        )
        == 1
    )
    assert sim.stats()["shells_created"] == 1  # everything went through the seed's one session


def test_password_never_leaks(
    sim_factory: SimFactory, service_factory: Any, all_logs: pytest.LogCaptureFixture
) -> None:
    sim, scenario = sim_factory()
    settings = settings_for(sim, scenario)
    service = service_factory(settings)
    service.start()
    base = f"http://127.0.0.1:{service.web.port}"
    service.poll_all()
    texts = []
    for kind in ("http401", "http500", "wsman_fault", "malformed_clixml", "error_record", "refused"):
        sim.faults.set("EX01", kind, cmdlet="Get-Queue" if kind in ("malformed_clixml", "error_record") else None)
        texts += [s.message for s in service.poll_all()]
        sim.faults.clear()
    wrong = settings_for(sim, scenario, overrides={"exchange": {"defaults": {"password": PASSWORD + "-wrong"}}})
    texts += [s.message for s in service_factory(wrong).poll_all()]
    for path in ("/metrics", "/", "/-/ready"):
        try:
            with urllib.request.urlopen(base + path, timeout=5) as resp:
                texts.append(resp.read().decode())
        except urllib.error.HTTPError as err:
            texts.append(err.read().decode())
    texts.append(generate_latest(service.registry).decode())
    texts.append(all_logs.text)
    texts.append(repr(settings))
    assert any("auth" in t for t in texts)  # the failures really happened and were reported
    for text in texts:
        assert PASSWORD not in text


def test_queue_decoder_gives_what_the_generic_path_gives(sim_factory: SimFactory, service_factory: Any) -> None:
    """The queue collector decodes Get-Queue's messages itself (queues.decode_queue); over real pypsrp
    that gives the same queues as pypsrp's objects parsed by parse_queue."""
    sim, scenario = sim_factory()
    service = service_factory(settings_for(sim, scenario))
    session = service.targets.session("EX01")
    params = {"Server": "EX01", "ResultSize": "Unlimited"}
    decoded = session.invoke("Get-Queue", params, decoder=functools.partial(decode_queue, server="EX01")).objects
    generic = session.invoke("Get-Queue", params).objects
    assert decoded and all(isinstance(q, QueueInfo) for q in decoded)
    assert decoded == [parse_queue(o, "EX01") for o in generic]
    collector = next(c for c in service.collectors if c.name == "queues")
    assert collector.poll("EX01").queues == tuple(decoded)
