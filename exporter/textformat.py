"""The Prometheus text and OpenMetrics encoders, byte for byte prometheus_client's, in about half the time.

prometheus_client's ``generate_latest`` re-validates and re-escapes every label *name* of every sample
(two regular expressions and a string build per label), and sorts each sample's labels again. Our
families have tens of thousands of samples sharing a handful of label-name tuples, so this module does
that work once per tuple (a ``%`` template with the names in sorted order) and once per distinct label
value per scrape; what remains per sample is one template fill. bench/bench_scrape.py measures it
against the library (see docs/performance.md, "Scrape").

Only the common shape takes the fast path: legacy-valid names (no colons, no reserved ``__`` label
names), no exemplars, native histograms, timestamps or OpenMetrics-only ``_created``/``_gsum``/``_gcount``
samples, and the escaping schemes that leave such names untouched (``underscores``, ``allow-utf-8``).
Any other family is encoded by the library itself, so the output never departs from it;
tests/unit/test_textformat.py compares the two on every shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from prometheus_client import generate_latest as _text_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.utils import floatToGoString

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # valid as a metric and a label name: escaped as is
_FAST_ESCAPINGS = (_om.UNDERSCORES, _om.ALLOWUTF8)
_TEXT_TYPES = {"counter": "counter", "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram",
               "unknown": "untyped"}  # fmt: skip
_TEXT_SUFFIXES = {"counter": "_total", "info": "_info"}
_OM_EOF = "# EOF\n"


class _Collectable(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _One:
    """One family, as the library's encoders take it (anything with ``collect``)."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> list[Metric]:
        return [self._metric]


class _Slow(Exception):
    """This family is not of the common shape: the library encodes it."""


def _label_template(keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """``('b', 'a')`` -> ``('{a="%s",b="%s"}', ('a', 'b'))``: the label part of a line, names sorted."""
    if any(not _NAME.match(k) or k.startswith("__") for k in keys):
        raise _Slow
    ordered = tuple(sorted(keys))
    return "{" + ",".join(f'{k}="%s"' for k in ordered) + "}", ordered


class _Encoder:
    """One scrape's encoding: the per-tuple templates and escaped values live as long as the scrape."""

    def __init__(self, openmetrics: bool) -> None:
        self._openmetrics = openmetrics
        self._templates: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}
        self._escaped: dict[str, str] = {}

    def _escape(self, value: str) -> str:
        escaped = self._escaped.get(value)
        if escaped is None:
            escaped = self._escaped[value] = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        return escaped

    def family(self, metric: Metric) -> list[str]:
        """The lines of one family; raises _Slow when it is not of the common shape."""
        name, mtype = metric.name, metric.type
        if not _NAME.match(name):
            raise _Slow
        if self._openmetrics:
            help_text = self._escape(metric.documentation)
            out = [f"# HELP {name} {help_text}\n", f"# TYPE {name} {mtype}\n"]
            if metric.unit:
                out.append(f"# UNIT {name} {metric.unit}\n")
            special: tuple[str, ...] = ()
        else:
            exposed = name + _TEXT_SUFFIXES.get(mtype, "")
            help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out = [f"# HELP {exposed} {help_text}\n", f"# TYPE {exposed} {_TEXT_TYPES.get(mtype, mtype)}\n"]
            special = (name + "_created", name + "_gsum", name + "_gcount")
        checked: set[str] = set()
        templates, escape = self._templates, self._escape
        for sample_name, labels, value, timestamp, exemplar, native in metric.samples:
            if timestamp is not None or exemplar is not None or native is not None:
                raise _Slow
            if sample_name not in checked:
                if sample_name in special or not _NAME.match(sample_name):
                    raise _Slow
                checked.add(sample_name)
            if labels:
                keys = tuple(labels)
                template = templates.get(keys)
                if template is None:
                    template = templates[keys] = _label_template(keys)
                text, ordered = template
                label_part = text % tuple([escape(labels[k]) for k in ordered])
                out.append(f"{sample_name}{label_part} {floatToGoString(value)}\n")
            else:
                out.append(f"{sample_name} {floatToGoString(value)}\n")
        return out


def _library_family(metric: Metric, openmetrics: bool, escaping: str) -> str:
    if openmetrics:
        return _om.generate_latest(_One(metric), escaping=escaping).decode("utf-8").removesuffix(_OM_EOF)
    return _text_latest(_One(metric), escaping=escaping).decode("utf-8")


def encode(registry: _Collectable, openmetrics: bool = False, escaping: str = _om.UNDERSCORES) -> bytes:
    """What ``generate_latest`` (or, with ``openmetrics``, the OpenMetrics 1.0.0 one) returns for
    ``registry``, with ``escaping`` as negotiated."""
    if escaping not in _FAST_ESCAPINGS:
        if openmetrics:
            return _om.generate_latest(registry, escaping=escaping)
        return _text_latest(registry, escaping=escaping)
    encoder = _Encoder(openmetrics)
    output: list[str] = []
    for metric in registry.collect():
        try:
            output += encoder.family(metric)
        except _Slow:
            output.append(_library_family(metric, openmetrics, escaping))
        except Exception as exc:  # as the library reports a family it cannot encode
            exc.args = (exc.args or ("",)) + (metric,)
            raise
    if openmetrics:
        output.append(_OM_EOF)
    return "".join(output).encode("utf-8")


def fast_encoder(library_encoder: Callable[..., bytes]) -> Callable[[Any], bytes] | None:
    """This module's equivalent of an encoder ``prometheus_client.exposition.choose_encoder`` picked, or
    None when the library's is to be used (a format this module does not produce)."""
    func = library_encoder.func if isinstance(library_encoder, partial) else library_encoder
    keywords = library_encoder.keywords if isinstance(library_encoder, partial) else {}
    escaping = keywords.get("escaping", _om.UNDERSCORES)
    if func is _text_latest:
        return partial(encode, openmetrics=False, escaping=escaping)
    if func is _om.generate_latest and keywords.get("version", "1.0.0") == "1.0.0":
        return partial(encode, openmetrics=True, escaping=escaping)
    return None
