"""Service and session bookkeeping that needs no Exchange: removed targets, session sync, log format."""

from __future__ import annotations

import logging
import shlex
from typing import Any

from exporter.exchange.session import SessionManager
from exporter.logs import LogfmtFormatter
from exporter.service import Service
from exporter.settings import Settings, resolve_server
from exporter.store import Snapshot


class Leaving:
    """A collector whose only target leaves the inventory while it is being polled."""

    name = "fake"

    def __init__(self) -> None:
        self.present = True

    def interval(self) -> float:
        return 60.0

    def targets(self) -> list[str]:
        return ["EX09"] if self.present else []

    def poll(self, target: str) -> Any:
        self.present = False  # e.g. discovery removed it meanwhile
        return 1


def test_a_target_removed_during_its_poll_leaves_no_ghost() -> None:
    service = Service(Settings())
    collector = Leaving()
    assert service.poll_once(collector, "EX09") is None
    assert service.store.states() == {}


def test_forget_drops_error_counters_too() -> None:
    service = Service(Settings())
    service.store.put(Snapshot("fake", "EX09", 1.0, 0.1, 60.0, False, None, "timeout", "x"))
    service.store.forget("fake", "EX09")
    assert service.store.errors() == {}


def test_session_sync_adds_retires_and_replaces_changed_servers() -> None:
    settings = Settings.model_validate({"exchange": {"servers": [{"name": "EX01"}, {"name": "EX02"}]}})
    ex01, ex02 = (resolve_server(settings, s) for s in settings.exchange.servers)
    manager = SessionManager(18)
    manager.sync([ex01, ex02])
    first = {s.server.name: s for s in manager.sessions()}
    moved = ex02.model_copy(update={"host": "ex02-new.contoso.com"})
    manager.sync([moved])
    after = {s.server.name: s for s in manager.sessions()}
    assert list(after) == ["EX02"]
    assert after["EX02"] is not first["EX02"] and after["EX02"].server.host == "ex02-new.contoso.com"
    manager.sync([moved])
    assert manager.sessions()[0] is after["EX02"]  # unchanged servers keep their session


def test_logfmt_lines_stay_parseable_with_quotes_in_messages() -> None:
    record = logging.LogRecord("exporter.x", logging.WARNING, __file__, 1, 'poll failed error="a \\\\ b"', (), None)
    line = LogfmtFormatter().format(record)
    fields = dict(part.split("=", 1) for part in shlex.split(line))
    assert fields["level"] == "warning"
    assert fields["msg"] == 'poll failed error="a \\\\ b"'
