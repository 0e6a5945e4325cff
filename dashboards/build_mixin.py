"""Generate the monitoring mixin (dashboards/mailflow-mixin/) from the shipped alert rules and dashboards.

    python dashboards/build_mixin.py          # rewrite the generated .libsonnet files
    python dashboards/build_mixin.py --check  # exit 1 if a generated file is stale

The mixin follows kubernetes-mixin and node-mixin: ``mixin.libsonnet`` yields ``prometheusAlerts``,
``prometheusRules`` and ``grafanaDashboards`` from a ``_config``. The alerts and dashboards are not
written twice: this script turns dashboards/prometheus/alerts.yml and dashboards/grafana/dashboards/*.json
into Jsonnet whose default ``_config`` renders them exactly (tests/unit/test_mixin.py compares).

* Every vector selector of every alert expression and dashboard query gets ``%(mailflowSelector)s``:
  ``m{a="b"}`` becomes ``m{%(mailflowSelector)s, a="b"}`` and a bare ``m`` becomes ``m{%(mailflowSelector)s}``;
  lib/promql.libsonnet drops the placeholder with its comma or braces while the selector is empty
  (the default: the shipped rules select the exporter's series by their ``mailflow_`` names alone).
  A matcher ``job="mailflow"`` (the job the shipped rules assume for ``up``) becomes ``%(jobSelector)s``.
* ``runbook_url`` annotations under the common base become ``runbookURLPattern % '<anchor>'``.
* ``severity`` labels become ``severities.<name>``.
* A threshold (an integer after ``>``, ``>=``, ``<`` or ``<=``, other than 0) becomes a ``_config`` field
  named in THRESHOLDS (an unnamed one gets a name made from its alert); where a summary or description
  states it ("more than 500", "10 or more") the number there follows the field too.

The PromQL is read by a small tokenizer that skips strings, ranges, Grafana variables and the label lists
of ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``, so ``label_replace(...)`` arguments,
regexes and grouping labels are never taken for metric names.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "prometheus" / "alerts.yml"
DASHBOARDS = HERE / "grafana" / "dashboards"
MIXIN = HERE / "mailflow-mixin"
GENERATOR = "dashboards/build_mixin.py"
#: The matcher the shipped rules write for the exporter's job (``up`` carries every job's series).
SHIPPED_JOB_MATCHER = 'job="mailflow"'

#: Names and meanings of the thresholds, by (alert, severity), in the order they appear in the expression.
#: Rules that compare with the same limit share a field (the SPF limits).
THRESHOLDS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("MailflowQueueGrowing", "critical"): [
        ("queueGrowingThreshold", "messages the delivery and submission queues grew by over 15 minutes"),
        ("queueGrowingMinimumThreshold", "messages those queues must hold as well"),
    ],
    ("MailflowQueueBacklog", "warning"): [("queueBacklogThreshold", "messages queued for delivery or submission")],
    ("MailflowQueueRetryingDnsFailure", "critical"): [
        ("queueRetryingDnsFailureCriticalThreshold", "messages retrying with a DNS failure, per exporter"),
    ],
    ("MailflowQueueRetryingConnection", "critical"): [
        ("queueRetryingConnectionCriticalThreshold", "messages retrying with a connection failure, per exporter"),
    ],
    ("MailflowQueueRetryingTls", "critical"): [
        ("queueRetryingTlsCriticalThreshold", "messages retrying with a TLS failure, per exporter"),
    ],
    ("MailflowQueueRetrying", "critical"): [
        ("queueRetryingCriticalThreshold", "messages retrying with one other LastError category, per exporter"),
    ],
    ("MailflowQueueRetryingThrottled", "critical"): [
        ("queueRetryingThrottledCriticalThreshold", "messages retrying because the next hop throttles, per exporter"),
    ],
    ("MailflowMessagesStuck", "warning"): [("messagesStuckThreshold", "messages received but not handed on")],
    ("MailflowServerClockSkew", "warning"): [
        ("serverClockSkewThreshold", "seconds an Exchange server's clock may differ from the exporter's"),
    ],
    ("MailflowInboundMailStopped", "critical"): [
        ("inboundMailStoppedMinimumThreshold", "internal and outbound messages in 30 minutes that show mail flows"),
    ],
    ("MailflowCertificateExpiring", "warning"): [
        ("certificateExpiringDaysThreshold", "days before an SMTP/IIS certificate expires"),
    ],
    ("MailflowSpfInvalid", "critical"): [
        ("spfLookupLimit", "DNS-querying SPF terms (RFC 7208 section 4.6.4)"),
        ("spfVoidLookupLimit", "void SPF lookups (RFC 7208 section 4.6.4)"),
    ],
    ("MailflowSpfLookupLimit", "critical"): [
        ("spfLookupLimit", "DNS-querying SPF terms (RFC 7208 section 4.6.4)"),
        ("spfVoidLookupLimit", "void SPF lookups (RFC 7208 section 4.6.4)"),
    ],
    ("MailflowSmtpCertificateExpiring", "warning"): [
        ("smtpCertificateExpiringDaysThreshold", "days before an MX host's TLS certificate expires"),
    ],
    ("MailflowProbeSlow", "warning"): [("probeSlowSecondsThreshold", "seconds a synthetic probe may take end to end")],
}

# ------------------------------------------------------------------------------------------- PromQL

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^(){},=<>@])
    """,
    re.X,
)
#: Words followed by a parenthesised list of label names, not an expression.
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
#: Words that are neither functions nor metric names (compared lower-case).
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
COMPARISONS = {">", ">=", "<", "<="}
#: Grafana query-variable functions whose arguments hold no selector.
NO_SELECTOR_FUNCTIONS = {"label_names", "metrics"}


