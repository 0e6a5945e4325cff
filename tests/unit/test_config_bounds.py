"""Every numeric setting is bounded: what validate-config accepts, serve can run with.

The numeric fields are found by walking the settings model (no hand-kept list), each is fed the values
that broke serve (infinities, NaN, 1e308, 10**30, an integer beyond a float) and must be refused with
its field path and line; Hypothesis then feeds any number to any field: either the loader refuses it
(path and line again) or the settings pass a serve-equivalent construction (the service, its
scheduled jobs and their next fire times, the WSMan transports, the timeouts as the socket and
threading layers take them, the tracking windows as datetime arithmetic).
"""

from __future__ import annotations

import math
import re
import socket
import threading
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from pydantic import BaseModel

from exporter.errors import ConfigError
from exporter.exchange.session import build_wsman
from exporter.service import Service
from exporter.settings import (
    INT32_MAX,
    MAX_INTERVAL,
    MAX_LATENCY_BUCKETS,
    MAX_SPAN,
    MAX_TIMEOUT,
    Settings,
    load_settings,
    resolved_servers,
)

# Values a list item or a model in a list needs to be valid on its own.
REQUIRED = {
    "servers": {"name": "EX01"},
    "outbound_ips": {"ip": "192.0.2.1"},
    "internal": {"name": "ex01-self", "source": "EX01"},
    "inbound": {
        "name": "inbound",
        "domain": "contoso.com",
        "recipient": "probe@contoso.com",
        "sender": "p@example.net",
    },
}
DICT_KEY = "Internet"  # a key for dict-of-model settings (connector expectations)
HOSTILE: list[Any] = [math.inf, -math.inf, math.nan, 1e308, 10**30, 10**400]


@dataclass(frozen=True)
class Numeric:
    """One numeric setting: its path (``0``/DICT_KEY stand for an item), its upper bound, and whether
    the number is an item of a list (``latency_buckets``)."""

    loc: tuple[Any, ...]
    upper: float
    is_int: bool
    in_list: bool

    @property
    def name(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out


def _upper(metadata: list[Any]) -> float | None:
    bounds = []
    for item in metadata:
        for attr in ("le", "lt"):
            if isinstance(getattr(item, attr, None), int | float):
                bounds.append(float(getattr(item, attr)))
        func = getattr(item, "func", None)
        if isinstance(getattr(func, "limit", None), int | float):
            bounds.append(float(func.limit))
        bounds += [b for b in (_upper(getattr(item, "metadata", [])),) if b is not None]
    return min(bounds) if bounds else None


def _numeric_fields(model: type[BaseModel], loc: tuple[Any, ...] = ()) -> list[Numeric]:
    found: list[Numeric] = []

    def visit(annotation: Any, metadata: list[Any], here: tuple[Any, ...], in_list: bool) -> None:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            inner, *extra = typing.get_args(annotation)
            visit(inner, [*metadata, *extra], here, in_list)
        elif origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(annotation):
                visit(arg, metadata, here, in_list)
        elif origin is list:
            (item,) = typing.get_args(annotation)
            if isinstance(item, type) and issubclass(item, BaseModel):
                found.extend(_numeric_fields(item, (*here, 0)))
            else:
                visit(item, [], here, True)
        elif origin is dict:
            _, value = typing.get_args(annotation)
            if isinstance(value, type) and issubclass(value, BaseModel):
                found.extend(_numeric_fields(value, (*here, DICT_KEY)))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_numeric_fields(annotation, here))
        elif annotation in (int, float):
            upper = _upper(metadata)
            assert upper is not None, f"{here}: a numeric setting without an upper bound"
            found.append(Numeric(here, upper, annotation is int, in_list))

    for name, info in model.model_fields.items():
        visit(info.annotation, list(info.metadata), (*loc, name), False)
    return list(dict.fromkeys(found))  # Optional[X] | Literal[...] may list one field twice


FIELDS = _numeric_fields(Settings)

# Cross-field rules a value at its bound would break on its own: the partner it needs.
PARTNERS: dict[str, dict[str, Any]] = {
    "collectors.tracking.stuck_after": {"forget_after": MAX_SPAN},
    "collectors.tracking.overlap": {"max_window": MAX_SPAN},
    "sharding.index": {"count": 1000},
    "sharding.count": {"index": 0},
    "exchange.discovery.interval": {
        "enabled": True
    },  # so serve schedules discovery at that interval  # without an index, serve takes it from the host name's ordinal
}


def config(tmp_path: Path, field: Numeric, value: Any) -> tuple[Path, int]:
    """A file setting ``field`` to ``value``; returns it and the line the value is on."""
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "exchange": {"servers": [{"name": "EX01"}]},  # targets, so serve schedules polls
        "dns": {"domains": ["contoso.example"], "smtp": {"hosts": ["mx.contoso.example"]}},
    }
    node: Any = data
    for part, following in zip(field.loc, (*field.loc[1:], None), strict=True):
        if isinstance(part, int):
            continue  # the list item made one step before
        if following is None:
            node[part] = [value] if field.in_list else value
            for key, partner in PARTNERS.get(field.name, {}).items():
                node[key] = partner
        elif isinstance(following, int):
            node[part] = [dict(REQUIRED.get(part, {}))]
            node = node[part][0]
        else:
            node = node.setdefault(part, {})
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    path = tmp_path / "config.yml"
    path.write_text(text)
    key = field.loc[-1]
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith(f"{key}:"))
    return path, line + (1 if field.in_list else 0)


