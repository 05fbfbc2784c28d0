"""Parsing of the owner policy: the per-protocol input policy ([nodes.X.policy.allow]) and the rules
across sessions (max_releases, participants, thresholds, session limits, [nodes.X.policy.per_input.NAME])."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from mpc.config import (DEFAULT_DELTA_BUDGET, DEFAULT_EPSILON_BUDGET, DEFAULT_MAX_RELEASES, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_COORDINATOR,
                        PROTOCOL_NAMES, Rules, load_cluster)
from mpc.errors import ConfigError
from mpc.protocols.catalogue import HALF

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


def test_default_policy_allows_every_catalogue_protocol(tmp_path: Path) -> None:
    policy = load(tmp_path, "")
    assert policy.protocols == frozenset(PROTOCOL_NAMES)
    for protocol in PROTOCOL_NAMES:
        assert policy.refusal("alice", protocol, "anything") is None, protocol


@pytest.mark.parametrize("protocol", ["auction", "clearing-price", "plurality"])
def test_the_new_protocols_are_accepted_in_allow(tmp_path: Path, protocol: str) -> None:
    policy = load(tmp_path, f'inputs = ["bids", "other"]\n[nodes.alice.policy.allow]\n"{protocol}" = ["bids"]')
    assert protocol in PROTOCOL_NAMES
    assert policy.allow == {protocol: frozenset({"bids"})}
    assert policy.refusal("alice", protocol, "bids") is None
    assert "only on bids, not on 'other'" in (policy.refusal("alice", protocol, "other") or "")


@pytest.mark.parametrize(("text", "fragment"), [
    ('[nodes.alice.policy.allow]\nlottery = ["x"]', "unknown protocol 'lottery'"),
    ('[nodes.alice.policy.allow]\nsum = "raise"', "must be a list"),
    ('protocols = ["sum"]\nbogus = 1', "unknown key(s) bogus"),
])
def test_bad_allow_tables_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert fragment in str(err.value)


# ---- the rules across sessions (issue 10): release budget, pinned participants, vote rules, load --------


def test_defaults_of_the_rules_across_sessions(tmp_path: Path) -> None:
    policy = load(tmp_path, "")
    assert policy.defaults == Rules() == Rules(DEFAULT_MAX_RELEASES, "cluster", None)
    assert DEFAULT_MAX_RELEASES == 1
    assert policy.per_input == {}
    assert policy.rules("anything") is policy.defaults
    # Pinned to every node of the owner's own cluster file, whatever the order it is given in.
    assert policy.defaults.pinned(["bob", "alice"]) == frozenset({"alice", "bob"})
    assert (policy.max_sessions, policy.max_sessions_per_coordinator) == (
        DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_COORDINATOR) == (64, 16)


def test_policy_level_rules_are_read(tmp_path: Path) -> None:
    policy = load(tmp_path, 'max_releases = 3\nparticipants = ["alice", "bob"]\nthresholds = ["half", 2, 0]\n'
                            'max_sessions = 10\nmax_sessions_per_coordinator = 10')
    assert policy.defaults == Rules(3, frozenset({"alice", "bob"}), frozenset({HALF, 2, 0}))
    assert policy.defaults.pinned(["alice", "bob", "carlos"]) == frozenset({"alice", "bob"})
    assert (policy.max_sessions, policy.max_sessions_per_coordinator) == (10, 10)
    anyone = load(tmp_path, 'participants = "any"')
    assert anyone.defaults.participants == "any" and anyone.defaults.pinned(["alice", "bob"]) is None
    cluster = load(tmp_path, 'participants = "cluster"\nthresholds = []')
    assert cluster.defaults.participants == "cluster" and cluster.defaults.thresholds == frozenset()


def test_per_input_tables_inherit_the_policys_values(tmp_path: Path) -> None:
    policy = load(tmp_path, 'max_releases = 5\nparticipants = "any"\nthresholds = [3]\n'
                            '[nodes.alice.policy.per_input.referendum]\nmax_releases = 2\nthresholds = ["half", 7]\n'
                            '[nodes.alice.policy.per_input.salary]\nparticipants = ["alice", "bob"]\n'
                            '[nodes.alice.policy.per_input.empty]')
    assert policy.defaults == Rules(5, "any", frozenset({3}))
    # Each key a table does not set comes from the policy's own value, not from the built-in default.
    assert policy.rules("referendum") == Rules(2, "any", frozenset({HALF, 7}))
    assert policy.rules("salary") == Rules(5, frozenset({"alice", "bob"}), frozenset({3}))
    assert policy.rules("empty") == policy.defaults
    assert policy.rules("other") is policy.defaults
    # Without policy-level values, a table inherits the built-in defaults.
    plain = load(tmp_path, '[nodes.alice.policy.per_input.referendum]\nthresholds = ["half", 7]')
    assert plain.rules("referendum") == Rules(DEFAULT_MAX_RELEASES, "cluster", frozenset({HALF, 7}))
    assert plain.rules("raise") == Rules()


def test_per_input_table_before_the_policy_keys_still_inherits(tmp_path: Path) -> None:
    # TOML puts a policy-level key after a sub-table only with a dotted key; either order reads the same.
    policy = load(tmp_path, 'per_input.x.thresholds = [1]\nmax_releases = 4')
    assert policy.rules("x") == Rules(4, "cluster", frozenset({1}))


@pytest.mark.parametrize(("text", "fragments"), [
    ("max_releases = 0", ("max_releases must be at least 1", "got 0")),
    ("max_releases = -3", ("max_releases must be at least 1",)),
    ('max_releases = "2"', ("'max_releases' must be a int",)),
    ("max_releases = 1.5", ("'max_releases' must be a int",)),
    ("max_releases = true", ("'max_releases' must be a int",)),
    ('participants = "everyone"', ("participants must be", "everyone")),
    ("participants = []", ("participants must be",)),
    ("participants = 3", ("participants must be",)),
    ('participants = ["alice", 7]', ("participants must be",)),
    ('participants = ["Alice"]', ("participants must be", "Alice")),
    ('thresholds = [1, 2.5]', ("thresholds must be a list", "2.5")),
    ('thresholds = ["half", "majority"]', ("thresholds must be a list", "majority")),
    ('thresholds = [true]', ("thresholds must be a list",)),
    ('thresholds = "half"', ("thresholds must be a list",)),
    ("max_sessions = 4\nmax_sessions_per_coordinator = 5", ("max_sessions_per_coordinator <= max_sessions",
                                                            "got 5 and 4")),
    ("max_sessions_per_coordinator = 65", ("max_sessions_per_coordinator <= max_sessions", "got 65 and 64")),
    ("max_sessions_per_coordinator = 0", ("max_sessions_per_coordinator",)),
    ("max_sessions = 0\nmax_sessions_per_coordinator = 0", ("max_sessions_per_coordinator <= max_sessions",)),
    ('max_sessions = "many"', ("'max_sessions' must be a int",)),
])
def test_bad_rules_are_refused_naming_the_key(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert "[nodes.alice].policy" in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(("text", "fragments"), [
    ("max_releases = 0", ("policy.per_input.referendum", "max_releases must be at least 1")),
    ('participants = "all"', ("policy.per_input.referendum", "participants must be")),
    ('thresholds = [0.5]', ("policy.per_input.referendum", "thresholds must be a list")),
    ('thresholds = ["quarter"]', ("policy.per_input.referendum", "thresholds must be a list")),
    ("max_release = 2", ("policy.per_input.referendum", "unknown key(s) max_release")),
    ("min_participants = 4", ("policy.per_input.referendum", "unknown key(s) min_participants")),
    ("max_sessions = 4", ("policy.per_input.referendum", "unknown key(s) max_sessions")),
])
def test_bad_per_input_tables_are_refused_naming_the_input_and_key(tmp_path: Path, text: str,
                                                                   fragments: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f"[nodes.alice.policy.per_input.referendum]\n{text}")
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message


def test_a_per_input_entry_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"per_input.*'referendum' must be a dict"):
        load(tmp_path, "per_input = { referendum = 2 }")
    with pytest.raises(ConfigError, match=r"'per_input' must be a dict"):
        load(tmp_path, "per_input = 2")


@pytest.mark.parametrize("text, fragment", [
    ('participants = ["alice", "zed"]', "not in this file: zed"),
    ('participants = ["bob"]', "must include the node itself (alice)"),
    ('[nodes.alice.policy.per_input.raise]\nparticipants = ["alice", "zed"]', "per_input.raise: participants"),
    ("thresholds = [-1073741825]", "within +-1073741824"),
    ("thresholds = [1073741825]", "within +-1073741824"),
    ('[nodes.alice.policy.per_input."Not A Name"]\nmax_releases = 2', "is not an input name"),
])
def test_rules_that_could_never_apply_are_refused_at_load(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert fragment in str(err.value)


def test_a_smaller_session_limit_lowers_the_per_coordinator_default(tmp_path: Path) -> None:
    policy = load(tmp_path, "max_sessions = 8")
    assert (policy.max_sessions, policy.max_sessions_per_coordinator) == (8, 8)
    assert load(tmp_path, 'thresholds = ["half", 1073741824, -1073741824]').defaults.thresholds is not None


# ---- the differential-privacy budget (DESIGN.md §11) -----------------------------------------

def test_dp_budget_defaults_and_exact_decimals(tmp_path: Path) -> None:
    policy = load(tmp_path, "")
    assert (policy.defaults.epsilon, policy.defaults.delta, policy.defaults.exact) == (
        DEFAULT_EPSILON_BUDGET, DEFAULT_DELTA_BUDGET, True)
    policy = load(tmp_path, 'epsilon = 0.1\ndelta = 1e-7\nexact = false\n'
                            '[nodes.alice.policy.per_input.visits]\nepsilon = 3\n')
    assert policy.rules("other") == Rules(epsilon=Decimal("0.1"), delta=Decimal("1e-7"), exact=False)
    visits = policy.rules("visits")   # its own epsilon, the policy's delta and exact
    assert (visits.epsilon, visits.delta, visits.exact) == (Decimal(3), Decimal("1e-7"), False)
    assert sum([policy.rules("x").epsilon] * 10) == Decimal(1)   # 0.1 is 0.1, not 0.1000000000000000055


@pytest.mark.parametrize(("text", "fragment"), [
    ("epsilon = -1", "epsilon must be a non-negative number"),
    ('epsilon = "1"', "epsilon must be a non-negative number"),
    ("epsilon = inf", "epsilon must be a non-negative number"),
    ("epsilon = nan", "epsilon must be a non-negative number"),
    ("epsilon = true", "epsilon must be a non-negative number"),
    ("delta = 1", "delta must be below 1"),
    ("delta = -1e-9", "delta must be a non-negative number"),
    ('exact = "no"', "'exact' must be a bool"),
    ("[nodes.alice.policy.per_input.visits]\nepsilon = -0.5", "per_input.visits: epsilon must be a non-negative"),
])
def test_bad_dp_budgets_are_refused_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load(tmp_path, text)


def test_exact_histograms_and_dp_per_element_default_off_and_parse(tmp_path: Path) -> None:
    policy = load(tmp_path, "")
    assert (policy.defaults.exact_histograms, policy.defaults.dp_per_element) == (False, False)
    assert (Rules().exact_histograms, Rules().dp_per_element) == (False, False)
    policy = load(tmp_path, 'exact_histograms = true\n'
                            '[nodes.alice.policy.per_input.readings]\ndp_per_element = true\n'
                            '[nodes.alice.policy.per_input.ages]\nexact_histograms = false\n')
    assert (policy.defaults.exact_histograms, policy.defaults.dp_per_element) == (True, False)
    readings = policy.rules("readings")     # its own dp_per_element, the policy's exact_histograms
    assert (readings.exact_histograms, readings.dp_per_element) == (True, True)
    assert readings.exact_histograms is True and readings.dp_per_element is True
    ages = policy.rules("ages")
    assert (ages.exact_histograms, ages.dp_per_element) == (False, False)
    assert policy.rules("other") == Rules(exact_histograms=True)
    both = load(tmp_path, "exact_histograms = false\ndp_per_element = true")
    assert both.defaults == Rules(exact_histograms=False, dp_per_element=True)


@pytest.mark.parametrize("key", ["exact_histograms", "dp_per_element"])
@pytest.mark.parametrize("value", ['"yes"', "1", "0", "[true]", "1.0"])
@pytest.mark.parametrize("per_input", [False, True])
def test_exact_histograms_and_dp_per_element_must_be_bools(tmp_path: Path, key: str, value: str,
                                                           per_input: bool) -> None:
    text = f"{key} = {value}"
    if per_input:
        text = f"[nodes.alice.policy.per_input.visits]\n{text}"
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert f"'{key}' must be a bool" in message, message
    assert "[nodes.alice].policy" in message, message
    if per_input:
        assert "per_input.visits" in message, message


def test_members_to_defaults_to_any_and_parses(tmp_path: Path) -> None:
    """members_to: who may receive an intersection's members; unset, any participant (Rules().members_to None)."""
    assert load(tmp_path, "").defaults.members_to is None
    policy = load(tmp_path, 'members_to = ["alice"]\n'
                            '[nodes.alice.policy.per_input.patients]\nmembers_to = ["alice", "bob"]\n'
                            '[nodes.alice.policy.per_input.other]\nmax_releases = 2\n')
    assert policy.defaults.members_to == frozenset({"alice"})
    assert policy.rules("patients").members_to == frozenset({"alice", "bob"})
    assert policy.rules("other").members_to == frozenset({"alice"})        # inherited


@pytest.mark.parametrize(("text", "fragment"), [
    ("members_to = []", "members_to must be a non-empty list of node names"),
    ('members_to = "alice"', "members_to must be a non-empty list of node names"),
    ('members_to = ["Alice"]', "members_to must be a non-empty list of node names"),
    ("members_to = [1]", "members_to must be a non-empty list of node names"),
    ('members_to = ["zed"]', "members_to names nodes not in this file: zed"),
    ('[nodes.alice.policy.per_input.p]\nmembers_to = ["bob", "zed"]', "per_input.p: members_to names nodes not in "
                                                                       "this file: zed"),
])
def test_bad_members_to_is_refused_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert fragment in str(err.value) and "nodes.alice" in str(err.value), str(err.value)
