"""Record-set drift: compare what DNS says now with an expected value or a remembered baseline.

Each (name, record type) has a baseline: the configured expected value when there is one, else the
record set first seen (persisted in ``<state_dir>/dns-baseline.json`` so a restart does not forget
it). While the current set differs from the baseline, drift is 1. Without an expected value, a
changed set that stays stable for ``accept_after`` becomes the new baseline (drift clears by
itself after the alert has had its time; 0 disables that). ``last_change`` is when the set last
changed as observed. Resolver failures never update anything: a timeout is not a change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ABSENT = "<absent>"
SAVE_EVERY = 30.0  # seconds


def _valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("baseline"), list)
        and all(isinstance(x, str) for x in entry["baseline"])
        and isinstance(entry.get("fp"), str)
        and isinstance(entry.get("seen"), str)
        and isinstance(entry.get("since"), int | float)
        and (entry.get("changed") is None or isinstance(entry.get("changed"), int | float))
    )


def fingerprint(values: Iterable[str]) -> str:
    """Order- and case-insensitive hash of a record set (an empty set is the absent marker)."""
    items = sorted({v.strip().lower() for v in values if v.strip()}) or [ABSENT]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DriftState:
    """What the store says about one record set after an observation."""

    drifted: bool
    last_change: float | None
    baseline: tuple[str, ...]
    current: tuple[str, ...]


class BaselineStore:
    """Thread-safe baselines, saved atomically after every change."""

    VERSION = 1

    def __init__(self, path: Path | None, accept_after: float, clock: Callable[[], float]) -> None:
        self._path = path
        self._accept_after = accept_after
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = self._load()
        self._dirty = False
        self._saved_at = float("-inf")

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            raw = json.loads(self._path.read_text())
            if raw.get("version") == self.VERSION and isinstance(raw.get("records"), dict):
                good = {k: v for k, v in raw["records"].items() if _valid_entry(v)}
                if len(good) != len(raw["records"]):
                    log.warning(
                        "ignoring %d malformed DNS baseline entries path=%s",
                        len(raw["records"]) - len(good),
                        self._path,
                    )
                return good
            log.warning("ignoring DNS baseline file of another version path=%s", self._path)
        except (OSError, ValueError) as err:
            log.warning('DNS baseline file unreadable, starting afresh path=%s error="%s"', self._path, err)
        return {}

    def flush(self) -> None:
        """Write pending changes now (on shutdown)."""
        with self._lock:
            if self._dirty:
                self._save()

    def _save(self) -> None:
        self._dirty = False
        self._saved_at = self._clock()
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".dns-baseline-")
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": self.VERSION, "records": self._data}, fh, indent=1, sort_keys=True)
            os.replace(tmp, self._path)
        except OSError as err:
            log.warning('cannot save DNS baselines path=%s error="%s"', self._path, err)

    def observe(
        self, name: str, rtype: str, values: Iterable[str], expected: Iterable[str] | None = None
    ) -> DriftState:
        """Record the current set of ``name``/``rtype`` and return its drift state."""
        current = tuple(sorted({v.strip() for v in values if v.strip()}))
        now = self._clock()
        key = f"{name.lower()}|{rtype}"
        current_fp = fingerprint(current)
        with self._lock:
            entry = self._data.get(key)
            changed = False
            if entry is None:
                entry = {"baseline": list(current), "fp": current_fp, "seen": current_fp, "since": now, "changed": None}
                self._data[key] = entry
                changed = True
            elif entry["seen"] != current_fp:  # the observed set moved since the last poll
                entry.update(seen=current_fp, since=now, changed=now)
                changed = True
            if expected is not None:
                wanted = tuple(sorted({v.strip() for v in expected if v.strip()}))
                if entry["baseline"] != list(wanted):
                    entry.update(baseline=list(wanted), fp=fingerprint(wanted))
                    changed = True
            elif (
                entry["fp"] != current_fp
                and self._accept_after > 0
                and now - float(entry["since"]) >= self._accept_after
            ):
                log.info("DNS record change accepted as the new baseline name=%s type=%s", name, rtype)
                entry.update(baseline=list(current), fp=current_fp)
                changed = True
            state = DriftState(
                drifted=entry["fp"] != current_fp,
                last_change=entry["changed"],
                baseline=tuple(entry["baseline"]),
                current=current,
            )
            if changed:
                self._dirty = True
            # At most one write per SAVE_EVERY: a first cycle over 1,000 domains must not rewrite the
            # file 3,000 times under the lock every DNS thread shares.
            if self._dirty and now - self._saved_at >= SAVE_EVERY:
                self._save()
        return state
