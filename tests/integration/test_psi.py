"""Private set intersection over real node daemons (grpc.aio, mutual TLS, SQLite, loopback): `intersect`
with --reveal size, members and sum against Python's set operations, where the members go, what every
node and the coordinator receive (every PSI message each node receives, by sender and step, is exactly
what the design sends it: tests/sim/test_psi_sim.py `expected_psi_messages`; P_0, the first node by
name, compares, and in a sum P_1 compares P_0's list and gets references), the owners' `reveal`
policy, the PSI-CA probing attack and its bound, refusals of bad input, a node down mid-protocol, and
the sum's output shares (each alone uniform-looking, and no owner's sum from P_0's view and that owner's
share: the zero-sharing), the `mpc` command (DESIGN.md §14; mpc/protocols/psi.py, the catalogue's IntersectEntry,
mpc/node/core.py `_keep`). Which positions of a list anyone can link to records is tested in
tests/sim/test_psi_sim.py, where the engines' keys and permutations are at hand.

One four-node cluster (alice, bob, carlos, david; min_participants = 2) serves the whole module on one
event loop. Every owner lets any participant set run any number of distinct queries
(harness.ANY_QUERIES) and keeps the default `reveal` (size only), except for the inputs of OPEN_INPUTS,
whose per-input tables allow all three outputs, and PROBED, whose table keeps the default budget of one
distinct query per version (max_releases = 1). Sets are stored through the store API
(Store.put_set) as `mpc input put-set` does on the owner's machine, and by that command in the CLI
test. Identifiers are random hex texts (secrets.token_hex), so that any of them, its digest
(psi.identifier_digest) or its unmasked hash (psi.hash_to_curve) can be looked for in every message.
The `mpc` command runs as `.venv/bin/mpc` in subprocesses (tests/integration/test_auctions.py `mpc`).
"""

from __future__ import annotations

import asyncio
import csv
import json
import secrets
import stat
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

import mpc.store.inputs as store_inputs
from mpc.coordinator.client import Coordinator, IntersectionResult
from mpc.errors import InputError, PeerUnavailable, SessionFailed
from mpc.node.daemon import NodeServer
from mpc.protocols import psi
from mpc.store import Store
from tests.sim.test_psi_sim import attack_owner, attack_target, expected_psi_messages, record_cot_parts, zero_words

from .harness import ANY_QUERIES, LocalCluster, prepare_request, running_cluster
from .test_auctions import control, mpc, session_of, write_coordinator_file
from .test_faults import StopBeforeCompute
from .test_privacy import Views

T = TypeVar("T")
ALL4 = ("alice", "bob", "carlos", "david")
TRIO = ("alice", "bob", "carlos")
PAIR = ("alice", "bob")
OPEN_INPUTS = ("patients", "pair", "quad", "members_to", "down", "cli_ids", "cli_fold", "mixed", "reach", "wide",
               "zeroed", "undeliverable", "guarded")
PROBED = "probed"
WORD = 8


def policy(node: str) -> str:
    """See the module docstring; "mixed" allows everything except at bob, who keeps the default; carlos lets
    the members of "guarded" go to carlos and david only."""
    lines = []
    for name in OPEN_INPUTS:
        if name == "mixed" and node == "bob":
            continue
        lines += [f"[nodes.{node}.policy.per_input.{name}]", 'reveal = ["size", "members", "sum"]']
        if name == "guarded" and node == "carlos":
            lines += ['members_to = ["carlos", "david"]', "max_releases = 4"]
    lines += [f"[nodes.{node}.policy.per_input.{PROBED}]", "max_releases = 1"]
    return "\n".join(lines)


# ---- the module's cluster ----------------------------------------------------------------------------


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    lc: LocalCluster
    views: Views
    trio_file: Path
    stored: dict[str, set[bytes]] = field(default_factory=dict)     # every identifier stored, by node

    def run(self, coro: Awaitable[T], timeout: float = 120.0) -> T:
        """Run one scenario on the cluster's loop (bounded)."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def coordinator(self, nodes: Sequence[str] = TRIO) -> Coordinator:
        return Coordinator(self.lc.cluster, observer=self.views.observe, nodes=nodes)

    def data_dir(self, node: str) -> Path:
        data_dir = self.lc.cluster.node(node).data_dir
        assert data_dir is not None
        return data_dir

    def put_set(self, node: str, name: str, ids: Sequence[bytes], values: Sequence[int] | None = None, *,
                overwrite: bool = False) -> int:
        """Store a set at one node, as `mpc input put-set` would on its machine. Returns: its version."""
        self.stored.setdefault(node, set()).update(ids)
        with Store.open_dir(self.data_dir(node)) as store:
            return store.put_set(name, list(ids), None if values is None else np.asarray(values, dtype=np.int64),
                                 overwrite=overwrite)

    def received(self, node: str, session: str) -> list[tuple[str, str, bytes]]:
        """(sender, step, payload) of every peer message `node` accepted in `session`."""
        return [(s, st, p) for sid, s, st, p in self.lc.recorder.received.get(node, []) if sid == session]

    def delivered(self, node: str, name: str, session: str) -> Path:
        return self.data_dir(node) / "intersections" / f"{name}-{session}.csv"

    def audit(self, node: str, session: str | None) -> list[Any]:
        """The node's audit entries of one session (None: all of them)."""
        with Store.open_dir(self.data_dir(node)) as store:
            return [e for e in store.audit_log(limit=100_000) if session is None or e.session_id == session]

    def releases(self, node: str, name: str) -> list[Any]:
        with Store.open_dir(self.data_dir(node)) as store:
            return store.releases(name)

    def messages(self) -> int:
        return sum(self.lc.recorder.counts().values())

    async def restart(self, node: str) -> None:
        """Start a stopped node's server again over the same data directory."""
        server = NodeServer(self.lc.cluster, node, observer=self.lc.recorder.for_node(node))
        await server.start()
        self.lc.servers[node] = server


