"""Build information for ``--version`` and the startup log, in the layout of ``node_exporter --version``.

The revision (git commit) comes, in order, from:

1. ``exporter/_build_info.py``, written at build time by ``python -m exporter.buildinfo --revision ...``
   (the Dockerfile does it from its ``REVISION`` build argument; the file is not in git);
2. ``git`` in the source checkout the package runs from (an editable install or ``python -m exporter``);
3. ``unknown``.

Only the standard library is imported at module level: the Dockerfile runs this module before the
dependencies are installed.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import getpass
import importlib
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

from exporter import __version__

PROGRAM = "mailflow-exporter"
GENERATED = Path(__file__).resolve().parent / "_build_info.py"
#: The libraries whose versions matter when reading a bug report: the PowerShell remoting stack, the
#: exposition, DNS checks, configuration, and the Kerberos pieces (optional: "not installed").
LIBRARIES = ("pypsrp", "psrpcore", "pyspnego", "gssapi", "prometheus_client", "dnspython", "pydantic")


@dataclass(frozen=True)
class BuildInfo:
    """What ``--version`` prints."""

    version: str
    revision: str
    branch: str
    build_user: str
    build_date: str
    python: str
    platform: str
    libraries: tuple[tuple[str, str], ...]


def _git(source: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _from_git() -> dict[str, str]:
    """Revision and branch of the checkout this package runs from, if it runs from one. Like Go's
    build info, a checkout with uncommitted changes gets ``-modified`` after the commit."""
    source = Path(__file__).resolve().parent.parent
    if not (source / ".git").exists():  # an installed wheel: site-packages is no checkout of ours
        return {}
    revision = _git(source, "rev-parse", "HEAD")
    if revision is None:
        return {}
    if _git(source, "status", "--porcelain", "--untracked-files=no"):
        revision += "-modified"
    return {"revision": revision, "branch": _git(source, "rev-parse", "--abbrev-ref", "HEAD") or "unknown"}


def _from_generated() -> dict[str, str]:
    try:
        module = importlib.import_module("exporter._build_info")
    except ImportError:
        return {}
    fields = ("revision", "branch", "build_user", "build_date")
    return {f: str(getattr(module, f.upper())) for f in fields if getattr(module, f.upper(), None)}


def _library_version(name: str) -> str:
    try:
        return dist_version(name)
    except PackageNotFoundError:
        return "not installed"


@functools.cache
def build_info() -> BuildInfo:
    """The build information (computed once: it may run ``git``)."""
    found = _from_generated() or _from_git()
    return BuildInfo(
        version=__version__,
        revision=found.get("revision", "unknown"),
        branch=found.get("branch", "unknown"),
        build_user=found.get("build_user", "unknown"),
        build_date=found.get("build_date", "unknown"),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        platform=f"{sys.platform}/{platform.machine() or 'unknown'}",
        libraries=tuple((name, _library_version(name)) for name in LIBRARIES),
    )


def version_text(info: BuildInfo | None = None) -> str:
    """``node_exporter --version``'s layout: a headline, then aligned ``name: value`` lines."""
    info = info or build_info()
    rows = [
        ("build user", info.build_user),
        ("build date", info.build_date),
        ("python version", info.python),
        ("platform", info.platform),
        *info.libraries,
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{PROGRAM}, version {info.version} (branch: {info.branch}, revision: {info.revision})"]
    lines += [f"  {(name + ':').ljust(width)}{value}" for name, value in rows]
    return "\n".join(lines)


def write(revision: str, branch: str, path: Path = GENERATED) -> Path:
    """Write ``exporter/_build_info.py`` (at image or package build time). The date honours
    ``SOURCE_DATE_EPOCH`` (reproducible builds); the user is ``user@host`` as promu records it."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch else datetime.datetime.now(datetime.UTC)
    try:
        user = f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no passwd entry for the build's uid
        user = "unknown"
    values = {
        "REVISION": revision or "unknown",
        "BRANCH": branch or "unknown",
        "BUILD_USER": user,
        "BUILD_DATE": when.strftime("%Y%m%d-%H:%M:%S"),
    }
    body = "".join(f"{key} = {value!r}\n" for key, value in values.items())
    path.write_text(f'"""Generated by python -m exporter.buildinfo at build time; not in git."""\n\n{body}')
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m exporter.buildinfo --revision SHA [--branch NAME]``: record the build's revision."""
    parser = argparse.ArgumentParser(
        prog="python -m exporter.buildinfo",
        description="Record the revision the package is built from, for --version and the startup log.",
        epilog='example: python -m exporter.buildinfo --revision "$(git rev-parse HEAD)" --branch main',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--revision", required=True, help="the git commit (empty: unknown)")
    parser.add_argument("--branch", default="", help="the git branch (default: unknown)")
    args = parser.parse_args(argv)
    print(f"wrote {write(args.revision, args.branch)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
