"""The ``/`` status page: the triage of the latest snapshots (verdicts, findings, what could not be checked)
above the collectors table. Against the demo organisation over HTTP, unit-style with a fake triage
(escaping, failures, caching), and in a real headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import html
import logging
import os
import shutil
import struct
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from exporter.metrics import MailflowCollector, build_registry
from exporter.service import Service
from exporter.store import Snapshot, SnapshotStore
from exporter.triage.model import Finding, Report, Verdict
from exporter.web import WebApp, runbook_link
from tests.integration.conftest import demo_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RUNBOOK = "https://example.invalid/docs/runbook.md"
CHROMIUM_TIMEOUT = 45.0


# --- a small DOM, so assertions are about elements rather than substrings ----------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return " ".join("".join(c if isinstance(c, str) else " " + c.text() + " " for c in self.children).split())

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        return [n for n in self.iter() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)]

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.iter() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"expected one element with id={ident}, found {len(found)}"
        return found[0]


class _Builder(HTMLParser):
    VOID = {"meta", "link", "br", "hr", "img", "input", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(markup: str) -> Node:
    builder = _Builder()
    builder.feed(markup)
    builder.close()
    return builder.root


def evidence_of(node: Node) -> list[str]:
    return [li.text() for ul in node.find_all("ul", "evidence") for li in ul.find_all("li")]


def check_page(dom: Node, report: Report, runbook_url: str) -> None:
    """What the page must show for ``report``, in order: header links, verdicts, findings, could not
    check, collectors."""
    hrefs = [a.attrs.get("href", "") for a in dom.find_all("a")]
    for href in ("/metrics", "/-/healthy", "/-/ready", runbook_url):
        assert href in hrefs, (href, hrefs)
    assert not dom.find_all("script"), "the page needs no JavaScript"
    refresh = [m for m in dom.find_all("meta") if m.attrs.get("http-equiv", "").lower() == "refresh"]
    assert refresh and refresh[0].attrs["content"] == "30"

    sections = [s.attrs.get("id") for s in dom.find_all("section")]
    assert sections == ["verdicts", "findings", "unchecked", "collectors"], sections
    verdicts = dom.by_id("verdicts")
    assert "Is mail flowing?" in verdicts.text()
    for v in report.verdicts:
        card = dom.by_id(f"verdict-{v.scope}")
        badge = card.find_all("span", "badge")
        assert [b.text() for b in badge] == [v.status] and v.status in badge[0].classes
        assert evidence_of(card) == [" ".join(e.split()) for e in v.evidence]

    items = dom.by_id("findings").find_all("li", "finding")
    assert [n.find_all("span", "title")[0].text() for n in items] == [f.title for f in report.findings]
    for node, f in zip(items, report.findings, strict=True):
        assert node.find_all("span", "badge")[0].text() == f.severity and f.severity in node.classes
        assert evidence_of(node) == [" ".join(e.split()) for e in f.evidence]
        assert " ".join(f.next_step.split()) in node.text()
        links = [a.attrs["href"] for a in node.find_all("a")]
        assert links == ([runbook_link(runbook_url, f.runbook)] if f.runbook else []), links
    lists = dom.by_id("unchecked")
    unchecked = [li.text() for ul in lists.find_all("ul", "unchecked") for li in ul.find_all("li")]
    assert unchecked == [" ".join(u.split()) for u in report.unchecked]
    pending = [li.text() for ul in lists.find_all("ul", "pending") for li in ul.find_all("li")]
    assert pending == list(report.pending)
    assert dom.by_id("collectors").find_all("td"), "the collectors table is still there"


# --- against the demo organisation ------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_service() -> Iterator[Service]:
    """The demo organisation polled to completion (domains -> DNS checks -> MX hosts -> SMTP probes),
    then served over HTTP on an ephemeral port."""
    with demo_org({"web": {"runbook_url": RUNBOOK}}) as (_, _, settings):
        service = Service(settings)
        try:
            service.poll_all()
            service.poll_all(only_new=True)
            service.poll_all(only_new=True)
            service.start()
            # The page is compared with service.triage(): keep the snapshots still while we look.
            service.scheduler.pause()
            yield service
        finally:
            service.stop()


def get(url: str) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, dict(resp.headers.items()), resp.read().decode("utf-8")


def test_page_shows_the_demo_triage(demo_service: Service) -> None:
    report = demo_service.triage()
    # The demo's planted faults: something critical, with runbook anchors, and every poll succeeded.
    assert {f.severity for f in report.findings} >= {"critical", "warning"}
    assert sum(1 for f in report.findings if f.runbook) >= 3
    assert {v.status for v in report.verdicts} <= {"failing", "degraded"}

    assert demo_service.web is not None
    status, headers, body = get(f"http://127.0.0.1:{demo_service.web.port}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    check_page(parse(body), report, RUNBOOK)
    # The most important findings come first, in the report's order.
    first = [body.index(f"<span class='title'>{html.escape(f.title)}</span>") for f in report.findings[:3]]
    assert first == sorted(first)
    assert f"href='{RUNBOOK}#{report.findings[0].runbook}'" in body


def test_the_page_caches_its_triage_for_a_few_seconds(demo_service: Service) -> None:
    """Reloading the page does not rebuild the report each time (bench/bench_status.py times both)."""
    now = [1000.0]
    calls = [0]

    def triage() -> Report:
        calls[0] += 1
        return demo_service.triage()

    app = WebApp(
        demo_service.registry,
        demo_service.store,
        "/metrics",
        RUNBOOK,
        lambda: (True, "Ready"),
        triage=triage,
        triage_cache_seconds=5,
        clock=lambda: now[0],
    )
    first = app.landing_page()
    assert "<html" in first.lower()
    app.landing_page()
    assert calls == [1]
    now[0] += 6
    app.landing_page()
    assert calls == [2]


# --- unit-style, with a fake triage ------------------------------------------------------------------

EVIL = "<script>alert('x')</script>"


def fake_report() -> Report:
    return Report(
        verdicts=(
            Verdict("inbound", "healthy", ("3 arrival(s) from outside",)),
            Verdict("outbound", "failing", (f"queue said {EVIL}",)),
            Verdict("internal", "unknown", ()),
        ),
        findings=(
            Finding(
                rule="evil",
                severity="critical",
                step="queues",
                scopes=("outbound",),
                title=f"Remote said {EVIL}",
                evidence=('EX01: 451 <b>"quoted"</b> & more', "second line"),
                next_step=f"Do not run {EVIL}",
                runbook="dns_failure",
            ),
            Finding("plain", "info", "dns", ("inbound",), "No anchor", ("x",), "nothing", runbook=""),
        ),
        unchecked=(f"queues EX02: <img src=x onerror=alert(1)> {EVIL}",),
        checked_at=1_700_000_000.0,
        counts={"critical": 1, "warning": 0, "info": 1},
    )


def make_app(triage: Callable[[], Report] | None, ttl: float = 5.0) -> tuple[WebApp, SnapshotStore]:
    store = SnapshotStore()
    store.put(Snapshot("queues", "EX01", store.now(), 0.25, 60.0, False, None, "cmdlet_error", "<i>boom</i>"))
    registry = build_registry(MailflowCollector(store, [], 3.0))
    return WebApp(registry, store, "/metrics", RUNBOOK + "#top", lambda: (True, "Ready"), triage=triage,
                  triage_cache_seconds=ttl), store  # fmt: skip


def call(app: WebApp, path: str = "/") -> tuple[str, dict[str, str], str]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response)).decode("utf-8")
    return seen["status"], seen["headers"], body


def test_everything_is_escaped() -> None:
    report = fake_report()
    app, _ = make_app(lambda: report)
    status, headers, body = call(app)
    assert status == "200 OK" and headers["Content-Type"] == "text/html; charset=utf-8"
    for raw in ("<script", "<img", "<b>", "<i>boom"):
        assert raw not in body, raw
    assert "Remote said &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in body
    assert "EX01: 451 &lt;b&gt;&quot;quoted&quot;&lt;/b&gt; &amp; more" in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    # The parsed page says exactly what the report says (the text survives escaping intact).
    check_page(parse(body), report, RUNBOOK + "#top")
    # An anchor already in runbook_url is replaced by the finding's.
    assert f"href='{RUNBOOK}#dns_failure'" in body
    assert "#top#" not in body


def test_a_failing_triage_leaves_the_collectors(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Report:
        raise KeyError("a rule is broken")

    app, _ = make_app(broken)
    with caplog.at_level(logging.ERROR, logger="exporter.web"):
        status, _, body = call(app)
    assert status == "200 OK"
    assert "triage failed: KeyError" in body and "a rule is broken" not in body
    dom = parse(body)
    assert [s.attrs.get("id") for s in dom.find_all("section")] == ["collectors"]
    assert "EX01" in dom.by_id("collectors").text() and "&lt;i&gt;boom" in body
    assert any("triage failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_rendered_report_is_cached() -> None:
    calls = []

    def counted() -> Report:
        calls.append(1)
        return fake_report()

    app, _ = make_app(counted, ttl=60.0)
    pages = [call(app)[2] for _ in range(5)]
    assert len(calls) == 1 and "Remote said" in pages[-1]
    app, _ = make_app(counted, ttl=0.0)
    calls.clear()
    for _ in range(3):
        call(app)
    assert len(calls) == 3


def test_without_triage_the_page_is_the_collectors_table() -> None:
    app, _ = make_app(None)
    _, _, body = call(app)
    assert [s.attrs.get("id") for s in parse(body).find_all("section")] == ["collectors"]
    assert "triage failed" not in body


# --- a real browser ----------------------------------------------------------------------------------


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: scripts/test.sh installs Debian's chromium package")
        pytest.skip("chromium is missing (scripts/test.sh installs Debian's chromium package)")
    return path


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, as root (hence --no-sandbox), its own throwaway profile. Debian's wrapper
    decides on --disable-dev-shm-usage by parsing findmnt, which breaks when /dev/shm is mounted twice;
    pass it ourselves."""
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",  # well below the page's 30 s refresh
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_headless_chromium_renders_the_findings(demo_service: Service, tmp_path: Path) -> None:
    binary = chromium()
    assert demo_service.web is not None
    url = f"http://127.0.0.1:{demo_service.web.port}/"

    result = run_chromium(binary, tmp_path / "profile", "--dump-dom", url)
    report = demo_service.triage()
    dom = parse(result.stdout)
    assert dom.find_all("title")[0].text() == "mailflow-exporter"
    check_page(dom, report, RUNBOOK)
    assert "Is mail flowing?" in dom.by_id("verdicts").text()

    png = tmp_path / "page.png"
    run_chromium(
        binary, tmp_path / "profile", "--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={png}", url
    )
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    assert len(data) > 50_000, f"a {len(data)} byte screenshot is too plain to hold the page"
