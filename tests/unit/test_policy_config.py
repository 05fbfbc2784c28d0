"""Parsing of the per-protocol input policy ([nodes.X.policy.allow])."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpc.config import load_cluster
from mpc.errors import ConfigError

BASE = '''[cluster]
ca = "ca.pem"
[nodes.alice]
address = "127.0.0.1:7001"
[nodes.alice.policy]
{policy}
[nodes.bob]
address = "127.0.0.1:7002"
'''


def load(tmp_path: Path, policy: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "cluster.toml"
    path.write_text(BASE.format(policy=policy))
    return load_cluster(path).nodes["alice"].policy


def test_allow_limits_inputs_per_protocol(tmp_path: Path) -> None:
    policy = load(tmp_path, 'inputs = ["raise", "ballots"]\n[nodes.alice.policy.allow]\nvote = ["ballots"]')
    assert policy.refusal("alice", "vote", "ballots") is None
    assert policy.refusal("alice", "sum", "ballots") is None  # sum is not limited by `allow`
    assert "only on ballots, not on 'raise'" in (policy.refusal("alice", "vote", "raise") or "")
    assert "does not allow input 'other'" in (policy.refusal("alice", "sum", "other") or "")


def test_default_policy_allows_everything_but_small_sessions(tmp_path: Path) -> None:
    policy = load(tmp_path, "")
    assert policy.min_participants == 3
    for protocol in ("sum", "average", "vote", "threshold"):
        assert policy.refusal("alice", protocol, "anything") is None


@pytest.mark.parametrize(("text", "fragment"), [
    ('[nodes.alice.policy.allow]\nauction = ["x"]', "unknown protocol 'auction'"),
    ('[nodes.alice.policy.allow]\nsum = "raise"', "must be a list"),
    ('protocols = ["sum"]\nbogus = 1', "unknown key(s) bogus"),
])
def test_bad_allow_tables_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert fragment in str(err.value)
