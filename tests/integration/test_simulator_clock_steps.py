"""The simulator's server clocks as a client sees them: the HTTP Date header, and tracking stamps that a
clock step does not rewrite (raw pypsrp and HTTP, no exporter code)."""

from __future__ import annotations

import contextlib
import copy
import datetime
import email.utils
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import raw_pool, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T0 = 1_800_000_000.0


def _org(skew: float) -> dict[str, Any]:
    data = small_org(("EX01", "EX02"))
    data["servers"][0]["clock_skew_seconds"] = skew
    data["servers"][0]["tracking"] = {"messages_per_minute": 30, "history_minutes": 30, "stuck_ratio": 0}
    data["shell_idle_timeout_seconds"] = 1_000_000
    return data


@contextlib.contextmanager
def running(data: dict[str, Any], clock: list[float]) -> Iterator[Simulator]:
    with Simulator(Scenario.from_dict(data), clock=lambda: clock[0]) as sim:
        yield sim


def date_header(sim: Simulator, server: str) -> float:
    """The Date of an unauthenticated request's 401 answer (HTTP.sys stamps errors too)."""
    host, port = sim.endpoint(server)
    request = urllib.request.Request(f"http://{host}:{port}/PowerShell", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401
    return email.utils.parsedate_to_datetime(caught.value.headers["Date"]).timestamp()


def stamps(pool: RunspacePool, start: float, end: float) -> list[tuple[str, str, float]]:
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-MessageTrackingLog").add_parameter("Server", "EX01")
    iso = [datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat() for t in (start, end)]
    ps.add_parameter("Start", iso[0]).add_parameter("End", iso[1]).add_parameter("ResultSize", "Unlimited")
    out = []
    for obj in ps.invoke():
        props = obj.adapted_properties
        when = datetime.datetime.fromisoformat(str(props["Timestamp"])).timestamp()
        out.append((str(props["InternalMessageId"]), str(props["EventId"]), when))
    return out


def test_the_date_header_is_the_server_clock() -> None:
    clock = [T0 + 0.75]
    with running(_org(-437), clock) as sim:
        assert date_header(sim, "EX01") == T0 - 437  # whole seconds, truncated
        assert date_header(sim, "EX02") == T0


def test_a_clock_step_back_keeps_old_stamps_and_reuses_them_for_new_events() -> None:
    clock = [T0]
    data = _org(420)
    with running(data, clock) as sim, raw_pool(sim) as pool:
        clock[0] = T0 + 600
        before = stamps(pool, T0, T0 + 2000)
        assert max(t for _, _, t in before) <= T0 + 600 + 420  # stamped 7 minutes ahead
        stepped = copy.deepcopy(data)
        stepped["servers"][0]["clock_skew_seconds"] = 0
        sim.set_scenario(Scenario.from_dict(stepped))  # w32time steps the clock back at T0 + 600
        assert date_header(sim, "EX01") == T0 + 600
        clock[0] = T0 + 900
        after = stamps(pool, T0, T0 + 2000)
        assert set(before) <= set(after)  # what was logged keeps its stamps
        new = sorted(set(after) - set(before), key=lambda e: e[2])
        assert new and new[0][2] >= T0 + 600 and new[-1][2] <= T0 + 900
        # The new events take stamps the log already held before the step (600..1020): a reader that
        # stopped at the old "now" (T0 + 1020) and never looks back misses them.
        assert sum(1 for _, _, t in new if t < T0 + 1020) == len(new)
        assert any(i not in {j for j, _, _ in before} for i, _, _ in new)  # messages that arrived after the step
