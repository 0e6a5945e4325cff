"""Generate the Grafana dashboards of mailflow-exporter, so every panel follows the same conventions.

    python dashboards/grafana/build_dashboards.py          # rewrite dashboards/grafana/dashboards/*.json
    python dashboards/grafana/build_dashboards.py --check  # exit 1 if a committed file is stale

Conventions (grafana/dashboard-linter): one ``datasource`` variable, multi-select ``job`` and ``instance``
variables whose "All" is ``.+``; every selector carries ``job=~"$job", instance=~"$instance"``; ``rate`` and
``increase`` use ``$__rate_interval``; every panel has a title, a description, a unit and the
``${datasource}`` data source. tests/unit/test_dashboards.py checks all of this and that the JSON
committed here equals what this script writes; tests/integration/test_dashboards_live.py runs every
query against a real Prometheus scraping the exporter on the demo organisation.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT_DIR = HERE / "dashboards"
#: Where the dashboard provider (provisioning/dashboards/mailflow.yaml) reads the JSON files inside the
#: Grafana container; deploy/compose/docker-compose.yml mounts dashboards/grafana/dashboards there.
PROVISIONED_PATH = "/var/lib/grafana/dashboards/mailflow"
#: Grafana folder of the dashboards; the Grafana-managed alert rules use the same folder.
FOLDER = "Mailflow"
#: Data source uid of provisioning/datasources/prometheus.yaml (the alert rules query it by this uid).
DATASOURCE_UID = "mailflow-prometheus"
TAGS = ["mailflow", "exchange"]

DS = {"type": "prometheus", "uid": "${datasource}"}
#: The matchers every selector carries.
S = 'job=~"$job", instance=~"$instance"'
SRV = 'server=~"$server"'
#: The labels that identify one queue series (joins between queue metrics).
QUEUE_ON = "on (job, instance, server, queue_kind, delivery_type, next_hop_category, next_hop_domain)"
DAY = 86400

GREEN, ORANGE, RED, BLUE, TEXT = "green", "orange", "red", "blue", "text"


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def ne(label: str, value: str) -> str:
    return f'{label}!="{value}"'


def rx(label: str, value: str) -> str:
    return f'{label}=~"{value}"'


def nre(label: str, value: str) -> str:
    return f'{label}!~"{value}"'


def sel(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job", instance=~"$instance", <matchers>}``."""
    return metric + "{" + ", ".join([S, *matchers]) + "}"


RETRY = eq("status", "Retry")
#: Component states are exposed as the current state only (value 1; component="other": a count per state).
NOT_ACTIVE = ne("state", "Active")
HUB_TRANSPORT = eq("component", "HubTransport")
DELIVERY = eq("queue_kind", "delivery")
SHADOW = eq("queue_kind", "shadow")
NOT_SHADOW = ne("queue_kind", "shadow")


def rate(metric: str, *matchers: str) -> str:
    return f"rate({sel(metric, *matchers)}[$__rate_interval])"


def increase(metric: str, *matchers: str) -> str:
    return f"increase({sel(metric, *matchers)}[$__rate_interval])"


def per_minute(by: str, metric: str, *matchers: str) -> str:
    """``sum [by (...)] (rate(...)) * 60``: events per minute."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({rate(metric, *matchers)}) * 60"


def or_zero(expr: str) -> str:
    """A stat that counts problems shows 0, not "No data", when there are none."""
    return f"({expr} or vector(0))"


def retry_queues(metric: str, *matchers: str) -> str:
    """``metric`` restricted to the queues in Retry."""
    retrying = sel("mailflow_queue_status", SRV, RETRY)
    return f"({sel(metric, SRV, *matchers)} and {QUEUE_ON} ({retrying} > 0))"


# --- field config helpers -----------------------------------------------------------------------------


def steps(*pairs: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in pairs]}


def mapping(values: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """Value mapping: raw value -> (text, color)."""
    options = {k: {"text": t, "color": c, "index": i} for i, (k, (t, c)) in enumerate(values.items())}
    return [{"type": "value", "options": options}]


def yes_no(yes: str = "yes", no: str = "no", good: int = 1) -> list[dict[str, Any]]:
    """0/1 gauge mapping; ``good`` is the value shown green."""
    return mapping(
        {"1": (yes, GREEN if good == 1 else RED), "0": (no, GREEN if good == 0 else RED)},
    )


PROBLEMS = steps((None, GREEN), (1, RED))
WARNINGS = steps((None, GREEN), (1, ORANGE))
NEUTRAL = steps((None, BLUE))


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Column:
    """A table value column: the value of target ``ref`` shown as ``name``."""

    name: str
    unit: str = "short"
    mappings: list[dict[str, Any]] | None = None
    color: str | None = None  # "color-text" | "color-background"
    thresholds: dict[str, Any] | None = None
    hidden: bool = False


@dataclass
class Panel:
    kind: str  # stat | timeseries | table | bargauge | row
    title: str
    description: str = ""
    targets: list[Target] = field(default_factory=list)
    unit: str = "short"
    w: int = 12
    h: int = 8
    thresholds: dict[str, Any] | None = None
    mappings: list[dict[str, Any]] | None = None
    links: list[tuple[str, str]] = field(default_factory=list)  # (title, dashboard uid)
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    extra_defaults: dict[str, Any] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)  # tables: one per target, in order
    label_columns: dict[str, str] = field(default_factory=dict)  # tables: label -> header
    label_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # tables: header -> props
    sort_by: str | None = None
    sort_desc: bool = True


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str = "none",
    thresholds: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    legend: str = "",
    w: int = 4,
    h: int = 4,
    links: list[tuple[str, str]] | None = None,
) -> Panel:
    return Panel(
        "stat",
        title,
        description,
        [Target(expr, legend, instant=False)],
        unit=unit,
        w=w,
        h=h,
        thresholds=thresholds or NEUTRAL,
        mappings=mappings,
        links=links or [],
    )


def timeseries(
    title: str,
    description: str,
    targets: list[Target],
    unit: str,
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    step: bool = False,
    links: list[tuple[str, str]] | None = None,
    **defaults: Any,
) -> Panel:
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineInterpolation": "stepAfter" if step else "linear",
        "lineWidth": 1,
        "fillOpacity": 20 if stack else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    return Panel(
        "timeseries",
        title,
        description,
        targets,
        unit=unit,
        w=w,
        h=h,
        custom=custom,
        links=links or [],
        extra_defaults=defaults,
    )


def table(
    title: str,
    description: str,
    targets: list[tuple[str, Column]],
    labels: dict[str, str],
    w: int = 24,
    h: int = 8,
    sort_by: str | None = None,
    sort_desc: bool = True,
    label_overrides: dict[str, dict[str, Any]] | None = None,
    links: list[tuple[str, str]] | None = None,
) -> Panel:
    """An instant-query table; ``labels`` lists the label columns shown (label -> header), in order."""
    return Panel(
        "table",
        title,
        description,
        [Target(expr, instant=True) for expr, _ in targets],
        unit=targets[0][1].unit,
        w=w,
        h=h,
        columns=[c for _, c in targets],
        label_columns=labels,
        label_overrides=label_overrides or {},
        sort_by=sort_by,
        sort_desc=sort_desc,
        links=links or [],
    )


def bargauge(
    title: str, description: str, expr: str, legend: str, maximum: float, thresholds: dict[str, Any], w: int, h: int
) -> Panel:
    return Panel(
        "bargauge",
        title,
        description,
        [Target(expr, legend, instant=True)],
        unit="none",
        w=w,
        h=h,
        thresholds=thresholds,
        extra_defaults={"min": 0, "max": maximum},
    )


def row(title: str) -> Panel:
    return Panel("row", title, w=24, h=1)


# --- JSON rendering ------------------------------------------------------------------------------------


def _link(title: str, uid: str) -> dict[str, Any]:
    return {"title": title, "url": f"/d/{uid}?${{__url_time_range}}&${{__all_variables}}", "targetBlank": False}


def _targets(panel: Panel) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(panel.targets):
        ref = chr(ord("A") + i)
        target: dict[str, Any] = {"datasource": DS, "expr": t.expr, "refId": ref}
        if panel.kind == "table":
            target.update(format="table", instant=True, range=False, legendFormat="__auto")
        else:
            target.update(instant=t.instant, range=not t.instant, legendFormat=t.legend or "__auto")
        out.append(target)
    return out


def _table_parts(panel: Panel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Transformations (merge + organize) and per-column overrides of a table panel."""
    several = len(panel.targets) > 1
    values = {(f"Value #{chr(ord('A') + i)}" if several else "Value"): c for i, c in enumerate(panel.columns)}
    exclude = {k: True for k in ("Time", "job", "instance", "__name__") if k not in panel.label_columns}
    rename: dict[str, str] = {}
    index: dict[str, int] = {}
    position = 0
    for label, header in panel.label_columns.items():
        rename[label] = header
        index[label] = position
        position += 1
    for raw, column in values.items():
        if column.hidden:
            exclude[raw] = True
            continue
        rename[raw] = column.name
        index[raw] = position
        position += 1
    transformations: list[dict[str, Any]] = []
    if several:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "organize",
            "options": {"excludeByName": exclude, "indexByName": index, "renameByName": rename, "includeByName": {}},
        }
    )
    overrides = []
    for column in values.values():
        if column.hidden:
            continue
        props: list[dict[str, Any]] = [{"id": "unit", "value": column.unit}]
        if column.mappings:
            props.append({"id": "mappings", "value": column.mappings})
        if column.thresholds:
            props.append({"id": "thresholds", "value": column.thresholds})
        if column.color:
            props.append({"id": "custom.cellOptions", "value": {"type": column.color}})
        overrides.append({"matcher": {"id": "byName", "options": column.name}, "properties": props})
    for header, extra in panel.label_overrides.items():
        props = []
        if "mappings" in extra:
            props.append({"id": "mappings", "value": extra["mappings"]})
        if "color" in extra:
            props.append({"id": "custom.cellOptions", "value": {"type": extra["color"]}})
        if "width" in extra:
            props.append({"id": "custom.width", "value": extra["width"]})
        overrides.append({"matcher": {"id": "byName", "options": header}, "properties": props})
    return transformations, overrides