@dataclass(frozen=True)
class Token:
    """One PromQL token and where it lies in the expression."""

    kind: str
    text: str
    start: int
    end: int


@dataclass
class Selector:
    """A vector selector: the metric name (None for ``{__name__=...}``) and its matchers' spans."""

    name: str | None
    name_end: int  # where ``{...}`` starts or would be inserted
    brace: tuple[int, int] | None  # offsets of ``{`` and ``}``
    matchers: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Analysis:
    """The selectors and the threshold literals of one expression."""

    selectors: list[Selector]
    thresholds: list[Token]


def tokenize(expr: str) -> list[Token]:
    """The tokens of ``expr`` without whitespace and comments; raises ValueError on a character PromQL has not."""
    out: list[Token] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind not in ("ws", "comment"):
            out.append(Token(kind, match.group(), match.start(), match.end()))
        pos = match.end()
    return out


def _closing(tokens: list[Token], i: int, expr: str) -> int:
    """Index of the ``)`` matching the ``(`` at ``tokens[i]``."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].text == "(":
            depth += 1
        elif tokens[j].text == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced parentheses in {expr!r}")


def analyse(expr: str) -> Analysis:
    """Find every vector selector and every threshold literal of a PromQL expression (or Grafana query)."""
    tokens = tokenize(expr)
    result = Analysis([], [])

    def text(k: int) -> str | None:
        return tokens[k].text if k < len(tokens) else None

    def selector(i: int, name: str | None) -> int:
        """Record the selector whose name (or ``{``) is ``tokens[i]``; return the index after it."""
        brace_at = i if name is None else i + 1
        if name is not None and text(brace_at) != "{":
            result.selectors.append(Selector(name, tokens[i].end, None))
            return i + 1
        close = next((k for k in range(brace_at, len(tokens)) if tokens[k].text == "}"), None)
        if close is None:
            raise ValueError(f"unclosed matcher braces in {expr!r}")
        matchers: list[tuple[int, int]] = []
        group: list[Token] = []
        for tok in [*tokens[brace_at + 1 : close], None]:
            if tok is None or tok.text == ",":
                if group:
                    matchers.append((group[0].start, group[-1].end))
                group = []
            else:
                group.append(tok)
        if not matchers:
            raise ValueError(f"empty matcher braces in {expr!r}: write the metric name alone")
        start = tokens[i].end if name is not None else tokens[i].start
        result.selectors.append(Selector(name, start, (tokens[brace_at].start, tokens[close].start), matchers))
        return close + 1

    def walk(lo: int, hi: int) -> None:
        i = lo
        while i < hi:
            tok = tokens[i]
            nxt = text(i + 1) if i + 1 < hi else None
            if tok.kind == "ident":
                if tok.text in GROUPING:
                    i = _closing(tokens, i + 1, expr) + 1 if nxt == "(" else i + 1
                elif tok.text.lower() in KEYWORDS or nxt in ("by", "without"):
                    i += 1  # a keyword, or an aggregation written ``sum by (...) (...)``
                elif nxt == "(":
                    close = _closing(tokens, i + 1, expr)
                    if tok.text == "label_values":  # label_values(selector, label) or label_values(label)
                        depth, comma = 0, None
                        for k in range(i + 1, close):
                            depth += {"(": 1, ")": -1}.get(tokens[k].text, 0)
                            if depth == 1 and tokens[k].text == ",":
                                comma = k
                        if comma is not None:
                            walk(i + 2, comma)
                        i = close + 1
                    elif tok.text in NO_SELECTOR_FUNCTIONS:
                        i = close + 1
                    else:
                        i += 1  # a function or aggregation: its arguments are read next
                else:
                    i = selector(i, tok.text)
            elif tok.text == "{":
                i = selector(i, None)
            elif tok.text in COMPARISONS:
                k = i + 1
                if text(k) == "bool":
                    k += 1
                after = text(k + 1)
                if (
                    k < hi
                    and tokens[k].kind == "num"
                    and re.fullmatch(r"\d+", tokens[k].text)
                    and int(tokens[k].text) != 0
                    and (after is None or after == ")" or after.lower() in ("and", "or", "unless"))
                ):
                    result.thresholds.append(tokens[k])
                i += 1
            else:
                i += 1

    walk(0, len(tokens))
    return result


def template(expr: str, thresholds: dict[tuple[int, int], str] | None = None) -> str:
    """``expr`` as a format string of lib/promql.libsonnet: selector placeholders added, ``%`` escaped.

    ``thresholds`` maps the (start, end) offsets of a threshold literal to the ``_config`` field replacing it.
    """
    edits: list[tuple[int, int, str]] = []
    for sel in analyse(expr).selectors:
        job = [m for m in sel.matchers if re.sub(r"\s+", "", expr[m[0] : m[1]]) == SHIPPED_JOB_MATCHER]
        if job:
            edits.append((job[0][0], job[0][1], "%(jobSelector)s"))
        elif sel.brace is None:
            edits.append((sel.name_end, sel.name_end, "{%(mailflowSelector)s}"))
        else:
            edits.append((sel.brace[0] + 1, sel.brace[0] + 1, "%(mailflowSelector)s, "))
    for (start, end), name in (thresholds or {}).items():
        edits.append((start, end, f"%({name})s"))
    out, pos = [], 0
    for start, end, replacement in sorted(edits):
        out += [expr[pos:start].replace("%", "%%"), replacement]
        pos = end
    out.append(expr[pos:].replace("%", "%%"))
    return "".join(out)


# ------------------------------------------------------------------------------------------- Jsonnet


class Code(str):
    """Jsonnet source written as is (a field access), not as a string literal."""


@dataclass(frozen=True)
class Call:
    """``<function>('<template>')``: a format string rendered by a Jsonnet function of the generated file."""

    function: str
    template: str


@dataclass(frozen=True)
class Format:
    """``'<template>' % c``: a format string of ``_config`` fields."""

    template: str


JSONNET_KEYWORDS = {
    "assert", "else", "error", "false", "for", "function", "if", "import", "importstr", "importbin", "in",
    "local", "null", "self", "super", "tailstrict", "then", "true",
}  # fmt: skip


def jsonnet_string(text: str, indent: str) -> str:
    """A Jsonnet string literal: a ``|||`` block for multi-line text that allows one, else single-quoted."""
    lines = text[:-1].split("\n") if text.endswith("\n") else []
    if (
        len(lines) > 1
        and "|||" not in text
        and not lines[0][:1].isspace()
        and all(line == "" or not line.isspace() for line in lines)
    ):
        body = "".join(f"{indent}  {line}\n" if line else "\n" for line in lines)
        return f"|||\n{body}{indent}|||"
    escaped = []
    for ch in text:
        if ch in "\\'":
            escaped.append("\\" + ch)
        elif ch == "\n":
            escaped.append("\\n")
        elif ch == "\t":
            escaped.append("\\t")
        elif ord(ch) < 0x20:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return "'" + "".join(escaped) + "'"


def jsonnet_key(key: str) -> str:
    """An object key: bare when Jsonnet allows it, else quoted."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and key not in JSONNET_KEYWORDS:
        return key
    return jsonnet_string(key, "")


def jsonnet(value: Any, indent: str = "") -> str:
    """Jsonnet source for a JSON-like value; ``Code`` is written verbatim, small containers on one line."""
    if isinstance(value, Code):
        return str(value)
    if isinstance(value, Call):
        return f"{value.function}({jsonnet_string(value.template, indent)})"
    if isinstance(value, Format):
        return f"{jsonnet_string(value.template, indent)} % c"
    if isinstance(value, str):
        return jsonnet_string(value, indent)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{jsonnet_key(str(k))}: {jsonnet(v, inner)}" for k, v in value.items()]
        one_line = "{ " + ", ".join(items) + " }"
        if len(one_line) + len(indent) <= 100 and "\n" not in one_line:
            return one_line
        return "{\n" + "".join(f"{inner}{item},\n" for item in items) + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [jsonnet(v, inner) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) + len(indent) <= 100 and "\n" not in one_line:
            return one_line
        return "[\n" + "".join(f"{inner}{item},\n" for item in items) + indent + "]"
    raise TypeError(f"cannot write {type(value).__name__} as Jsonnet")


def expr_call(text: str, thresholds: dict[tuple[int, int], str] | None = None) -> Call:
    """``expr('<template>')``: the expression rendered through lib/promql.libsonnet."""
    return Call("expr", template(text, thresholds))


# ------------------------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Threshold:
    """One ``_config`` threshold field: its default, what it counts, and the rule using it."""

    name: str
    value: int
    doc: str
    rule: str


def _lower_camel(name: str) -> str:
    base = name[len("Mailflow") :] if name.startswith("Mailflow") else name
    return base[:1].lower() + base[1:]


def rule_thresholds(rule: dict[str, Any]) -> list[tuple[Token, Threshold]]:
    """The threshold literals of an alerting rule and the ``_config`` field each becomes."""
    found = analyse(str(rule["expr"])).thresholds
    if "alert" not in rule or not found:
        return []
    severity = str(rule.get("labels", {}).get("severity", ""))
    named = THRESHOLDS.get((rule["alert"], severity))
    if named is None or len(named) != len(found):
        stem = _lower_camel(rule["alert"]) + severity.capitalize() + "Threshold"
        named = [
            (stem + (str(i + 1) if len(found) > 1 else ""), f"threshold {i + 1} of its expression (name generated)")
            for i in range(len(found))
        ]
    label = f"{rule['alert']} ({severity})" if severity else rule["alert"]
    return [(tok, Threshold(name, int(tok.text), doc, label)) for tok, (name, doc) in zip(found, named, strict=True)]


_PHRASE = r"(?<![\w.])(?:(?:more|fewer|less) than|at least) {n}(?![\w.])|(?<![\w.]){n} or more(?![\w])"


def annotation(text: str, thresholds: list[Threshold]) -> str | Format:
    """An annotation, as a format string when it states one of the rule's thresholds in words."""
    values = [t.value for t in thresholds]
    edits: list[tuple[int, int, str]] = []
    for t in thresholds:
        if values.count(t.value) > 1:
            continue  # ambiguous: which field would the number follow?
        for match in re.finditer(_PHRASE.format(n=t.value), text):
            number = re.search(rf"(?<![\w.]){t.value}(?![\w.])", match.group())
            assert number is not None
            at = match.start() + number.start()
            edits.append((at, at + len(str(t.value)), f"%({t.name})s"))
    if not edits:
        return text
    out, pos = [], 0
    for start, end, replacement in sorted(edits):
        out += [text[pos:start].replace("%", "%%"), replacement]
        pos = end
    out.append(text[pos:].replace("%", "%%"))
    return Format("".join(out))


def runbook_base(groups: list[dict[str, Any]]) -> str:
    """The base shared by the runbook URLs (the part before ``#``), the most common one if they differ."""
    bases = [
        str(r["annotations"]["runbook_url"]).split("#", 1)[0]
        for g in groups
        for r in g["rules"]
        if "#" in str(r.get("annotations", {}).get("runbook_url", ""))
    ]
    return max(sorted(set(bases)), key=bases.count) if bases else ""


def severity_ref(value: str) -> Code:
    """``c.severities.<value>``."""
    key = jsonnet_key(value)
    return Code(f"c.severities.{key}" if key == value else f"c.severities[{key}]")


def mixin_rule(rule: dict[str, Any], base: str) -> tuple[dict[str, Any], list[Threshold]]:
    """One rule as Jsonnet data, and the thresholds it uses."""
    found = rule_thresholds(rule)
    thresholds = [t for _tok, t in found]
    out: dict[str, Any] = {}
    for key, value in rule.items():
        if key == "expr":
            out[key] = expr_call(str(value), {(tok.start, tok.end): t.name for tok, t in found})
        elif key == "labels":
            out[key] = {k: severity_ref(str(v)) if k == "severity" else v for k, v in value.items()}
        elif key == "annotations":
            notes: dict[str, Any] = {}
            for k, v in value.items():
                url = str(v)
                if k == "runbook_url" and base and url.startswith(base + "#"):
                    notes[k] = Code(f"c.runbookURLPattern % {jsonnet_string(url[len(base) + 1 :], '')}")
                else:
                    notes[k] = annotation(str(v), thresholds)
            out[key] = notes
        else:
            out[key] = value
    return out, thresholds


@dataclass
class Rules:
    """What alerts.yml becomes: alert groups, recording-rule groups, severities and thresholds."""

    alerts: list[dict[str, Any]]
    records: list[dict[str, Any]]
    severities: list[str]
    thresholds: list[Threshold]
    runbook_base: str
    users: dict[str, list[str]] = field(default_factory=dict)  # threshold field -> the rules using it


def build_rules(source: Path = ALERTS) -> Rules:
    """Split the rule groups into alerting and recording groups (as the mixin convention does), as Jsonnet data."""
    groups = yaml.safe_load(source.read_text())["groups"]
    base = runbook_base(groups)
    result = Rules([], [], [], [], base)
    seen: dict[str, Threshold] = {}
    for group in groups:
        head = {k: v for k, v in group.items() if k != "rules"}
        alerts: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        for rule in group["rules"]:
            data, thresholds = mixin_rule(rule, base)
            (alerts if "alert" in rule else records).append(data)
            for t in thresholds:
                if t.name in seen and seen[t.name].value != t.value:
                    raise ValueError(f"{t.name} is {seen[t.name].value} in one rule and {t.value} in another")
                if t.name not in seen:
                    seen[t.name] = t
                    result.thresholds.append(t)
                if t.rule not in result.users.setdefault(t.name, []):
                    result.users[t.name].append(t.rule)
            severity = rule.get("labels", {}).get("severity")
            if severity is not None and str(severity) not in result.severities:
                result.severities.append(str(severity))
        if alerts:
            result.alerts.append({**head, "rules": alerts})
        if records:
            result.records.append({**head, "rules": records})
    return result


# ------------------------------------------------------------------------------------------- dashboards


def dashboard_data(value: Any, key: str = "", variable: bool = False) -> Any:
    """A dashboard as Jsonnet data: every ``expr``, and the queries of query variables, rendered by ``expr()``."""
    if isinstance(value, dict):
        is_query_variable = value.get("type") == "query" and ("query" in value or "definition" in value)
        return {k: dashboard_data(v, k, variable or is_query_variable) for k, v in value.items()}
    if isinstance(value, list):
        return [dashboard_data(v, key, variable) for v in value]
    if isinstance(value, str) and (key == "expr" or (variable and key in ("query", "definition"))):
        return expr_call(value)
    return value


# ------------------------------------------------------------------------------------------- files


def header(source: str) -> str:
    """The first line of every generated file."""
    return f"// Generated by {GENERATOR} from {source}. Do not edit.\n"


CONFIG_HEAD = """\
{
  _config+:: {
    // Label matchers that select the exporter's series, inserted into every selector of every alert
    // expression and dashboard query, e.g. 'job="mailflow"' or 'job="mail", cluster="eu"'.
    // Empty (the default, as the shipped rules): the mailflow_* metric names alone select them.
    mailflowSelector: '',
    // The matchers for series every job has (up): the shipped rules assume job="mailflow".
    // Follows mailflowSelector once that is set.
    jobSelector: if self.mailflowSelector != '' then self.mailflowSelector else 'job="mailflow"',

    // Where each alert's runbook_url points: runbookURLPattern %% '<alert name in lower case>'.
    runbookURLBase: %(base)s,
    runbookURLPattern: self.runbookURLBase + '#%%s',

    // The severity label value each shipped severity becomes (Alertmanager routes on it).
    severities: %(severities)s,

    // Alert thresholds (the numbers the expressions compare with; summaries and descriptions that
    // state one follow it).
"""


def config_text(rules: Rules) -> str:
    """config.libsonnet: the ``_config`` fields and their defaults."""
    text = CONFIG_HEAD % {
        "base": jsonnet_string(rules.runbook_base, ""),
        "severities": jsonnet({s: s for s in rules.severities}, "    "),
    }
    for t in rules.thresholds:
        text += f"    // {', '.join(rules.users[t.name])}: {t.doc}\n    {t.name}: {t.value},\n"
    return header(ALERTS.relative_to(HERE.parent).as_posix()) + text + "  },\n}\n"


def rules_text(kind: str, groups: list[dict[str, Any]]) -> str:
    """alerts/alerts.libsonnet or rules/rules.libsonnet: ``prometheusAlerts`` or ``prometheusRules``."""
    body = jsonnet(groups, "    ")
    return (
        header(ALERTS.relative_to(HERE.parent).as_posix())
        + "local promql = import '../lib/promql.libsonnet';\n\n{\n"
        + f"  {kind}+:: {{\n    local c = $._config,\n    local expr(template) = promql.expr(template, c),\n"
        + f"    groups+: {body},\n  }},\n}}\n"
    )


def dashboard_text(path: Path) -> str:
    """dashboards/<name>.libsonnet: one dashboard under ``grafanaDashboards``."""
    model = dashboard_data(json.loads(path.read_text()))
    return (
        header(path.relative_to(HERE.parent).as_posix())
        + "local promql = import '../lib/promql.libsonnet';\n\n{\n"
        + "  grafanaDashboards+:: {\n    local c = $._config,\n    local expr(template) = promql.expr(template, c),\n"
        + f"    {jsonnet_string(path.name, '')}: {jsonnet(model, '    ')},\n  }},\n}}\n"
    )


def outputs() -> dict[Path, str]:
    """Every generated file of the mixin and its text."""
    rules = build_rules()
    files = sorted(DASHBOARDS.glob("*.json"))
    index = "".join(f"(import '{p.stem}.libsonnet') +\n" for p in files) + "{}\n"
    out = {
        MIXIN / "config.libsonnet": config_text(rules),
        MIXIN / "alerts" / "alerts.libsonnet": rules_text("prometheusAlerts", rules.alerts),
        MIXIN / "rules" / "rules.libsonnet": rules_text("prometheusRules", rules.records),
        MIXIN / "dashboards" / "dashboards.libsonnet": header("dashboards/grafana/dashboards/") + index,
    }
    for p in files:
        out[MIXIN / "dashboards" / f"{p.stem}.libsonnet"] = dashboard_text(p)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    wanted = outputs()
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    extra = sorted(set((MIXIN / "dashboards").glob("*.libsonnet")) - set(wanted))
    if args.check:
        for p in stale + extra:
            print(f"{p} is out of date: run python {GENERATOR}", file=sys.stderr)
        return 1 if stale or extra else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(wanted[p])
    for p in extra:
        p.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
