"""The node owner's policy: a refused session names the node and the rule, and nothing is shared."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from mpc.coordinator.client import Coordinator, Privacy
from mpc.credentials import new_owner_key
from mpc.errors import SessionFailed
from mpc.node.releases import ReleaseBook
from mpc.protocols.catalogue import ThresholdParams, entry
from mpc.store import CollectionSpec

from .harness import running_cluster

CAROL_POLICY = '''protocols = ["sum", "average", "vote"]
[nodes.carlos.policy.allow]
sum = ["raise"]
vote = ["ballots"]'''


def test_policy_refusals_name_the_node_and_rule(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3, policies={"carlos": CAROL_POLICY}) as lc:
            for i, name in enumerate(("alice", "bob", "carlos")):
                lc.put(name, "raise", [1000 + i], scalar=True)
                lc.put(name, "ballots", [1, 0, 1], ballots=True)
            seen: list[str] = []
            async with Coordinator(lc.cluster, observer=lambda s, n, b: seen.append(n)) as c:
                assert (await c.sum("raise")).value == 3003
                assert (await c.vote("ballots")).passed
                with pytest.raises(SessionFailed, match=r"node carlos: policy allows protocol 'sum' only on raise, "
                                                        r"not on 'ballots'"):
                    await c.sum("ballots")
                with pytest.raises(SessionFailed, match=r"node carlos: policy does not allow protocol 'threshold'"):
                    await c.at_least("raise", 5)
                with pytest.raises(SessionFailed, match=r"node carlos: policy allows protocol 'vote' only on ballots"):
                    await c.vote("raise")
                async with Coordinator(lc.cluster, nodes=["alice", "bob"]) as pair:
                    with pytest.raises(SessionFailed, match=r"policy requires at least 3 participants"):
                        await pair.sum("raise")
            # Only the two allowed sessions ever sent the coordinator anything.
            assert len(seen) == 6
            for name, server in lc.servers.items():
                assert server.core.sessions == {}, name
    asyncio.run(go())


def test_refusals_and_votes_never_read_the_ballots(tmp_path: Path) -> None:
    """How long a prepare takes must not depend on how many ballots a node holds: a vote reads only
    the tally kept beside them, and every refusal is decided on the declaration before any value is
    read. Here reading a ballot input's values fails loudly, and neither path notices."""
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            for i, name in enumerate(("alice", "bob", "carlos")):
                lc.put(name, "ballots", [1, 0, 1] * (i + 1), ballots=True)
            for server in lc.servers.values():
                store = server.core.store
                original = store.get_input

                def guarded(name: str, _original=original):  # type: ignore[no-untyped-def]
                    assert name != "ballots", "a ballot input's values were read"
                    return _original(name)
                store.get_input = guarded  # type: ignore[method-assign]
            async with Coordinator(lc.cluster) as c:
                assert (await c.vote("ballots")).passed                     # T = 12 of N = 18
                for protocol, refused in (("sum", c.sum("ballots")), ("average", c.average("ballots")),
                                          ("threshold", c.at_least("ballots", 1))):
                    with pytest.raises(SessionFailed, match=rf"holds ballots, which only vote may use \(the "
                                                            rf"policy's allow\.{protocol} may name it\)"):
                        await refused
    asyncio.run(go())


def test_a_sum_or_average_takes_no_threshold(tmp_path: Path) -> None:
    async def go() -> None:
        async with running_cluster(tmp_path, 3) as lc:
            for name in ("alice", "bob", "carlos"):
                lc.put(name, "x", [5], scalar=True)
            async with Coordinator(lc.cluster) as c:
                for protocol in ("sum", "average"):
                    # A coordinator that sends a threshold anyway (the typed API has none for them).
                    with pytest.raises(SessionFailed, match=rf"protocol {protocol} takes no parameter 'threshold'") as err:
                        await c.open(entry(protocol), ThresholdParams(7), "x")
                    assert "[INVALID_ARGUMENT]" in str(err.value) and "nothing was revealed" in str(err.value)
                assert (await c.sum("x")).value == 15      # nothing was spent by the refusals
    asyncio.run(go())


