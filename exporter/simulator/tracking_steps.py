"""Pieces of the simulated message-tracking log: timestamps, time texts and the DELIVER event.

``tracking._generate`` builds every message from these; they hold no state but small caches of
formatted times.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Sequence
from typing import Protocol

from exporter.simulator.timeline import format_culture_datetime


class _Server(Protocol):
    """What ``deliver`` reads of a server model (``tracking._ServerModel``)."""

    fqdn: str
    mailbox_database: str


__all__ = [
    "INBOUND_PROFILE",
    "INTERNAL_PROFILE",
    "OUTBOUND_DEFER_PROFILE",
    "OUTBOUND_PROFILE",
    "between",
    "deliver",
    "guid",
    "iso_utc",
    "local_text",
    "steps",
]

_ISO_SECONDS: dict[int, str] = {}


def iso_utc(ms: int) -> str:
    """``2024-01-15T21:06:01.371Z`` (cached per second)."""
    second = ms // 1000
    text = _ISO_SECONDS.get(second)
    if text is None:
        if len(_ISO_SECONDS) > 100_000:
            _ISO_SECONDS.clear()
        text = _ISO_SECONDS[second] = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S"
        )
    return f"{text}.{ms % 1000:03d}Z"


_LOCAL_TEXT: dict[tuple[int, str, int], str] = {}


def local_text(ms: int, tz: datetime.tzinfo, culture: str) -> str:
    """The server-local ``DateTime.ToString()`` of a time (cached per second)."""
    offset = tz.utcoffset(None)
    key = (ms // 1000, culture, 0 if offset is None else int(offset.total_seconds()))
    text = _LOCAL_TEXT.get(key)
    if text is None:
        if len(_LOCAL_TEXT) > 100_000:
            _LOCAL_TEXT.clear()
        text = _LOCAL_TEXT[key] = format_culture_datetime(datetime.datetime.fromtimestamp(key[0], tz), culture)
    return text


def steps(rng: random.Random, arrival_ms: int, total_ms: int, profile: Sequence[float]) -> list[int]:
    """Timestamps for a sequence: ``profile`` fractions of the latency, jittered, strictly increasing."""
    out: list[int] = []
    rnd = rng.random
    previous = arrival_ms - 1
    for index, fraction in enumerate(profile):
        if index == 0:
            ts = arrival_ms
        elif index == len(profile) - 1:
            ts = arrival_ms + total_ms
        else:
            ts = arrival_ms + int(total_ms * fraction * (0.8 + 0.4 * rnd()))
        ts = max(ts, previous + 1 + int(rnd() * 3))
        out.append(ts)
        previous = ts
    return out


def between(after: int, before: int, n: int) -> list[int]:
    """``n`` strictly increasing times after ``after``, spread before ``before`` when there is room."""
    step = max(1, (before - after) // (n + 1))
    return [after + step * (i + 1) for i in range(n)]


INTERNAL_PROFILE = (0.0, 0.02, 0.05, 0.12, 0.18, 0.22, 0.6, 1.0)
OUTBOUND_PROFILE = (0.0, 0.02, 0.05, 0.12, 0.18, 0.22, 1.0)
OUTBOUND_DEFER_PROFILE = (0.0, 0.02, 0.05, 0.12, 0.18, 0.22, 0.5, 1.0)
INBOUND_PROFILE = (0.0, 0.08, 0.55, 1.0)


def guid(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-4{value[13:16]}-a{value[17:20]}-{value[20:]}"


def deliver(
    add: object,
    model: _Server,
    rng: random.Random,
    ts: int,
    arrival_ms: int,
    local_text: object,
    base_data: tuple[tuple[str, str], ...],
    submitted_on: str,
    field_ratio: float,
) -> None:
    """DELIVER on ``model``'s server of a message that entered on ``submitted_on`` (an FQDN)."""
    latency = ts - arrival_ms
    with_field = rng.random() < field_ratio
    if with_field:
        hub = latency * 0.6 / 1000
        info = (
            f"{iso_utc(arrival_ms)};SRV={submitted_on}:TOTAL-SUB={latency * 0.2 / 1000:.3f}|SA=0.020|MTSS=0.010;"
            f"SRV={model.fqdn}:TOTAL-HUB={hub:.3f}|SMR=0.020|CAT=0.010|QD=0.005|DSMTP={hub * 0.5:.3f};"
            f"SRV={model.fqdn}:TOTAL-DEL={latency * 0.2 / 1000:.3f}|SMR=0.010|RD=0.020"
        )
    else:
        info = local_text(arrival_ms)  # type: ignore[operator]
    add(  # type: ignore[operator]
        ts,
        "STOREDRIVER",
        "DELIVER",
        server_hostname=model.fqdn,
        source_context=f"ClientSubmitTime:{iso_utc(arrival_ms)}",
        message_info=info,
        latency=latency if with_field else None,
        latency_type="EndToEnd" if with_field else "None",
        event_data=(
            ("MailboxDatabaseName", model.mailbox_database),
            ("DatabaseHealth", "-1"),
            ("E2ELatency", f"{latency / 1000:.3f}"),
            *base_data,
        ),
    )
