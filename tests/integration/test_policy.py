"""The node owner's policy: a refused session names the node and the rule, and nothing is shared."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mpc.coordinator.client import Coordinator
from mpc.errors import SessionFailed

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