def test_an_input_made_for_one_protocol_serves_numbers_only_where_allow_names_it(tmp_path: Path) -> None:
    """Bids are for an auction, options for a plurality vote: a protocol on numbers takes them only
    where every owner's policy names the input (allow.<protocol>), and a protocol made for another
    kind never does, even when allow names it. A refusal shares nothing and spends no release."""
    names = ("alice", "bob", "carlos")
    policies = {n: f'[nodes.{n}.policy.allow]\nsum = ["bid", "x"]\nvote = ["poll"]' for n in names}

    async def go() -> None:
        async with running_cluster(tmp_path, 3, policies=policies) as lc:
            for i, name in enumerate(names):
                lc.put(name, "bid", [i + 1, 10 * (i + 1)], bounds=(0, 100), kind="bids")
                lc.put(name, "poll", [0, 2, 1], bounds=(0, 2), kind="options")
            seen: list[str] = []
            async with Coordinator(lc.cluster, observer=lambda s, n, b: seen.append(n)) as c:
                with pytest.raises(SessionFailed, match=r"holds bids, which only auction may use \(the policy's "
                                                        r"allow\.average may name it\)"):
                    await c.average("bid")
                with pytest.raises(SessionFailed, match=r"'poll' at node \w+ is not declared as ballots \(it holds "
                                                        r"options\); vote takes ballots"):
                    await c.vote("poll")
                assert seen == []                                  # nothing was opened by the refusals
                assert (await c.sum("bid")).value == [6, 60]      # allow.sum names it at every node
            for name, server in lc.servers.items():
                assert server.core.sessions == {}, name
    asyncio.run(go())


def test_status_shows_only_the_inputs_and_collections_the_policy_lets_be_used(tmp_path: Path) -> None:
    """An owner whose policy names the inputs that may be used (`inputs = [...]`) shows coordinators
    those alone: Status listed every collection all the same (its kind, length and submission count),
    though a session on one the policy leaves out is refused."""
    names = ("alice", "bob", "carlos")
    owner = bytes(new_owner_key().verify_key)
    async def go() -> None:
        async with running_cluster(tmp_path, 3, policies={"carlos": 'inputs = ["x", "open-poll"]'}) as lc:
            for name in names:
                lc.put(name, "x", [1], scalar=True)
                lc.put(name, "y", [2], scalar=True)
                with lc.store(name) as store:
                    for collection in ("open-poll", "quiet-poll"):
                        assert store.create_collection(CollectionSpec(collection, "ballot", 0, 1, 1, 1, "refuse",
                                                                      owner, names))
            async with Coordinator(lc.cluster) as c:
                shown = {s.name: s for s in await c.status()}
                with pytest.raises(SessionFailed, match=r"node carlos: policy does not allow input 'quiet-poll'"):
                    await c.collection_vote("quiet-poll")
        assert sorted(i.name for i in shown["carlos"].inputs) == ["x"]
        assert [c.name for c in shown["carlos"].collections] == ["open-poll"]
        for other in ("alice", "bob"):
            assert sorted(i.name for i in shown[other].inputs) == ["x", "y"]
            assert sorted(c.name for c in shown[other].collections) == ["open-poll", "quiet-poll"]
    asyncio.run(go())


