"""Under CI (``CI=true``) a skipped test is a failed test, unless its reason starts with ``optional:``.

The suite skips only where a machine lacks something (a Debian program, a Python extra, a
non-root user). ``scripts/test.sh`` installs all of it, so in CI a skip is a test that silently
never ran: this plugin turns it into a failure that says why. The one way out is a reason that
starts with ``optional:`` and tells a contributor what to install or do to run the test; keep those
rare, and for what CI must run use ``tests.tools.tool``/``ci_tool`` (a failure, never a skip).

Loaded from ``tests/conftest.py`` (``pytest_plugins``), so ``bash scripts/test.sh`` (what ``.ci/run``
calls) needs no extra option; it acts only when ``CI`` is ``true``/``1``/``yes``.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from typing import Any

import pytest

#: The prefix of a skip reason that CI accepts: the rest must say what a contributor can do about it.
ALLOWED_PREFIX = "optional:"
_ENABLED = pytest.StashKey[bool]()


def ci_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``CI`` says this run is CI (the same test as ``tests.tools.ci_tool``)."""
    return environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_reason(longrepr: Any) -> str:
    """The reason of a skip report (pytest keeps ``(path, line, "Skipped: reason")``)."""
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def verdict(reason: str) -> str:
    """The failure text for a skip CI does not allow."""
    return (
        f"skipped under CI=true: {reason} [CI must run it: make scripts/test.sh provide what it needs, or, "
        f"if a contributor may leave it out, start the reason with {ALLOWED_PREFIX!r} and what to do; "
        "tests/skipguard.py]"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ENABLED] = ci_enabled()


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.stash.get(_ENABLED, False):
        return f"skip guard: on (CI=true): a skip fails unless its reason starts with {ALLOWED_PREFIX!r}"
    return None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Outermost wrapper: sees the final report (after the skipping plugin), turns a skip into a failure."""
    outcome = yield
    report = outcome.get_result()
    if not item.config.stash.get(_ENABLED, False) or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report.longrepr)
    if reason.startswith(ALLOWED_PREFIX):
        return
    report.outcome = "failed"
    report.longrepr = verdict(reason)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """A whole module skipped at import (``pytest.skip(allow_module_level=True)``, ``importorskip``)."""
    outcome = yield
    report = outcome.get_result()
    if not collector.config.stash.get(_ENABLED, False) or not report.skipped:
        return
    reason = skip_reason(report.longrepr)
    if reason.startswith(ALLOWED_PREFIX):
        return
    report.outcome = "failed"
    report.longrepr = verdict(reason)
