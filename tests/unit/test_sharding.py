"""Rendezvous sharding: every target has exactly one owner, few move when the replica count changes."""

from __future__ import annotations

import pytest

from exporter.errors import ConfigError
from exporter.sharding import ORG_KEY, Shard, shard_from

TARGETS = (
    [f"EX{i:02d}" for i in range(1, 61)]
    + [f"domain{i}.example" for i in range(300)]
    + [f"192.0.2.{i}" for i in range(1, 41)]
    + [f"mx{i}.example" for i in range(20)]
    + [ORG_KEY]
)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 16])
def test_full_coverage_without_overlap(count: int) -> None:
    owners = {t: [i for i in range(count) if Shard(i, count).owns(t)] for t in TARGETS}
    assert all(len(o) == 1 for o in owners.values()), {t: o for t, o in owners.items() if len(o) != 1}
    loads = [sum(1 for o in owners.values() if o == [i]) for i in range(count)]
    assert min(loads) >= 0.5 * len(TARGETS) / count  # roughly even (hash, not round robin)


@pytest.mark.parametrize("count", [2, 3, 4, 8])
def test_growing_by_one_moves_only_what_the_new_replica_wins(count: int) -> None:
    before = {t: Shard(0, count).owner(t) for t in TARGETS}
    after = {t: Shard(0, count + 1).owner(t) for t in TARGETS}
    moved = [t for t in TARGETS if before[t] != after[t]]
    assert all(after[t] == count for t in moved)  # every mover goes to the new replica
    assert len(moved) <= 1.6 * len(TARGETS) / (count + 1)  # about 1/(n+1), nowhere near a reshuffle


def test_owner_is_case_insensitive_and_stable() -> None:
    assert Shard(0, 5).owner("EX01") == Shard(3, 5).owner("ex01")


def test_index_from_statefulset_ordinal() -> None:
    assert shard_from(None, 3, hostname="mailflow-exporter-2") == Shard(2, 3)
    assert shard_from(1, 3, hostname="whatever") == Shard(1, 3)
    assert shard_from(None, 1, hostname="no-ordinal") == Shard(0, 1)
    with pytest.raises(ConfigError, match="no StatefulSet ordinal"):
        shard_from(None, 3, hostname="mailflow")
    with pytest.raises(ConfigError, match=r"outside 0\.\.2"):
        shard_from(None, 3, hostname="mailflow-exporter-3")


def test_cli_flags_override_the_file_and_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import _with_shard
    from exporter.settings import load_settings

    settings = load_settings(None)
    sharded = _with_shard(settings, 1, 3)
    assert (sharded.sharding.index, sharded.sharding.count) == (1, 3)
    assert _with_shard(settings, None, None) is settings
    with pytest.raises(SystemExit) as exit_info:
        _with_shard(settings, 5, 3)
    assert exit_info.value.code == 2 and "sharding (--shard-index/--shard-count)" in capsys.readouterr().err
