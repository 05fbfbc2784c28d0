"""The node owner's policy: a refused session names the node and the rule, and nothing is shared."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mpc.coordinator.client import Coordinator
from mpc.credentials import new_owner_key
from mpc.errors import SessionFailed
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
