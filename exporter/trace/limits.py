"""The bounds of a trace and the durations its window is given in (no Exchange imports: the command
line's parser uses them)."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["MAX_LIMIT", "MAX_WINDOW", "parse_since"]

#: Exchange keeps 30 days of tracking logs by default (MessageTrackingLogMaxAge).
MAX_WINDOW = timedelta(days=30)
#: Messages shown at most.
MAX_LIMIT = 500
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta:
    """``90m``, ``2h``, ``1.5d``, ``1w`` (one number and a unit) as a duration; ValueError otherwise."""
    found = _DURATION.match(text or "")
    if not found:
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h or 1d")
    seconds = float(found.group(1)) * _UNITS[found.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)
