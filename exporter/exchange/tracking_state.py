"""The tracking collector's state file: each server's watermark, read strictly, written atomically.

The file is ``{"version": 2, "watermarks": {SERVER: {"at": ISO-8601, "counted_at_mark": [[internal
id, event id], ...], "skew": seconds}}}`` (``counted_at_mark`` and ``skew`` optional). Anything else
is not trusted: a file that cannot be read (a directory or a device in its place, no permission) or
parsed (not UTF-8, not JSON, nested too deep, too large), or an entry of the wrong shape (a missing,
extra or mistyped key, a time without an offset or out of range, a non-finite or huge skew, too many
or too long ids) is dropped, the file is moved aside as ``<name>.corrupt-<UTC time>`` (at most
``MAX_CORRUPT_COPIES`` kept) and logged once; the servers concerned start as on a first start, and
each reports one repair (``take_problem``). A watermark in the server's future is judged by the
collector, which knows the server's clock (``tracking.py``).

Writes go to a temporary file in the same directory, are flushed to disk (``fsync``) and renamed over
the file, and the directory is synced, so a crash or a full disk leaves the old file or the new one,
never half of one. A write that fails is logged once until a write succeeds again, and counted
(``write_failures``); the counting goes on in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_VERSION = 2
#: Why a server's saved watermark was not used (the ``reason`` label of the repairs counter).
REPAIR_REASONS = ("future", "malformed", "unreadable")
MAX_CORRUPT_COPIES = 3
# Far above a real file: ties are saved only after a truncated reply (at most result_size events at
# one instant, INT32_MAX in theory, a few thousand in practice), about 60 bytes each.
MAX_STATE_BYTES = 64 * 1024 * 1024
MAX_TIES = 1_000_000
MAX_SERVERS = 100_000
MAX_NAME = 255  # a server name or FQDN
MAX_ID = 256  # InternalMessageId is an integer, EventId a short word
MAX_SKEW = 10 * 366 * 86400.0  # a server ten years off is not a clock, it is a broken file
# Watermarks outside this range make the window arithmetic overflow (datetime's years 1 to 9999).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_ENTRY_KEYS = frozenset({"at", "counted_at_mark", "skew"})


class _Unusable(Exception):
    """The whole file cannot be used: ``reason`` is one of REPAIR_REASONS, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_mark(value: Any) -> datetime | None:
    """A saved watermark: an ISO-8601 time with an offset within EARLIEST..LATEST, else None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        mark = datetime.fromisoformat(value)
    except ValueError:
        return None
    if mark.tzinfo is None or mark.utcoffset() is None:
        return None
    try:
        return mark if EARLIEST <= mark <= LATEST else None
    except OverflowError:  # an offset that takes it beyond datetime's range
        return None


def _ties(value: Any) -> bool:
    if not isinstance(value, list) or len(value) > MAX_TIES:
        return False
    return all(
        isinstance(pair, list)
        and len(pair) == 2
        and all(isinstance(part, str) and len(part) <= MAX_ID for part in pair)
        for pair in value
    )


def valid_entry(value: Any) -> bool:
    """One server's saved watermark has exactly the shape this module writes."""
    if not isinstance(value, dict) or "at" not in value or not set(value) <= _ENTRY_KEYS:
        return False
    if parse_mark(value["at"]) is None:
        return False
    if "counted_at_mark" in value and not _ties(value["counted_at_mark"]):
        return False
    skew = value.get("skew", 0.0)
    return (
        isinstance(skew, int | float) and not isinstance(skew, bool) and math.isfinite(skew) and abs(skew) <= MAX_SKEW
    )