def render_panel(panel: Panel, pid: int, pos: dict[str, int]) -> dict[str, Any]:
    if panel.kind == "row":
        return {"type": "row", "title": panel.title, "collapsed": False, "gridPos": pos, "id": pid, "panels": []}
    defaults: dict[str, Any] = {"unit": panel.unit}
    out: dict[str, Any] = {
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": pos,
        "id": pid,
    }
    overrides: list[dict[str, Any]] = []
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "stat":
        defaults.update(color={"mode": "thresholds"}, thresholds=panel.thresholds, mappings=panel.mappings or [])
        out["options"] = {
            "reduceOptions": reduce,
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value_and_name" if panel.targets[0].legend else "value",
            "wideLayout": True,
            "showPercentChange": False,
        }
    elif panel.kind == "timeseries":
        defaults.update(color={"mode": "palette-classic"}, custom=panel.custom, **panel.extra_defaults)
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "bargauge":
        defaults.update(color={"mode": "thresholds"}, thresholds=panel.thresholds, **panel.extra_defaults)
        out["options"] = {
            "reduceOptions": reduce,
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
            "valueMode": "color",
            "namePlacement": "auto",
            "sizing": "auto",
            "minVizHeight": 16,
            "minVizWidth": 8,
            "maxVizHeight": 300,
        }
    elif panel.kind == "table":
        defaults.update(
            color={"mode": "thresholds"},
            thresholds=NEUTRAL,
            custom={"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True},
        )
        transformations, overrides = _table_parts(panel)
        out["transformations"] = transformations
        out["options"] = {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
            "sortBy": [{"displayName": panel.sort_by, "desc": panel.sort_desc}] if panel.sort_by else [],
        }
    else:
        raise ValueError(panel.kind)
    out["fieldConfig"] = {"defaults": defaults, "overrides": overrides}
    if panel.links:
        out["links"] = [_link(t, uid) for t, uid in panel.links]
    out["targets"] = _targets(panel)
    return out


def layout(panels: list[Panel]) -> list[dict[str, Any]]:
    """Place panels left to right on Grafana's 24-column grid; a row starts a new line."""
    out = []
    x = y = line_h = 0
    for pid, panel in enumerate(panels, start=1):
        if panel.kind == "row" or x + panel.w > 24:
            y += line_h
            x = line_h = 0
        pos = {"h": panel.h, "w": panel.w, "x": x, "y": y}
        out.append(render_panel(panel, pid, pos))
        if panel.kind == "row":
            y += 1
        else:
            x += panel.w
            line_h = max(line_h, panel.h)
    return out


def query_variable(name: str, label: str, query: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }


def base_variables() -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "description": "The Prometheus that scrapes mailflow-exporter.",
            "type": "datasource",
            "query": "prometheus",
            "regex": "",
            "current": {},
            "options": [],
            "refresh": 1,
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "skipUrlSync": False,
        },
        query_variable(
            "job", "Job", "label_values(mailflow_build_info, job)", "Prometheus job(s) scraping mailflow-exporter."
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(mailflow_build_info{job=~"$job"}, instance)',
            "mailflow-exporter instance(s).",
        ),
    ]


