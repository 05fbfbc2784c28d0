"""The one-round path over real node daemons (grpc.aio, mutual TLS, SQLite, loopback).

Once a query has run, a coordinator runs it again in one message per node on a long-lived
Control.Run stream: it states every node's shape (length, scale, input version) and, when every
pair holds one, the pair key each pair uses; each node checks its own entry and its keys, prepares
and computes at once. Peer messages travel on long-lived Peer.Stream calls, and a peer's message
that comes before this node's Run waits for it.

What must hold, tested here from the attacks and faults rather than from one example:
- results equal the plaintext's, and a keyed one-round sum sends nothing between the nodes;
- what the coordinator receives looks uniform and holds no input;
- a node whose input was replaced, or which restarted and forgot its keys, refuses before anything
  is shared, records no release, and the query is prepared anew (the caller sees only the result);
- a coordinator that states another node's shape falsely gets shares whose masks do not cancel
  (noise), and one that states a node's own shape falsely is refused by that node;
- malformed requests are answered on the stream, which goes on; a coordinator that goes away
  aborts its sessions; a peer message for a session that never comes is refused after its wait.

One four-node cluster serves the module (any participant set, any number of queries).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
import pytest

import mpc.node.core as node_core
from mpc.coordinator.client import Coordinator
from mpc.errors import PeerUnavailable, PolicyError, RemoteProtocolError, SessionFailed
from mpc.node import servicer
from mpc.protocols.circuit import CircuitParty
from mpc.protocols.compare import _layer_plan, triple_words
from mpc.protocols.contribution import vote_bits
from mpc.store import Store, Transfer
from mpc.transport.peers import PeerClient
from mpc.transport.tls import TlsMaterial, channel_options
from mpc.v1 import mpc_pb2, mpc_pb2_grpc

from .harness import ANY_QUERIES, LocalCluster, prepare_request, running_cluster
from .test_auctions import hoeffding_band, words_of
from .test_keyed import Env as KeyedEnv
from .test_vote import wait_until

FOUR = ("alice", "bob", "carlos", "david")
RAISES = {"alice": 3800, "bob": 2514, "carlos": 2982, "david": 3390}
BALLOTS = {"alice": [1, 0, 1], "bob": [1, 1, 0, 0], "carlos": [0, 0], "david": [1, 1, 1]}
BALANCE_ALPHA = 1e-8
VOTE_WORDS = triple_words(len(FOUR), vote_bits(len(FOUR)), 1)
# The second round of a vote's comparison among the four nodes (csa/1: two carry-save levels, then fan-in).
VOTE_SECOND_ROUND = "/" + _layer_plan(len(FOUR), vote_bits(len(FOUR)), 1)[1][0]


class Env(KeyedEnv):
    """test_keyed's environment (run, received, restart), with the one-round coordinator and records."""

    def coordinator(self, nodes: Sequence[str] = FOUR, **kwargs: Any) -> Coordinator:
        return Coordinator(self.lc.cluster, observer=self.views.observe, nodes=nodes, **kwargs)

    def _store(self, node: str) -> Store:
        return self.lc.store(node)

    def sessions(self, node: str) -> dict[str, Any]:
        with self._store(node) as store:
            return {r.session_id: r for r in store.list_sessions(limit=100_000)}

    def releases(self, node: str, input_name: str) -> list[Any]:
        with self._store(node) as store:
            return store.releases(input_name)

    async def filled(self, words: int = VOTE_WORDS) -> None:
        """Run the nodes' loop until every pool between them holds `words` words at both ends (the
        fills are background tasks of the daemons on this loop)."""
        pools = {n: self.lc.servers[n].core.pools for n in FOUR}
        deadline = time.monotonic() + 60
        while any(pools[a].level(b) < words or pools[b].sending_level(a) < words
                  for a in FOUR for b in FOUR if a != b):
            assert time.monotonic() < deadline, "the pools did not fill"
            await asyncio.sleep(0.01)   # yields to the fills running on this loop