def serve_dry_run(settings_: Settings) -> None:
    """What ``serve`` does with the numbers before and while polling, without the network."""
    service = Service(settings_)
    try:
        service.scheduler.start(paused=True)
        service.reconcile()  # interval triggers with jitter, misfire grace, first-run spread
        now = datetime.now(UTC)
        jobs = service.scheduler.get_jobs()
        assert jobs
        for job in jobs:
            first = job.trigger.get_next_fire_time(None, now)
            assert first is not None
            job.trigger.get_next_fire_time(first, first)
        timeouts = [settings_.dns.timeout, settings_.dns.smtp.timeout]
        for server in resolved_servers(settings_):
            build_wsman(server)
            timeouts += [server.connect_timeout, server.call_timeout]
        with socket.socket() as sock:
            for timeout in timeouts:
                sock.settimeout(timeout)
                assert threading.Lock().acquire(timeout=timeout)  # a free lock: returns at once
        tracking = settings_.collectors.tracking
        for span in (tracking.overlap, tracking.max_window, tracking.initial_lookback, tracking.forget_after):
            assert now - timedelta(seconds=span) < now
        assert generate_latest(service.registry)
    finally:
        service.stop()


def test_the_walk_finds_every_kind_of_numeric_setting() -> None:
    names = {f.name for f in FIELDS}
    assert {
        "exchange.defaults.connect_timeout",
        "exchange.servers[0].call_timeout",
        "exchange.servers[0].port",
        "exchange.discovery.interval",
        "collectors.tracking.latency_buckets",
        "collectors.queues.result_size",
        "collectors.send_connectors.expect.Internet.port",
        "dns.drift_accept_after",
        "dns.smtp.timeout",
        "scheduler.jitter",
        "scheduler.stale_after_intervals",
        "sharding.index",
    } <= names
    assert len(FIELDS) >= 40


@pytest.mark.parametrize("value", HOSTILE, ids=["inf", "-inf", "nan", "1e308", "10**30", "10**400"])
@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_hostile_numbers_are_refused_with_path_and_line(tmp_path: Path, field: Numeric, value: Any) -> None:
    path, line = config(tmp_path, field, value)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    where = f"{field.name}[0]" if field.in_list else field.name
    assert f"  {where} (line {line}): " in str(info.value)


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_each_bound_is_enforced_and_serve_runs_at_it(tmp_path: Path, field: Numeric) -> None:
    if not field.is_int:  # seconds: far below 2**63 ns (threading, sockets) and datetime's range
        assert field.upper <= MAX_SPAN
    bound: float = int(field.upper) if field.is_int else field.upper
    top = bound
    if field.name in ("collectors.tracking.stuck_after", "collectors.tracking.overlap"):
        top -= 1  # must stay below its partner, which is at most the same bound
    path, _ = config(tmp_path, field, top)
    serve_dry_run(load_settings(path, environ={}))
    above = bound + 1 if field.is_int else math.nextafter(bound, math.inf)
    path, line = config(tmp_path, field, above)
    with pytest.raises(ConfigError, match=rf"  {re.escape(field.name)}(\[0\])? \(line {line}\): "):
        load_settings(path, environ={})


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, 1, 0.001, MAX_TIMEOUT, MAX_INTERVAL, MAX_SPAN, 2**31 - 1, 2**31, 2**63]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=numbers)
def test_any_number_is_refused_with_path_and_line_or_serve_runs_with_it(
    tmp_path: Path, field: Numeric, value: float
) -> None:
    path, line = config(tmp_path, field, value)
    try:
        loaded = load_settings(path, environ={})
    except ConfigError as exc:
        text = str(exc)
        where = f"{field.name}[0]" if field.in_list else field.name
        if f"  {where} (line " in text:
            assert f"  {where} (line {line}): " in text, text
        else:  # a cross-field rule, reported at its partner (forget_after for stuck_after...), naming this one
            assert re.search(r"^  \S+ \(line \d+\): ", text, re.M) and field.loc[-1] in text, text
        return
    assert math.isfinite(value) and value <= field.upper
    serve_dry_run(loaded)


def test_readme_states_the_bounds_the_code_enforces() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Configuration", 1)[1].split("\n## ", 1)[0]
    text = " ".join(section.split())
    assert MAX_INTERVAL == 7 * 86400 and "at most 7 days" in text
    assert MAX_TIMEOUT == 3600 and "at most 1 hour" in text
    assert MAX_SPAN == 366 * 86400 and "at most 366 days" in text
    assert MAX_LATENCY_BUCKETS == 50 and "(at most 50, positive, strictly increasing)" in text
    assert f"at most {INT32_MAX}" in text and "`stale_after_intervals` at most 100" in text