SERVER_VARIABLE = query_variable(
    "server",
    "Server",
    'label_values(mailflow_collector_up{job=~"$job", instance=~"$instance", collector="queues"}, target)',
    "Exchange transport server(s): every server the queue collector polls, reachable or not.",
)


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel]
    variables: list[dict[str, Any]]

    def render(self) -> dict[str, Any]:
        return {
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "description": self.description,
            "editable": False,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [
                {
                    "title": "Mailflow dashboards",
                    "type": "dashboards",
                    "tags": ["mailflow"],
                    "asDropdown": False,
                    "includeVars": True,
                    "keepTime": True,
                    "icon": "external link",
                    "targetBlank": False,
                    "tooltip": "",
                    "url": "",
                }
            ],
            "panels": layout(self.panels),
            "refresh": "1m",
            "schemaVersion": 39,
            "tags": TAGS,
            "templating": {"list": base_variables() + self.variables},
            "time": {"from": "now-6h", "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


OVERVIEW, QUEUES, TRACKING, CONFIG, DNS = (
    "mailflow-overview",
    "mailflow-queues",
    "mailflow-tracking",
    "mailflow-config-health",
    "mailflow-dns",
)

# --- tracking expressions shared by the overview and the tracking dashboard ------------------------------

FLOW = [
    ("Received over SMTP", 'event_id="RECEIVE", source="SMTP"'),
    ("Submitted from mailboxes", 'event_id="RECEIVE", source="STOREDRIVER"'),
    ("Delivered to mailboxes", 'event_id="DELIVER", source="STOREDRIVER"'),
    ("Sent over SMTP", 'event_id="SEND", source="SMTP"'),
]
FLOW_HELP = (
    "From the message tracking logs. Received over SMTP: RECEIVE events with source SMTP (mail from the "
    "Internet, partners and other Exchange servers). Submitted from mailboxes: RECEIVE/STOREDRIVER (mail "
    "users send). Delivered to mailboxes: DELIVER/STOREDRIVER. Sent over SMTP: SEND/SMTP (to the Internet, a "
    "smart host or another Exchange server). A message that crosses two servers is counted on both."
)


def flow_targets(by: str = "") -> list[Target]:
    out = []
    for name, matchers in FLOW:
        legend = f"{{{{{by}}}}} {name.lower()}" if by else name
        out.append(Target(per_minute(by, "mailflow_tracking_events_total", SRV, matchers), legend))
    out.append(
        Target(per_minute(by, "mailflow_tracking_failures_total", SRV), f"{{{{{by}}}}} failed" if by else "Failed")
    )
    return out


def overview() -> Dashboard:
    collector_ok = mapping({"1": ("all up", GREEN), "0": ("FAILING", RED)})
    findings = " + ".join(
        or_zero(e)
        for e in (
            f"count({sel('mailflow_dns_spf_result', ne('result', 'pass'))} == 1)",
            f"sum({sel('mailflow_dnsbl_listed')})",
            f"count({sel('mailflow_dns_ptr_forward_confirmed')} == 0)",
            f"count({sel('mailflow_dns_ptr_matches_helo')} == 0)",
            f"count({sel('mailflow_dns_dmarc_policy', rx('policy', 'missing|invalid'))} == 1)",
            f"sum({sel('mailflow_dns_record_drift')})",
            f"count({sel('mailflow_smtp_probe_success')} == 0)",
        )
    )
    panels = [
        row("Is mail flowing?"),
        stat(
            "Exporter up",
            "Whether Prometheus can scrape mailflow-exporter (its `up` series). When this is down every other "
            "panel goes empty.",
            f"min({sel('up')})",
            mappings=mapping({"1": ("UP", GREEN), "0": ("DOWN", RED)}),
            thresholds=steps((None, RED), (1, GREEN)),
            w=3,
        ),
        stat(
            "Failing polls",
            "Collector targets whose last poll failed or went stale (mailflow_collector_up == 0): Exchange "
            "servers that cannot be reached, DNS or SMTP checks that failed. Details on Configuration and health.",
            or_zero(f"count({sel('mailflow_collector_up')} == 0)"),
            thresholds=PROBLEMS,
            w=3,
            links=[("Configuration and health", CONFIG)],
        ),
        stat(
            "Messages queued",
            "Messages in every queue of the selected servers except shadow redundancy queues (which hold "
            "copies of messages already handed on).",
            f"sum({sel('mailflow_queue_messages', SRV, NOT_SHADOW)})",
            unit="short",
            w=3,
            links=[("Queues", QUEUES)],
        ),
        stat(
            "Queues in Retry",
            "Queues whose status is Retry: Exchange could not hand their messages to the next hop and waits "
            "before trying again. The table below says why.",
            or_zero(f"sum({sel('mailflow_queue_status', SRV, RETRY)})"),
            thresholds=PROBLEMS,
            w=3,
            links=[("Queues", QUEUES)],
        ),
        stat(
            "Poison and unreachable",
            "Messages in the Poison queue (messages that crashed transport) and the Unreachable queue (no route "
            "to the recipient's domain).",
            or_zero(f"sum({sel('mailflow_queue_messages', SRV, rx('queue_kind', 'poison|unreachable'))})"),
            unit="short",
            thresholds=WARNINGS,
            w=4,
        ),
        stat(
            "Stuck messages",
            "Messages received more than 15 minutes ago with no DELIVER, SEND, TRANSFER or FAIL since "
            "(message tracking).",
            or_zero(f"sum({sel('mailflow_tracking_stuck_messages', SRV)})"),
            unit="short",
            thresholds=WARNINGS,
            w=4,
            links=[("Message tracking", TRACKING)],
        ),
        stat(
            "Failed recipients",
            "Recipients of FAIL events per minute (non-delivery reports), all causes.",
            or_zero(per_minute("", "mailflow_tracking_failures_total", SRV)),
            unit="cpm",
            w=4,
            links=[("Message tracking", TRACKING)],
        ),
        stat(
            "Exchange collectors per target",
            "For each Exchange server (and `organization` for the organisation-wide collectors): whether "
            "every collector's last poll succeeded and is fresh.",
            f"min by (target) ({sel('mailflow_collector_up', nre('collector', 'dns_domains|dns_ips|smtp'))})",
            mappings=collector_ok,
            thresholds=steps((None, RED), (1, GREEN)),
            legend="{{target}}",
            w=12,
            h=4,
            links=[("Configuration and health", CONFIG)],
        ),
        stat(
            "Components not Active",
            "Server components (HubTransport, FrontendTransport, ServerWideOffline, ...) not in state Active: "
            "a server in maintenance mode accepts no new mail.",
            or_zero(f"sum({sel('mailflow_server_component_state', SRV, NOT_ACTIVE)})"),
            thresholds=PROBLEMS,
            w=3,
            links=[("Configuration and health", CONFIG)],
        ),
        stat(
            "Open relay risks",
            "Receive connector relay risks (every reason) plus an accepted domain `*` of a relay type. "
            "Anything above 0 lets strangers send mail through Exchange.",
            or_zero(f"sum({sel('mailflow_receive_connector_open_relay_risk', SRV)})")
            + " + "
            + or_zero(f"sum({sel('mailflow_accepted_domain_open_relay')})"),
            thresholds=PROBLEMS,
            w=3,
            links=[("Configuration and health", CONFIG)],
        ),
        stat(
            "SMTP certificate expires in",
            "Time left on the Exchange certificate bound to SMTP that expires first (an expired one breaks "
            "STARTTLS with partners that validate).",
            f"min({sel('mailflow_certificate_expiry_timestamp_seconds', SRV, rx('services', '.*SMTP.*'))}) - time()",
            unit="dtdurations",
            thresholds=steps((None, RED), (7 * DAY, ORANGE), (30 * DAY, GREEN)),
            w=3,
            links=[("Configuration and health", CONFIG)],
        ),
        stat(
            "DNS and reputation findings",
            "SPF results other than pass, blocklist listings, PTR records not forward-confirmed or not matching "
            "the HELO name, domains with a missing or invalid DMARC record, MX/SPF/DMARC drift, and MX hosts "
            "failing the SMTP probe, added up.",
            findings,
            thresholds=WARNINGS,
            w=3,
            links=[("DNS and reputation", DNS)],
        ),
        row("Mail flow"),
        timeseries(
            "Is mail flowing? Inbound, outbound, internal",
            "Messages per minute by direction, counted once where each is handed on (message tracking): "
            "inbound and internal are mailbox deliveries of mail from outside or inside the organisation, "
            "outbound is mail sent over a send connector (Internet, smart host, Edge, partner). Arrived from "
            "outside: SMTP arrivals of outside mail (on every server it passes). A line at zero while the others "
            "move is the direction that stopped.",
            [
                Target(per_minute("direction", "mailflow_tracking_messages_total", SRV), "{{direction}}"),
                Target(per_minute("", "mailflow_tracking_received_from_outside_total", SRV), "arrived from outside"),
            ],
            "cpm",
            w=24,
            links=[("Message tracking", TRACKING)],
        ),
        timeseries(
            "Messages per minute",
            FLOW_HELP + " Failed: recipients of FAIL events.",
            flow_targets(),
            "cpm",
            links=[("Message tracking", TRACKING)],
        ),
        timeseries(
            "Delivery queue throughput: outbound vs internal",
            "Exchange's own one-minute averages (OutgoingRate, IncomingRate) of the delivery queues, by next-hop "
            "category: External is mail leaving the organisation (Internet, partners, smart hosts), Internal "
            "is mail to mailbox databases, DAGs and other AD sites.",
            [
                Target(
                    f"sum by (next_hop_category) ({sel('mailflow_queue_outgoing_rate', SRV, DELIVERY)}) * 60",
                    "{{next_hop_category}} out",
                ),
                Target(
                    f"sum by (next_hop_category) ({sel('mailflow_queue_incoming_rate', SRV, DELIVERY)}) * 60",
                    "{{next_hop_category}} in",
                ),
            ],
            "cpm",
        ),
        timeseries(
            "Messages queued per server",
            "Messages in every queue but shadow redundancy, per transport server. A line that keeps climbing "
            "is mail that does not leave.",
            [
                Target(
                    f"sum by (server) ({sel('mailflow_queue_messages', SRV, NOT_SHADOW)})",
                    "{{server}}",
                )
            ],
            "short",
            links=[("Queues", QUEUES)],
        ),
        timeseries(
            "Failed recipients per minute by cause",
            "Recipients of FAIL events per minute, by the classified cause of their status "
            "(recipient_unknown, mailbox_full, remote_rejected, ...; see the runbook).",
            [Target(per_minute("category", "mailflow_tracking_failures_total", SRV), "{{category}}")],
            "cpm",
        ),
        row("What is stuck and why"),
        table(
            "Queues in Retry and why",
            "Every queue in Retry with its next hop, the classified cause of its LastError and the SMTP codes, "
            "the messages waiting and the retries so far. The runbook explains each category.",
            [
                (
                    f"sum by (server, next_hop_domain, category, smtp_code, enhanced_code) "
                    f"{retry_queues('mailflow_queue_last_error_info')}",
                    Column("Queues"),
                ),
                (
                    f"sum by (server, next_hop_domain) {retry_queues('mailflow_queue_messages')}",
                    Column("Messages"),
                ),
                (
                    f"max by (server, next_hop_domain) {retry_queues('mailflow_queue_retries')}",
                    Column("Retries"),
                ),
            ],
            {
                "server": "Server",
                "next_hop_domain": "Next hop",
                "category": "Cause",
                "smtp_code": "SMTP code",
                "enhanced_code": "Enhanced code",
            },
            sort_by="Messages",
            links=[("Queues", QUEUES)],
        ),
    ]
    return Dashboard(
        OVERVIEW,
        "Mailflow / Overview",
        "Is mail flowing (received, delivered, sent), on which servers, what is stuck and why.",
        panels,
        [SERVER_VARIABLE],
    )


def queues() -> Dashboard:
    delivery = 'queue_kind="delivery"'
    lasterror_cols = {
        "server": "Server",
        "queue_kind": "Queue kind",
        "next_hop_domain": "Next hop",
        "category": "Cause",
        "smtp_code": "SMTP code",
        "enhanced_code": "Enhanced code",
    }
    with_error = f"and {QUEUE_ON} {sel('mailflow_queue_last_error_info', SRV)}"
    panels = [
        row("Totals"),
        stat(
            "Messages queued",
            "Messages in every queue except shadow redundancy queues.",
            f"sum({sel('mailflow_queue_messages', SRV, NOT_SHADOW)})",
            unit="short",
        ),
        stat(
            "Deferred messages",
            "Messages deferred after transient errors (DeferredMessageCount), all queues.",
            or_zero(f"sum({sel('mailflow_queue_deferred_messages', SRV)})"),
            unit="short",
            thresholds=WARNINGS,
        ),
        stat(
            "Queues in Retry",
            "Queues in status Retry.",
            or_zero(f"sum({sel('mailflow_queue_status', SRV, RETRY)})"),
            thresholds=PROBLEMS,
        ),
        stat(
            "Messages in Retry queues",
            "Messages waiting in queues that are in Retry.",
            or_zero(f"sum{retry_queues('mailflow_queue_messages')}"),
            unit="short",
            thresholds=PROBLEMS,
        ),
        stat(
            "Poison and unreachable",
            "Messages in the Poison and Unreachable queues.",
            or_zero(f"sum({sel('mailflow_queue_messages', SRV, rx('queue_kind', 'poison|unreachable'))})"),
            unit="short",
            thresholds=WARNINGS,
        ),
        stat(
            "Next hops folded into other",
            'Distinct next-hop domains whose queues were summed into next_hop_domain="other" because of '
            "collectors.queues.max_next_hop_domains. Non-zero: per-domain panels no longer show every domain.",
            or_zero(f"sum({sel('mailflow_queue_next_hop_domains_folded', SRV)})"),
            thresholds=WARNINGS,
        ),
        row("Per server"),
        timeseries(
            "Messages by server and queue kind",
            "Messages per server and queue kind (delivery, submission, poison, unreachable, shadow), stacked.",
            [
                Target(
                    f"sum by (server, queue_kind) ({sel('mailflow_queue_messages', SRV)})",
                    "{{server}} {{queue_kind}}",
                )
            ],
            "short",
            stack=True,
        ),
        timeseries(
            "Delivery queue rates per server",
            "Messages per minute entering (IncomingRate) and leaving (OutgoingRate) the delivery queues, as "
            "averaged by Exchange over one minute. In above out means the queues grow.",
            [
                Target(f"sum by (server) ({sel('mailflow_queue_incoming_rate', SRV, delivery)}) * 60", "{{server}} in"),
                Target(
                    f"sum by (server) ({sel('mailflow_queue_outgoing_rate', SRV, delivery)}) * 60", "{{server}} out"
                ),
            ],
            "cpm",
        ),
        timeseries(
            "Queues by status",
            "Number of queues in each state (Active, Connecting, Ready, Retry, Suspended, None).",
            [Target(f"sum by (status) ({sel('mailflow_queue_status', SRV)})", "{{status}}")],
            "short",
            stack=True,
        ),
        timeseries(
            "Deferred messages per server",
            "Messages deferred after transient errors, per server.",
            [Target(f"sum by (server) ({sel('mailflow_queue_deferred_messages', SRV)})", "{{server}}")],
            "short",
        ),
        row("Per next hop"),
        timeseries(
            "Messages per next hop",
            "Messages in each delivery queue, by server and next-hop domain (a remote domain, a mailbox "
            "database, a DAG or an AD site).",
            [
                Target(
                    f"sum by (server, next_hop_domain) ({sel('mailflow_queue_messages', SRV, delivery)})",
                    "{{server}} → {{next_hop_domain}}",
                )
            ],
            "short",
        ),
        timeseries(
            "Queue growth per next hop",
            "IncomingRate minus OutgoingRate of each delivery queue, in messages per minute: positive means the "
            "queue grows.",
            [
                Target(
                    f"sum by (server, next_hop_domain) ({sel('mailflow_queue_incoming_rate', SRV, delivery)}) * 60"
                    f" - sum by (server, next_hop_domain) ({sel('mailflow_queue_outgoing_rate', SRV, delivery)}) * 60",
                    "{{server}} → {{next_hop_domain}}",
                )
            ],
            "cpm",
        ),
        timeseries(
            "Retries per queue",
            "Connection retries since each queue went into Retry (RetryCount); only queues that retried.",
            [
                Target(
                    f"max by (server, next_hop_domain) ({sel('mailflow_queue_retries', SRV)} > 0)",
                    "{{server}} → {{next_hop_domain}}",
                )
            ],
            "short",
        ),
        timeseries(
            "Shadow redundancy",
            "Messages held in shadow queues (copies kept until the next hop confirms delivery), by the server "
            "holding them and the primary server.",
            [
                Target(
                    f"sum by (server, next_hop_domain) ({sel('mailflow_queue_messages', SRV, SHADOW)})",
                    "{{server}} for {{next_hop_domain}}",
                )
            ],
            "short",
        ),
        row("LastError"),
        table(
            "Queues with a LastError",
            "Every queue that reports a LastError (Retry queues and the Unreachable queue), with the classified "
            "cause, the outer SMTP codes, its messages, retries and the time until the next retry.",
            [
                (
                    f"sum by (server, queue_kind, next_hop_domain, category, smtp_code, enhanced_code) "
                    f"({sel('mailflow_queue_last_error_info', SRV)})",
                    Column("Queues"),
                ),
                (
                    f"sum by (server, queue_kind, next_hop_domain) "
                    f"({sel('mailflow_queue_messages', SRV)} {with_error})",
                    Column("Messages"),
                ),
                (
                    f"max by (server, queue_kind, next_hop_domain) ({sel('mailflow_queue_retries', SRV)} {with_error})",
                    Column("Retries"),
                ),
                (
                    f"min by (server, queue_kind, next_hop_domain) "
                    f"({sel('mailflow_queue_next_retry_timestamp_seconds', SRV)}) - time()",
                    Column("Next retry in", unit="dtdurations"),
                ),
            ],
            lasterror_cols,
            h=9,
            sort_by="Messages",
        ),
        timeseries(
            "Queues with a LastError by cause",
            "Number of queues reporting a LastError, by classified cause (dns_failure, connection_refused, "
            "tls_failure, blocklisted, ...).",
            [Target(f"sum by (category) ({sel('mailflow_queue_last_error_info', SRV)})", "{{category}}")],
            "short",
            stack=True,
        ),
        timeseries(
            "Messages behind a LastError by cause",
            "Messages waiting in queues that report a LastError, by classified cause: how much mail each cause "
            "holds up.",
            [
                Target(
                    f"sum by (category) ((0 * {sel('mailflow_queue_last_error_info', SRV)} + 1) "
                    f"* {QUEUE_ON} group_left () {sel('mailflow_queue_messages', SRV)})",
                    "{{category}}",
                )
            ],
            "short",
            stack=True,
        ),
    ]
    return Dashboard(
        QUEUES,
        "Mailflow / Queues",
        "Get-Queue on every transport server: messages per server, queue kind and next hop, rates, Retry "
        "queues and the classified causes of their LastError.",
        panels,
        [SERVER_VARIABLE],
    )


def tracking() -> Dashboard:
    latency = "mailflow_tracking_delivery_latency_seconds"
    panels = [row("Flow")]
    for name, matchers in FLOW:
        panels.append(
            stat(
                name,
                f"{name} per minute, all selected servers. " + FLOW_HELP,
                per_minute("", "mailflow_tracking_events_total", SRV, matchers),
                unit="cpm",
            )
        )
    panels += [
        stat(
            "Failed recipients",
            "Recipients of FAIL events per minute.",
            or_zero(per_minute("", "mailflow_tracking_failures_total", SRV)),
            unit="cpm",
        ),
        stat(
            "Stuck messages",
            "Messages received more than 15 minutes ago with no DELIVER, SEND, TRANSFER or FAIL since.",
            or_zero(f"sum({sel('mailflow_tracking_stuck_messages', SRV)})"),
            unit="short",
            thresholds=WARNINGS,
        ),
        timeseries("Mail flow per server", FLOW_HELP, flow_targets("server"), "cpm", w=24),
        timeseries(
            "Messages by direction per server",
            "Messages per minute handed on by each server: inbound and internal mailbox deliveries (by the "
            "tracking log's Directionality), outbound sends over a send connector, and arrivals from outside. "
            "Deliveries happen where the mailbox database is mounted, sends where the send connector's source "
            "servers are: a server whose line stops while its peers carry on is the one to look at.",
            [
                Target(
                    f"sum by (server, direction) ({rate('mailflow_tracking_messages_total', SRV)}) * 60",
                    "{{server}} {{direction}}",
                ),
                Target(
                    per_minute("server", "mailflow_tracking_received_from_outside_total", SRV),
                    "{{server}} arrived from outside",
                ),
            ],
            "cpm",
            w=24,
        ),
        timeseries(
            "Events per minute by event",
            "Every tracking event type per minute (RECEIVE, SUBMIT, SEND, DELIVER, HAREDIRECT, AGENTINFO, DEFER, "
            "DSN, FAIL, ...).",
            [Target(per_minute("event_id", "mailflow_tracking_events_total", SRV), "{{event_id}}")],
            "cpm",
        ),
        timeseries(
            "Events per minute by source",
            "Tracking events per minute by the component that logged them (SMTP, STOREDRIVER, AGENT, DSN, "
            "ROUTING, RESOLVER, ...).",
            [Target(per_minute("source", "mailflow_tracking_events_total", SRV), "{{source}}")],
            "cpm",
        ),
        row("Failures"),
        timeseries(
            "Failed recipients by cause",
            "Recipients of FAIL events per minute by the classified cause of their RecipientStatus.",
            [Target(per_minute("category", "mailflow_tracking_failures_total", SRV), "{{category}}")],
            "cpm",
        ),
        timeseries(
            "Failed recipients by enhanced status code",
            "Recipients of FAIL events per minute by enhanced status code (5.1.1 unknown recipient, 5.2.2 "
            "mailbox full, 5.7.1 rejected, ...).",
            [Target(per_minute("enhanced_code", "mailflow_tracking_failures_total", SRV), "{{enhanced_code}}")],
            "cpm",
        ),
        table(
            "Failure causes per server",
            "Current failed recipients per minute by server, cause and enhanced status code.",
            [
                (
                    per_minute("server, category, enhanced_code", "mailflow_tracking_failures_total", SRV),
                    Column("Failed per minute", unit="cpm"),
                )
            ],
            {"server": "Server", "category": "Cause", "enhanced_code": "Enhanced code"},
            w=12,
            sort_by="Failed per minute",
        ),
        timeseries(
            "Deferrals and DSNs",
            "DEFER events (a transient failure, delivery retried later) and DSN events (delivery status "
            "notifications generated) per minute, per server.",
            [
                Target(
                    per_minute("server, event_id", "mailflow_tracking_events_total", SRV, 'event_id=~"DEFER|DSN"'),
                    "{{server}} {{event_id}}",
                )
            ],
            "cpm",
        ),
        row("Latency and stuck messages"),
        timeseries(
            "Delivery latency percentiles",
            "Time from receipt to the first DELIVER or SEND on a server, over the selected servers "
            "(Exchange's MessageLatency when recorded).",
            [
                Target(
                    f"histogram_quantile({q}, sum by (le) ({rate(latency + '_bucket', SRV)}))",
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            "s",
        ),
        timeseries(
            "95th percentile latency per server",
            "95th percentile of the receipt-to-delivery time per server.",
            [
                Target(
                    f"histogram_quantile(0.95, sum by (server, le) ({rate(latency + '_bucket', SRV)}))",
                    "{{server}}",
                )
            ],
            "s",
        ),
        timeseries(
            "Average delivery latency per server",
            "Mean receipt-to-delivery time per server.",
            [
                Target(
                    f"sum by (server) ({rate(latency + '_sum', SRV)})"
                    f" / sum by (server) ({rate(latency + '_count', SRV)})",
                    "{{server}}",
                )
            ],
            "s",
        ),
        timeseries(
            "Stuck messages per server",
            "Messages received more than stuck_after (15 min) ago with no DELIVER, SEND, TRANSFER or FAIL on "
            "that server since.",
            [Target(sel("mailflow_tracking_stuck_messages", SRV), "{{server}}")],
            "short",
        ),
        row("Log reader health"),
        timeseries(
            "Time since the newest tracking event",
            "Age of the newest tracking event per server. It grows when a server stops logging or stops "
            "receiving mail.",
            [Target(f"time() - {sel('mailflow_tracking_last_event_timestamp_seconds', SRV)}", "{{server}}")],
            "s",
            w=8,
        ),
        timeseries(
            "Truncated polls and pairing evictions",
            "Polls whose reply hit -ResultSize (the next poll continues) and messages pushed out of the pairing "
            "memory before a terminal event (raise max_tracked_messages if this grows), per minute.",
            [
                Target(per_minute("server", "mailflow_tracking_truncated_polls_total", SRV), "{{server}} truncated"),
                Target(per_minute("server", "mailflow_tracking_pairing_evictions_total", SRV), "{{server}} evicted"),
            ],
            "cpm",
            w=8,
        ),
        timeseries(
            "Tracking log skipped",
            "Seconds of tracking log not read because the window was capped at max_window after an outage.",
            [
                Target(
                    f"sum by (server) ({increase('mailflow_tracking_skipped_seconds_total', SRV)})",
                    "{{server}}",
                )
            ],
            "s",
            w=8,
        ),
        row("Synthetic probe"),
        timeseries(
            "Probe end-to-end latency",
            "Seconds each synthetic probe took to arrive (collectors.mailflow_probe): Test-Mailflow's "
            "MessageLatencyTime, or from SMTP DATA to the DELIVER event of the message sent through the MX. "
            "Gaps: the probe did not arrive (see the next panel) or is off.",
            [Target(sel("mailflow_probe_duration_seconds"), "{{kind}} {{probe}}")],
            "s",
            w=12,
        ),
        timeseries(
            "Probe stopped at",
            "1 while a probe's last run stopped at that stage (failure) or could not be followed "
            "(tracking_blind, no_result); empty while every probe arrives.",
            [Target(f"{sel('mailflow_probe_stage')} == 1", "{{probe}}: {{stage}}")],
            "short",
            w=12,
        ),
    ]
    return Dashboard(
        TRACKING,
        "Mailflow / Message tracking",
        "Get-MessageTrackingLog read incrementally: events, failures by cause and code, delivery latency, "
        "stuck messages and the health of the log reader.",
        panels,
        [SERVER_VARIABLE],
    )


def config_health() -> Dashboard:
    up = mapping({"1": ("up", GREEN), "0": ("DOWN", RED)})
    drift = mapping({"0": ("matches", GREEN), "1": ("DIFFERS", RED)})
    state_colors = {
        "mappings": mapping(
            {
                "Active": ("Active", GREEN),
                "Inactive": ("Inactive", RED),
                "Draining": ("Draining", ORANGE),
                "other": ("other", RED),
            }
        ),
        "color": "color-text",
    }
    panels = [
        row("Exporter and collectors"),
        table(
            "Collector status",
            "One row per collector and target: whether the last poll succeeded and is fresh, how old the data "
            "is, how long the poll took and failed polls per minute.",
            [
                (sel("mailflow_collector_up"), Column("Up", unit="none", mappings=up, color="color-background")),
                (
                    f"time() - {sel('mailflow_collector_last_success_timestamp_seconds')}",
                    Column("Data age", unit="s"),
                ),
                (sel("mailflow_collector_duration_seconds"), Column("Poll duration", unit="s")),
                (
                    per_minute("collector, target", "mailflow_collector_errors_total"),
                    Column("Errors per minute", unit="cpm"),
                ),
            ],
            {"collector": "Collector", "target": "Target"},
            w=12,
            h=10,
            sort_by="Up",
            sort_desc=False,
        ),
        timeseries(
            "Poll errors by reason",
            "Failed polls per minute by collector and reason (timeout, connection, tls, auth, wsman_fault, "
            "session_limit, cmdlet_error, parse, dns, ...). The runbook says what each reason means.",
            [
                Target(
                    per_minute("collector, reason", "mailflow_collector_errors_total"),
                    "{{collector}} {{reason}}",
                )
            ],
            "cpm",
            w=6,
            h=10,
        ),
        timeseries(
            "Poll duration by collector",
            "Slowest poll of each collector (session setup included).",
            [Target(f"max by (collector) ({sel('mailflow_collector_duration_seconds')})", "{{collector}}")],
            "s",
            w=6,
            h=10,
        ),
        table(
            "Exchange servers",
            "Transport servers found by discovery (exchange.discovery.enabled) with their FQDN, version and AD site.",
            [(sel("mailflow_exchange_server_info", SRV), Column("Value", hidden=True))],
            {"server": "Server", "fqdn": "FQDN", "version": "Version", "site": "Site"},
            w=12,
            h=6,
        ),
        table(
            "Exporter build",
            "Version, git revision and Python of each mailflow-exporter instance (mailflow-exporter --version).",
            [(sel("mailflow_build_info"), Column("Value", hidden=True))],
            {
                "instance": "Instance",
                "version": "Version",
                "revision": "Revision",
                "branch": "Branch",
                "pythonversion": "Python",
            },
            w=12,
            h=6,
        ),
        row("Server components"),
        stat(
            "Servers in maintenance",
            "Servers with ServerWideOffline in effect (the whole server is in maintenance).",
            or_zero(f"sum({sel('mailflow_server_wide_offline', SRV)})"),
            thresholds=PROBLEMS,
            w=6,
        ),
        stat(
            "HubTransport not Active",
            "Servers whose HubTransport component is not Active: they accept no new mail.",
            or_zero(f"sum({sel('mailflow_server_component_state', SRV, HUB_TRANSPORT, NOT_ACTIVE)})"),
            thresholds=PROBLEMS,
            w=6,
        ),
        stat(
            "Components not Active",
            "Monitored components (collectors.components.components) in any state but Active.",
            or_zero(f"sum({sel('mailflow_server_component_state', SRV, NOT_ACTIVE)})"),
            thresholds=PROBLEMS,
            w=6,
        ),
        stat(
            "Roles with stopped services",
            "Server roles (Test-ServiceHealth) with at least one required Windows service not running.",
            or_zero(f"count({sel('mailflow_service_health_required_running', SRV)} == 0)"),
            thresholds=PROBLEMS,
            w=6,
        ),
        table(
            "Component states",
            "Current state of each monitored component (Get-ServerComponentState).",
            # > 0: component="other" counts the components beyond the cap per state.
            [(f"{sel('mailflow_server_component_state', SRV)} > 0", Column("Value", hidden=True))],
            {"server": "Server", "component": "Component", "state": "State"},
            w=12,
            label_overrides={"State": state_colors},
            sort_by="State",
        ),
        table(
            "Who set the state",
            "The state each requester (Maintenance, HealthApi, Functional, Sidelined, Deployment) last set on "
            "a component: an admin's maintenance run, or Managed Availability.",
            [(f"{sel('mailflow_server_component_requester_state', SRV)} == 1", Column("Value", hidden=True))],
            {"server": "Server", "component": "Component", "requester": "Requester", "state": "State"},
            w=12,
            label_overrides={"State": state_colors},
        ),
        row("Receive connectors and relaying"),
        stat(
            "Connectors with open relay risk",
            "Receive connectors that relay mail for untrusted senders for at least one reason.",
            or_zero(
                f"count(max by (job, instance, server, connector) "
                f"({sel('mailflow_receive_connector_open_relay_risk', SRV)}) == 1)"
            ),
            thresholds=PROBLEMS,
            w=6,
        ),
        stat(
            "Accepted domain * relays",
            "An accepted domain `*` of type InternalRelay or ExternalRelay: Exchange relays mail for every domain.",
            f"max({sel('mailflow_accepted_domain_open_relay')})",
            mappings=yes_no("YES", "no", good=0),
            thresholds=PROBLEMS,
            w=6,
        ),
        stat(
            "Get-ADPermission readable",
            "Whether Get-ADPermission answered for every anonymous connector on every server (needed to tell a "
            "scoped anonymous relay from an open one); no: the account may not run it, or the call failed.",
            f"min({sel('mailflow_receive_connector_permissions_readable', SRV)})",
            mappings=yes_no(),
            thresholds=steps((None, RED), (1, GREEN)),
            w=6,
        ),
        stat(
            "Connector settings that drifted",
            "Receive and send connector settings that differ from collectors.*.expect (a missing connector "
            "counts as setting `present`).",
            or_zero(f"sum({sel('mailflow_receive_connector_drift', SRV)})")
            + " + "
            + or_zero(f"sum({sel('mailflow_send_connector_drift')})"),
            thresholds=PROBLEMS,
            w=6,
        ),
        table(
            "Open relay findings",
            "Each receive connector and reason that makes it relay for strangers: externally_secured, "
            "anonymous_relay, anonymous_relay_unverified, exchange_users_cleartext. Empty is good.",
            [(f"{sel('mailflow_receive_connector_open_relay_risk', SRV)} == 1", Column("Value", hidden=True))],
            {"server": "Server", "connector": "Connector", "reason": "Reason"},
            h=5,
        ),
        table(
            "Receive connectors",
            "Every receive connector: enabled, addresses outside trusted_networks that may connect, open relay "
            "reasons, role, bindings, permission groups, authentication, and when it last changed in AD.",
            [
                (sel("mailflow_receive_connector_enabled", SRV), Column("Enabled", unit="none", mappings=yes_no())),
                (sel("mailflow_receive_connector_untrusted_addresses", SRV), Column("Untrusted addresses", unit="sci")),
                (
                    f"sum by (server, connector) ({sel('mailflow_receive_connector_open_relay_risk', SRV)})",
                    Column("Relay risks", thresholds=PROBLEMS, color="color-background"),
                ),
                (sel("mailflow_receive_connector_info", SRV), Column("Value", hidden=True)),
                (
                    f"{sel('mailflow_receive_connector_changed_timestamp_seconds', SRV)} * 1000",
                    Column("Changed", unit="dateTimeAsIso"),
                ),
            ],
            {
                "server": "Server",
                "connector": "Connector",
                "transport_role": "Role",
                "bindings": "Bindings",
                "permission_groups": "Permission groups",
                "auth_mechanism": "Authentication",
            },
            h=10,
            sort_by="Relay risks",
        ),
        table(
            "Receive connector drift",
            "Each setting declared in collectors.receive_connectors.expect and whether the connector matches.",
            [(sel("mailflow_receive_connector_drift", SRV), Column("Drift", unit="none", mappings=drift))],
            {"server": "Server", "connector": "Connector", "setting": "Setting"},
            w=12,
            h=6,
            sort_by="Drift",
        ),
        table(
            "Send connector drift",
            "Each setting declared in collectors.send_connectors.expect and whether the connector matches.",
            [(sel("mailflow_send_connector_drift"), Column("Drift", unit="none", mappings=drift))],
            {"connector": "Connector", "setting": "Setting"},
            w=12,
            h=6,
            sort_by="Drift",
        ),
        row("Send connectors and accepted domains"),
        table(
            "Send connectors",
            "Every send connector: enabled, routing (smart host or MX lookup), address spaces, smart hosts, port, "
            "RequireTLS and when it last changed in AD.",
            [
                (sel("mailflow_send_connector_enabled"), Column("Enabled", unit="none", mappings=yes_no())),
                (
                    sel("mailflow_send_connector_uses_smart_host"),
                    Column("Routing", unit="none", mappings=mapping({"1": ("smart host", BLUE), "0": ("MX", BLUE)})),
                ),
                (sel("mailflow_send_connector_info"), Column("Value", hidden=True)),
                (
                    f"{sel('mailflow_send_connector_changed_timestamp_seconds')} * 1000",
                    Column("Changed", unit="dateTimeAsIso"),
                ),
            ],
            {
                "connector": "Connector",
                "address_spaces": "Address spaces",
                "smart_hosts": "Smart hosts",
                "port": "Port",
                "require_tls": "RequireTLS",
            },
            h=6,
        ),
        table(
            "Accepted domains",
            "Accepted domains, their type and when they last changed in AD.",
            [
                (sel("mailflow_accepted_domain_info"), Column("Value", hidden=True)),
                (
                    f"{sel('mailflow_accepted_domain_changed_timestamp_seconds')} * 1000",
                    Column("Changed", unit="dateTimeAsIso"),
                ),
            ],
            {"domain": "Domain", "domain_type": "Type", "default": "Default"},
            w=12,
            h=7,
        ),
        timeseries(
            "Accepted domains per type",
            "Accepted domains per type. A drop explains internal 550 5.1.1 bounces.",
            [Target(f"sum by (domain_type) ({sel('mailflow_accepted_domains')})", "{{domain_type}}")],
            "short",
            h=7,
            step=True,
        ),
        row("Transport rules, address policies and the servers' DNS"),
        table(
            "Transport rules that stop or divert mail",
            "Transport rules that reject, delete, redirect, quarantine or moderate mail: state, mode (only Enabled "
            "and Enforce act) and when each last changed. A change just before failures is the first suspect.",
            [
                (sel("mailflow_transport_rule_info"), Column("Value", hidden=True)),
                (
                    f"{sel('mailflow_transport_rule_changed_timestamp_seconds')} * 1000",
                    Column("Changed", unit="dateTimeAsIso"),
                ),
            ],
            {"rule": "Rule", "state": "State", "mode": "Mode", "actions": "Actions"},
            w=12,
            h=7,
            sort_by="Changed",
        ),
        table(
            "Email address policies",
            "The domains each email address policy generates addresses in (primary or not), whether its last "
            "change was applied, and when it changed. An accepted domain no policy names explains 5.1.1 bounces.",
            [
                (sel("mailflow_email_address_policy_domain_info"), Column("Value", hidden=True)),
                (
                    sel("mailflow_email_address_policy_applied"),
                    Column("Applied", unit="none", mappings=yes_no()),
                ),
                (
                    f"{sel('mailflow_email_address_policy_changed_timestamp_seconds')} * 1000",
                    Column("Changed", unit="dateTimeAsIso"),
                ),
            ],
            {"policy": "Policy", "domain": "Domain", "primary": "Primary"},
            w=12,
            h=7,
        ),
        table(
            "DNS servers of the transport servers",
            "The DNS servers each Transport service asks (external: destinations outside the organisation), from "
            "its adapters or its configured list. A server with none retries outbound mail with 451 4.4.0.",
            [
                (sel("mailflow_transport_dns_server_info", SRV), Column("Value", hidden=True)),
            ],
            {"server": "Server", "scope": "Scope", "source": "Source", "dns_server": "DNS server"},
            h=6,
        ),
        row("Databases"),
        table(
            "Database copies",
            "Each mailbox database copy: status (Mounted for the active copy, Healthy for passive ones), "
            "whether it is active, copy and replay queue lengths, content index health.",
            [
                (f"{sel('mailflow_database_copy_status', SRV)} == 1", Column("Value", hidden=True)),
                (
                    sel("mailflow_database_copy_active", SRV),
                    Column("Active", unit="none", mappings=yes_no("active", "passive")),
                ),
                (sel("mailflow_database_copy_queue_length", SRV), Column("Copy queue")),
                (sel("mailflow_database_replay_queue_length", SRV), Column("Replay queue")),
                (
                    sel("mailflow_database_copy_content_index_healthy", SRV),
                    Column("Content index", unit="none", mappings=yes_no("healthy", "UNHEALTHY")),
                ),
            ],
            {"database": "Database", "server": "Server", "status": "Status"},
            w=12,
            label_overrides={
                "Status": {
                    "mappings": mapping({"Mounted": ("Mounted", GREEN), "Healthy": ("Healthy", GREEN)}),
                    "color": "color-text",
                }
            },
        ),
        timeseries(
            "Copy and replay queues",
            "Log files waiting to be copied to (copy queue) and replayed into (replay queue) each passive copy.",
            [
                Target(sel("mailflow_database_copy_queue_length", SRV), "{{database}} on {{server}} copy"),
                Target(sel("mailflow_database_replay_queue_length", SRV), "{{database}} on {{server}} replay"),
            ],
            "short",
        ),
        row("Certificates and services"),
        table(
            "Exchange certificates",
            "Every certificate on every server: time left, the services it is bound to (an expired one bound to "
            "SMTP breaks STARTTLS), issuer and Exchange's status.",
            [
                (
                    f"{sel('mailflow_certificate_expiry_timestamp_seconds', SRV)} - time()",
                    Column(
                        "Expires in",
                        unit="dtdurations",
                        thresholds=steps((None, RED), (7 * DAY, ORANGE), (30 * DAY, GREEN)),
                        color="color-text",
                    ),
                ),
                (sel("mailflow_certificate_info", SRV), Column("Value", hidden=True)),
            ],
            {
                "server": "Server",
                "subject": "Subject",
                "services": "Services",
                "issuer": "Issuer",
                "status": "Status",
                "self_signed": "Self-signed",
                "thumbprint": "Thumbprint",
            },
            w=14,
            h=9,
            sort_by="Expires in",
            sort_desc=False,
        ),
        table(
            "Required Windows services",
            "Each Windows service a server role requires (Test-ServiceHealth), stopped ones first.",
            [
                (
                    sel("mailflow_service_health_service_running", SRV),
                    Column(
                        "Running",
                        unit="none",
                        mappings=yes_no("running", "STOPPED"),
                        color="color-background",
                    ),
                )
            ],
            {"server": "Server", "role": "Role", "service": "Service"},
            w=10,
            h=9,
            sort_by="Running",
            sort_desc=False,
        ),
    ]
    return Dashboard(
        CONFIG,
        "Mailflow / Configuration and health",
        "Exporter and collector health, maintenance mode, receive and send connectors (open relays, drift), "
        "accepted domains, database copies, certificates and required services.",
        panels,
        [SERVER_VARIABLE],
    )


def dns() -> Dashboard:
    dom = 'domain=~"$domain"'
    ipm = 'ip=~"$ip"'
    hostm = 'host=~"$host"'
    ok = yes_no()
    panels = [
        row("Findings"),
        stat(
            "SPF results not pass",
            "Domain and outbound IP pairs whose SPF result is not pass: receivers may junk or reject that "
            "server's mail.",
            or_zero(f"count({sel('mailflow_dns_spf_result', dom, ipm, ne('result', 'pass'))} == 1)"),
            thresholds=PROBLEMS,
            w=3,
        ),
        stat(
            "Blocklist listings",
            "Outbound IPs listed on a DNS blocklist.",
            or_zero(f"sum({sel('mailflow_dnsbl_listed', ipm)})"),
            thresholds=PROBLEMS,
            w=3,
        ),
        stat(
            "PTR problems",
            "Outbound IPs without a PTR record, whose PTR is not forward-confirmed, or whose PTR does not match "
            "the HELO name, added up.",
            or_zero(f"count({sel('mailflow_dns_ptr_records', ipm)} == 0)")
            + " + "
            + or_zero(f"count({sel('mailflow_dns_ptr_forward_confirmed', ipm)} == 0)")
            + " + "
            + or_zero(f"count({sel('mailflow_dns_ptr_matches_helo', ipm)} == 0)"),
            thresholds=WARNINGS,
            w=3,
        ),
        stat(
            "Domains without DMARC enforcement",
            "Domains whose DMARC policy is none, missing or invalid.",
            or_zero(f"count({sel('mailflow_dns_dmarc_policy', dom, rx('policy', 'none|missing|invalid'))} == 1)"),
            thresholds=WARNINGS,
            w=3,
        ),
        stat(
            "Records drifted",
            "MX, SPF and DMARC record sets that differ from dns.expect or the remembered baseline, plus PTR drift.",
            or_zero(f"sum({sel('mailflow_dns_record_drift', dom)})")
            + " + "
            + or_zero(f"sum({sel('mailflow_dns_ptr_drift', ipm)})"),
            thresholds=WARNINGS,
            w=3,
        ),
        stat(
            "MX hosts failing the SMTP probe",
            "MX hosts that did not answer banner, EHLO and (when offered) STARTTLS.",
            or_zero(f"count({sel('mailflow_smtp_probe_success', hostm)} == 0)"),
            thresholds=PROBLEMS,
            w=3,
        ),
        stat(
            "Resolver and blocklist errors",
            "DNS checks and blocklist queries without a usable answer (SERVFAIL, REFUSED, timeouts, refused "
            "queries through public resolvers): their records are unknown, not absent.",
            or_zero(f"count({sel('mailflow_dns_check_success', dom)} == 0)")
            + " + "
            + or_zero(f"count({sel('mailflow_dnsbl_check_success', ipm)} == 0)"),
            thresholds=WARNINGS,
            w=3,
        ),
        stat(
            "MX certificate expires in",
            "Time left on the certificate presented by the MX host whose certificate expires first.",
            f"min({sel('mailflow_smtp_tls_certificate_expiry_timestamp_seconds', hostm)}) - time()",
            unit="dtdurations",
            thresholds=steps((None, RED), (7 * DAY, ORANGE), (30 * DAY, GREEN)),
            w=3,
        ),
        row("Domains"),
        table(
            "Domain records",
            "Per domain: MX records (0 without a null MX: senders fall back to the A record), null MX, whether "
            "the MX hosts match dns.expect, SPF records (exactly 1 is right), DNS-querying SPF terms (limit 10), "
            "void lookups (limit 2), SPF validity, the DMARC policy, MTA-STS and TLS-RPT records, and whether "
            "every lookup got an answer.",
            [
                (sel("mailflow_dns_mx_records", dom), Column("MX records")),
                (
                    sel("mailflow_dns_mx_null", dom),
                    Column("Null MX", unit="none", mappings=yes_no("yes", "no", good=0)),
                ),
                (sel("mailflow_dns_mx_expected_match", dom), Column("MX as expected", unit="none", mappings=ok)),
                (
                    sel("mailflow_dns_spf_records", dom),
                    Column("SPF records", thresholds=steps((None, RED), (1, GREEN), (2, RED)), color="color-text"),
                ),
                (
                    sel("mailflow_dns_spf_lookups", dom),
                    Column("SPF lookups", thresholds=steps((None, GREEN), (9, ORANGE), (11, RED)), color="color-text"),
                ),
                (
                    sel("mailflow_dns_spf_void_lookups", dom),
                    Column("SPF void lookups", thresholds=steps((None, GREEN), (3, RED)), color="color-text"),
                ),
                (sel("mailflow_dns_spf_valid", dom), Column("SPF valid", unit="none", mappings=ok)),
                (f"{sel('mailflow_dns_dmarc_policy', dom)} == 1", Column("Value", hidden=True)),
                (sel("mailflow_dns_mta_sts_present", dom), Column("MTA-STS", unit="none", mappings=ok)),
                (sel("mailflow_dns_tls_rpt_present", dom), Column("TLS-RPT", unit="none", mappings=ok)),
                (
                    f"min by (domain) ({sel('mailflow_dns_check_success', dom)})",
                    Column("Resolver answered", unit="none", mappings=ok),
                ),
            ],
            {"domain": "Domain", "policy": "DMARC policy"},
            h=6,
            label_overrides={
                "DMARC policy": {
                    "mappings": mapping(
                        {
                            "reject": ("reject", GREEN),
                            "quarantine": ("quarantine", GREEN),
                            "none": ("none", ORANGE),
                            "missing": ("MISSING", RED),
                            "invalid": ("INVALID", RED),
                        }
                    ),
                    "color": "color-text",
                }
            },
        ),
        bargauge(
            "SPF lookups vs the limit of 10",
            "DNS-querying SPF terms (include, a, mx, ptr, exists, redirect) counted through every include. Over "
            "10 is a permerror at every receiver (RFC 7208 4.6.4).",
            sel("mailflow_dns_spf_lookups", dom),
            "{{domain}}",
            10,
            steps((None, GREEN), (9, ORANGE), (11, RED)),
            w=8,
            h=6,
        ),
        bargauge(
            "SPF void lookups vs the limit of 2",
            "Lookups of the SPF record tree that found nothing. Over 2 is a permerror.",
            sel("mailflow_dns_spf_void_lookups", dom),
            "{{domain}}",
            2,
            steps((None, GREEN), (2, ORANGE), (3, RED)),
            w=8,
            h=6,
        ),
        table(
            "MX hosts",
            "Each MX host of each domain and whether it resolves (a dangling MX does not).",
            [(sel("mailflow_dns_mx_host_resolves", dom), Column("Resolves", unit="none", mappings=ok))],
            {"domain": "Domain", "host": "MX host"},
            w=8,
            h=6,
        ),
        table(
            "SPF result per outbound IP",
            "The SPF result for mail from postmaster@<domain> sent by each outbound IP. Anything but pass means "
            "receivers may junk or reject that server's mail.",
            [(f"{sel('mailflow_dns_spf_result', dom, ipm)} == 1", Column("Value", hidden=True))],
            {"domain": "Domain", "ip": "Outbound IP", "result": "SPF result"},
            w=12,
            h=7,
            label_overrides={
                "SPF result": {
                    "mappings": mapping(
                        {
                            "pass": ("pass", GREEN),
                            "neutral": ("neutral", ORANGE),
                            "softfail": ("softfail", ORANGE),
                            "none": ("none", ORANGE),
                            "fail": ("FAIL", RED),
                            "permerror": ("PERMERROR", RED),
                            "temperror": ("temperror", ORANGE),
                        }
                    ),
                    "color": "color-background",
                }
            },
        ),
        table(
            "DNS check status",
            "Whether the resolver answered each check (a record, or its authoritative absence). A resolver "
            "fault is not a missing record: that check's record metrics are then left out.",
            [(sel("mailflow_dns_check_success", dom), Column("Answered", unit="none", mappings=ok))],
            {"domain": "Domain", "check": "Check"},
            w=12,
            h=7,
            sort_by="Answered",
            sort_desc=False,
        ),
        row("Outbound IPs"),
        table(
            "Reverse DNS",
            "Per outbound IP: whether the PTR lookup was answered, PTR records (0: Exchange Online and Gmail "
            "junk or refuse), forward confirmation, whether the PTR matches the HELO name, and PTR drift.",
            [
                (sel("mailflow_dns_ptr_check_success", ipm), Column("Answered", unit="none", mappings=ok)),
                (sel("mailflow_dns_ptr_records", ipm), Column("PTR records")),
                (sel("mailflow_dns_ptr_forward_confirmed", ipm), Column("Forward-confirmed", unit="none", mappings=ok)),
                (sel("mailflow_dns_ptr_matches_helo", ipm), Column("Matches HELO", unit="none", mappings=ok)),
                (
                    sel("mailflow_dns_ptr_drift", ipm),
                    Column("Drift", unit="none", mappings=mapping({"0": ("no", GREEN), "1": ("CHANGED", ORANGE)})),
                ),
            ],
            {"ip": "Outbound IP"},
            w=12,
            h=6,
        ),
        table(
            "Blocklists",
            "Each outbound IP on each DNS blocklist: listed or not, and whether the list gave a usable answer.",
            [
                (
                    sel("mailflow_dnsbl_listed", ipm),
                    Column(
                        "Listed",
                        unit="none",
                        mappings=mapping({"0": ("not listed", GREEN), "1": ("LISTED", RED)}),
                        color="color-background",
                    ),
                ),
                (sel("mailflow_dnsbl_check_success", ipm), Column("Usable answer", unit="none", mappings=ok)),
            ],
            {"ip": "Outbound IP", "zone": "Blocklist"},
            w=12,
            h=6,
            sort_by="Listed",
        ),
        row("Drift and errors"),
        timeseries(
            "Record drift",
            "1 while a record set differs from dns.expect or, without an expectation, from the remembered "
            "baseline (a changed set stable for drift_accept_after becomes the new baseline).",
            [
                Target(sel("mailflow_dns_record_drift", dom), "{{domain}} {{record_type}}"),
                Target(sel("mailflow_dns_ptr_drift", ipm), "PTR {{ip}}"),
            ],
            "none",
            w=8,
            h=7,
            step=True,
            min=0,
            max=1,
        ),
        table(
            "Last record change seen",
            "When each record set was last seen to change (absent until a change is seen): a change minutes "
            "before an outage is a lead.",
            [
                (
                    f"{sel('mailflow_dns_record_last_change_timestamp_seconds', dom)} * 1000",
                    Column("Changed", unit="dateTimeAsIso"),
                ),
                (
                    f"{sel('mailflow_dns_ptr_last_change_timestamp_seconds', ipm)} * 1000",
                    Column("PTR changed", unit="dateTimeAsIso"),
                ),
            ],
            {"domain": "Domain", "record_type": "Record", "ip": "Outbound IP"},
            w=8,
            h=7,
        ),
        table(
            "Resolver, blocklist and probe errors",
            "Checks failing right now and why: DNS checks (servfail, refused, timeout, error), blocklist answers "
            "that are not usable (public_resolver, rate_limited, bad_answer, ...: neither listed nor clean) and "
            "the phase at which an SMTP probe failed. Empty is good.",
            [
                (f"{sel('mailflow_dns_check_error_info', dom)} == 1", Column("Value", hidden=True)),
                (f"{sel('mailflow_dnsbl_error_info', ipm)} == 1", Column("Value", hidden=True)),
                (f"{sel('mailflow_smtp_probe_error_info', hostm)} == 1", Column("Value", hidden=True)),
            ],
            {
                "domain": "Domain",
                "check": "Check",
                "ip": "IP",
                "zone": "Blocklist",
                "host": "MX host",
                "reason": "Reason",
            },
            w=8,
            h=7,
        ),
        row("SMTP probe of the MX hosts"),
        table(
            "MX host probe",
            "Per MX host: whether banner, EHLO and STARTTLS worked, whether STARTTLS is offered and completed, "
            "time left on the presented certificate, whether it covers the host name and is trusted.",
            [
                (
                    sel("mailflow_smtp_probe_success", hostm),
                    Column("Probe", unit="none", mappings=ok, color="color-background"),
                ),
                (sel("mailflow_smtp_starttls_offered", hostm), Column("STARTTLS offered", unit="none", mappings=ok)),
                (sel("mailflow_smtp_starttls_success", hostm), Column("TLS handshake", unit="none", mappings=ok)),
                (
                    f"{sel('mailflow_smtp_tls_certificate_expiry_timestamp_seconds', hostm)} - time()",
                    Column(
                        "Certificate expires in",
                        unit="dtdurations",
                        thresholds=steps((None, RED), (7 * DAY, ORANGE), (30 * DAY, GREEN)),
                        color="color-text",
                    ),
                ),
                (
                    sel("mailflow_smtp_tls_certificate_name_match", hostm),
                    Column("Name matches", unit="none", mappings=ok),
                ),
                (sel("mailflow_smtp_tls_certificate_trusted", hostm), Column("Trusted", unit="none", mappings=ok)),
            ],
            {"host": "MX host"},
            w=12,
            h=7,
        ),
        timeseries(
            "SMTP probe phases",
            "Seconds per probe phase: connect, banner, ehlo, starttls (handshake) and total.",
            [Target(sel("mailflow_smtp_probe_duration_seconds", hostm), "{{host}} {{phase}}")],
            "s",
            h=7,
        ),
    ]
    variables = [
        query_variable(
            "domain",
            "Domain",
            'label_values(mailflow_dns_check_success{job=~"$job", instance=~"$instance"}, domain)',
            "Checked domains (dns.domains plus the accepted domains).",
        ),
        query_variable(
            "ip",
            "Outbound IP",
            'label_values(mailflow_dns_ptr_check_success{job=~"$job", instance=~"$instance"}, ip)',
            "Outbound IPs (dns.outbound_ips plus send connector source IPs).",
        ),
        query_variable(
            "host",
            "MX host",
            'label_values(mailflow_smtp_probe_success{job=~"$job", instance=~"$instance"}, host)',
            "MX hosts probed over SMTP.",
        ),
    ]
    return Dashboard(
        DNS,
        "Mailflow / DNS and reputation",
        "The organisation seen from outside: MX, SPF (limits and the result per outbound IP), DMARC, MTA-STS, "
        "reverse DNS, blocklists, record drift and the SMTP/STARTTLS probe of every MX host.",
        panels,
        variables,
    )


def build() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model."""
    dashboards = [overview(), queues(), tracking(), config_health(), dns()]
    return {f"{d.uid}.json": d.render() for d in dashboards}


def dump(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs from the output")
    args = parser.parse_args(argv)
    wanted = {name: dump(model) for name, model in build().items()}
    existing = {p.name for p in OUTPUT_DIR.glob("*.json")} if OUTPUT_DIR.is_dir() else set()
    stale = sorted(
        n for n, text in wanted.items() if not (OUTPUT_DIR / n).is_file() or (OUTPUT_DIR / n).read_text() != text
    )
    extra = sorted(existing - set(wanted))
    if args.check:
        for name in stale + extra:
            print(f"stale: {OUTPUT_DIR / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (OUTPUT_DIR / name).write_text(wanted[name])
        print(f"wrote {OUTPUT_DIR / name}")
    for name in extra:
        (OUTPUT_DIR / name).unlink()
        print(f"removed {OUTPUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