@pytest.fixture(scope="module")
def env(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("psi")
    stack = AsyncExitStack()
    lc = loop.run_until_complete(stack.enter_async_context(
        running_cluster(tmp, 4, min_participants=2, every_policy=ANY_QUERIES,
                        policies={n: policy(n) for n in ALL4})))
    try:
        yield Env(loop, lc, Views(), write_coordinator_file(tmp / "trio.toml", lc.cluster, TRIO))
    finally:
        loop.run_until_complete(stack.aclose())


# ---- data and checks ---------------------------------------------------------------------------------


def ids(count: int) -> list[bytes]:
    """Random identifiers: 16 hex characters each (64 random bits), as texts a CSV would hold."""
    return [secrets.token_hex(8).encode() for _ in range(count)]


def overlapping(nodes: Sequence[str], common: int, own: int, partial: int = 3) -> dict[str, list[bytes]]:
    """Sets with exactly `common` identifiers in all, `own` more at each node, and `partial` held by
    every node but the last (so that a pairwise answer would differ from the n-way one), shuffled."""
    shared, some = ids(common), ids(partial)
    out = {}
    for i, node in enumerate(nodes):
        mine = shared + ids(own + i) + (some if i < len(nodes) - 1 else [])
        out[node] = [mine[j] for j in np.random.default_rng(secrets.randbits(64)).permutation(len(mine))]
    return out


def values_for(sets: Mapping[str, Sequence[bytes]], lo: int = -10**6, hi: int = 10**6) -> dict[str, list[int]]:
    return {n: [lo + secrets.randbelow(hi - lo + 1) for _ in s] for n, s in sets.items()}


def common_of(sets: Mapping[str, Sequence[bytes]]) -> set[bytes]:
    return set.intersection(*(set(s) for s in sets.values()))


def sum_over(sets: Mapping[str, Sequence[bytes]], values: Mapping[str, Sequence[int]]) -> int:
    common = common_of(sets)
    return sum(v for n in sets for x, v in zip(sets[n], values[n]) if x in common)


def store_all(env: Env, name: str, sets: Mapping[str, Sequence[bytes]],
              values: Mapping[str, Sequence[int]] | None = None, overwrite: bool = False) -> None:
    for node, s in sets.items():
        env.put_set(node, name, s, None if values is None else values[node], overwrite=overwrite)


def secrets_of(identifiers: Sequence[bytes] | set[bytes]) -> list[tuple[str, bytes]]:
    """What must never leave a node: each identifier, its digest, and its unmasked hash on the curve."""
    out = []
    for x in identifiers:
        digest = psi.identifier_digest(x)
        out += [("identifier", x), ("digest", digest), ("unmasked hash", psi.hash_to_curve(digest))]
    return out


def assert_nothing_of_the_sets_left(env: Env, session: str, nodes: Sequence[str]) -> None:
    """No identifier stored anywhere, digest or unmasked hash in any message a node received in the
    session, nor in what the coordinator received; the messages are all PSI (or OT) traffic."""
    needles = secrets_of(set().union(*env.stored.values()))
    seen = 0
    for node in nodes:
        for sender, step, payload in env.received(node, session):
            seen += 1
            assert step.startswith(("psi/", "ot/", "agree/")), step
            for what, needle in needles:
                assert needle not in payload, f"{node} received a {what} in {step!r} from {sender}"
    assert seen > 0
    for node, chunks in env.views.chunks.get(session, {}).items():
        share = b"".join(chunks)
        for what, needle in needles:
            assert needle not in share, f"the coordinator received a {what} from {node}"


def assert_psi_messages(env: Env, session: str, nodes: Sequence[str], mode: str,
                        recipients: Sequence[str] = ()) -> None:
    """Each participant received exactly the PSI messages the design sends it (sender, step, each once);
    the sum's base OTs, if any ran, only between the first node by name and each other one; a node
    outside the session received nothing of it."""
    got = {n: Counter((s, st) for s, st, _ in env.received(n, session) if st.startswith("psi/")) for n in nodes}
    assert got == expected_psi_messages(nodes, mode, recipients), (mode, recipients)
    first = sorted(nodes)[0]
    ot_pairs = {frozenset((n, s)) for n in nodes for s, st, _ in env.received(n, session) if st.startswith("ot/")}
    assert ot_pairs <= {frozenset((first, n)) for n in nodes if n != first}, ot_pairs
    if mode != "sum":
        assert not ot_pairs, ot_pairs
    assert all(not env.received(n, session) for n in ALL4 if n not in nodes)


def shares(env: Env, session: str) -> dict[str, bytes]:
    return {node: b"".join(chunks) for node, chunks in env.views.chunks.get(session, {}).items()}


def read_members(path: Path) -> list[bytes]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id"], rows[:1]
    assert all(len(r) == 1 for r in rows[1:])
    return [r[0].encode() for r in rows[1:]]


def intersections_at(env: Env, node: str) -> set[str]:
    folder = env.data_dir(node) / "intersections"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


async def intersect(env: Env, nodes: Sequence[str], name: str, reveal: str = "size",
                    to: Sequence[str] = ()) -> IntersectionResult:
    async with env.coordinator(nodes) as c:
        return await c.intersect(name, reveal=reveal, to=to)


# ==== 1. against Python's sets ========================================================================


def test_size_sum_and_members_of_three_nodes(env: Env) -> None:
    sets = overlapping(TRIO, 23, 17)
    values = values_for(sets)
    store_all(env, "patients", sets, values)
    common = common_of(sets)
    before = {n: intersections_at(env, n) for n in ALL4}

    async def go() -> tuple[IntersectionResult, IntersectionResult, IntersectionResult]:
        return (await intersect(env, TRIO, "patients"), await intersect(env, TRIO, "patients", "sum"),
                await intersect(env, TRIO, "patients", "members", ["bob", "carlos"]))
    size, total, members = env.run(go())
    assert (size.reveal, size.size, size.total) == ("size", len(common), None)
    assert (total.reveal, total.size, total.total) == ("sum", len(common), sum_over(sets, values))
    assert (members.reveal, members.size, members.delivered_to) == ("members", len(common), ["bob", "carlos"])
    assert members.as_dict()["members_delivered_to"] == ["bob", "carlos"] and "sum" not in members.as_dict()
    # The coordinator received one word from each node for size and members, two for the sum; no more.
    for result, words in ((size, 1), (members, 1), (total, 2)):
        got = shares(env, result.session_id)
        assert set(got) == set(TRIO) and all(len(b) == WORD * words for b in got.values()), got
        assert_nothing_of_the_sets_left(env, result.session_id, TRIO)
    assert_psi_messages(env, size.session_id, TRIO, "size")
    assert_psi_messages(env, total.session_id, TRIO, "sum")
    assert_psi_messages(env, members.session_id, TRIO, "members", ["bob", "carlos"])
    # The members went to bob and carlos only: a file each, readable by its owner only, holding exactly
    # the common identifiers; nothing new at alice or david.
    for node in ALL4:
        new = intersections_at(env, node) - before[node]
        if node in ("bob", "carlos"):
            path = env.delivered(node, "patients", members.session_id)
            assert new == {path.name}, new
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            rows = read_members(path)
            assert len(rows) == len(set(rows)) and set(rows) == common
            assert rows == [x for x in sets[node] if x in common]       # in the node's stored order
        else:
            assert new == set(), (node, new)


def test_two_nodes_and_four_nodes(env: Env) -> None:
    pair = overlapping(PAIR, 11, 6)
    quad = overlapping(ALL4, 9, 5)
    pair_values, quad_values = values_for(pair), values_for(quad, -(2**31 - 1), 2**31 - 1)
    store_all(env, "pair", pair, pair_values)
    store_all(env, "quad", quad, quad_values)

    async def go() -> list[IntersectionResult]:
        return [await intersect(env, PAIR, "pair"), await intersect(env, PAIR, "pair", "sum"),
                await intersect(env, PAIR, "pair", "members", ["alice"]),
                await intersect(env, ALL4, "quad"), await intersect(env, ALL4, "quad", "sum"),
                await intersect(env, ALL4, "quad", "members", ["david"])]
    results = env.run(go())
    assert [r.size for r in results] == [11] * 3 + [9] * 3
    assert results[1].total == sum_over(pair, pair_values) and results[4].total == sum_over(quad, quad_values)
    assert set(read_members(env.delivered("alice", "pair", results[2].session_id))) == common_of(pair)
    assert set(read_members(env.delivered("david", "quad", results[5].session_id))) == common_of(quad)
    for r, nodes in zip(results, [PAIR] * 3 + [ALL4] * 3):
        assert_nothing_of_the_sets_left(env, r.session_id, nodes)
        assert_psi_messages(env, r.session_id, nodes, r.reveal, r.delivered_to or ())
    # alice receives the members, so bob compares (the comparer is never a recipient) and sends her the
    # positions; with four nodes and david receiving, alice compares.
    assert [(s, st) for s, st, _ in env.received("alice", results[2].session_id) if st == psi.STEP_MEMBERS] == \
        [("bob", psi.STEP_MEMBERS)]
    assert [(s, st) for s, st, _ in env.received("david", results[5].session_id) if st == psi.STEP_MEMBERS] == \
        [("alice", psi.STEP_MEMBERS)]


def test_empty_full_and_subset(env: Env) -> None:
    base = ids(12)
    cases = {
        "empty": {n: ids(5 + i) for i, n in enumerate(TRIO)},
        "full": {n: list(base) if i % 2 else list(reversed(base)) for i, n in enumerate(TRIO)},
        "subset": {"alice": base, "bob": base[:8] + ids(2), "carlos": base[:4]},
    }
    for name, sets in cases.items():
        store_all(env, f"case_{name}", sets)

    async def go() -> dict[str, IntersectionResult]:
        return {name: await intersect(env, TRIO, f"case_{name}") for name in cases}
    results = env.run(go())
    assert {k: r.size for k, r in results.items()} == {"empty": 0, "full": 12, "subset": 4}
    assert {k: len(common_of(s)) for k, s in cases.items()} == {"empty": 0, "full": 12, "subset": 4}


def test_sum_shares_tell_p0_and_the_coordinator_no_owners_own_sum(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sums over three and four real daemons: the coordinator gets [size, share] from P_0 and [0, share]
    from every other node, each sum share uniform-looking (|share| >= 2^32 as a signed word: false alarm
    below 2^-31 a word, seven words), the shares adding up to the sum. P_0 colluding with the coordinator
    (its OT parts, as the nodes in this process computed them, tests/sim/test_psi_sim.py
    `record_cot_parts`; the zero words it exchanged; an owner's output share) does not get that owner's
    own sum over the intersection, for every owner, though the same parts give it exactly without the
    zero-sharing (positive control). Each inequality fails by chance with probability 2^-64."""
    parts = record_cot_parts(monkeypatch)
    sets = overlapping(ALL4, 6, 4)
    values = values_for(sets)
    store_all(env, "zeroed", sets, values)

    async def go() -> list[IntersectionResult]:
        return [await intersect(env, TRIO, "zeroed", "sum"), await intersect(env, ALL4, "zeroed", "sum")]
    for result, nodes in zip(env.run(go()), (TRIO, ALL4)):
        mine = {n: sets[n] for n in nodes}
        assert (result.size, result.total) == (len(common_of(mine)), sum_over(mine, values))
        got = shares(env, result.session_id)
        assert set(got) == set(nodes) and all(len(b) == 2 * WORD for b in got.values()), got
        size_words = {n: int.from_bytes(b[:WORD], "little") for n, b in got.items()}
        words = {n: int.from_bytes(b[WORD:], "little") for n, b in got.items()}
        assert size_words == {n: len(common_of(mine)) if n == "alice" else 0 for n in nodes}
        assert sum(words.values()) % (1 << 64) == sum_over(mine, values) % (1 << 64)
        for node, word in words.items():
            assert 1 << 32 <= word <= (1 << 64) - (1 << 32), f"{node}'s share {word:#x} is a small number"
        zeros = zero_words({n: env.received(n, result.session_id) for n in nodes})
        assert len(zeros) == len(nodes) * (len(nodes) - 1)
        for o in range(1, len(nodes)):
            target = attack_target(mine, values, o)
            attack = attack_owner(parts, result.session_id, nodes, o, words[sorted(nodes)[o]], zeros)
            assert attack.old == target, (nodes, o)                         # what the owner's share was
            assert attack.now != target and attack.informed != target, (nodes, o)


# ==== 2. the owners' policy ============================================================================


def test_default_policy_reveals_the_size_only(env: Env) -> None:
    """An input without a `reveal` rule: size works; members and sum are refused at prepare by every
    owner, naming the node, the input and the rule, before anything is shared."""
    sets = overlapping(TRIO, 5, 3)
    store_all(env, "plain", sets, values_for(sets))
    messages = env.messages()

    async def go() -> tuple[IntersectionResult, list[SessionFailed]]:
        errors = []
        for reveal, to in (("members", ["bob"]), ("sum", [])):
            async with env.coordinator() as c:
                with pytest.raises(SessionFailed) as err:
                    await c.intersect("plain", reveal=reveal, to=to)
            errors.append(err.value)
        return await intersect(env, TRIO, "plain"), errors
    size, errors = env.run(go())
    assert size.size == 5
    for error, mode in zip(errors, ("members", "sum")):
        message = str(error)
        assert "nothing was revealed" in message, message
        assert "'plain'" in message and "(reveal)" in message and f"not {mode}" in message, message
        assert any(f"node {n}" in message for n in TRIO), message
        session = session_of(error)
        assert session not in env.views.chunks
        for node in TRIO:
            assert [(e.outcome, e.sent) for e in env.audit(node, session)] == [("refused", ())], node
    assert env.messages() > messages        # only the size session's own traffic
    assert all(not env.received(n, session_of(e)) for e in errors for n in TRIO)


def test_one_owner_keeping_the_default_refuses_members_and_sum(env: Env) -> None:
    """"mixed": alice and carlos allow every output, bob only the size: bob alone refuses members and sum."""
    sets = overlapping(TRIO, 4, 2)
    store_all(env, "mixed", sets, values_for(sets))

    async def go() -> list[SessionFailed]:
        errors = []
        for reveal, to in (("members", ["alice"]), ("sum", [])):
            async with env.coordinator() as c:
                with pytest.raises(SessionFailed) as err:
                    await c.intersect("mixed", reveal=reveal, to=to)
            errors.append(err.value)
        assert (await intersect(env, TRIO, "mixed")).size == 4
        return errors
    for error in env.run(go()):
        message = str(error)
        assert "node bob" in message and "(reveal)" in message and "nothing was revealed" in message, message
        session = session_of(error)
        outcomes = {n: [(e.outcome, e.sent) for e in env.audit(n, session)] for n in TRIO}
        assert outcomes["bob"] == [("refused", ())], outcomes
        assert all(o and o[0][1] == () for o in outcomes.values()), outcomes
        assert not any(intersections_at(env, n) & {f"mixed-{session}.csv"} for n in ALL4)


def test_an_owner_naming_members_to_refuses_any_other_recipient(env: Env) -> None:
    """"guarded": carlos's policy lets its members go to carlos and david only. A coordinator naming alice or
    bob (as one colluding with them would, to test a dictionary against carlos's set) is refused by carlos
    at prepare, naming itself, the input and the rule, before anything is shared: no node receives a
    message of the session, no file is written. Naming carlos works, and the members reach carlos only."""
    sets = overlapping(TRIO, 5, 3)
    store_all(env, "guarded", sets)

    async def go() -> tuple[list[SessionFailed], IntersectionResult]:
        errors = []
        for to in (["alice"], ["bob", "carlos"]):
            async with env.coordinator() as c:
                with pytest.raises(SessionFailed) as err:
                    await c.intersect("guarded", reveal="members", to=to)
            errors.append(err.value)
        return errors, await intersect(env, TRIO, "guarded", "members", ["carlos"])
    errors, granted = env.run(go())
    for error, outside in zip(errors, ("alice", "bob")):
        message = str(error)
        assert f"node carlos: policy lets the members of an intersection of 'guarded' go only to carlos, david " \
               f"(members_to), not to {outside}" in message, message
        session = session_of(error)
        assert [(e.outcome, e.sent) for e in env.audit("carlos", session)] == [("refused", ())]
        assert all(not env.received(n, session) for n in TRIO)
        assert not any(intersections_at(env, n) & {f"guarded-{session}.csv"} for n in ALL4)
    assert (granted.size, granted.delivered_to) == (5, ["carlos"])
    assert set(read_members(env.delivered("carlos", "guarded", granted.session_id))) == common_of(sets)
    assert [n for n in ALL4 if f"guarded-{granted.session_id}.csv" in intersections_at(env, n)] == ["carlos"]


# ==== 3. the PSI-CA probing attack =====================================================================


def test_probing_for_one_identifier_is_bounded_by_max_releases(env: Env) -> None:
    """The classic attack on PSI-CA: a coordinator with one colluding node (david) learns whether one
    identifier x is in the honest nodes' sets by storing {x} at the colluder and asking for the size (1
    or 0). Each probe needs a new version of the colluder's set, so each is a distinct query to the
    honest owners (a release records every participant's version), and each honest version takes part
    in at most max_releases distinct queries (default 1). So the coalition learns at most max_releases
    bits of this kind per version of the honest sets: here one probe. Repeating the same query
    (the same versions) is allowed and tells nothing new; probing over another participant set is a
    distinct query too; a new version of an honest set allows max_releases more (its owner's choice).
    """
    honest = ("alice", "bob")
    nodes = ("alice", "bob", "david")
    inside, outside = ids(1)[0], ids(1)[0]
    sets = {n: ids(20) + [inside] for n in honest}
    store_all(env, PROBED, sets)
    first_versions = {n: env.releases(n, PROBED) for n in honest}
    assert first_versions == {"alice": [], "bob": []}

    async def probe(x: bytes, over: Sequence[str] = nodes, overwrite: bool = True) -> IntersectionResult:
        env.put_set("david", PROBED, [x], overwrite=overwrite)
        return await intersect(env, over, PROBED)

    async def refused(x: bytes, over: Sequence[str] = nodes) -> SessionFailed:
        with pytest.raises(SessionFailed) as err:
            await probe(x, over)
        return err.value

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["first"] = await probe(inside, overwrite=False)             # answered: x is in both sets
        out["again"] = await intersect(env, nodes, PROBED)              # the same query: allowed, the same
        out["second"] = await refused(outside)                          # a new colluder version: refused
        out["third"] = await refused(inside)
        out["pair"] = await refused(outside, ("alice", "david"))        # another participant set: refused
        for n in honest:                                                # the owners store new versions
            env.put_set(n, PROBED, sets[n], overwrite=True)
        out["new version"] = await probe(outside)                       # one more, and no more
        out["after"] = await refused(inside)
        return out
    out = env.run(go())
    assert out["first"].size == 1 and out["again"].size == 1 and out["new version"].size == 0
    for key in ("second", "third", "pair", "after"):
        message = str(out[key])
        assert "max_releases" in message and f"'{PROBED}'" in message and "nothing was revealed" in message, message
        assert "node alice" in message, message
        assert session_of(out[key]) not in env.views.chunks
    # The bound, from the honest owners' own records: one distinct release per version of their set.
    for n in honest:
        records = env.releases(n, PROBED)
        by_version: dict[int, int] = {}
        for r in records:
            if r.counted:
                by_version[r.version] = by_version.get(r.version, 0) + 1
        assert by_version == {1: 1, 2: 1}, (n, records)


# ==== 4. bad input =====================================================================================


def test_to_naming_a_non_participant_and_members_without_to_are_refused_before_sharing(env: Env) -> None:
    sets = overlapping(TRIO, 3, 2)
    store_all(env, "members_to", sets)
    messages, sessions = env.messages(), len(env.views.chunks)
    audits = {n: len(env.audit(n, None)) for n in TRIO}

    async def go() -> list[BaseException]:
        errors: list[BaseException] = []
        for reveal, to in (("members", ["david"]), ("members", ["erin"]), ("members", []), ("size", ["bob"]),
                           ("sum", ["bob"]), ("everything", []), ("members", list(TRIO))):
            async with env.coordinator() as c:
                with pytest.raises(InputError) as err:
                    await c.intersect("members_to", reveal=reveal, to=to)
            errors.append(err.value)
        return errors
    errors = env.run(go())
    assert "david" in str(errors[0]) and "erin" in str(errors[1]), errors
    assert "--reveal members" in str(errors[2]) and "--to" in str(errors[3]) and "--to" in str(errors[4])
    assert "everything" in str(errors[5])
    assert "at most 2 of the 3 nodes" in str(errors[6]), errors[6]     # the comparer receives none
    assert env.messages() == messages and len(env.views.chunks) == sessions
    assert {n: len(env.audit(n, None)) for n in TRIO} == audits

    async def cli() -> list[Any]:
        return [await mpc("intersect", "members_to", "--reveal", "members", "--to", "david",
                          "--cluster", env.trio_file),
                await mpc("intersect", "members_to", "--reveal", "members", "--cluster", env.trio_file),
                await mpc("intersect", "members_to", "--to", "bob", "--cluster", env.trio_file),
                await mpc("intersect", "members_to", "--reveal", "members", "--to", "bob,bob",
                          "--cluster", env.trio_file),
                await mpc("intersect", "members_to", "--reveal", "members", "--to", "carlos,alice,bob",
                          "--cluster", env.trio_file)]
    runs = env.run(cli())
    for run in runs:
        assert run.code != 0 and "Traceback" not in run.stderr and not run.stdout.strip(), str(run)
    assert "david" in runs[0].stderr and "--to" in runs[1].stderr and "--to" in runs[2].stderr, runs
    assert "distinct" in runs[3].stderr, str(runs[3])
    assert "at most 2 of the 3 nodes" in runs[4].stderr, str(runs[4])
    assert env.messages() == messages and len(env.views.chunks) == sessions


def test_a_non_set_input_is_refused_at_prepare_naming_its_kind(env: Env) -> None:
    for n in TRIO:
        with Store.open_dir(env.data_dir(n)) as store:
            store.put_input("numbers", np.array([1, 2, 3], dtype=np.int64), 0, False)

    async def go() -> SessionFailed:
        async with env.coordinator() as c:
            with pytest.raises(SessionFailed) as err:
                await c.intersect("numbers")
        return err.value
    error = env.run(go())
    message = str(error)
    assert "nothing was revealed" in message and "'numbers'" in message and "number" in message, message
    assert "put-set" in message or "set" in message, message
    session = session_of(error)
    assert all(not env.received(n, session) for n in TRIO)
    for n in TRIO:
        assert [(e.outcome, e.sent) for e in env.audit(n, session)] == [("refused", ())], n


def test_oversized_sets_are_refused_at_put_and_at_prepare(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The declared limit (MAX_SET_SIZE, 10^6) is checked by the store at put and by every node at
    prepare; both shown with the limit lowered to 3 in this process (the nodes run in it)."""
    assert store_inputs.MAX_SET_SIZE == psi.MAX_SET_SIZE == 1_000_000
    monkeypatch.setattr(store_inputs, "MAX_SET_SIZE", 3)
    with pytest.raises(InputError, match="at most 3 identifiers"):
        env.put_set("alice", "too_big", ids(4))
    env.put_set("alice", "too_big", ids(3))
    monkeypatch.undo()
    sets = {n: ids(4) for n in TRIO}
    store_all(env, "big_at_prepare", sets)
    monkeypatch.setattr(psi, "MAX_SET_SIZE", 3)

    async def go() -> SessionFailed:
        async with env.coordinator() as c:
            with pytest.raises(SessionFailed) as err:
                await c.intersect("big_at_prepare")
        return err.value
    message = str(env.run(go()))
    assert "more than an intersection takes (3)" in message and "nothing was revealed" in message, message


# ==== 5. a node down mid-protocol ======================================================================


class StopAfterPrepare(StopBeforeCompute):
    """test_faults.py's coordinator that stops a node between Prepare and Compute, over some nodes and
    with an observer of what it receives."""

    def __init__(self, env: Env, victim: str, nodes: Sequence[str]) -> None:
        super().__init__(env.lc, victim)
        self.nodes = tuple(nodes)
        self.observer = env.views.observe


def test_a_node_down_after_prepare_fails_the_session_naming_it(env: Env) -> None:
    sets = overlapping(TRIO, 6, 3)
    store_all(env, "down", sets)
    before = {n: intersections_at(env, n) for n in ALL4}

    async def go() -> BaseException:
        c = StopAfterPrepare(env, "bob", TRIO)
        try:
            with pytest.raises((SessionFailed, PeerUnavailable)) as err:
                await asyncio.wait_for(c.intersect("down", reveal="members", to=["alice", "carlos"]), 20)
            assert c.stopped is not None and c.stopped.is_set()
            return err.value
        finally:
            await c.close()
            if "bob" not in env.lc.servers:
                await env.restart("bob")
    error = env.run(go())
    message = str(error)
    assert "bob" in message and "nothing was revealed" in message, message
    session = session_of(error)
    assert not any(len(b) for b in shares(env, session).values()), shares(env, session)
    assert {n: intersections_at(env, n) for n in ALL4} == before
    for n in ("alice", "carlos"):
        entries = env.audit(n, session)
        assert entries and all(e.outcome in ("failed", "aborted") for e in entries), (n, entries)

    # bob is back: the same intersection now succeeds.
    async def again() -> IntersectionResult:
        return await intersect(env, TRIO, "down")
    assert env.run(again()).size == 6


def test_members_a_recipient_cannot_write_fail_the_session_at_once(env: Env) -> None:
    """carlos's data directory holds a file where its intersections folder goes: writing the members fails
    there, which fails the session, naming carlos and why, well before the session's timeout (30 s), and
    carlos's audit records it failed; nothing new at the other nodes. The folder is put back afterwards."""
    sets = overlapping(TRIO, 4, 2)
    store_all(env, "undeliverable", sets)
    folder = env.data_dir("carlos") / "intersections"
    aside = folder.with_name("intersections.aside")
    moved = folder.exists()
    if moved:
        folder.rename(aside)
    folder.write_text("not a folder")
    before = {n: intersections_at(env, n) for n in ALL4 if n != "carlos"}
    try:
        async def go() -> BaseException:
            with pytest.raises((SessionFailed, PeerUnavailable)) as err:
                await asyncio.wait_for(intersect(env, TRIO, "undeliverable", "members", ["carlos"]), 10)
            return err.value
        loop_time = env.loop.time()
        error = env.run(go())
        assert env.loop.time() - loop_time < 10
    finally:
        folder.unlink()
        if moved:
            aside.rename(folder)
    message = str(error)
    assert "node carlos could not deliver its result" in message, message
    session = session_of(error)
    assert [e.outcome for e in env.audit("carlos", session)] == ["failed"], env.audit("carlos", session)
    assert {n: intersections_at(env, n) for n in before} == before
    assert not (folder / f"undeliverable-{session}.csv").exists()


# ==== 6. the command line ==============================================================================


def write_csv(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_cli_put_set_then_intersect_size_sum_and_members(env: Env, tmp_path: Path) -> None:
    sets = overlapping(TRIO, 8, 4)
    values = values_for(sets, -1000, 1000)
    common = common_of(sets)
    cluster = env.lc.cluster.path
    for node in TRIO:
        env.stored.setdefault(node, set()).update(sets[node])
    # casefold: the same identifiers written differently at each node.
    people = ["Ana.Lima@example.org", "BEN@example.org", "chloé@example.org"]
    styles: dict[str, Callable[[str], str]] = {"alice": str, "bob": str.upper, "carlos": lambda s: f"  {s.lower()} "}
    fold_common = {p.casefold().strip().encode() for p in people}
    for node in TRIO:
        env.stored[node].update(fold_common)

    async def put() -> list[Any]:
        runs = []
        for node in TRIO:
            f = write_csv(tmp_path / f"{node}.csv", [["id", "spend"], *zip((x.decode() for x in sets[node]),
                                                                            values[node])])
            runs.append(await mpc("input", "put-set", "cli_ids", "--csv", f, "--column", "id",
                                  "--value-column", "spend", "--cluster", cluster, "--node", node))
            g = write_csv(tmp_path / f"{node}-fold.csv", [["email"], *([styles[node](p)] for p in people),
                                                          [f"only-{node}@example.org"]])
            runs.append(await mpc("input", "put-set", "cli_fold", "--csv", g, "--column", "email", "--casefold",
                                  "--cluster", cluster, "--node", node))
        return runs
    for run in env.run(put()):
        assert run.code == 0 and "stored set" in run.stdout and "Traceback" not in run.stderr, str(run)
        assert not any(x.decode() in run.stdout for x in sets["alice"])

    trio = env.trio_file

    async def go() -> list[Any]:
        return [await mpc("intersect", "cli_ids", "--cluster", trio),
                await mpc("intersect", "cli_ids", "--reveal", "sum", "--cluster", trio),
                await mpc("intersect", "cli_ids", "--reveal", "sum", "--json", "--cluster", trio),
                await mpc("intersect", "cli_ids", "--reveal", "members", "--to", "carlos", "--json",
                          "--cluster", trio),
                await mpc("intersect", "cli_fold", "--reveal", "members", "--to", "alice,bob", "--cluster", trio)]
    size, total, total_json, members, fold = env.run(go())
    for run in (size, total, total_json, members, fold):
        assert run.code == 0 and "Traceback" not in run.stderr, str(run)
        assert not any(x.decode() in run.stdout + run.stderr for x in common | fold_common), str(run)
    assert size.stdout.strip() == str(len(common)), str(size)
    assert total.stdout.strip() == f"{len(common)} in common; sum over them: {sum_over(sets, values)}", str(total)
    as_json = json.loads(total_json.stdout)
    assert (as_json["reveal"], as_json["size"], as_json["sum"]) == ("sum", len(common), sum_over(sets, values))
    delivered = json.loads(members.stdout)
    assert (delivered["size"], delivered["members_delivered_to"]) == (len(common), ["carlos"])
    assert set(read_members(env.delivered("carlos", "cli_ids", delivered["session"]))) == common
    assert all(not env.delivered(n, "cli_ids", delivered["session"]).exists() for n in ("alice", "bob", "david"))
    assert fold.stdout.startswith("3 in common; the common identifiers went to alice, bob only"), str(fold)
    for node in ("alice", "bob"):
        [path] = [p for p in (env.data_dir(node) / "intersections").glob("cli_fold-*.csv")]
        assert set(read_members(path)) == fold_common
    assert not list((env.data_dir("carlos") / "intersections").glob("cli_fold-*.csv"))


# ==== 7. the whole module: every message every node received ===========================================


def test_no_identifier_digest_or_hash_in_any_message_of_the_module(env: Env) -> None:
    """Runs last: every message any node received in this module, and every share the coordinator did."""
    needles = secrets_of(set().union(*env.stored.values()))
    assert len(needles) > 3 * 200
    total = 0
    for node, received in env.lc.recorder.received.items():
        for session, sender, step, payload in received:
            total += 1
            for what, needle in needles:
                assert needle not in payload, f"{node} received a {what} in {step!r} from {sender} ({session})"
    assert total > 100
    for session, by_node in env.views.chunks.items():
        for node, chunks in by_node.items():
            for what, needle in needles:
                assert needle not in b"".join(chunks), f"the coordinator received a {what} from {node} ({session})"


# ---- refusals at the node itself ---------------------------------------------------------------------


async def raw_prepare(env: Env, node: str, name: str, protocol: str, params: Mapping[str, Any]) -> grpc.aio.AioRpcError:
    """A Prepare sent straight to `node` (as a coordinator that skips its own checks would); the refusal."""
    session = secrets.token_hex(16)
    request = prepare_request(session, protocol, name, list(TRIO), params=params)
    async with control(env.lc, node) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Prepare(request, timeout=10)
    return err.value


def test_a_node_refuses_recipients_beyond_the_participants_or_all_of_three(env: Env) -> None:
    """As a coordinator that skips its own checks: recipients past the participants, and every one of the
    three (the comparer would be a recipient, and learn its records in each other set), refused at prepare."""
    sets = overlapping(TRIO, 3, 4)
    store_all(env, "reach", sets)
    error = env.run(raw_prepare(env, "alice", "reach", "intersect", {"reveal": 1, "recipients": [3]}))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
    assert "recipients [3] name participants beyond the 3 there are" in (error.details() or ""), error.details()
    for node in TRIO:
        error = env.run(raw_prepare(env, node, "reach", "intersect", {"reveal": 1, "recipients": [0, 1, 2]}))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
        assert "at most 2 of the 3 nodes" in (error.details() or ""), error.details()


def test_a_set_given_to_a_sum_is_refused_unless_allow_names_it(env: Env) -> None:
    sets = overlapping(TRIO, 2, 3)
    store_all(env, "summed_set", sets, values_for(sets))

    async def go() -> SessionFailed:
        async with env.coordinator() as c:
            with pytest.raises(SessionFailed) as err:
                await c.sum("summed_set")
        return err.value
    error = env.run(go())
    assert "holds set, which only intersect may use (the policy's allow.sum may name it)" in str(error), error
    assert all(not env.received(n, session_of(error)) for n in TRIO)


def test_a_sum_over_values_declared_too_wide_is_refused_at_the_nodes(env: Env) -> None:
    limit = (1 << 62) // (psi.MAX_SET_SIZE * len(TRIO))
    for n in TRIO:
        with Store.open_dir(env.data_dir(n)) as store:
            store.put_set("wide", [b"w1", b"w2", n.encode()], np.array([1, 2, 3], dtype=np.int64),
                          bounds=(0, limit + 1), overwrite=True)

    async def go() -> tuple[SessionFailed, IntersectionResult]:
        async with env.coordinator() as c:
            with pytest.raises(SessionFailed) as err:
                await c.intersect("wide", reveal="sum")
            return err.value, await c.intersect("wide")          # the size of the same input works
    error, size = env.run(go())
    assert f"outside -{limit}..{limit}: values summed over an intersection of 3 sets must be integers that " \
           f"cannot overflow" in str(error), error
    assert all(not env.received(n, session_of(error)) for n in TRIO)
    assert size.size == 2