def test_a_release_one_node_refuses_spends_no_other_nodes_budget(tmp_path: Path) -> None:
    """A keyed sum recorded each node's release when it started, before it could hear that another node
    refused: with bob's epsilon run dry, every retry of a DP sum (local noise, keyed once the nodes hold
    pair keys) spent 0.5 of alice's and carlos's epsilon on a sum that never opened (a review found 4.0
    spent for nothing in 10 tries). The keyed path is for repeats only now (mpc/protocols/pairing.py):
    every node spends exactly what opened."""
    names = ("alice", "bob", "carlos")
    policies = {n: f"epsilon = {1 if n == 'bob' else 10}\ndelta = 0.01" for n in names}

    async def go() -> tuple[int, list[str]]:
        async with running_cluster(tmp_path, 3, policies=policies) as lc:
            for i, name in enumerate(names):
                lc.put(name, "pay", [1000 + i], scalar=True, bounds=(0, 10_000))
            opened, refusals = 0, []
            async with Coordinator(lc.cluster) as c:
                assert (await c.sum("pay")).value == 3003   # an exact sum first: every pair holds a key
                for _ in range(6):
                    try:
                        await c.sum("pay", privacy=Privacy(0.5, 1e-4, noise="local"))
                        opened += 1
                    except SessionFailed as exc:
                        refusals.append(str(exc))
            for name in names:
                with lc.store(name) as store:
                    assert store.dp_spent("pay")[0] == Decimal("0.5") * opened, name
            return opened, refusals
    opened, refusals = asyncio.run(go())
    assert opened == 2 and len(refusals) == 4, (opened, refusals)
    assert all("node bob" in r and "epsilon" in r for r in refusals), refusals


def test_a_new_version_the_others_refuse_to_release_with_keeps_its_one_release(tmp_path: Path) -> None:
    """Under the default policy (one release per input version) alice replaces her input; the next sum is
    refused by bob and carlos, whose versions released theirs already. Keyed, alice had recorded the only
    release of her new version all the same, so once the others had replaced theirs too she refused every
    sum. Now nothing is recorded where nothing opened, and the sum runs once all have new versions."""
    names = ("alice", "bob", "carlos")

    async def go() -> int:
        async with running_cluster(tmp_path, 3) as lc:
            for i, name in enumerate(names):
                lc.put(name, "raise", [1000 + i], scalar=True)
            async with Coordinator(lc.cluster) as c:
                for _ in range(2):   # the second a repeat, keyed
                    assert (await c.sum("raise")).value == 3003
            lc.put("alice", "raise", [5000], scalar=True, overwrite=True)
            for _ in range(2):
                async with Coordinator(lc.cluster) as c:   # a new `mpc sum` each time
                    with pytest.raises(SessionFailed, match=r"node (bob|carlos): .*max_releases"):
                        await c.sum("raise")
            with lc.store("alice") as store:
                assert [r for r in store.releases("raise") if r.version == 2] == []
            for name in ("bob", "carlos"):
                lc.put(name, "raise", [7], scalar=True, overwrite=True)
            async with Coordinator(lc.cluster) as c:
                return (await c.sum("raise")).value
    assert asyncio.run(go()) == 5014


def test_a_keyed_release_that_would_count_is_refused_at_compute_and_run_unkeyed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At prepare a node offers the keyed path when an earlier release of its version may imply this
    one; only at compute, with every node's version, does it know. Nodes made to offer it for a first
    release (as an older mpc did for every release) refuse at compute before anything is recorded or
    sent, and the coordinator runs the session again unkeyed: one release recorded per node, no refused
    one counted."""
    precheck = ReleaseBook.precheck
    monkeypatch.setattr(ReleaseBook, "precheck", lambda self, *args: precheck(self, *args) or True)
    names = ("alice", "bob", "carlos")

    async def go() -> tuple[int, dict[str, list[str]]]:
        async with running_cluster(tmp_path, 3) as lc:
            for i, name in enumerate(names):
                lc.put(name, "raise", [1000 + i], scalar=True)
                lc.put(name, "bonus", [10 * i], scalar=True)
            async with Coordinator(lc.cluster) as c:
                assert (await c.sum("raise")).value == 3003   # unkeyed: every pair holds a key after it
                value = (await c.sum("bonus")).value          # offered keyed, refused, run again unkeyed
            outcomes = {}
            for name in names:
                with lc.store(name) as store:
                    assert len([r for r in store.releases("bonus") if r.counted]) == 1, name
                    outcomes[name] = [s.status for s in store.list_sessions(limit=100)
                                      if s.input_name == "bonus"]
            return value, outcomes
    value, outcomes = asyncio.run(go())
    assert value == 30
    assert all(sorted(o) == ["done", "failed"] for o in outcomes.values()), outcomes
