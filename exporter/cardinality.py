"""Label cardinality: every label value the exporter emits comes from a bounded set.

Two mechanisms, listed label by label in docs/metrics.md ("Cardinality"):

* **Closed sets** (Exchange enums such as DeliveryType or a certificate's Status, and the
  exporter's own categories): a value outside the documented set is reported as ``other``
  (:func:`fold_enum`). A new Exchange build with a new enum member shows up as ``other``, never
  as a new label value per poll.
* **Free-form values** (next-hop domains, LastError codes, connector, database, certificate,
  component, service and domain names): per target, the ``limit`` values that matter most (most
  messages, unhealthy first, soonest to expire...) keep their own series and the rest are
  combined under ``other`` (:func:`keep_top`, the mechanism of ``max_next_hop_domains``). The
  choice is made afresh on every poll, so the live set of one label on one target is at most
  ``limit + 1`` values whatever the server sends: a value that changes on every poll replaces
  another inside that set (Prometheus then sees at most ``limit`` new series per poll and target,
  the old ones going stale), it never adds to it. Counters cannot drop a series, so their values
  are admitted first come, first served for the life of the process (:class:`StickyCap`).

Each result says how many distinct values it folded (``folded``: label -> count); the scrape
renders the non-zero counts as ``mailflow_label_values_folded{collector, target, label}``: a series
means a cap or an unknown enum value is in effect, and no series means nothing was folded.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Any, TypeVar

#: The label value every folded value is reported under.
OTHER = "other"

K = TypeVar("K", bound=Hashable)


def fold_enum(value: str, allowed: Collection[str]) -> str:
    """``value`` when it is a member of the closed set ``allowed``, else ``other``."""
    return value if value in allowed else OTHER


def unknown(values: Iterable[str], allowed: Collection[str]) -> int:
    """How many distinct values are outside the closed set ``allowed`` (folded into ``other``)."""
    return len({v for v in values if v not in allowed})


def keep_top(keys: Iterable[K], limit: int, rank: Callable[[K], Any]) -> frozenset[K]:
    """The ``limit`` distinct keys that sort first by ``rank(key)`` (ties: by the key itself).

    ``rank`` returns something sortable where smaller is more important, e.g. ``-messages``.
    """
    distinct = set(keys)
    if len(distinct) <= limit:
        return frozenset(distinct)
    return frozenset(heapq.nsmallest(limit, distinct, key=lambda k: (rank(k), k)))


class StickyCap:
    """A cap for counter labels: the first ``limit`` distinct values (or label tuples) keep their own
    series for the life of the process; later ones are counted under ``other``. Not thread-safe:
    each target's poll job owns its cap (polls of one target never overlap)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: set[Hashable] = set()
        self._refused: set[Hashable] = set()  # since the last take_refused(): bounded by one poll's input

    def admit(self, value: Hashable) -> bool:
        """Whether ``value`` has (or now gets) its own series; if not, count it under ``other``."""
        if value in self._kept:
            return True
        if len(self._kept) < self.limit:
            self._kept.add(value)
            return True
        self._refused.add(value)
        return False

    def take_refused(self) -> int:
        """Distinct values refused since the last call (one poll's)."""
        count = len(self._refused)
        self._refused = set()
        return count


def fold_samples(results: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """``(target, label, folded)`` for every result that reports what it folded."""
    out: list[tuple[str, str, int]] = []
    for target, result in sorted(results.items()):
        folded = getattr(result, "folded", None)
        if isinstance(folded, Mapping):
            out.extend((target, str(label), int(n)) for label, n in sorted(folded.items()))
    return out