def _read(path: Path) -> dict[str, Any] | None:
    """The file's watermarks (None: no file); raises _Unusable when it cannot be used at all."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink loop, a name too long, no permission on the directory
        raise _Unusable("unreadable", f"{type(exc).__name__}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):  # never open a FIFO or a device: a read could block forever
        raise _Unusable("unreadable", "not a regular file")
    if info.st_size > MAX_STATE_BYTES:
        raise _Unusable("malformed", f"larger than {MAX_STATE_BYTES} bytes")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except OSError as exc:
        raise _Unusable("unreadable", f"{type(exc).__name__}: {exc.strerror}") from None
    if len(raw) > MAX_STATE_BYTES:
        raise _Unusable("malformed", f"larger than {MAX_STATE_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, an integer too long, nested too deep
        raise _Unusable("malformed", type(exc).__name__) from None
    if not isinstance(data, dict) or set(data) != {"version", "watermarks"}:
        raise _Unusable("malformed", "not a tracking state object")
    version = data["version"]
    if type(version) is not int or version != STATE_VERSION:
        raise _Unusable("malformed", "unknown version")
    marks = data["watermarks"]
    if not isinstance(marks, dict) or len(marks) > MAX_SERVERS:
        raise _Unusable("malformed", "no watermarks object")
    return marks


class WatermarkStore:
    """The per-server watermarks in a small JSON file, written atomically.

    Besides the time, a watermark can carry the dedupe keys of events counted exactly at it: after
    a truncated reply the next window starts at that instant, and those events must not be counted
    again, even by a restarted process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file_problem: str | None = None  # every server's saved state was lost (the whole file)
        self._entry_problems: dict[str, str] = {}  # server -> why its own entry was dropped
        self._reported: set[str] = set()  # servers that took the file's problem already
        self._write_failing = False
        #: Saves that failed since the start (the counting went on in memory).
        self.write_failures = 0
        self._marks: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        self._clean_temporaries()
        try:
            marks = _read(self.path)
        except _Unusable as exc:
            self._file_problem = exc.reason
            aside = self._move_aside()
            log.warning(
                'tracking state %s, starting fresh: every server starts as on a first start path=%s error="%s" '
                "kept_as=%s",
                "unreadable" if exc.reason == "unreadable" else "malformed",
                self.path,
                exc.detail,
                aside or "-",
            )
            return {}
        if marks is None:
            return {}
        kept: dict[str, dict[str, Any]] = {}
        for server, entry in marks.items():
            if not isinstance(server, str) or not 0 < len(server) <= MAX_NAME:
                continue  # no name to report it under; nothing of it is used
            if valid_entry(entry):
                kept[server.upper()] = entry
            else:
                self._entry_problems[server.upper()] = "malformed"
        if len(kept) != len(marks):
            aside = self._move_aside()
            dropped = sorted(self._entry_problems)
            log.warning(
                "tracking state has malformed watermarks, those servers start as on a first start path=%s "
                "servers=%s kept_as=%s",
                self.path,
                ",".join(dropped[:10]) + (f",... ({len(dropped)} in all)" if len(dropped) > 10 else ""),
                aside or "-",
            )
        return kept

    def _clean_temporaries(self) -> None:
        """Remove temporary files a killed predecessor left (a crash between write and rename)."""
        try:
            leftovers = list(self.path.parent.glob(f".{self.path.name}.*.tmp"))
        except OSError:
            return
        for tmp in leftovers:
            try:
                # Not a live writer's (another process sharing the directory writes for milliseconds).
                if not tmp.is_dir() and time.time() - tmp.lstat().st_mtime > 60:
                    tmp.unlink()
            except OSError:
                pass

    def _move_aside(self) -> str | None:
        """Rename the file (or whatever is in its place) to ``<name>.corrupt-<UTC time>``, keeping at
        most MAX_CORRUPT_COPIES copies; the name it got, or None when it could not be moved."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while os.path.lexists(target):
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.replace(self.path, target)
        except OSError as exc:
            log.warning('cannot move the tracking state aside path=%s error="%s"', self.path, exc.strerror)
            return None
        self._prune_copies()
        return target.name

    def _prune_copies(self) -> None:
        try:
            copies = sorted(
                self.path.parent.glob(f"{self.path.name}.corrupt-*"), key=lambda p: (p.lstat().st_mtime, p.name)
            )
        except OSError:
            return
        for old in copies[:-MAX_CORRUPT_COPIES]:
            try:
                if old.is_dir() and not old.is_symlink():
                    shutil.rmtree(old)
                else:
                    old.unlink()
            except OSError:
                pass

    def take_problem(self, server: str) -> str | None:
        """Why this server's saved watermark could not be used (one of REPAIR_REASONS), once per server;
        None when it could (or there was none)."""
        key = server.upper()
        with self._lock:
            if key in self._reported:
                return None
            self._reported.add(key)
            return self._entry_problems.pop(key, None) or self._file_problem

    def skew(self, server: str) -> float:
        """The clock skew the server's watermark was set with (0 when not recorded)."""
        with self._lock:
            entry = self._marks.get(server.upper()) or {}
        return float(entry.get("skew", 0.0))

    def get(self, server: str) -> tuple[datetime | None, frozenset[tuple[str, str]]]:
        """The watermark and the (internal id, event id) pairs already counted exactly at it."""
        with self._lock:
            entry = self._marks.get(server.upper())
        if entry is None:
            return None, frozenset()
        return parse_mark(entry["at"]), frozenset((a, b) for a, b in entry.get("counted_at_mark", ()))

    def set(self, server: str, mark: datetime, ties: Iterable[tuple[str, str]] = (), skew: float = 0.0) -> None:
        """Save a watermark (a time of the server's clock, whose skew was ``skew``)."""
        entry: dict[str, Any] = {"at": mark.astimezone(UTC).isoformat(), "counted_at_mark": sorted(ties)}
        if skew:
            entry["skew"] = skew
        with self._lock:  # build and write under the lock, so a slower writer never wins with old data
            self._marks[server.upper()] = entry
            self._save()

    def discard(self, server: str) -> None:
        """Forget a server's watermark (its next poll is a first start)."""
        with self._lock:
            if self._marks.pop(server.upper(), None) is not None:
                self._save()

    def _save(self) -> None:
        payload = json.dumps({"version": STATE_VERSION, "watermarks": self._marks}, indent=1, sort_keys=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                handle.write(payload.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self._sync_directory()
        except OSError as exc:  # a read-only or full disk must not stop the metrics
            self.write_failures += 1
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._write_failing:
                log.warning(
                    "cannot save tracking state (logged once until a save succeeds; counting goes on, a restart "
                    'would start from the last saved watermarks) path=%s error="%s"',
                    self.path,
                    exc.strerror or type(exc).__name__,
                )
            self._write_failing = True
            return
        if self._write_failing:
            log.info("tracking state saved again path=%s", self.path)
        self._write_failing = False

    def _sync_directory(self) -> None:
        """Make the rename itself durable (POSIX: the directory entry is data of the directory)."""
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
