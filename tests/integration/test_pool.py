"""Triple pools over real node daemons (grpc.aio, mutual TLS, loopback; mpc/ot/pool.py).

After a session that needed bit triples, each node makes random OTs with every peer between
sessions (an IKNP extension it sends on the reserved peer channel "triple-pool"), and the next
sessions derandomise them with one "triples/r" message per peer instead of IKNP's two rounds.
These tests check, on what the daemons really send and receive:
- a pooled session gives the plaintext's bits, sends no IKNP message, and spends exactly its
  triple words from every pool;
- what a node receives in a pooled session and in a fill looks uniform and holds no input;
- concurrent sessions share the pools without any range answered twice;
- a restarted node (its pools gone) makes its pairs fall back to IKNP, the others stay pooled,
  and fills bring its pairs back;
- a fill that is malformed, replayed, or for a setup the node never made is refused, and a
  peer's certificate cannot fill a pool on another's behalf; sessions go on working;
- fill traffic is reported apart from the sessions' traffic.

One three-node cluster serves the module.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TypeVar

import pytest

from mpc.coordinator.client import Coordinator
from mpc.errors import SessionFailed
from mpc.node.daemon import NodeServer
from mpc.ot.pool import POOL_CHANNEL, STEP_FILL
from mpc.ot.triples import STEP_R, STEP_T, STEP_U
from mpc.protocols.compute import STEP_HELLO
from mpc.protocols.compare import triple_words
from mpc.protocols.contribution import COMPARE_BITS
from mpc.transport.peers import PeerClient
from mpc.transport.tls import TlsMaterial

from .harness import ANY_QUERIES, LocalCluster, running_cluster
from tests.sim.common import assert_balanced

from .test_privacy import assert_uniform_bytes

T = TypeVar("T")
TRIO = ("alice", "bob", "carlos")
SCORES = {"alice": [5, -40, 12, 0, 7, -3, 30, -30], "bob": [-9, 25, -12, 1, 0, 3, -31, 30],
          "carlos": [4, 14, 0, -1, -8, 0, 1, 0]}
WORDS = triple_words(3, COMPARE_BITS, len(SCORES["alice"]))
FILL_WAIT_S = 60.0


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    lc: LocalCluster

    def run(self, coro: Awaitable[T], timeout: float = 120.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def received(self, session: str) -> dict[str, list[tuple[str, str, bytes]]]:
        """Every peer message each node accepted under `session` (or the pool channel): (sender, step, payload)."""
        return {n: [(s, st, p) for sid, s, st, p in self.lc.recorder.received.get(n, []) if sid == session]
                for n in self.lc.servers}

    def level(self, node: str, peer: str) -> int:
        return self.lc.servers[node].core.pools.level(peer)

    def sending(self, node: str, peer: str) -> int:
        return self.lc.servers[node].core.pools.sending_level(peer)

    async def filled(self, words: int = WORDS, nodes: Sequence[str] = TRIO) -> None:
        """Run the nodes' loop until every pool between `nodes` holds `words` words at both ends
        (the fills are background tasks of the daemons on this loop)."""
        deadline = time.monotonic() + FILL_WAIT_S
        while any(self.level(a, b) < words or self.sending(b, a) < words for a, b in itertools.permutations(nodes, 2)):
            assert time.monotonic() < deadline, {(a, b): (self.level(a, b), self.sending(b, a))
                                                 for a, b in itertools.permutations(nodes, 2)}
            await asyncio.sleep(0.01)   # yields to the fills running on this loop

    async def restart(self, node: str) -> None:
        await self.lc.stop(node)
        server = NodeServer(self.lc.cluster, node, observer=self.lc.recorder.for_node(node))
        await server.start()
        self.lc.servers[node] = server

    async def threshold(self, k: int = 0) -> tuple[str, list[bool]]:
        async with Coordinator(self.lc.cluster) as c:
            result = await c.at_least("score", k)
        return result.session_id, result.bits


def expected(k: int = 0) -> list[bool]:
    return [sum(v) >= k for v in zip(*SCORES.values())]


@pytest.fixture(scope="module")
def env(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    stack = AsyncExitStack()
    lc = loop.run_until_complete(stack.enter_async_context(
        running_cluster(tmp_path_factory.mktemp("pool"), 3, every_policy=ANY_QUERIES)))
    for node in TRIO:
        lc.put(node, "score", SCORES[node], bounds=(-100, 100))
    e = Env(loop, lc)
    sid, bits = e.run(e.threshold())   # the first session: base OTs and IKNP; then the nodes fill
    assert bits == expected()
    assert all(st not in (STEP_R,) for msgs in e.received(sid).values() for _, st, _ in msgs)
    try:
        yield e
    finally:
        loop.run_until_complete(stack.aclose())


def triple_steps(env: Env, session: str) -> dict[tuple[str, str], list[str]]:
    """The triple steps each node received from each peer in `session`: (receiver, sender) -> steps."""
    return {(n, s): sorted(st for s2, st, _ in msgs if s2 == s and st.startswith("triples/"))
            for n, msgs in env.received(session).items() for s in TRIO if s != n}


def test_a_pooled_session_gives_the_plaintext_sends_no_iknp_and_spends_exactly_its_words(env: Env) -> None:
    env.run(env.filled())
    sid, bits = env.run(env.threshold(3))
    assert bits == expected(3)
    assert set(map(tuple, triple_steps(env, sid).values())) == {(STEP_R,)}
    # what each session spends, exactly, at both ends: tests/sim/test_pool_sim.py (here a fill may
    # already have begun once the session ended)


def test_what_a_node_receives_in_a_pooled_session_and_in_a_fill_looks_uniform_and_holds_no_input(env: Env) -> None:
    env.run(env.filled())
    sid, _ = env.run(env.threshold(-2))
    needles = {v.to_bytes(8, "little", signed=True) for vs in SCORES.values() for v in vs if abs(v) > 1}
    derandomised = []
    for node, messages in env.received(sid).items():
        for sender, step, payload in messages:
            if step != STEP_HELLO:   # the hello's ranges and ids are small public numbers
                assert not any(n in payload for n in needles), (step, sender, node)
            if step == STEP_R:
                assert len(payload) == 2 * 8 * WORDS       # d and t: one bit each per AND gate
                assert_balanced(payload)
                derandomised.append(payload)
    assert len(derandomised) == 6
    fills = [(n, s, st, p) for n, msgs in env.received(POOL_CHANNEL).items() for s, st, p in msgs]
    assert fills and {st for _, _, st, _ in fills} == {STEP_FILL}
    for node, sender, _, payload in fills:
        rows = payload[-(1 << 16):]                        # IKNP rows u_i = G(k0) ⊕ G(k1) ⊕ r
        assert_uniform_bytes(rows, f"fill from {sender} to {node}")
        assert not any(n in rows for n in needles), (sender, node)


def test_concurrent_sessions_share_the_pools_and_all_give_the_plaintext(env: Env) -> None:
    env.run(env.filled(4 * WORDS))

    async def four() -> list[tuple[str, list[bool]]]:
        return await asyncio.gather(*(env.threshold(k) for k in (-5, 0, 5, 10)))
    results = env.run(four())
    for (sid, bits), k in zip(results, (-5, 0, 5, 10)):
        assert bits == expected(k)
        assert set(map(tuple, triple_steps(env, sid).values())) <= {(STEP_R,), (STEP_T, STEP_U)}


def test_a_restarted_node_falls_back_to_iknp_with_its_peers_and_is_pooled_again_after_fills(env: Env) -> None:
    env.run(env.filled())
    before = set(env.lc.servers["alice"].core.pools.held("carlos"))
    env.run(env.restart("carlos"))
    assert env.level("carlos", "alice") == env.sending("carlos", "alice") == 0
    sid, bits = env.run(env.threshold(1))
    assert bits == expected(1)
    steps = triple_steps(env, sid)
    for (receiver, sender), got in steps.items():
        if "carlos" in (receiver, sender):
            assert got == [STEP_T, STEP_U], (receiver, sender, got)
        else:
            assert got == [STEP_R], (receiver, sender, got)
    # alice dropped what carlos no longer holds (a fill with the new carlos may have begun since)
    assert before and not before & set(env.lc.servers["alice"].core.pools.held("carlos"))
    env.run(env.filled())
    sid, bits = env.run(env.threshold(1))
    assert bits == expected(1)
    assert set(map(tuple, triple_steps(env, sid).values())) == {(STEP_R,)}


def test_bad_fills_are_refused_and_sessions_go_on(env: Env) -> None:
    env.run(env.filled())
    cluster = env.lc.cluster
    node = cluster.node("carlos")
    assert node.cert is not None and node.key is not None
    tls = TlsMaterial.load(cluster.ca, node.cert, node.key)
    sent = [p for s, st, p in env.received(POOL_CHANNEL)["alice"] if s == "carlos" and st == STEP_FILL]
    assert sent
    before = env.sending("alice", "carlos")
    forged = bytearray(sent[-1])
    forged[:16] = bytes(16)   # an OT setup alice never made with carlos
    cases = {"replayed": (STEP_FILL, sent[-1], "carlos"), "unknown setup": (STEP_FILL, bytes(forged), "carlos"),
             "malformed": (STEP_FILL, b"\x01" * 20, "carlos"), "unknown step": ("pool/other", sent[-1], "carlos"),
             "claims to be bob": (STEP_FILL, sent[-1], "bob")}

    async def send(step: str, payload: bytes, claimed: str) -> None:
        client = PeerClient(cluster, claimed, tls)
        try:
            await client.send("alice", POOL_CHANNEL, step, payload, 10.0)
        finally:
            await client.close()
    for case, (step, payload, claimed) in cases.items():
        with pytest.raises(SessionFailed) as err:
            env.run(send(step, payload, claimed))
        assert "alice refused" in str(err.value), (case, err.value)
        assert env.sending("alice", "carlos") == before, case
        assert env.sending("alice", "bob") >= WORDS, case
    sid, bits = env.run(env.threshold(2))
    assert bits == expected(2)


def test_fill_traffic_is_counted_apart_from_the_sessions(env: Env) -> None:
    env.run(env.filled())
    for name in TRIO:
        metrics = env.lc.servers[name].metrics
        for peer in set(TRIO) - {name}:
            assert metrics.pool_sent_bytes.labels(peer)._value.get() > 0
        scrape = {s.name: s for family in metrics.registry.collect() for s in family.samples}
        assert "mpc_triple_pool_words" in scrape
