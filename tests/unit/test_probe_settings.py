"""collectors.mailflow_probe: bad input is refused with its path and a plain reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import ConfigError
from exporter.settings import load_settings

BASE = """\
exchange:
  servers:
    - name: EX01
      host: ex01.contoso.com
collectors:
  mailflow_probe:
    enabled: true
{probes}
"""
INBOUND = "      - {name: inbound, domain: contoso.com, recipient: probe@contoso.com, sender: p@example.net}"


def load(tmp_path: Path, probes: str) -> object:
    path = tmp_path / "config.yml"
    path.write_text(BASE.format(probes=probes))
    return load_settings(path, environ={})


def test_off_by_default() -> None:
    probe = load_settings(None, environ={}).collectors.mailflow_probe
    assert probe.enabled is False and probe.internal == [] and probe.inbound == []


def test_a_valid_probe_loads(tmp_path: Path) -> None:
    settings = load(tmp_path, f"    inbound:\n{INBOUND}\n    internal:\n      - {{name: ex01, source: EX01}}")
    probe = settings.collectors.mailflow_probe  # type: ignore[attr-defined]
    assert probe.inbound[0].deliver_timeout == 300 and probe.internal[0].execution_timeout == 120


@pytest.mark.parametrize(
    ("probes", "where", "why"),
    [
        ("    internal:\n      - {name: a, source: EX01, target_server: EX02, target_database: DB01}",
         "collectors.mailflow_probe.internal[0]", "at most one of target_server, target_database"),
        ("    internal:\n      - {name: 'has space', source: EX01}",
         "collectors.mailflow_probe.internal[0].name", "it is the probe label"),
        ("    internal:\n      - {name: a, source: EX01, execution_timeout: 4000}",
         "collectors.mailflow_probe.internal[0].execution_timeout", "less than or equal to 1800"),
        ("    inbound:\n      - {name: a, domain: contoso.com, recipient: not-an-address, sender: p@example.net}",
         "collectors.mailflow_probe.inbound[0].recipient", "not an SMTP address"),
        (f"    inbound:\n{INBOUND}\n    internal:\n      - {{name: Inbound, source: EX01}}",
         "collectors.mailflow_probe", "probe names must be unique (case-insensitive): inbound"),
    ],
)  # fmt: skip
def test_bad_probes_are_refused_with_their_path(tmp_path: Path, probes: str, where: str, why: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, probes)
    assert f"  {where} (line " in str(error.value) and why in str(error.value), str(error.value)
