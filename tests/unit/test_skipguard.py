"""tests/skipguard.py: under CI=true a skip fails the run, unless its reason starts with "optional:".

A real pytest runs a small suite in a subprocess, with and without CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.skipguard import ALLOWED_PREFIX, ci_enabled

ROOT = Path(__file__).resolve().parents[2]

SUITE = """
import pytest

def test_passes():
    pass

def test_skips_in_the_body():
    pytest.skip("nsd is not installed")

def test_skips_with_a_reason_a_contributor_can_act_on():
    pytest.skip("optional: kubectl is not installed (install it to compare with kustomize)")

@pytest.mark.skipif(True, reason="captures not found")
def test_skipped_by_a_mark():
    pass

@pytest.mark.parametrize("capture", [])
def test_with_no_parameters(capture):
    pass

@pytest.mark.xfail(reason="a known bug")
def test_expected_to_fail():
    assert False
"""


def run_suite(tmp_path: Path, ci: str | None, *files: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in files:
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.skipguard", "-p", "no:cacheprovider", "-rfEs", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_under_ci_a_skip_fails_unless_it_is_optional(tmp_path: Path) -> None:
    result = run_suite(tmp_path, "true", ("test_suite.py", SUITE))
    out = result.stdout
    assert result.returncode == 1, out
    # pytest's own summary line still closes the run
    assert out.rstrip().splitlines()[-1].startswith("1 failed, 1 passed, 1 skipped, 1 xfailed, 2 errors in ")
    assert "FAILED test_suite.py::test_skips_in_the_body - skipped under CI=true: nsd is not installed" in out
    assert "ERROR test_suite.py::test_skipped_by_a_mark - skipped under CI=true: captures not found" in out
    assert "ERROR test_suite.py::test_with_no_parameters[NOTSET] - skipped under CI=true: got empty parameter" in out
    assert "FAILED test_suite.py::test_skipped_by_a_mark" not in out
    assert "SKIPPED [1] test_suite.py:11: optional: kubectl is not installed" in out
    assert f"start the reason with {ALLOWED_PREFIX!r}" in out


def test_under_ci_a_module_skipped_at_import_fails(tmp_path: Path) -> None:
    module = 'import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_never():\n    pass\n'
    result = run_suite(tmp_path, "true", ("test_module.py", module))
    assert result.returncode != 0
    assert "ERROR test_module.py - skipped under CI=true: could not import 'no_such_module_here'" in result.stdout


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    module = 'import pytest\npytest.skip("whole module", allow_module_level=True)\n'
    result = run_suite(tmp_path, None, ("test_suite.py", SUITE), ("test_module.py", module))
    assert result.returncode == 0, result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("1 passed, 5 skipped, 1 xfailed in ")
    assert "skipped under CI" not in result.stdout


def test_ci_values() -> None:
    assert all(ci_enabled({"CI": v}) for v in ("true", "TRUE", "1", "yes", " true "))
    assert not any(ci_enabled({"CI": v}) for v in ("", "false", "0", "no"))
    assert not ci_enabled({})
