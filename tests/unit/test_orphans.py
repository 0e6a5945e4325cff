"""Which shells the exporter takes for its predecessors' (and closes) and which it leaves alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from exporter.exchange.orphans import (
    ABANDONED_LIMIT,
    PREFIX,
    RECHECK_SECONDS,
    ShellJanitor,
    ShellOwner,
    is_predecessor,
    pid_alive,
)

ME = ShellOwner("node-1", 4242, "aaaaaaaaaaaaaaaa")


def dead(_pid: int) -> bool:
    return False


def alive(_pid: int) -> bool:
    return True


def test_the_name_says_who_opened_the_shell() -> None:
    assert ME.name == f"{PREFIX}/node-1/4242/aaaaaaaaaaaaaaaa"
    assert ShellOwner.parse(ME.name) == ME


@pytest.mark.parametrize(
    "name",
    ["", "Runspace1", "Session2", "mailflow-exporter/node-1/x/abc", "mailflow-exporter/node-1/1", "other/node-1/1/a"],
)
def test_names_the_exporter_did_not_make_are_not_parsed(name: str) -> None:
    assert ShellOwner.parse(name) is None


@pytest.mark.parametrize(
    ("found", "pid_is_alive", "predecessor"),
    [
        (ShellOwner("node-2", 4242, "b" * 16), dead, False),  # another host: never ours to close
        (ShellOwner("node-1", 4242, ME.instance), dead, False),  # this run's own shell
        (ShellOwner("node-1", 4242, "b" * 16), alive, True),  # our pid, another run: a restarted container
        (ShellOwner("node-1", 7, "b" * 16), alive, False),  # a sibling exporter still running on this host
        (ShellOwner("node-1", 7, "b" * 16), dead, True),  # an exporter on this host that died
    ],
)
def test_predecessors_are_earlier_runs_on_this_host_whose_process_is_gone(
    found: ShellOwner, pid_is_alive: Callable[[int], bool], predecessor: bool
) -> None:
    assert is_predecessor(found, ME, pid_is_alive) is predecessor


def test_a_session_manager_alive_in_this_process_is_not_a_predecessor() -> None:
    sibling = ShellOwner.this_process()  # e.g. another replica in the same test process
    me = ShellOwner.this_process()
    try:
        assert sibling.pid == me.pid and sibling.instance != me.instance
        assert not is_predecessor(sibling, me, alive)
        sibling.retire()  # its sessions are closed (or, for a test, abandoned as a dead process's)
        assert is_predecessor(sibling, me, alive)
    finally:
        sibling.retire()
        me.retire()


def test_pid_alive_sees_running_zombie_and_reaped_processes() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(child.pid) and time.monotonic() < deadline:  # exited but not reaped: a zombie
        time.sleep(0.02)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)


def test_abandoned_shells_are_bounded_per_endpoint_and_swept_after_healthy_calls_at_most_every_recheck() -> None:
    now = [100.0]
    janitor = ShellJanitor(ME, dead, clock=lambda: now[0])
    assert not janitor.due("ep1")  # nothing pending: a healthy call starts no sweep
    for i in range(ABANDONED_LIMIT + 5):
        janitor.abandon("ep1", "EX01", f"shell-{i}", "uri")
    janitor.abandon("ep1", "EX01", "SHELL-36", "uri")  # already known (ids compare as the server's, upper case)
    assert janitor.pending("ep1") == ABANDONED_LIMIT and janitor.pending("ep2") == 0
    assert janitor.abandoned_total == ABANDONED_LIMIT + 5
    assert janitor.due("ep1")  # claimed by this call ...
    assert not janitor.due("ep1")  # ... so the next healthy call does not start another
    now[0] += RECHECK_SECONDS
    assert janitor.due("ep1")
