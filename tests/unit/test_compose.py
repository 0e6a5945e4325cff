"""The docker compose stack is valid without a Docker engine: compose config, mounted paths, Prometheus config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.tools import ci_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"


def test_docker_compose_config_is_valid() -> None:
    result = subprocess.run(
        [ci_tool("docker-compose"), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_mounted_file_exists_and_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts: dict[str, str] = {}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                path = (COMPOSE.parent / source).resolve()
                assert path.exists(), f"{source} (mounted at {target}) does not exist"
                mounts[target] = str(path)
    assert (ROOT / "Dockerfile").is_file() and compose["services"]["mailflow-exporter"]["build"]["context"] == "../.."
    # promtool resolves rule_files on disk: point them at the files compose would mount there.
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    config["rule_files"] = [mounts[f] for f in config["rule_files"]]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [ci_tool("promtool"), "check", "config", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mailflow" in {job["job_name"] for job in config["scrape_configs"]}  # the alert rules expect it
