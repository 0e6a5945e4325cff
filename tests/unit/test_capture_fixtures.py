"""The real Exchange captures in tests/fixtures/exchange-clixml are CSS-Exchange's files, unchanged.

Their README names, for each file, the source path in microsoft/CSS-Exchange and the Git blob id at
the commit it was taken from; the blob id is recomputed here (what ``git hash-object`` prints), so a
changed byte (a stripped BOM, converted line endings) or a file without a row fails.
"""

from __future__ import annotations

import hashlib
import re

from tests.fixtures.captures import CAPTURES

ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| `(?P<source>[^`]+)` \| `(?P<blob>[0-9a-f]{40})` \|$", re.MULTILINE)


def git_blob_id(data: bytes) -> str:
    """Git's object id of a file's content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def rows() -> dict[str, tuple[str, str]]:
    text = (CAPTURES / "README.md").read_text(encoding="utf-8")
    return {m["file"]: (m["source"], m["blob"]) for m in ROW.finditer(text)}


def test_every_capture_is_listed_with_its_source_and_unchanged() -> None:
    listed = rows()
    present = {p.relative_to(CAPTURES).as_posix() for p in CAPTURES.rglob("*.xml")}
    assert present, f"no captures under {CAPTURES}"
    assert set(listed) == present
    for name, (source, blob) in sorted(listed.items()):
        assert source.startswith("Diagnostics/HealthChecker/") and source.endswith(name.rsplit("/", 1)[-1])
        assert git_blob_id((CAPTURES / name).read_bytes()) == blob, f"{name} differs from CSS-Exchange's {source}"


def test_licence_and_source_are_stated() -> None:
    licence = (CAPTURES / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Copyright (c) Microsoft Corporation." in licence
    assert "Permission is hereby granted, free of charge" in licence
    readme = (CAPTURES / "README.md").read_text(encoding="utf-8")
    assert "microsoft/CSS-Exchange" in readme and "f88378b1e7a252e413cb2e579e88411393737c11" in readme
    # Git must not convert them (a Windows checkout with core.autocrlf would otherwise rewrite them)
    assert (CAPTURES / ".gitattributes").read_text().split() == ["*.xml", "-text"]
