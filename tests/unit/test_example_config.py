"""``mailflow-exporter example-config`` prints config/example.yml, which the package carries.

(The wheel and the image are checked in tests/unit/test_dockerfile.py: a fresh venv built from only
what the Dockerfile copies prints the same bytes.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import build_parser, example_config
from exporter.cli import main as cli_main
from exporter.errors import ConfigError
from exporter.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example.yml"


def test_prints_the_example_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["example-config"]) == 0
    out, err = capsys.readouterr()
    assert out == EXAMPLE.read_text(encoding="utf-8") and err == ""
    assert example_config() == out


def test_the_package_data_is_config_example_yml() -> None:
    packaged = ROOT / "exporter" / "example.yml"
    assert packaged.is_symlink() and packaged.resolve() == EXAMPLE.resolve()


def test_help_shows_how_to_start_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["example-config", "--help"])
    out = capsys.readouterr().out
    assert "mailflow-exporter example-config > mailflow.yml" in " ".join(out.split())
    assert "/etc/mailflow-exporter/example.yml" in out


def test_an_unknown_setting_points_to_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yml"
    path.write_text("exchange:\n  defaults:\n    passwrod: x\n")
    with pytest.raises(ConfigError, match="mailflow-exporter example-config") as info:
        load_settings(path)
    command = str(info.value).rsplit("mailflow-exporter ", 1)[1].rstrip(")")
    assert cli_main([command]) == 0  # the command the message names exists
    assert "passwrod" not in capsys.readouterr().out