@pytest.fixture(scope="module")
def env(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    stack = AsyncExitStack()
    lc = loop.run_until_complete(stack.enter_async_context(
        running_cluster(tmp_path_factory.mktemp("oneround"), 4, every_policy=ANY_QUERIES)))
    for node in FOUR:
        lc.put(node, "raise", [RAISES[node]], scalar=True, bounds=(0, 10_000))
        lc.put(node, "vec", [RAISES[node] * k for k in range(1, 33)], bounds=(0, 1_000_000))
        lc.put(node, "ballots", BALLOTS[node], kind="ballots")
        lc.put(node, "changing", [RAISES[node]], scalar=True, bounds=(0, 100_000))
    try:
        yield Env(loop, lc)
    finally:
        loop.run_until_complete(stack.aclose())


@asynccontextmanager
async def counting(c: Coordinator) -> AsyncIterator[list[str]]:
    """The session ids `c` ran in one round (each one-round attempt that gave a result)."""
    ran: list[str] = []
    inner = c._open_one_round

    async def counted(*args: Any, **kwargs: Any) -> Any:
        opened, known = await inner(*args, **kwargs)
        ran.append(opened.session_id)
        return opened, known
    c._open_one_round = counted   # type: ignore[method-assign]
    yield ran


# ---- results ---------------------------------------------------------------------------------------


def test_repeated_queries_run_in_one_round_and_give_the_plaintext_results(env: Env) -> None:
    yes = sum(sum(b) for b in BALLOTS.values())
    cast = sum(len(b) for b in BALLOTS.values())

    async def go() -> None:
        async with env.coordinator() as c, counting(c) as ran:
            for _ in range(3):
                assert (await c.sum("raise")).value == sum(RAISES.values())
                average = await c.average("raise")
                assert average.average == sum(RAISES.values()) / 4 and average.count == 4
                total = await c.sum("vec")
                assert total.value == [sum(RAISES.values()) * k for k in range(1, 33)]
                assert (await c.vote("ballots")).passed == (2 * yes >= cast)
                assert (await c.vote("ballots", threshold=yes)).passed
                assert not (await c.vote("ballots", threshold=yes + 1)).passed
                assert (await c.at_least("raise", 12_686)).bits == [True]
            # The first run of each of the 7 queries takes two rounds; the other 14 runs take one.
            assert len(ran) == 14
    env.run(go())


def vote_tickets(c: Coordinator) -> tuple[Any, ...]:
    """The pool tickets `c` holds for its next vote over the ballots (every ordered pair's, or none)."""
    return next((k.tickets for q, k in c._known.items() if q[2] == "ballots" and not q[1]), ())


async def ticketed(env: Env, c: Coordinator, yes: int, cast: int) -> None:
    """Vote until `c` holds every ordered pair's ticket for the next vote (the pools fill between)."""
    for _ in range(8):
        assert (await c.vote("ballots")).passed == (2 * yes >= cast)
        if len(vote_tickets(c)) == len(FOUR) * (len(FOUR) - 1):
            return
        await env.filled()
    raise AssertionError("the nodes handed out no complete set of pool tickets")


def test_repeated_votes_take_no_hello_once_the_nodes_have_handed_out_pool_tickets(env: Env) -> None:
    """After a one-round vote every node reserves, with each peer, the pool ranges of the next vote
    of the query and hands them to the coordinator; the next vote states them all, so no node sends
    a hello: each peer's first message carries its digest, its derandomisation and the first openings."""
    yes, cast = sum(sum(b) for b in BALLOTS.values()), sum(len(b) for b in BALLOTS.values())

    async def go() -> list[str]:
        async with env.coordinator() as c, counting(c) as ran:
            await ticketed(env, c, yes, cast)
            before = len(ran)
            for _ in range(3):
                await env.filled()
                assert (await c.vote("ballots")).passed == (2 * yes >= cast)
                assert len(vote_tickets(c)) == 12   # handed out anew by every vote
            return ran[before:]
    ran = env.run(go())
    assert len(ran) == 3
    for sid in ran:
        for node, got in env.received(sid).items():
            steps = [step for _, step, _ in got]
            assert "mpc/hello" not in steps and steps.count("triples/r") == 3, (node, steps)
            assert steps.count("agree/digest") == 3 and not any(s.startswith("triples/u") for s in steps)


def test_a_replayed_ticket_is_refused_as_stale_before_anything_is_shared_and_the_vote_runs_again_with_hellos(
        env: Env) -> None:
    """A coordinator that states spent tickets again: the receivers hold them no longer, every node
    refuses the session as stale before anything is shared and records no release; the coordinator
    runs the vote again in one round, with hellos (its shapes and keys still hold)."""
    yes, cast = sum(sum(b) for b in BALLOTS.values()), sum(len(b) for b in BALLOTS.values())

    async def go() -> tuple[set[str], str]:
        async with env.coordinator() as c, counting(c) as ran:
            await ticketed(env, c, yes, cast)
            query = next(q for q in c._known if q[2] == "ballots" and not q[1])
            used = c._known[query].tickets
            assert (await c.vote("ballots")).passed == (2 * yes >= cast)   # spends them
            before = {n: set(env.sessions(n)) for n in FOUR}
            c._known[query] = replace(c._known[query], tickets=used)   # a coordinator that states them again
            result = await c.vote("ballots")
            assert result.passed == (2 * yes >= cast)   # again, in a new session
            assert ran[-1] == result.session_id        # ... in one round
            stale = {sid for n in FOUR for sid in set(env.sessions(n)) - before[n] if sid != result.session_id}
            return stale, result.session_id
    stale, again = env.run(go())
    assert len(stale) == 1
    assert all("mpc/hello" in [st for _, st, _ in got] for got in env.received(again).values())
    sid = stale.pop()
    reasons = [env.sessions(n)[sid].reason for n in FOUR if sid in env.sessions(n)]
    assert any("holds no pool ticket" in r or "used before" in r for r in reasons), reasons
    assert all(env.sessions(n)[sid].status == "failed" for n in FOUR if sid in env.sessions(n))
    assert not [r for n in FOUR for r in env.releases(n, "ballots") if r.session_id == sid]
    assert all(env.views.share(sid, n) == b"" for n in FOUR)


def test_votes_of_one_query_side_by_side_leave_one_set_of_tickets_held_not_one_per_vote(env: Env) -> None:
    """Sessions of one query run side by side: one states the tickets, the others send hellos, and each
    ends handing out a fresh set. The coordinator keeps one set; a node drops the set it issued before
    for the query when it issues the next, so the ones nobody will state do not pile up (holding
    OTs, and the batches they are in, until evicted). The votes after still run, with hellos at worst
    once (a node kept another vote's set than the coordinator did: stale, then run again)."""
    yes, cast = sum(sum(b) for b in BALLOTS.values()), sum(len(b) for b in BALLOTS.values())
    pools = {n: env.lc.servers[n].core.pools for n in FOUR}

    def held() -> dict[tuple[str, str], int]:
        return {(n, p): pools[n].tickets(p) for n in FOUR for p in FOUR if p != n}

    async def go() -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        async with env.coordinator() as c:
            await ticketed(env, c, yes, cast)
            before = held()
            for _ in range(3):
                await env.filled()
                results = await asyncio.gather(*(c.vote("ballots") for _ in range(4)))
                assert all(r.passed == (2 * yes >= cast) for r in results)
            await env.filled()
            assert (await c.vote("ballots")).passed == (2 * yes >= cast)
            return before, held()
    before, after = env.run(go())
    assert all(after[k] <= before[k] for k in before), (before, after)


def test_a_ticket_stated_otherwise_to_one_node_fails_agreement_and_no_share_leaves(env: Env) -> None:
    """The tickets are in the session description: alice, told another id for bob's ranges with
    carlos, computes another digest, and every node refuses before its output share leaves. Tickets
    for a sum, which takes none, or missing a pair, are refused."""
    yes, cast = sum(sum(b) for b in BALLOTS.values()), sum(len(b) for b in BALLOTS.values())

    async def go() -> list[list[mpc_pb2.RunReply]]:
        async with env.coordinator() as c:
            await ticketed(env, c, yes, cast)
            known = next(k for q, k in c._known.items() if q[2] == "ballots" and not q[1])
        replies = []
        async with run_streams(env.lc) as calls:
            sid = secrets.token_hex(16)
            request = prepare_request(sid, "vote", "ballots", FOUR)
            for n in FOUR:
                tickets = [mpc_pb2.PoolTicket(receiver=t.receiver, sender=t.sender, segments=t.segments,
                                              id=secrets.token_bytes(16) if n == "alice" and
                                              (t.receiver, t.sender) == ("bob", "carlos") else t.id)
                           for t in known.tickets]
                await calls[n].write(mpc_pb2.RunRequest(prepare=request, shapes=known.shapes, length=1,
                                                        key_ids=known.key_ids(FOUR)[n], tickets=tickets))
            replies.append([r for n in FOUR for r in await answer(calls[n], sid)])
            async with env.coordinator() as c:   # alice took hers back above: a fresh set
                await ticketed(env, c, yes, cast)
                fresh = vote_tickets(c)
            for protocol, input_name, tickets in (("sum", "raise", fresh), ("vote", "ballots", fresh[1:])):
                sid = secrets.token_hex(16)
                shapes = known.shapes if input_name == "ballots" else await shapes_of(env.lc, "raise")
                await calls["alice"].write(mpc_pb2.RunRequest(prepare=prepare_request(sid, protocol, input_name,
                                                                                      FOUR),
                                                              shapes=shapes, length=1, tickets=tickets))
                replies.append(await answer(calls["alice"], sid))
        return replies
    lied, summed, partial = env.run(go())
    assert len(lied) == 4 and not any(r.words for r in lied)
    assert all("prepared a different session description" in r.error for r in lied), [r.error for r in lied]
    assert len(summed) == 1 and not summed[0].words and "takes none" in summed[0].error
    assert len(partial) == 1 and not partial[0].words and "each ordered pair" in partial[0].error


def test_made_up_ticket_ids_with_real_ranges_take_nothing_from_a_sender_and_spoil_no_ones_tickets(env: Env) -> None:
    """A coordinator sees its tickets' ranges, which name real batches of every pool, but not the key each
    id is a MAC under (mpc/ot/pool.py "Tickets"). One that states those ranges to one node with ids of its
    own making, as another coordinator might to spoil the tickets of this one, is refused as stale before
    anything is taken: the node claims no range as sender (its pools for each peer as they were) and takes
    none of its own tickets back as receiver; the coordinator whose tickets they are then votes with them,
    in one round and with no hello, and no session fails."""
    yes, cast = sum(sum(b) for b in BALLOTS.values()), sum(len(b) for b in BALLOTS.values())
    pools = env.lc.servers["alice"].core.pools
    peers = [p for p in FOUR if p != "alice"]

    def levels() -> tuple[dict[str, int], dict[str, int]]:
        return {p: pools.sending_level(p) for p in peers}, {p: pools.tickets(p) for p in peers}

    async def go() -> tuple[list[list[mpc_pb2.RunReply]], tuple[Any, ...], tuple[Any, ...], str, set[str],
                            set[str]]:
        async with env.coordinator() as c, counting(c) as ran:
            await ticketed(env, c, yes, cast)
            await env.filled()
            known = next(k for q, k in c._known.items() if q[2] == "ballots" and not q[1])
            before = levels()
            failed_before = {sid for sid, s in env.sessions("alice").items() if s.status == "failed"}
            replies, forged = [], set()
            async with run_streams(env.lc) as calls:
                for forge in ("sender", "every"):   # alice's own tickets as receiver stated truly, then made up too
                    sid = secrets.token_hex(16)
                    forged.add(sid)
                    tickets = [mpc_pb2.PoolTicket(receiver=t.receiver, sender=t.sender, segments=t.segments,
                                                  id=secrets.token_bytes(16) if forge == "every" or t.sender == "alice"
                                                  else t.id) for t in known.tickets]
                    await calls["alice"].write(mpc_pb2.RunRequest(prepare=prepare_request(sid, "vote", "ballots", FOUR),
                                                                  shapes=known.shapes, length=1,
                                                                  key_ids=known.key_ids(FOUR)["alice"], tickets=tickets))
                    replies.append(await answer(calls["alice"], sid))
            after = levels()
            result = await c.vote("ballots")
            assert result.passed == (2 * yes >= cast) and ran[-1] == result.session_id
            failed = {sid for sid, s in env.sessions("alice").items() if s.status == "failed"} - failed_before
            return replies, before, after, result.session_id, failed, forged
    replies, before, after, voted, failed, forged = env.run(go())
    for reply in replies:
        assert len(reply) == 1 and not reply[0].words, reply
        assert reply[0].code == "FAILED_PRECONDITION" and "holds no pool ticket" in reply[0].error, reply
        assert "nothing was shared" in reply[0].error, reply
    assert after == before
    steps = {node: [step for _, step, _ in got] for node, got in env.received(voted).items()}
    assert all("mpc/hello" not in s and "triples/r" in s for s in steps.values()), steps
    assert failed == forged, {sid: env.sessions("alice")[sid].reason for sid in failed - forged}


def test_a_keyed_one_round_sum_sends_nothing_between_the_nodes(env: Env) -> None:
    async def go() -> list[str]:
        async with env.coordinator() as c, counting(c) as ran:
            for _ in range(4):
                await c.sum("raise")
            return ran
    ran = env.run(go())
    assert len(ran) == 3
    # The first one-round run may still send seeds (its coordinator had not yet heard the keys);
    # from then on every pair holds one and the sum is keyed.
    assert env.received(ran[-1]) == {n: [] for n in FOUR}
    assert env.received(ran[-2]) == {n: [] for n in FOUR}


def test_a_keyed_sum_or_a_vote_ends_in_its_release_record_and_its_audit_entry_says_what_it_sent(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyed sum's share is all it sends, and it is there at release: its end ("done", the output share
    sent) is in the release's transaction, with no end record of its own. A vote (a program) records its
    release when its output share is ready, and its end with it. An unkeyed sum, whose release is
    recorded when the digests agree, records its end separately. Every audit entry reads the same."""
    ended: list[str] = []
    original = Store.set_session_status

    def noting(self: Store, session_id: str, *args: Any, **kwargs: Any) -> None:
        ended.append(session_id)
        original(self, session_id, *args, **kwargs)
    monkeypatch.setattr(Store, "set_session_status", noting)

    async def go() -> tuple[list[str], list[str]]:
        async with env.coordinator() as c, counting(c) as keyed:
            for _ in range(4):
                assert (await c.sum("raise")).value == sum(RAISES.values())
        async with env.coordinator(keyed=False) as c, counting(c) as other:
            for _ in range(2):
                assert (await c.sum("raise")).value == sum(RAISES.values())
                await c.vote("ballots")
        return keyed, other
    keyed, other = env.run(go())
    assert len(keyed) == 3 and len(other) == 2   # a new coordinator prepares each query in two rounds first
    assert keyed[-1] not in ended and keyed[-2] not in ended   # keyed (the pairs hold keys by then)
    unkeyed_sum, vote = other
    assert ended.count(unkeyed_sum) == len(FOUR) and vote not in ended, (other, ended)
    coordinator = "spiffe://mpc/coordinator/coordinator"   # the harness's coordinator certificate
    for node in FOUR:
        with env._store(node) as store:
            entries = {e.session_id: e for e in store.audit_log(limit=100_000)}
            for sid in (keyed[-1], *other):
                e = entries[sid]
                assert e.outcome == "done" and "not counted" in e.release, e
                assert Transfer("output share", coordinator, 1, 8) in e.sent, e
            assert entries[keyed[-1]].sent == (Transfer("output share", coordinator, 1, 8),)
            assert env.sessions(node)[keyed[-1]].status == "done"


def test_what_the_coordinator_receives_in_one_round_holds_no_input_and_looks_uniform(env: Env) -> None:
    async def go() -> list[str]:
        async with env.coordinator() as c, counting(c) as ran:
            for _ in range(41):
                assert (await c.sum("raise")).value == sum(RAISES.values())
            return ran
    ran = env.run(go())
    assert len(ran) == 40
    shares = [env.views.share(s, n) for s in ran for n in FOUR]
    assert all(len(s) == 8 for s in shares)
    assert len(set(shares)) == len(shares), "a share repeated across sessions"
    bits = np.unpackbits(np.frombuffer(b"".join(shares), dtype=np.uint8))
    assert abs(int(bits.sum()) - bits.size / 2) < hoeffding_band(bits.size, BALANCE_ALPHA)
    values = {int(words_of(s)[0]) for s in shares}
    assert not values & set(RAISES.values())
    assert min(values) >= 1 << 20   # none near a raw raise


def test_what_the_nodes_receive_in_one_round_votes_looks_uniform(env: Env) -> None:
    """One-round votes open their first layer beside the derandomisation: every opening and every
    triple message a node receives is still one-time padded by fresh random bits, so what each node
    receives, over many votes, is balanced bit by bit; the coordinator gets one bit share per node."""
    yes, cast = sum(sum(b) for b in BALLOTS.values()), sum(len(b) for b in BALLOTS.values())

    async def go() -> list[str]:
        async with env.coordinator() as c, counting(c) as ran:
            for _ in range(31):
                assert (await c.vote("ballots")).passed == (2 * yes >= cast)
            return ran
    ran = env.run(go())
    assert len(ran) == 30
    for node in FOUR:
        received = [(step, payload) for sid in ran for _, step, payload in env.received(sid)[node]]
        steps = {step for step, _ in received}
        assert any(step.startswith("triples/") for step in steps) and any(step.startswith("cmp/") for step in steps)
        # Openings, and the triples' messages (a pooled derandomisation, or IKNP's when a pool ran dry).
        padded = b"".join(p for step, p in received if step.startswith(("cmp/", "triples/")))
        bits = np.unpackbits(np.frombuffer(padded, dtype=np.uint8))
        assert bits.size >= 10_000
        assert abs(int(bits.sum()) - bits.size / 2) < hoeffding_band(bits.size, BALANCE_ALPHA), node
    shares = [env.views.share(sid, n) for sid in ran for n in FOUR]
    assert all(len(s) == 8 and int(words_of(s)[0]) in (0, 1) for s in shares)


# ---- stale statements: nothing is shared, the query is prepared anew --------------------------------


def test_a_replaced_input_is_refused_as_stale_and_the_query_prepared_anew(env: Env) -> None:
    async def go() -> tuple[list[str], str, str]:
        async with env.coordinator() as c, counting(c) as ran:
            assert (await c.sum("changing")).value == sum(RAISES.values())
            assert (await c.sum("changing")).value == sum(RAISES.values())
            before = set(env.sessions("bob"))
            env.lc.put("bob", "changing", [10_000], scalar=True, bounds=(0, 100_000), overwrite=True)
            result = await c.sum("changing")
            assert result.value == sum(RAISES.values()) - RAISES["bob"] + 10_000
            stale = [s for s in set(env.sessions("bob")) - before if s != result.session_id]
            assert len(stale) == 1
            again = await c.sum("changing")   # known again: one round
            assert again.value == result.value
            return ran, stale[0], again.session_id
    ran, stale, again = env.run(go())
    assert ran[-1] == again and stale not in ran
    record = env.sessions("bob")[stale]
    assert record.status == "failed" and "replaced" in record.reason and "nothing was shared" in record.reason
    # Bob released nothing in the stale session; no node's share of it reached the coordinator.
    assert not [r for r in env.releases("bob", "changing") if r.session_id == stale]
    assert [r for r in env.releases("alice", "changing") if r.session_id == again]
    assert env.views.share(stale, "bob") == b""


def test_sessions_of_a_query_side_by_side_that_all_find_it_stale_all_prepare_it_anew(env: Env) -> None:
    """Three sums of one query run side by side after bob's input was replaced: each is refused as stale in
    one round and prepared anew in two. Each dropped the query's cached statement, and all but the first
    found it gone (a KeyError out of Coordinator.sum before, for all but one of them)."""
    def bobs() -> int:
        with env.lc.store("bob") as store:
            return int(store.get_input("changing").values[0])

    async def go() -> list[int]:
        async with env.coordinator() as c:
            for _ in range(2):
                assert (await c.sum("changing")).value == sum(RAISES.values()) - RAISES["bob"] + bobs()
            value = bobs() + 1
            env.lc.put("bob", "changing", [value], scalar=True, bounds=(0, 100_000), overwrite=True)
            results = await asyncio.gather(*(c.sum("changing") for _ in range(3)))
            return [r.value for r in results] + [value]
    *values, bob = env.run(go())
    assert values == [sum(RAISES.values()) - RAISES["bob"] + bob] * 3


def test_a_share_whose_last_chunk_has_no_shape_fails_the_session_naming_the_node(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The coordinator states the next session of a query from the shapes the nodes' last replies carry:
    one without a shape (a node that is not this mpc, or a bug) would have made the next sum's result
    a vector of one ([12686] for 12686). It fails the session, naming the node, and the next one runs."""
    async def go() -> tuple[str, int]:
        async with env.coordinator() as c:
            assert (await c.sum("raise")).value == sum(RAISES.values())   # prepared: the next runs in one round
            with monkeypatch.context() as patched:
                patched.setattr(servicer, "_shape_to_wire", lambda shape: None)   # every node's last chunk
                try:
                    await c.sum("raise")
                    failed = ""
                except SessionFailed as exc:
                    failed = str(exc)
            return failed, (await c.sum("raise")).value
    failed, after = env.run(go())
    assert re.search(r"node \w+ sent the last chunk of its share without its shape", failed), failed
    assert after == sum(RAISES.values())


@pytest.mark.parametrize("field", ["session_id", "node"])
def test_a_prepare_reply_for_another_session_or_node_fails_the_session_before_anything_is_shared(
        env: Env, monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    """A prepare reply whose session id or node is not the one asked (a confused or mixed-up node) was
    taken as that node's; it now fails the session, naming the node, and every node aborts it."""
    core = env.lc.servers["bob"].core
    real = core.prepare

    def mixed(*args: Any, **kwargs: Any) -> Any:
        prepared = real(*args, **kwargs)
        return replace(prepared, **{field: "0" * 32 if field == "session_id" else "carlos"})
    monkeypatch.setattr(core, "prepare", mixed)

    async def go() -> str:
        async with env.coordinator(one_round=False) as c:
            with pytest.raises(SessionFailed) as failed:
                await c.sum("raise")
            return str(failed.value)
    message = env.run(go())
    assert "node bob answered its prepare for session" in message and "nothing was shared" in message, message


def test_a_restarted_node_refuses_the_keys_it_forgot_and_the_query_is_prepared_anew(env: Env) -> None:
    async def go() -> list[str]:
        async with env.coordinator() as c, counting(c) as ran:
            for _ in range(3):
                assert (await c.sum("raise")).value == sum(RAISES.values())
            await env.restart("carlos")
            for _ in range(3):
                assert (await c.sum("raise")).value == sum(RAISES.values())
            assert (await c.vote("ballots", threshold=1)).passed
            assert (await c.vote("ballots", threshold=1)).passed
            return ran
    ran = env.run(go())
    assert len(ran) >= 4
    # After the restart, carlos's refusals name the key it no longer holds.
    reasons = [r.reason for r in env.sessions("carlos").values() if r.status == "failed"]
    assert any("holds no pair key" in r and "nothing was shared" in r for r in reasons), reasons


# ---- a repeat run from its plan (NodeCore.repeat) ---------------------------------------------------------


Planned = list[tuple[str, str, bool, bytes]]


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> Planned:
    """Every NodeCore.repeat call: (node, session id, whether the session ran from a plan, its statement)."""
    calls: Planned = []
    original = node_core.NodeCore.repeat

    def spied(self: node_core.NodeCore, caller: Any, session_id: str, statement: bytes) -> Any:
        result = original(self, caller, session_id, statement)
        calls.append((self.me.name, session_id, result is not None, statement))
        return result
    monkeypatch.setattr(node_core.NodeCore, "repeat", spied)
    return calls


def from_plan(planned: Planned, session_id: str) -> set[str]:
    return {node for node, sid, hit, _ in planned if sid == session_id and hit}


def plan_statement(planned: Planned, node: str) -> bytes:
    """The statement of the last session `node` ran from a plan."""
    return [statement for n, _, hit, statement in planned if n == node and hit][-1]


def test_a_repeat_from_its_plan_gives_the_share_and_the_records_of_a_full_run(
        env: Env, planned: Planned) -> None:
    """A keyed sum that repeated a recorded query leaves a plan at each node; its next repeat runs from it.
    With two nodes made to run it in full and two from their plans, the shares still add up to the sum
    (same digest, masks and contribution), and every node's records of it read as a full run's do."""
    for node in FOUR:   # left by the tests before (a plan serves any coordinator of the same name)
        env.lc.servers[node].core._plans.clear()

    async def go() -> list[str]:
        ids = []
        async with env.coordinator() as c:
            for i in range(8):
                if i == 6:   # alice and carlos forget their plans: this one runs in full there
                    for node in ("alice", "carlos"):
                        env.lc.servers[node].core._plans.clear()
                result = await c.sum("raise")
                assert result.value == sum(RAISES.values())
                ids.append(result.session_id)
        return ids
    ids = env.run(go())
    # The first run takes two rounds; once every pair holds a key, a keyed repeat leaves the plans.
    first = next(i for i, sid in enumerate(ids) if from_plan(planned, sid))
    assert 2 <= first <= 3, [from_plan(planned, sid) for sid in ids]
    full, mixed = ids[first - 1], ids[6]   # a repeat run in full everywhere; one run both ways
    assert env.received(full) == {n: [] for n in FOUR}
    assert all(from_plan(planned, sid) == set(FOUR) for sid in (*ids[first:6], ids[7]))
    assert from_plan(planned, mixed) == {"bob", "david"}
    ids = ids[first - 1:]
    coordinator = "spiffe://mpc/coordinator/coordinator"
    for node in FOUR:
        assert env.received(ids[3])[node] == []
        with env._store(node) as store:
            entries = {e.session_id: e for e in store.audit_log(limit=100_000)}
            rows = {r.session_id: r for r in store.releases("raise")}
            events = {sid: [e for (e,) in store._conn.execute(   # type: ignore[union-attr]
                "SELECT event FROM audit WHERE session_id = ? ORDER BY seq", (sid,))] for sid in ids}
        for sid in ids[1:]:
            assert replace(entries[sid], session_id=full, started_at="", ended_at="") == replace(
                entries[full], started_at="", ended_at=""), (node, sid)
            assert entries[sid].sent == (Transfer("output share", coordinator, 1, 8),)
            assert "a repeat of an earlier release" in entries[sid].release
            assert (rows[sid].query, rows[sid].counted, rows[sid].epsilon) == (rows[full].query, False, None)
            assert events[sid] == events[full] == ["prepared", "released", "done"]
            assert env.sessions(node)[sid].status == "done"


def test_a_vectors_repeat_from_its_plan_is_masked_as_a_full_run_masks_it(env: Env, planned: Planned) -> None:
    """A plan's share is the words a full run would send for a vector too (a scalar's is made as Python
    ints, a vector's as an array): sessions where two nodes run in full and two from their plans, and
    sessions where all four run from them, open every element's sum."""
    for node in FOUR:
        env.lc.servers[node].core._plans.clear()
    expected = [sum(RAISES.values()) * k for k in range(1, 33)]

    async def go() -> list[str]:
        ids = []
        async with env.coordinator() as c:
            for i in range(7):
                if i in (4, 5):   # alice and carlos forget their plans: these run in full there
                    for node in ("alice", "carlos"):
                        env.lc.servers[node].core._plans.clear()
                result = await c.sum("vec")
                assert [int(v) for v in result.value] == expected, i
                ids.append(result.session_id)
        return ids
    ids = env.run(go())
    assert from_plan(planned, ids[3]) == from_plan(planned, ids[6]) == set(FOUR)
    assert from_plan(planned, ids[4]) == {"bob", "david"}


def test_a_plan_does_not_outlive_its_input_version_or_pair_keys_and_never_takes_an_id_twice(
        env: Env, planned: Planned, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a plan rests on is looked at again each time: a replaced input (bob's next session is refused
    as stale, and the new version's first release counts), a pair key forgotten (as after a restart),
    and the session id: a coordinator that reuses one with the very statement of its plan, or sends a
    malformed one, is refused by every node, which records the refusal and nothing else."""
    import mpc.coordinator.client as client
    for node in FOUR:
        env.lc.put(node, "planned", [RAISES[node]], scalar=True, bounds=(0, 100_000))

    async def go() -> tuple[str, str, str]:
        async with env.coordinator() as c:
            for _ in range(3):
                assert (await c.sum("planned")).value == sum(RAISES.values())
            env.lc.put("bob", "planned", [7_000], scalar=True, bounds=(0, 100_000), overwrite=True)
            replaced = await c.sum("planned")
            assert replaced.value == sum(RAISES.values()) - RAISES["bob"] + 7_000
            for _ in range(3):
                assert (await c.sum("planned")).value == replaced.value
            carlos = env.lc.servers["carlos"].core.pair_keys
            carlos._keys["alice"].clear()   # forgotten (a restart forgets them all)
            forgot = await c.sum("planned")
            assert forgot.value == replaced.value
            for _ in range(3):   # the pairs that made a new key make new plans
                assert (await c.sum("planned")).value == replaced.value
            last = (await c.sum("planned")).session_id
            monkeypatch.setattr(client, "secrets", type("Ids", (), {"token_hex": staticmethod(lambda n: last)}))
            with pytest.raises(SessionFailed, match="already exists"):
                await c.sum("planned")
        # The very statement of a plan (as alice took it last), with a malformed id or a taken one.
        statement = plan_statement(planned, "alice")
        async with run_streams(env.lc) as calls:
            for reused, refusal in (("Z" * 32, "32 lowercase hex"), (last, "already exists")):
                request = mpc_pb2.RunRequest.FromString(statement)
                request.prepare.session_id = reused
                for n in FOUR:
                    await calls[n].write(request)
                for n in FOUR:
                    (reply,) = await answer(calls[n], reused)
                    assert not reply.words and refusal in reply.error, (n, reply)
        return last, replaced.session_id, forgot.session_id
    last, replaced, forgot = env.run(go())
    assert from_plan(planned, last) == set(FOUR)
    assert "bob" not in from_plan(planned, replaced)
    assert not from_plan(planned, forgot) & {"alice", "carlos"}
    version = max(r.version for r in env.releases("bob", "planned"))
    counted = [r for r in env.releases("bob", "planned") if r.version == version and r.counted]
    assert len(counted) == 1, counted
    for node in FOUR:
        assert [r.session_id for r in env.releases(node, "planned")].count(last) == 1, node
        with env._store(node) as store:
            outcomes = [e.outcome for e in store.audit_log(limit=100_000) if e.session_id == last]
        assert outcomes == ["done", "refused", "refused"], (node, outcomes)
        assert env.sessions(node)[last].status == "done", node


def test_an_id_live_in_another_session_or_a_node_at_its_limits_gets_no_session_from_a_plan(
        env: Env, planned: Planned) -> None:
    """A session still running that has no record yet (a one-round vote waiting for its peers) holds its id:
    the plan's statement with that id is refused as a reused id, and nothing is recorded for it. A node at
    its limit of live sessions for the coordinator refuses a repeat it has a plan for, as it refuses any
    session; the other nodes' shares open nothing, and once the sessions held end, the plan serves again."""
    async def go() -> tuple[str, str, str]:
        async with env.coordinator() as c:
            for _ in range(4):
                assert (await c.sum("raise")).value == sum(RAISES.values())
            statement = plan_statement(planned, "alice")
            sid, vote = await vote_request(env.lc)
            async with run_streams(env.lc) as calls:
                await calls["alice"].write(vote)   # alice alone: her vote waits for her peers
                await wait_until(lambda: sid in env.lc.servers["alice"].core.sessions, "alice's vote")
                request = mpc_pb2.RunRequest.FromString(statement)
                request.prepare.session_id = sid
                await calls["alice"].write(request)
                (reply,) = await answer(calls["alice"], sid)
                assert not reply.words and "already exists" in reply.error, reply
            alice = mpc_pb2_grpc.ControlStub(c.channels.channel("alice"))
            held = [secrets.token_hex(16) for _ in range(16)]   # the default max_sessions_per_coordinator
            await asyncio.gather(*(alice.Prepare(prepare_request(h, "sum", "raise", FOUR, timeout_ms=60_000),
                                                 timeout=10) for h in held))
            try:
                with pytest.raises(SessionFailed, match="max_sessions_per_coordinator") as busy:
                    await c.sum("raise")
            finally:
                await asyncio.gather(*(alice.Abort(mpc_pb2.AbortRequest(session_id=h, reason="limit probe"),
                                                   timeout=10) for h in held))
            refused = re.search(r"session ([0-9a-f]{32})", str(busy.value))
            assert refused is not None
            again = await c.sum("raise")
            assert again.value == sum(RAISES.values())
            return sid, refused.group(1), again.session_id
    sid, refused, again = env.run(go())
    assert not [r for r in env.releases("alice", "raise") if r.session_id == sid]
    assert env.sessions("alice")[sid].status != "done"
    assert from_plan(planned, refused) == {"bob", "carlos", "david"}
    assert refused not in env.sessions("alice")   # refused at prepare: audited, no session row
    assert from_plan(planned, again) == set(FOUR)


# ---- a coordinator that states falsely ----------------------------------------------------------------


@asynccontextmanager
async def run_streams(lc: LocalCluster) -> AsyncIterator[dict[str, Any]]:
    """A raw Control.Run stream to every node, with the cluster's coordinator certificate."""
    me = lc.cluster.require_coordinator()
    creds = TlsMaterial.load(lc.cluster.ca, me.cert, me.key).channel_credentials()
    channels = {n: grpc.aio.secure_channel(lc.cluster.node(n).address, creds, options=channel_options(n))
                for n in FOUR}
    calls = {n: mpc_pb2_grpc.ControlStub(ch).Run() for n, ch in channels.items()}
    try:
        yield calls
    finally:
        for call in calls.values():
            call.cancel()
        for ch in channels.values():
            await ch.close()


async def shapes_of(lc: LocalCluster, input_name: str) -> dict[str, mpc_pb2.Shape]:
    async with Coordinator(lc.cluster) as c:
        return {s.name: mpc_pb2.Shape(length=i.length or 1, frac_bits=i.frac_bits, is_scalar=i.scalar,
                                      input_version=i.version)
                for s in await c.status() for i in s.inputs if i.name == input_name}


async def vote_request(lc: LocalCluster) -> tuple[str, mpc_pb2.RunRequest]:
    """A fresh one-round vote over every node's ballots, stating their shapes truthfully (unkeyed)."""
    shapes = await shapes_of(lc, "ballots")
    sid = secrets.token_hex(16)
    return sid, mpc_pb2.RunRequest(prepare=prepare_request(sid, "vote", "ballots", FOUR), length=1,
                                   shapes={n: mpc_pb2.Shape(length=1, is_scalar=True, input_version=s.input_version)
                                           for n, s in shapes.items()})


async def answer(call: Any, session_id: str) -> list[mpc_pb2.RunReply]:
    """Replies for one session until its share is complete or it is refused."""
    replies: list[mpc_pb2.RunReply] = []
    while True:
        reply = await asyncio.wait_for(call.read(), 20)
        assert reply is not grpc.aio.EOF
        if reply.session_id != session_id:
            continue
        replies.append(reply)
        if reply.code or reply.offset + len(reply.words) // 8 >= reply.total_length:
            return replies


def test_a_run_request_with_fields_the_node_does_not_know_is_refused(env: Env) -> None:
    """A newer coordinator's RunRequest may carry a field that changes what it asks for: a node that ran it
    without that field would run another session than the one asked for. Refused at once, naming the
    fields, audited, with nothing run (as a prepare request with unknown fields always was)."""
    async def go() -> tuple[str, mpc_pb2.RunReply]:
        sid, request = await vote_request(env.lc)
        newer = mpc_pb2.RunRequest.FromString(request.SerializeToString() + bytes([0x98, 0x06, 0x01]))  # field 99
        async with run_streams(env.lc) as calls:
            await calls["alice"].write(newer)
            [reply] = await answer(calls["alice"], sid)
        return sid, reply
    sid, reply = env.run(go())
    assert reply.code == grpc.StatusCode.INVALID_ARGUMENT.name, reply
    assert "run request has fields this node does not know [99]" in reply.error, reply
    assert sid not in env.sessions("alice")
    assert [e.outcome for e in env.audit("alice", sid)] == ["refused"]


def test_a_false_statement_of_another_nodes_shape_is_refused_keyed_and_unkeyed(env: Env) -> None:
    """Alice alone is told that bob holds another version. Keyed, no node could tell from the others (the
    sum sends nothing between the nodes), but the statement is in her release: a query with that version
    of bob's was never released, so it is no repeat, and a keyed sum runs only as one
    (mpc/protocols/pairing.py "Repeats only"): she refuses before her share leaves. (Were it a repeat,
    the statement is in the masks' session digest: hers would not cancel, and the sum would be noise.)
    Unkeyed, the digests the nodes exchange differ and every node refuses before anything that depends
    on an input leaves it."""
    async def go() -> tuple[list[int], list[dict[str, str]]]:
        async with env.coordinator() as c:
            for _ in range(3):   # the query becomes known, with every pair's key
                await c.sum("raise")
            known = next(k for q, k in c._known.items() if q[2] == "raise")
        shapes, key_ids = known.shapes, known.key_ids(FOUR)
        assert key_ids
        totals: list[int] = []
        errors: list[dict[str, str]] = []
        async with run_streams(env.lc) as calls:
            for lie, keyed in ((False, True), (True, True), (True, False)):
                sid = secrets.token_hex(16)
                request = prepare_request(sid, "sum", "raise", FOUR)
                for n in FOUR:
                    stated = dict(shapes)
                    if lie and n == "alice":
                        stated["bob"] = mpc_pb2.Shape(length=1, is_scalar=True,
                                                      input_version=shapes["bob"].input_version + 1)
                    await calls[n].write(mpc_pb2.RunRequest(prepare=request, shapes=stated, length=1,
                                                            key_ids=key_ids[n] if keyed else {}))
                total, refused = 0, {}
                for n in FOUR:
                    last = (await answer(calls[n], sid))[-1]
                    if last.code:
                        refused[n] = last.error
                    else:
                        total += int(words_of(last.words)[0])
                totals.append(total % (1 << 64))
                errors.append(refused)
        return totals, errors
    (truthful, _, _), (none, keyed_lie, unkeyed_lie) = env.run(go())
    assert truthful == sum(RAISES.values()) and none == {}
    assert list(keyed_lie) == ["alice"], keyed_lie
    assert "a keyed sum runs only as a repeat of a recorded release" in keyed_lie["alice"] and \
        "nothing was shared" in keyed_lie["alice"], keyed_lie
    assert sorted(unkeyed_lie) == sorted(FOUR) and all(
        "prepared a different session description" in e and "nothing that depends on an input was sent" in e
        for e in unkeyed_lie.values()), unkeyed_lie


def test_a_false_statement_of_a_nodes_own_shape_or_keys_is_refused_before_anything_is_shared(env: Env) -> None:
    async def go() -> list[mpc_pb2.RunReply]:
        shapes = await shapes_of(env.lc, "raise")
        refusals = []
        async with run_streams(env.lc) as calls:
            wrong = dict(shapes)
            wrong["alice"] = mpc_pb2.Shape(length=1, is_scalar=True, input_version=shapes["alice"].input_version + 7)
            peers = {p: secrets.token_bytes(16) for p in FOUR if p != "alice"}
            for stated, keys in ((wrong, {}), (shapes, peers), (shapes, {"bob": secrets.token_bytes(16)})):
                sid = secrets.token_hex(16)
                await calls["alice"].write(mpc_pb2.RunRequest(prepare=prepare_request(sid, "sum", "raise", FOUR),
                                                              shapes=stated, length=1, key_ids=keys))
                refusals += await answer(calls["alice"], sid)
        return refusals
    refusals = env.run(go())
    assert len(refusals) == 3 and not any(r.words for r in refusals)
    own, unheld, partial = refusals
    assert own.stale and own.code == "FAILED_PRECONDITION" and "nothing was shared" in own.error
    assert unheld.stale and "holds no pair key" in unheld.error
    assert not partial.stale and partial.code == "INVALID_ARGUMENT" and "exactly node alice's peers" in partial.error


def test_a_malformed_run_request_is_answered_and_the_stream_goes_on(env: Env) -> None:
    async def go() -> tuple[mpc_pb2.RunReply, mpc_pb2.RunReply]:
        me = env.lc.cluster.require_coordinator()
        creds = TlsMaterial.load(env.lc.cluster.ca, me.cert, me.key).channel_credentials()
        channel = grpc.aio.secure_channel(env.lc.cluster.node("alice").address, creds,
                                          options=channel_options("alice"))
        try:
            call = channel.stream_stream("/mpc.v1.Control/Run", request_serializer=lambda b: b,
                                         response_deserializer=mpc_pb2.RunReply.FromString)()
            await call.write(b"\xff\xff\xff")
            bad = await asyncio.wait_for(call.read(), 10)
            sid = secrets.token_hex(16)
            await call.write(mpc_pb2.RunRequest(prepare=prepare_request(sid, "sum", "nosuch", FOUR),
                                                length=1).SerializeToString())
            refused = await asyncio.wait_for(call.read(), 10)
            call.cancel()
            return bad, refused
        finally:
            await channel.close()
    bad, refused = env.run(go())
    assert bad.code == "INVALID_ARGUMENT" and "malformed" in bad.error
    assert refused.code == "NOT_FOUND" and "nosuch" in refused.error


def test_peer_messages_that_come_before_a_nodes_run_wait_for_it(env: Env) -> None:
    """Alice and bob start an unkeyed vote first; their messages to carlos and david wait there."""
    async def go() -> bool:
        sid, request = await vote_request(env.lc)
        async with run_streams(env.lc) as calls:
            for n in ("alice", "bob"):
                await calls[n].write(request)
            await asyncio.sleep(0.3)   # the early messages are at carlos and david by now (not a wait for them)
            for n in ("carlos", "david"):
                await calls[n].write(request)
            bits = 0
            for n in FOUR:
                replies = await answer(calls[n], sid)
                assert not replies[-1].code, replies[-1].error
                bits ^= int(words_of(replies[-1].words)[0])
        return bool(bits)
    yes = sum(sum(b) for b in BALLOTS.values())
    assert env.run(go()) == (2 * yes >= sum(len(b) for b in BALLOTS.values()))


def test_a_peer_message_for_a_session_that_never_comes_is_refused_after_its_wait(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message of a one-round session waits for its session, then is refused; one of a two-round
    session (whose every node prepared before any computes) is refused at once. On the stream the
    peer answers only a refusal, which reaches the sender's session as a refused call's error would."""
    alice = env.lc.servers["alice"]
    refusals: list[tuple[str, str, str, float]] = []
    monkeypatch.setattr(alice.peers, "on_refusal", lambda s, p, m, _: refusals.append((s, p, m, time.monotonic())))

    async def go() -> list[tuple[str, str, float]]:
        async with env.coordinator() as c:
            await c.sum("raise")   # the channels are up: what follows goes on the streams
        waited = []
        for one_round in (True, False):
            # The one-round message waits out a short wait; the other would not be refused within a long one.
            monkeypatch.setattr(node_core, "SESSION_WAIT_S", 0.5 if one_round else 60.0)
            sid = secrets.token_hex(16)
            refusals.clear()
            sent = time.monotonic()
            monkeypatch.setattr(alice.peers, "one_round", lambda _: one_round)
            await alice.peers.send("bob", sid, "mpc/hello", b"\x00", 5.0)
            for _ in range(3000):   # bounded: until the refusal is back
                if refusals:
                    break
                await asyncio.sleep(0.01)
            assert refusals and refusals[0][:2] == (sid, "bob"), refusals
            waited.append((sid, refusals[0][2], refusals[0][3] - sent))
        return waited
    (sid1, message1, wait1), (sid2, message2, wait2) = env.run(go())
    for sid, message in ((sid1, message1), (sid2, message2)):
        assert f"session {sid}" in message and "unknown session" in message and "NOT_FOUND" in message
    assert wait1 >= 0.5 and wait2 < 60.0   # (the waits' own bounds, not the machine's speed)


def _outcomes() -> tuple[dict[str, Any], Callable[[str], Callable[[Any], None]]]:
    """What each posted message's `done` was told, by session id, and the `done` for a session."""
    told: dict[str, Any] = {}

    def done_for(sid: str) -> Callable[[Any], None]:
        def done(failure: Any) -> None:
            assert sid not in told, f"{sid} told twice"
            told[sid] = failure
        return done
    return told, done_for


def test_a_posted_message_past_its_deadline_is_not_written_and_its_sender_hears_so(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message posted for the stream whose deadline has passed before its turn's write is dropped:
    its sender is told that bob did not take it in time, and bob never sees it; the messages posted
    with it and after it go out on the same stream (bob refuses them: their sessions are unknown)."""
    alice = env.lc.servers["alice"]
    refusals: list[tuple[str, str, str]] = []
    monkeypatch.setattr(alice.peers, "on_refusal", lambda s, p, m, _: refusals.append((s, p, m)))
    monkeypatch.setattr(alice.peers, "one_round", lambda _: False)   # refused at once, not after a wait
    late, live, later = (secrets.token_hex(16) for _ in range(3))
    outcomes, done_for = _outcomes()

    async def go() -> None:
        async with env.coordinator() as c:
            await c.sum("raise")   # the channels are up: what follows goes on the stream
        stream = alice.peers._stream("bob")
        assert stream is not None
        now = asyncio.get_running_loop().time()
        for sid, deadline in ((late, now - 1.0), (live, now + 10.0)):
            alice.peers.post("bob", sid, "mpc/hello", b"\x00", deadline, done_for(sid))
        assert not outcomes   # never told before post returns
        await alice.peers.send("bob", later, "mpc/hello", b"\x00", 10.0)   # a later turn, same stream
        await wait_until(lambda: {live, later} <= {s for s, _, _ in refusals}, "both written messages refused")
        assert alice.peers._stream("bob") is stream and stream.failure is None
    env.run(go())
    assert outcomes[live] is None
    assert isinstance(outcomes[late], PeerUnavailable)
    assert f"session {late}: alice -> node bob" in str(outcomes[late]) and "in time" in str(outcomes[late])
    refused = {s for s, _, _ in refusals}
    assert {live, later} <= refused and late not in refused, refusals
    assert not any(m[0] == late for m in env.lc.recorder.received["bob"])


def test_messages_posted_while_a_write_is_held_up_wait_behind_it_in_order_and_expire_there(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """One writer per peer: what is posted while its write is held up (bob's stream not taking it)
    goes out after it, in the order posted, and a message whose deadline passes while it waits is
    not written; its sender hears so. The stream is held up by gating alice's writes to bob."""
    alice = env.lc.servers["alice"]
    refusals: list[tuple[str, str, str]] = []
    monkeypatch.setattr(alice.peers, "on_refusal", lambda s, p, m, _: refusals.append((s, p, m)))
    monkeypatch.setattr(alice.peers, "one_round", lambda _: False)
    first, short, after = (secrets.token_hex(16) for _ in range(3))
    outcomes, done_for = _outcomes()
    written: list[str] = []

    async def go() -> None:
        async with env.coordinator() as c:
            await c.sum("raise")
        stream = alice.peers._stream("bob")
        assert stream is not None
        gate = asyncio.Event()
        send = stream.send

        async def held(message: mpc_pb2.StreamMessage) -> None:
            written.append((message.bundle[0].header if message.bundle else message.header).session_id)
            if not gate.is_set():
                await asyncio.wait_for(gate.wait(), 10)
            await send(message)
        monkeypatch.setattr(stream, "send", held)
        loop = asyncio.get_running_loop()
        alice.peers.post("bob", first, "mpc/hello", b"\x00", loop.time() + 10.0, done_for(first))
        await wait_until(lambda: written == [first], "the first write to start")
        deadline = loop.time() + 0.2
        alice.peers.post("bob", short, "mpc/hello", b"\x00", deadline, done_for(short))
        alice.peers.post("bob", after, "mpc/hello", b"\x00", loop.time() + 10.0, done_for(after))
        await wait_until(lambda: loop.time() > deadline, "the short deadline to pass")
        assert written == [first] and not outcomes   # both wait behind the held write
        gate.set()
        await wait_until(lambda: len(outcomes) == 3, "every sender to hear")
        await wait_until(lambda: {first, after} <= {s for s, _, _ in refusals}, "the written messages refused")
    env.run(go())
    assert written == [first, after]
    assert outcomes[first] is None and outcomes[after] is None
    assert isinstance(outcomes[short], PeerUnavailable) and "in time" in str(outcomes[short])
    assert short not in {s for s, _, _ in refusals}


async def vote_failure(env: Env, threshold: int) -> BaseException | None:
    """Run a vote on "ballots" through a new coordinator; returns how it failed (None: it did not)."""
    async with env.coordinator() as c:
        try:
            await c.vote("ballots", threshold=threshold)
        except (SessionFailed, PeerUnavailable) as exc:
            return exc
        return None


def test_a_session_aborted_while_compute_lets_its_first_messages_out_records_nothing_more(env: Env) -> None:
    """alice's compute starts after the peers' digests have arrived (they wait as early messages); the
    coordinator's Abort is handled in the turn in which compute lets its first messages out. Compute
    must stop there: no release is recorded for the session at alice, and nothing value-dependent
    (the comparison's openings) leaves alice."""
    alice = env.lc.servers["alice"].core
    compute, dispatch = alice.compute, alice._dispatch
    seen: dict[str, Any] = {}

    async def late_compute(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)   # the peers' digests arrive first (session.early)
        return await compute(*args, **kwargs)

    def hooked(session: Any, events: list[Any]) -> None:
        dispatch(session, events)
        if "sid" not in seen and session.early and any(getattr(e, "step", "") == node_core.STEP_DIGEST
                                                       for e in events):
            seen["sid"] = session.session_id
            # the Abort, handled in the loop turn of compute's yield after its first messages
            asyncio.get_running_loop().call_soon(alice.abort, session.coordinator, session.session_id, "test")

    async def go() -> BaseException | None:
        alice.compute = late_compute  # type: ignore[method-assign]
        alice._dispatch = hooked  # type: ignore[method-assign]
        try:
            return await vote_failure(env, threshold=1)
        finally:
            alice.compute, alice._dispatch = compute, dispatch  # type: ignore[method-assign]
    failure = env.run(go())
    sid = seen.get("sid")
    assert sid is not None and failure is not None and "nothing was revealed" in str(failure), failure
    assert env.sessions("alice")[sid].status == "aborted"
    assert not [r for r in env.releases("alice", "ballots") if r.session_id == sid]
    from_alice = [step for sender, step, _ in env.received(sid).get("bob", []) if sender == "alice"]
    assert not [step for step in from_alice if step.startswith("cmp/")], from_alice


def test_a_vote_that_fails_after_its_first_openings_releases_nothing_and_records_no_release(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program's release is recorded when its output share is ready: its openings between the nodes
    are masked by one-time triples, so they reveal nothing without that share. Every node here fails
    the vote on the comparison's second round, after the digests agreed and the first openings went
    out: the session fails everywhere, no output share reaches the coordinator, and no node records
    a release for it (so it takes nothing from any budget)."""
    failing: set[str] = set()
    receive = CircuitParty.receive

    def second_round_fails(self: CircuitParty, sender: str, step: str, payload: bytes) -> Any:
        if step.endswith(VOTE_SECOND_ROUND):
            failing.add(self.session_id)
            raise RemoteProtocolError(f"session {self.session_id}: a test fault in the comparison's second round")
        return receive(self, sender, step, payload)
    monkeypatch.setattr(CircuitParty, "receive", second_round_fails)

    failure = env.run(vote_failure(env, threshold=2))
    assert failure is not None and len(failing) == 1, failure
    [sid] = failing
    for node in FOUR:
        assert env.sessions(node)[sid].status == "failed"
        assert not [r for r in env.releases(node, "ballots") if r.session_id == sid], node
        # the first openings had left before: value-dependent, and masked
        assert [step for _, step, _ in env.received(sid).get(node, []) if step.endswith("/csa/0")], node
    assert not any(env.views.share(sid, node) for node in FOUR), "an output share reached the coordinator"


def test_messages_queued_when_the_peer_client_closes_are_reported_not_lost(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PeerClient that closes with messages queued for a stream tells each sender (PeerUnavailable)
    instead of leaving it to wait out its deadline. A client of alice's identity of its own, so that
    alice's node keeps its own."""
    alice = env.lc.servers["alice"]
    outcomes, done_for = _outcomes()
    sids = [secrets.token_hex(16) for _ in range(3)]

    async def go() -> None:
        client = PeerClient(env.lc.cluster, "alice", alice.tls)
        monkeypatch.setattr(client, "one_round", lambda _: False)
        try:
            with pytest.raises(SessionFailed):   # bob knows no such session; the channel is up after it
                await client.send("bob", secrets.token_hex(16), "mpc/hello", b"\x00", 10.0)
            await wait_until(lambda: client._stream("bob") is not None, "the stream to bob")
            loop = asyncio.get_running_loop()
            for sid in sids:   # queued in this turn; the writer has not run yet
                client.post("bob", sid, "mpc/hello", b"\x00", loop.time() + 10.0, done_for(sid))
        finally:
            await client.close()
    env.run(go())
    assert set(outcomes) == set(sids)
    for sid in sids:
        assert isinstance(outcomes[sid], PeerUnavailable) and "closing" in str(outcomes[sid]), outcomes[sid]


def test_a_bundle_is_delivered_in_order_and_a_bad_one_refused_whole(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages that leave together for one peer travel as one stream message; a bundle that mixes
    sessions or carries a header besides is refused."""
    alice = env.lc.servers["alice"]
    refusals: list[tuple[str, str, str]] = []
    monkeypatch.setattr(alice.peers, "on_refusal", lambda s, p, m, _: refusals.append((s, p, m)))

    async def go() -> list[tuple[str, str, str]]:
        async with env.coordinator() as c:
            await c.sum("raise")   # the channels are up: what follows goes on the stream
        stream = alice.peers._stream("bob")
        assert stream is not None
        header = mpc_pb2.PeerHeader(session_id=secrets.token_hex(16), step="mpc/hello", sender="alice")
        other = mpc_pb2.PeerHeader(session_id=secrets.token_hex(16), step="mpc/hello", sender="alice")
        await stream.send(mpc_pb2.StreamMessage(bundle=[mpc_pb2.PeerMessage(header=header),
                                                        mpc_pb2.PeerMessage(header=other)]))
        for _ in range(300):
            if refusals:
                break
            await asyncio.sleep(0.01)
        return refusals
    refused = env.run(go())
    assert len(refused) == 1 and "all of one session" in refused[0][2] and "INVALID_ARGUMENT" in refused[0][2]


def test_a_coordinator_that_goes_away_aborts_its_one_round_sessions(env: Env) -> None:
    async def go() -> str:
        sid, request = await vote_request(env.lc)
        async with run_streams(env.lc) as calls:
            await calls["alice"].write(request)   # the others never hear of it: alice waits for them
            for _ in range(200):   # bounded: until alice has the session
                if sid in env.lc.servers["alice"].core.sessions:
                    break
                await asyncio.sleep(0.01)
        for _ in range(200):       # bounded: until alice has dropped it
            if sid not in env.lc.servers["alice"].core.sessions:
                break
            await asyncio.sleep(0.01)
        return sid
    sid = env.run(go())
    record = env.sessions("alice")[sid]
    assert record.status == "aborted" and "went away" in record.reason


def test_a_coordinator_ends_its_run_streams_as_grpc_ends_calls_leaving_no_operation_to_answer_later(env: Env) -> None:
    """Closed with every session answered, a coordinator half-closes each Run stream, the node's handler
    returns, and gRPC's core has answered every operation of the call when close returns: the reader ends
    on the stream's end only once gRPC's own task has the status OK. A cancelled call is answered later,
    perhaps once the loop has closed, and the next loop of the process then logs "Event loop is closed"
    (mpc/aio.py; it failed CI once). (The nodes' pool fills, gRPC calls of their own, may be under way
    at any time, so the loop's status waits are not compared here; tests/unit/test_long_call.py does.)"""
    async def go() -> list[tuple[str, Any, bool]]:
        ends: list[tuple[str, Any, bool]] = []
        for _ in range(5):
            async with env.coordinator() as c, counting(c) as ran:
                for _ in range(2):   # the second of each in one round, on the Run streams
                    await c.sum("raise")
                    await c.vote("ballots", threshold=1)
                streams = dict(c._runs)
            assert len(ran) == 2
            ends += [(str(s.failure), await s.call.code(), s.writer.done()) for s in streams.values()]
        return ends
    ends = env.run(go())
    assert len(ends) == 5 * len(FOUR)
    assert set(ends) == {("the far end ended the stream", grpc.StatusCode.OK, True)}


def test_a_coordinator_that_closes_while_a_node_still_runs_its_session_cuts_the_stream_at_once(env: Env) -> None:
    """A session whose wait the coordinator gave up may still run at a node: closing then cancels the
    stream at once (the node aborts the session), not waiting for the node to end it."""
    async def go() -> tuple[str, BaseException | None]:
        sid, request = await vote_request(env.lc)
        c = Coordinator(replace(env.lc.cluster, connect_timeout_s=600.0), nodes=FOUR)
        async with c:
            stream = c._run_stream("alice")
            stream.sessions[sid] = lambda reply: None
            stream.send(sid, request.SerializeToString())   # the others never hear of it: alice waits for them
            await wait_until(lambda: sid in env.lc.servers["alice"].core.sessions, "alice has the session")
            del stream.sessions[sid]   # as a wait that timed out leaves it
        await wait_until(lambda: sid not in env.lc.servers["alice"].core.sessions, "alice dropped the session")
        return sid, stream.failure
    sid, failure = env.run(go(), timeout=60)
    assert str(failure) == "the stream was closed"
    record = env.sessions("alice")[sid]
    assert record.status == "aborted" and "went away" in record.reason, record


def test_messages_of_a_turn_larger_together_than_a_message_limit_go_out_and_the_stream_survives(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five messages of nearly a chunk each, to one peer in one turn: bundles stay within a chunk, so
    no stream message passes gRPC's limit and the stream (shared by every session) goes on."""
    alice = env.lc.servers["alice"]
    refusals: list[tuple[str, str, str]] = []
    monkeypatch.setattr(alice.peers, "on_refusal", lambda s, p, m, _: refusals.append((s, p, m)))

    async def go() -> None:
        async with env.coordinator() as c:
            await c.sum("raise")
        stream = alice.peers._stream("bob")
        assert stream is not None
        sid = secrets.token_hex(16)   # no session: each message is refused, on the same stream
        await asyncio.gather(*(alice.peers.send("bob", sid, f"mpc/x{i}", secrets.token_bytes(900_000), 10.0)
                               for i in range(5)))
        for _ in range(1000):   # bounded: until every refusal is back
            if len(refusals) >= 5:
                break
            await asyncio.sleep(0.01)
        assert alice.peers._stream("bob") is stream and stream.failure is None
        async with env.coordinator() as c:
            assert (await c.sum("raise")).value == sum(RAISES.values())
    env.run(go())
    assert len(refusals) == 5 and all("unknown session" in m for _, _, m in refusals), refusals


def test_only_a_participant_can_end_a_session_by_a_refusal_and_a_broken_stream_ends_it_at_once(env: Env) -> None:
    """Alice alone starts a one-round vote (the others never hear of it) and waits for her peers. A
    refusal claimed by a node that is no participant changes nothing; when her stream to bob ends
    with her messages in flight, the session fails at once, naming bob, not at its deadline."""
    trio = ("alice", "bob", "carlos")
    alice = env.lc.servers["alice"]

    async def go() -> str:
        shapes = await shapes_of(env.lc, "ballots")
        sid = secrets.token_hex(16)
        request = mpc_pb2.RunRequest(prepare=prepare_request(sid, "vote", "ballots", trio, timeout_ms=60_000),
                                     length=1, shapes={n: mpc_pb2.Shape(length=1, is_scalar=True,
                                                                        input_version=shapes[n].input_version)
                                                       for n in trio})
        async with env.coordinator() as c:
            for _ in range(2):   # alice's streams to her peers are up (a keyed sum would send nothing)
                await c.vote("ballots")
        async with run_streams(env.lc) as calls:
            await calls["alice"].write(request)
            for _ in range(500):   # bounded: until alice has the session and has written to bob
                session = alice.core.sessions.get(sid)
                if session is not None and session.sent:
                    break
                await asyncio.sleep(0.01)
            alice.core.peer_refused(sid, "david", "forged", False)   # david is no participant
            assert sid in alice.core.sessions
            stream = alice.peers._stream("bob")
            assert stream is not None
            stream.close()
            for _ in range(500):   # bounded: well within the session's 60 s
                if sid not in alice.core.sessions:
                    break
                await asyncio.sleep(0.01)
            reply = await answer(calls["alice"], sid)
        return reply[-1].error
    error = env.run(go())
    assert "node bob" in error and "stream to it ended" in error, error


def test_peer_messages_for_a_session_a_node_refused_are_refused_at_once(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused request leaves no session row, yet a one-round session's peers may already be
    sending: their messages, whether they came before the refusal (waiting for the Run) or after it,
    are refused at once, naming the refusal, and never wait out SESSION_WAIT_S. So too when a node's
    budget refuses a repeated vote in its Run while the other nodes have started."""
    monkeypatch.setattr(node_core, "SESSION_WAIT_S", 60.0)   # a message that waited would be plain
    bob, carlos = env.lc.servers["bob"], env.lc.servers["carlos"]
    refusals: list[tuple[str, str, str]] = []
    monkeypatch.setattr(bob.peers, "on_refusal", lambda s, p, m, _: refusals.append((s, p, m)))
    monkeypatch.setattr(bob.peers, "one_round", lambda _: True)

    async def refused_by_bob(sid: str) -> str:
        for _ in range(2000):   # bounded (20 s, a third of the wait a parked message would take)
            got = [m for s, p, m in refusals if s == sid and p == "carlos"]
            if got:
                return got[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"carlos did not refuse bob's message for {sid}: {refusals}")

    async def refuse_at_carlos(calls: dict[str, Any], sid: str) -> None:
        await calls["carlos"].write(mpc_pb2.RunRequest(prepare=prepare_request(sid, "sum", "nosuch", FOUR), length=1))
        [reply] = await answer(calls["carlos"], sid)
        assert reply.code == "NOT_FOUND" and "nosuch" in reply.error, reply

    async def direct() -> list[str]:
        async with env.coordinator() as c:
            await c.sum("raise")   # the channels are up: what follows goes on the streams
        messages = []
        async with run_streams(env.lc) as calls:
            after = secrets.token_hex(16)        # bob's message comes after carlos refused
            await refuse_at_carlos(calls, after)
            await bob.peers.send("carlos", after, "mpc/hello", b"\x00", 5.0)
            messages.append(await refused_by_bob(after))
            before = secrets.token_hex(16)       # bob's message waits at carlos, then carlos refuses
            await bob.peers.send("carlos", before, "mpc/hello", b"\x00", 5.0)
            for _ in range(2000):                # bounded: until it waits there
                if before in carlos.core._awaited:
                    break
                await asyncio.sleep(0.01)
            assert before in carlos.core._awaited
            await refuse_at_carlos(calls, before)
            messages.append(await refused_by_bob(before))
        return messages
    for message in env.run(direct()):
        assert "was refused at node carlos" in message and "nosuch" in message and "FAILED_PRECONDITION" in message

    alice = env.lc.servers["alice"].core
    real = alice.releases.reserve

    def refuse_once(session_id: str, *args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(alice.releases, "reserve", real)
        raise PolicyError(f"node alice: a budget spent (session {session_id})")

    async def vote() -> tuple[str, str]:
        async with env.coordinator() as c, counting(c) as ran:
            await c.vote("ballots")              # prepared: the next one runs in one round
            monkeypatch.setattr(alice.releases, "reserve", refuse_once)
            with pytest.raises(SessionFailed) as err:
                await c.vote("ballots")
            assert not ran                        # refused: no result came in one round
        sid = re.search(r"session ([0-9a-f]{32})", str(err.value))
        assert sid, str(err.value)
        for _ in range(2000):                     # bounded: until nothing of it waits at alice
            if sid.group(1) not in alice._awaited and not any(alice._waiting.values()):
                break
            await asyncio.sleep(0.01)
        return sid.group(1), str(err.value)
    sid, message = env.run(vote())
    assert "a budget spent" in message and "node alice" in message, message
    assert sid not in alice._awaited and not any(alice._waiting.values()), (alice._awaited, alice._waiting)
    assert [e.outcome for e in env.audit("alice", sid)] == ["refused"]


ONE_LOOP_AFTER_ANOTHER = """
import sys
from mpc import aio
from mpc.config import load_cluster
from mpc.coordinator.client import Coordinator

async def sums() -> None:
    async with Coordinator(load_cluster(sys.argv[1])) as coordinator:
        for _ in range(8):   # the first in two rounds, the others on the Run streams
            print((await coordinator.sum("raise")).value, flush=True)

for _ in range(8):
    aio.run(sums())
"""


def test_a_program_that_runs_coordinators_in_one_event_loop_after_another_hears_no_error(env: Env) -> None:
    """A program may run the library's Coordinator in one event loop after another (one per request, as
    `asyncio.run` in a loop does). Closing a coordinator must leave gRPC nothing to complete in its loop: a
    Run stream's writer cancelled while its last write was in flight did, and a later loop printed "Event
    loop is closed" from gRPC's poller (in about half of such runs of 6 loops: 8 here)."""
    async def run() -> tuple[int | None, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", ONE_LOOP_AFTER_ANOTHER,
                                                    str(env.lc.cluster.path), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, out, err
    code, out, err = env.loop.run_until_complete(run())   # the nodes serve while this loop runs
    assert code == 0, err.decode()[-2000:]
    assert out.decode().split() == [str(sum(RAISES.values()))] * 64
    assert "Event loop is closed" not in err.decode() and "Exception in callback" not in err.decode(), err.decode()
