"""Shared fixtures: a real authoritative DNS server (NSD), the DemoDNS responder, DemoSMTP endpoints."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from exporter.netsim.dns_server import DemoDNS
from tests.dnsinfra.nsd import NsdServer, find_nsd
from tests.dnsinfra.smtp import SmtpServerFactory
from tests.dnsinfra.zones import BROKEN_ZONES, TEST_ZONES

#: Under CI=true a skipped test fails the run unless its reason starts with "optional:" (see the module).
pytest_plugins = ["tests.skipguard"]

# Property tests draw the same examples on every CI run, so a landing never hinges on a new random draw;
# on a developer's machine each run explores new inputs (and what it finds becomes an @example).
if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
    hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    hypothesis_settings.load_profile("ci")

NsdFactory = Callable[..., NsdServer]


def _require_nsd() -> None:
    """Skip when nsd is missing on a developer machine; under CI (CI=true) that is a failure instead."""
    if find_nsd() is not None:
        return
    message = "nsd is not installed (Debian package nsd; scripts/test.sh installs it)"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message}, and CI must run the DNS tests")
    pytest.skip(message)


@pytest.fixture(scope="session")
def nsd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    """NSD serving ``tests.dnsinfra.zones.TEST_ZONES`` (plus the broken ``servfail.test``) for the session.

    Shared: do not reload it; use ``nsd_factory`` for a server of your own.
    """
    _require_nsd()
    server = NsdServer(TEST_ZONES, tmp_path_factory.mktemp("nsd"), broken_zones=BROKEN_ZONES)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nsd_factory(tmp_path: Path) -> Iterator[NsdFactory]:
    """Start NSD servers of a test's own (``nsd_factory(zones, broken_zones=...)``); stopped at teardown."""
    _require_nsd()
    started: list[NsdServer] = []

    def make(
        zones: Mapping[str, str] | None = None, broken_zones: Iterable[str] = (), port: int | None = None
    ) -> NsdServer:
        directory = tmp_path / f"nsd{len(started)}"
        server = NsdServer(zones or TEST_ZONES, directory, port=port, broken_zones=broken_zones)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def demo_dns() -> Iterator[DemoDNS]:
    """DemoDNS serving ``TEST_ZONES`` on a free loopback port."""
    with DemoDNS(TEST_ZONES) as server:
        yield server


@pytest.fixture
def smtp_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServerFactory]:
    """``factory(kind)`` starts a DemoSMTP with a valid / expiring (5 days) / expired / wrong_name certificate
    or without STARTTLS (``no_starttls``); ``factory.ca_file`` is the CA to trust. Stopped at teardown."""
    factory = SmtpServerFactory(tmp_path_factory.mktemp("smtp-tls"))
    yield factory
    factory.stop_all()
