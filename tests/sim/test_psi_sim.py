"""Private set intersection (mpc/protocols/psi.py, PROTOCOLS.md §11) simulated in memory: n PsiParty
engines joined by tests/sim/common.py's Router, against Python's set operations. Each engine is
built, and each contribution made, by the catalogue's IntersectEntry (as the node does). The sum's
OTs are real: each party starts from an empty OtSetups, so Chou-Orlandi base OTs run (about 0.1 s a
pair), except where a test reuses setups on purpose.

The design under test (PsiParty.comparer_of, _reference_to, _hops_shuffle, _pass_on): P_0 (the first
node by name) compares; size: every hop reshuffles every list; members: the first node by name that
receives none compares (with 3 nodes or more, not every node may be a recipient), the recipients'
lists keep their owner's order at every hop, every other list is reshuffled at every hop; sum: no hop reshuffles,
P_0 compares lists 1..n-1 and P_1 compares P_0's list 0, and each list's last hop sends it
("psi/full/<o>", its owner's order) to its comparer and a reshuffled copy ("psi/ref/<o>") to the other
comparer; each comparer runs the correlated OTs with the owners of the lists it compares.

- size, members and sum for 2 to 5 nodes over random identifiers (os.urandom) with controlled
  overlap, the empty intersection, full overlap and one set a subset of another. members: the `Keep`
  events are at exactly the named recipients (P_0 too) and map to exactly the common identifiers
  there; sum: the sum over the common identifiers of every node's value, with negative values and
  values at the limits the catalogue allows (-(2^62) // MAX_SET_SIZE .. 2^62 // MAX_SET_SIZE), with
  the two comparers, first in first out and overtaking.
- Views: every point a node receives is 32 bytes, a canonical u < p, on Curve25519 (Euler's
  criterion on u^3 + A u^2 + u) and in its prime-order subgroup (an x-only ladder by the group
  order); the points' bits are balanced (false alarm below 1e-6 per test, tests/sim/common.py). No
  identifier, identifier digest (psi.identifier_digest) or unmasked hash (psi.hash_to_curve) of an
  identifier appears in any payload, and, as a positive control, each fully masked list is exactly
  its owner's hashes under every node's key. Each node receives exactly the steps the design sends it.
- Linking positions to records (the privacy fix): every hop's output is compared with its input
  masked by its key, to see which hops reshuffle; a comparer that maps the common positions of the
  version of its own list it holds through its own permutation (what the old design let P_0 do) must
  not find its common records (size; members when it is no recipient; sum, both comparers); nor can
  an owner with P_0, or all nodes but one, follow a list through their own hops (size). The comparer
  of the members or the size, matching its own list against each other list, does not find which of
  its records are in that other node's set (what it could when it was a recipient). Positive
  controls: the same guesses do find the records where the design says they may (a recipient's own
  list with the comparer; in a sum, a comparer colluding with the owner of a list it compares).
- The sum's output shares (the zero-sharing): P_0's OT parts, the zero words it exchanged and one owner's
  output share do not give that owner's sum over the intersection; the same parts do without the
  zero-sharing (positive control); what the attack misses by, and each output share, look uniform.
- Malformed input: each refused with RemoteProtocolError or RoundMismatch naming the step and sender.

Delivery is first-in first-out per link by default (OVERTAKING) and overtaking, with the starts
interleaved, in the members runs, test_messages_before_a_party_starts_and_in_any_order,
test_sum_with_two_comparers and test_sum_when_an_ot_message_overtakes_the_ot_setup (a comparer's
OT message, P_0's to an owner or P_1's to P_0, reaching its receiver before the OT setup it uses:
kept until then).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import numpy as np
import pytest

from mpc.errors import InputError, LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Keep, Output, Send
from mpc.ot.triples import OtSetups
from mpc.prg import SystemRng
from mpc.protocols import psi
from mpc.protocols.catalogue import Contributing, Declared, EngineArgs, IntersectParams, entry
from mpc.ring import to_signed, words_to_bytes
from tests.sim.common import FALSE_ALARM, Router, assert_balanced, balanced, names, rng

P = 2**255 - 19
A = 486662
ORDER = 2**252 + 27742317777372353535851937790883648493      # the prime order of Curve25519's subgroup
LIMIT = (1 << 62) // (psi.MAX_SET_SIZE * 5)                  # |value| the catalogue allows for a sum of up to 5 sets
LOWEST = -LIMIT
ENTRY = entry("intersect")
MODE_INDEX = {m: i for i, m in enumerate(psi.MODES)}
ID_BYTES = 16
OVERTAKING = False        # the runs' default delivery: first in, first out per link (see the module docstring)


# ---- the curve, in plain Python --------------------------------------------------------------------


def on_curve(u: int) -> bool:
    """u is the x-coordinate of a point of Curve25519 (not its twist): u^3 + A u^2 + u is a square mod p."""
    rhs = (u * u * u + A * u * u + u) % P
    return rhs == 0 or pow(rhs, (P - 1) // 2, P) == 1


def ladder(k: int, u: int) -> tuple[int, int]:
    """[k]·(u) by the x-only Montgomery ladder (RFC 7748 §5, without clamping): (X, Z) with Z = 0 for
    the point at infinity."""
    x2, z2, x3, z3, swap = 1, 0, u, 1, 0
    for t in reversed(range(k.bit_length())):
        bit = (k >> t) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = (x2 + z2) % P, (x2 - z2) % P
        aa, bb = a * a % P, b * b % P
        e = (aa - bb) % P
        c, d = (x3 + z3) % P, (x3 - z3) % P
        da, cb = d * a % P, c * b % P
        x3, z3 = (da + cb) ** 2 % P, u * (da - cb) ** 2 % P
        x2, z2 = aa * bb % P, e * (aa + 121665 * e) % P
    if swap:
        x2, z2 = x3, z3
    return x2, z2


def in_subgroup(u: int) -> bool:
    """The point of x-coordinate u is in the prime-order subgroup (not the identity's neighbours of small order)."""
    return u not in (0, 1, P - 1) and on_curve(u) and ladder(ORDER, u)[1] == 0


def assert_valid_point(point: bytes, what: str) -> None:
    """32 bytes, canonical, on the curve, in the prime-order subgroup."""
    assert len(point) == psi.POINT, f"{what}: {len(point)} bytes"
    u = int.from_bytes(point, "little")
    assert u < P, f"{what}: not canonical"
    assert on_curve(u), f"{what}: a point of the twist"
    assert in_subgroup(u), f"{what}: not in the prime-order subgroup"


def test_the_curve_checks_have_power() -> None:
    """The base point and the hashes pass; a twist point, small-order points and points of order 8L fail."""
    assert in_subgroup(9)
    for _ in range(20):
        assert in_subgroup(int.from_bytes(psi.hash_to_curve(os.urandom(32)), "little"))
    # The points of order 1, 2, 4 and 8 (libsodium's blacklist, little-endian u):
    small = [0, 1, 325606250916557431795983626356110631294008115727848805560023387167927233504,
             39382357235489614581723060781553021112529911719440698176882885853963445705823]
    for u in small:
        assert on_curve(u) and not in_subgroup(u), u
    twist = cofactor = 0
    for _ in range(400):
        u = secrets.randbelow(P)
        if not on_curve(u):
            twist += 1
        elif not in_subgroup(u):
            cofactor += 1          # a curve point outside the subgroup: 7 in 8 of them
    assert twist > 100 and cofactor > 50, (twist, cofactor)
    # X25519 maps subgroup points into the subgroup.
    key = os.urandom(32)
    assert in_subgroup(int.from_bytes(nacl.bindings.crypto_scalarmult(key, psi.hash_to_curve(os.urandom(32))),
                                      "little"))


# ---- running the engines ---------------------------------------------------------------------------


@dataclass
class Started:
    """A PsiParty with its contribution, for the Router (whose start() takes no argument)."""

    engine: psi.PsiParty
    contribution: np.ndarray
    early_cot: list[str] = field(default_factory=list)   # senders of a cot/u that came before its OT setup

    def start(self) -> list[Any]:
        return self.engine.start(self.contribution)

    def receive(self, sender: str, step: str, payload: bytes) -> list[Any]:
        if step == psi.STEP_COT_U and not (self.engine._started and sender in self.engine._chosen):
            self.early_cot.append(sender)
        return self.engine.receive(sender, step, payload)


Sets = Mapping[str, Sequence[bytes]]
Values = Mapping[str, Sequence[int]]


def contribution(me: str, ids: Sequence[bytes], values: Sequence[int], mode: str, parties: int) -> np.ndarray:
    """The node's contribution, made by the catalogue entry as the node makes it."""
    declared = Declared("ids", me, "set", (LOWEST, LIMIT), len(ids), 0, False)
    c = Contributing(declared, np.asarray(values, dtype=np.int64), (), 0, parties, 0, 0, SystemRng(), tuple(ids))
    words: np.ndarray = ENTRY.contribution(params(mode, []), c)
    return words


def params(mode: str, recipients: Sequence[str], order: Sequence[str] = ()) -> IntersectParams:
    return IntersectParams(MODE_INDEX[mode], tuple(sorted(order).index(r) for r in recipients))


def engines(sets: Sets, values: Values, mode: str, recipients: Sequence[str] = (), *,
            setups: Mapping[str, OtSetups] | None = None, session: str | None = None) -> dict[str, Started]:
    """One Started engine per node, built by the catalogue entry (as the node builds it)."""
    parties = tuple(sets)
    sid = session or secrets.token_hex(16)
    sizes = {p: len(sets[p]) for p in parties}
    p = params(mode, recipients, parties)
    out = {}
    for me in parties:
        engine = ENTRY.engine(p, EngineArgs(sid, me, parties, sum(sizes.values()), SystemRng(),
                                            setups[me] if setups is not None else OtSetups(), sizes))
        assert isinstance(engine, psi.PsiParty)
        out[me] = Started(engine, contribution(me, sets[me], values[me], mode, len(parties)))
    return out


@dataclass
class Result:
    outputs: dict[str, np.ndarray]          # each node's Output words
    kept: dict[str, list[np.ndarray]]       # each node's Keep words (only at recipients)
    router: Router
    engines: dict[str, Started]


def run(sets: Sets, values: Values | None = None, mode: str = "size", recipients: Sequence[str] = (), *,
        overtaking: bool = OVERTAKING, order: Any = None, setups: Mapping[str, OtSetups] | None = None) -> Result:
    values = values or {p: [0] * len(s) for p, s in sets.items()}
    es = engines(sets, values, mode, recipients, setups=setups)
    router = Router(es, order if order is not None else SystemRng(), overtaking)
    results = router.run()
    outputs: dict[str, np.ndarray] = {}
    kept: dict[str, list[np.ndarray]] = {}
    for me in sets:
        events = results.get(me, [])
        outs = [e for e in events if isinstance(e, Output) and not isinstance(e, Keep)]
        assert len(outs) == 1, f"{me}: {events}"
        outputs[me] = outs[0].words
        kept[me] = [e.words for e in events if isinstance(e, Keep)]
        assert es[me].engine.waiting_for == (), me
        assert outs[0].words.size == (2 if mode == "sum" else 1)
    return Result(outputs, kept, router, es)


def opened(result: Result) -> list[int]:
    """The coordinator's result: the output shares added mod 2^64."""
    size = next(iter(result.outputs.values())).size
    return [sum(int(o[i]) for o in result.outputs.values()) % (1 << 64) for i in range(size)]


def common_of(sets: Sets) -> set[bytes]:
    return set.intersection(*(set(s) for s in sets.values()))


def fresh(count: int) -> list[bytes]:
    return [os.urandom(ID_BYTES) for _ in range(count)]


def overlapping(n: int, common: int, own: Sequence[int]) -> dict[str, list[bytes]]:
    """n sets sharing exactly `common` identifiers, node i adding own[i] of its own, each shuffled; a few
    identifiers shared by some nodes but not all (to catch a pairwise intersection for the n-way one)."""
    parties = names(n)
    shared = fresh(common)
    partial = fresh(3) if n > 2 else []
    sets: dict[str, list[bytes]] = {}
    for i, p in enumerate(parties):
        ids = shared + fresh(own[i]) + (partial if i < n - 1 else [])
        order = np.random.default_rng(int.from_bytes(os.urandom(8), "little")).permutation(len(ids))
        sets[p] = [ids[j] for j in order]
    return sets


SCENARIOS = {
    "overlap": lambda n: overlapping(n, 7, [3 + 2 * i for i in range(n)]),
    "empty": lambda n: overlapping(n, 0, [4 + i for i in range(n)]),
    "full": lambda n: (lambda ids: {p: list(reversed(ids)) if i % 2 else list(ids)
                                    for i, p in enumerate(names(n))})(fresh(9)),
    "subset": lambda n: (lambda big: {p: (big[:5] if i == n - 1 else big[:5 + 3 * (n - 1 - i)] + fresh(i))
                                      for i, p in enumerate(names(n))})(fresh(5 + 3 * n)),
}


def random_values(sets: Sets, lo: int = -1000, hi: int = 1000) -> dict[str, list[int]]:
    return {p: [lo + secrets.randbelow(hi - lo + 1) for _ in s] for p, s in sets.items()}


def expected_sum(sets: Sets, values: Values) -> int:
    common = common_of(sets)
    return sum(v for p in sets for x, v in zip(sets[p], values[p]) if x in common)


def check_members(result: Result, sets: Sets, recipients: Sequence[str]) -> None:
    common = common_of(sets)
    for me in sets:
        if me in recipients:
            assert len(result.kept[me]) == 1, me
            indices = [int(i) for i in result.kept[me][0]]
            assert len(set(indices)) == len(indices) and all(0 <= i < len(sets[me]) for i in indices)
            assert {sets[me][i] for i in indices} == common, me
        else:
            assert result.kept[me] == [], f"{me} is no recipient but kept {result.kept[me]}"


# ---- correctness against Python's sets -------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_size_and_members_against_python_sets(n: int, scenario: str) -> None:
    sets = SCENARIOS[scenario](n)
    common = common_of(sets)
    if scenario == "empty":
        assert not common
    if scenario == "full":
        assert all(set(s) == common for s in sets.values())
    if scenario == "subset":
        assert set(sets[names(n)[-1]]) == common and all(set(s) > common for s in list(sets.values())[:-1])
    result = run(sets, mode="size")
    assert opened(result) == [len(common)]
    assert all(k == [] for k in result.kept.values())
    # members: to one owner, to the comparer, to every node, or to the last two.
    parties = names(n)
    for recipients in ([parties[-1]], [parties[0]], parties[1:] if n > 2 else parties, parties[:-1], parties[-2:]):
        result = run(sets, mode="members", recipients=recipients, overtaking=True)
        assert opened(result) == [len(common)]          # the coordinator gets the size only
        check_members(result, sets, recipients)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("n", [2, 3, 5])
def test_sum_against_python_sets(n: int, scenario: str) -> None:
    sets = SCENARIOS[scenario](n)
    values = random_values(sets)
    result = run(sets, values, "sum")
    size, total = opened(result)
    assert size == len(common_of(sets))
    assert int(to_signed(np.array([total], dtype=np.uint64))[0]) == expected_sum(sets, values)
    assert all(k == [] for k in result.kept.values())


@pytest.mark.parametrize("n", [2, 3, 4])
def test_sum_at_the_limits_the_catalogue_allows(n: int) -> None:
    """Values at the ends the catalogue allows (LOWEST, LIMIT), of one sign and mixed; one common identifier."""
    sets = overlapping(n, 6, [2] * n)
    for values in ({p: [LIMIT] * len(s) for p, s in sets.items()},
                   {p: [LOWEST] * len(s) for p, s in sets.items()},
                   {p: [LIMIT if j % 2 else LOWEST + secrets.randbelow(3) for j in range(len(s))]
                    for p, s in sets.items()}):
        result = run(sets, values, "sum")
        size, total = opened(result)
        assert size == 6
        assert int(to_signed(np.array([total], dtype=np.uint64))[0]) == expected_sum(sets, values)
    single = {p: [b"only-one"] + fresh(2 + i) for i, p in enumerate(names(n))}
    values = random_values(single, LOWEST, LIMIT)
    size, total = opened(run(single, values, "sum"))
    assert size == 1 and int(to_signed(np.array([total], dtype=np.uint64))[0]) == expected_sum(single, values)


def test_the_catalogue_takes_values_up_to_the_limit_and_no_further() -> None:
    for n in (2, 3, 5):
        limit = (1 << 62) // (psi.MAX_SET_SIZE * n)     # n sets of up to MAX_SET_SIZE values each
        for bounds, ok in (((-limit, limit), True), ((-limit - 1, 0), False), ((0, limit + 1), False)):
            declared = Declared("ids", "alice", "set", bounds, 10, 0, False)
            if ok:
                ENTRY.check(params("sum", []), declared, n, 0)
            else:
                with pytest.raises(InputError, match="cannot overflow"):
                    ENTRY.check(params("sum", []), declared, n, 0)
        ENTRY.check(params("size", []), Declared("ids", "alice", "set", (-limit - 1, limit + 1), 10, 0, False), n, 0)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_the_declared_limit_keeps_every_sum_within_int64(n: int) -> None:
    limit = (1 << 62) // (psi.MAX_SET_SIZE * n)
    declared = Declared("ids", "alice", "set", (-limit, limit), psi.MAX_SET_SIZE, 0, False)
    ENTRY.check(params("sum", []), declared, n, 0)            # accepted at every node, so:
    assert n * psi.MAX_SET_SIZE * -limit >= -(2**63) and n * psi.MAX_SET_SIZE * limit <= 2**63 - 1


def test_sum_reuses_ot_setups_across_sessions() -> None:
    """A second sum between the same nodes reuses the setups of the first (no base-OT traffic), correctly."""
    parties = names(3)
    kept = {p: OtSetups() for p in parties}
    for round_ in range(3):
        sets = overlapping(3, 4 + round_, [3, 4, 5])
        values = random_values(sets)
        result = run(sets, values, "sum", setups=kept)
        size, total = opened(result)
        assert size == 4 + round_
        assert int(to_signed(np.array([total], dtype=np.uint64))[0]) == expected_sum(sets, values)
        base = [step for msgs in result.router.received.values() for _, step, _ in msgs if step.startswith("ot/base")]
        assert bool(base) == (round_ == 0), (round_, base)


def test_text_identifiers_and_one_element_sets() -> None:
    sets = {"alice": [b"patient-0001", b"patient-0002", "Zoë".encode()],
            "bob": ["Zoë".encode(), b"patient-0001", b"patient-0003"],
            "carlos": [b"patient-0001", "Zoë".encode()]}
    assert opened(run(sets)) == [2]
    result = run(sets, mode="members", recipients=["carlos"])
    check_members(result, sets, ["carlos"])
    assert opened(run({"alice": [b"x"], "bob": [b"x"]})) == [1]
    assert opened(run({"alice": [b"x"], "bob": [b"y"]})) == [0]


def test_messages_before_a_party_starts_and_in_any_order() -> None:
    """Overtaking delivery, the starts interleaved, for size and members (the sum: test_sum_with_two_comparers)."""
    for seed in range(6):
        sets = overlapping(4, 5, [2, 3, 4, 5])
        order = rng(f"psi-order-{seed}")
        assert opened(run(sets, overtaking=True, order=order)) == [5]
        result = run(sets, mode="members", recipients=["bob", "david"], overtaking=True, order=rng(f"psi-m-{seed}"))
        check_members(result, sets, ["bob", "david"])


@pytest.mark.parametrize("setups", ["fresh", "reused"])
def test_sum_when_an_ot_message_overtakes_the_ot_setup(setups: str) -> None:
    """Both comparers' cot/u (alice's to bob, for bob's list; bob's to alice, for alice's) reach their
    receiver, in some of these schedules, before the OT setup they use (its hello or its last base-OT
    message): kept until then, and the sum is right."""
    sets = overlapping(2, 3, [2, 2])
    values = random_values(sets)
    kept = None
    if setups == "reused":
        kept = {p: OtSetups() for p in sets}
        run(sets, values, "sum", setups=kept)           # first in, first out: the setups are made
    early: Counter[tuple[str, str]] = Counter()         # (receiver, sender) of a cot/u ahead of its setup
    for seed in range(200):
        result = run(sets, values, "sum", overtaking=True, order=rng(f"race-{setups[0]}-{seed}"), setups=kept)
        size, total = opened(result)
        assert size == 3 and int(to_signed(np.array([total], dtype=np.uint64))[0]) == expected_sum(sets, values)
        early.update((me, sender) for me, e in result.engines.items() for sender in e.early_cot)
    assert set(early) == {("bob", "alice"), ("alice", "bob")}, early


# ---- what each node receives -----------------------------------------------------------------------


def points_received(result: Result) -> dict[str, list[tuple[str, str, bytes]]]:
    """Every point each node received in a list: (sender, step, point)."""
    out: dict[str, list[tuple[str, str, bytes]]] = {}
    for me, msgs in result.router.received.items():
        for sender, step, payload in msgs:
            if step.startswith((psi.STEP_LIST, psi.STEP_FULL, psi.STEP_REF)):
                assert len(payload) % psi.POINT == 0, (me, step)
                out.setdefault(me, []).extend((sender, step, payload[j:j + psi.POINT])
                                              for j in range(0, len(payload), psi.POINT))
    return out


def secrets_of(sets: Sets) -> list[tuple[str, bytes]]:
    """What must never leave a node: each identifier, its digest, and its unmasked hash on the curve."""
    out = []
    for ids in sets.values():
        for x in ids:
            digest = psi.identifier_digest(x)
            out += [("identifier", x), ("digest", digest), ("hash", psi.hash_to_curve(digest))]
    return out


def assert_no_secret_in_any_payload(result: Result, sets: Sets) -> None:
    needles = secrets_of(sets)
    scanned = 0
    for me, msgs in result.router.received.items():
        for sender, step, payload in msgs:
            scanned += 1
            for what, needle in needles:
                assert needle not in payload, f"{me} received a {what} in {step!r} from {sender!r}"
    assert scanned > 0


def expected_psi_messages(parties: Sequence[str], mode: str,
                          recipients: Sequence[str] = ()) -> dict[str, Counter[tuple[str, str]]]:
    """The PSI messages (sender, step) each node receives by the design (the module docstring), written
    out from it rather than from the engine: every list goes round the ring from its owner; its last
    hop P_(o-1) sends it fully masked to its comparer (P_0; in a sum P_1 for P_0's list) and, in a sum,
    a reshuffled copy to the other comparer, keeping whichever of the two is itself. members: the comparer
    (lead_of) sends the positions to every recipient but itself. sum: hellos and OTs between each comparer and the owners
    of the lists it compares (P_0 with every other node, P_1 with P_0); no OT between other nodes; and
    one "psi/zero" word between every pair (the output's zero-sharing)."""
    order = sorted(parties)
    n = len(order)
    lead = lead_of(order, mode, recipients)
    out: dict[str, Counter[tuple[str, str]]] = {p: Counter() for p in order}
    for o in range(n):
        for k in range(1, n):
            out[order[(o + k) % n]][(order[(o + k - 1) % n], f"{psi.STEP_LIST}{o}")] += 1
        last = order[o - 1]
        comparer = order[1] if mode == "sum" and o == 0 else lead
        if comparer != last:
            out[comparer][(last, f"{psi.STEP_FULL}{o}")] += 1
        if mode == "sum":
            reference = order[0] if o == 0 else order[1]
            if reference != last:
                out[reference][(last, f"{psi.STEP_REF}{o}")] += 1
    if mode == "members":
        for r in recipients:
            if r != lead:
                out[r][(lead, psi.STEP_MEMBERS)] += 1
    if mode == "sum":
        for p in order[1:]:
            out[p][(order[0], psi.STEP_HELLO)] += 1
            out[order[0]][(p, psi.STEP_HELLO)] += 1
            out[p][(order[0], psi.STEP_COT_U)] += 1          # P_0 compares p's list; p owns it
            out[order[0]][(p, psi.STEP_COT_T)] += 1
        out[order[0]][(order[1], psi.STEP_COT_U)] += 1       # P_1 compares P_0's list
        out[order[1]][(order[0], psi.STEP_COT_T)] += 1
        for p in order:                                      # the output's zero-sharing: a word each way
            for q in order:
                if p != q:
                    out[p][(q, psi.STEP_ZERO)] += 1
    return out


def lead_of(parties: Sequence[str], mode: str, recipients: Sequence[str]) -> str:
    """The comparer by the design: the first node by name, but for the members the first that receives none
    (P_0 when both of two nodes are recipients)."""
    order = sorted(parties)
    free = [p for p in order if p not in recipients] if mode == "members" else order
    return free[0] if free else order[0]


def psi_messages(result: Result) -> dict[str, Counter[tuple[str, str]]]:
    """What each node received, as (sender, step), leaving out the base OTs ("ot/...")."""
    return {me: Counter((sender, step) for sender, step, _ in msgs if not step.startswith("ot/"))
            for me, msgs in result.router.received.items()}


@pytest.mark.parametrize("mode", psi.MODES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_views_valid_points_and_no_identifier_digest_or_hash(n: int, mode: str) -> None:
    sets = overlapping(n, 6, [4 + i for i in range(n)])
    parties = names(n)
    recipients = parties[1:] if mode == "members" else []
    result = run(sets, random_values(sets), mode, recipients)
    received = points_received(result)
    # Each node receives exactly the messages of the design, each once: n - 1 lists on their way round
    # (one per other origin); the comparer(s) the fully masked lists (and in a sum the references) whose
    # last hop they are not; the members' positions; the sum's hellos and OTs with the comparers only.
    assert psi_messages(result) == expected_psi_messages(parties, mode, recipients)
    for i, me in enumerate(parties):
        lists = {step for _, step, _ in received.get(me, [])}
        assert {f"{psi.STEP_LIST}{o}" for o in range(n) if o != i} <= lists, (me, lists)
        if mode != "sum" and i:
            assert all(s.startswith(psi.STEP_LIST) for s in lists), (me, lists)    # only P_0 compares
        if mode == "sum" and i > 1:
            assert all(s.startswith(psi.STEP_LIST) for s in lists), (me, lists)    # P_0 and P_1 compare
    for me, points in received.items():
        for sender, step, point in points:
            assert_valid_point(point, f"{me} from {sender} in {step}")
    assert_no_secret_in_any_payload(result, sets)
    # Only the expected steps: the references and the sum's OT traffic only in the sum.
    steps = {step for msgs in result.router.received.values() for _, step, _ in msgs}
    allowed = {s for s in steps if s.startswith((psi.STEP_LIST, psi.STEP_FULL))}
    allowed |= {psi.STEP_MEMBERS} if mode == "members" else set()
    allowed |= {s for s in steps if s in (psi.STEP_HELLO, psi.STEP_COT_U, psi.STEP_COT_T, psi.STEP_ZERO) or
                s.startswith(("ot/", psi.STEP_REF))} if mode == "sum" else set()
    assert steps == allowed, steps - allowed


def fully_masked(result: Result, x: bytes) -> bytes:
    """h(x) under every node's key (computed here from the engines' keys, not taken from a view)."""
    point = psi.hash_to_curve(psi.identifier_digest(x))
    for e in result.engines.values():
        point = nacl.bindings.crypto_scalarmult(e.engine._key, point)
    return point


def compared(engine: psi.PsiParty) -> dict[int, list[bytes]]:
    """The n lists a comparer compares, by origin: the ones it compares and (sum) its references."""
    return {**engine._ref, **engine._full}


@pytest.mark.parametrize("mode", psi.MODES)
def test_the_fully_masked_lists_are_the_hashes_under_every_key(mode: str) -> None:
    """Positive control of the scan: what each comparer compares is {h(x)^(k_0...k_(n-1))} for each
    owner's set, so the unmasked hashes the scan looks for are the real inputs of the masking. The
    size and members: P_0 holds all n lists; the sum: P_0 and P_1 each hold all n, P_0 list 0 as a
    reference and P_1 lists 1 and 2 as references."""
    sets = overlapping(3, 4, [3, 4, 5])
    result = run(sets, random_values(sets), mode, ["carlos"] if mode == "members" else ())
    comparers = ["alice", "bob"] if mode == "sum" else ["alice"]
    for name in comparers:
        comparer = result.engines[name].engine
        lists = compared(comparer)
        assert sorted(lists) == [0, 1, 2], (name, sorted(lists))
        for origin, p in enumerate(names(3)):
            assert set(lists[origin]) == {fully_masked(result, x) for x in sets[p]}, (name, p)
            assert len(lists[origin]) == len(sets[p])
        # The common identifiers' fully masked points are equal across lists: that is what is compared.
        common_points = set.intersection(*(set(v) for v in lists.values()))
        assert common_points == {fully_masked(result, x) for x in common_of(sets)} and len(common_points) == 4
    if mode == "sum":
        assert sorted(result.engines["alice"].engine._ref) == [0] and sorted(result.engines["bob"].engine._full) == [0]
    for name in names(3):
        if name not in comparers:
            assert not result.engines[name].engine._full and not result.engines[name].engine._ref, name


def test_received_points_look_uniform() -> None:
    """The bits of every received point (bit 255, always 0 for a canonical u, left out): balanced overall
    and at each of the 255 positions (false alarm below 1e-6 for the test, split evenly)."""
    sets = overlapping(3, 100, [150, 160, 170])
    result = run(sets)
    points = [pt for pts in points_received(result).values() for _, _, pt in pts]
    assert len(points) > 1000
    bits = np.unpackbits(np.frombuffer(b"".join(points), dtype=np.uint8).reshape(-1, psi.POINT),
                         axis=1, bitorder="little")
    assert not bits[:, 255].any()
    body = bits[:, :255]
    assert_balanced(np.packbits(body.reshape(-1)), FALSE_ALARM / 2)
    for position in range(255):
        column = np.packbits(body[:, position])
        assert balanced(column, FALSE_ALARM / 2 / 255), f"bit {position} unbalanced: {int(body[:, position].sum())} " \
                                                       f"ones in {body.shape[0]}"
    # Power: text identifiers padded to 32 bytes, as raw bytes, fail at once.
    texts = [f"patient-{i:06d}".encode().ljust(32, b"\0") for i in range(len(points))]
    assert not balanced(np.frombuffer(b"".join(texts), dtype=np.uint8), FALSE_ALARM)


# ---- linking positions to records: who can, who cannot ---------------------------------------------
#
# Whoever can map a fully masked list's positions to its owner's records, and knows which positions are
# common, knows which of the owner's records are in the intersection. `linkage_guess` is that attack for a
# coalition: it follows a list from its owner (whose permutation `_perm` it knows) hop by hop, exactly
# through the coalition's own hops (matching what the hop passed on with what it received, masked by its
# key: the points are distinct) and assuming every other hop kept the order (as every hop did before the
# fix); then it maps the common positions of the version it holds back to the owner's records. For a
# coalition of the owner alone, holding its own list, that is the old bug's mapping: `_perm` of the
# common positions.
#
# The chance bound: if one hop outside the coalition (or the last hop's shuffle of a reference) applies a
# uniformly random permutation unknown to the coalition, the guess is the image of the true common
# positions under a uniform permutation, a uniform c-subset of the owner's m records: it is the true set
# with chance 1/C(m, c). PRIVATE_SETS give c = 16 and m >= 32 records a node: 1/C(32, 16) = 1/601,080,390
# < 1.7e-9 a guess. No test below makes more than 40 guesses that must fail: below 7e-8 a test.


PRIVATE_COMMON = 16


def private_sets(n: int) -> dict[str, list[bytes]]:
    """16 identifiers common to all, 16 + i more at node i (and, for n > 2, 3 shared by all but the last)."""
    return overlapping(n, PRIVATE_COMMON, [16 + i for i in range(n)])


def points_of(payload: bytes) -> list[bytes]:
    return [payload[j:j + psi.POINT] for j in range(0, len(payload), psi.POINT)]


def message(result: Result, to: str, sender: str, step: str) -> list[bytes]:
    """The points of the one message `to` received from `sender` in `step`."""
    [payload] = [p for s, st, p in result.router.received[to] if s == sender and st == step]
    return points_of(payload)


def hops_of(result: Result, origin: int, final: Sequence[bytes]) -> list[tuple[str, list[bytes], list[bytes]]]:
    """List `origin` at each hop, in ring order: (the hop, what it received, what it passed on), the last
    hop's output being `final` (the version some comparer holds)."""
    parties = sorted(result.engines)
    n = len(parties)
    out = []
    for k in range(1, n):
        hop, prev = parties[(origin + k) % n], parties[(origin + k - 1) % n]
        received = message(result, hop, prev, f"{psi.STEP_LIST}{origin}")
        sent = list(final) if k == n - 1 else message(result, parties[(origin + k + 1) % n], hop,
                                                      f"{psi.STEP_LIST}{origin}")
        out.append((hop, received, sent))
    return out


def linkage_guess(result: Result, sets: Sets, origin: int, coalition: set[str], final: Sequence[bytes]) -> set[bytes]:
    """The owner's records a coalition (with the owner of list `origin`) takes for the common ones, holding
    `final`, a fully masked version of the list (see above)."""
    owner = sorted(result.engines)[origin]
    track = [int(j) for j in result.engines[owner].engine._perm]     # position -> the owner's record
    for hop, received, sent in hops_of(result, origin, final):
        assert len(received) == len(sent) == len(track)
        if hop in coalition:
            where = {p: i for i, p in enumerate(psi.mask(result.engines[hop].engine._key, received, "test"))}
            track = [track[where[p]] for p in sent]
    common = {fully_masked(result, x) for x in common_of(sets)}
    return {sets[owner][track[j]] for j, p in enumerate(final) if p in common}


def own_versions(result: Result, index: int) -> list[list[bytes]]:
    """Every fully masked version of its own list node `index` holds: kept as the last hop, or received."""
    me = sorted(result.engines)[index]
    engine = result.engines[me].engine
    versions = [v for v in (engine._full.get(index), engine._ref.get(index)) if v is not None]
    versions += [points_of(p) for _, st, p in result.router.received[me]
                 if st in (f"{psi.STEP_FULL}{index}", f"{psi.STEP_REF}{index}", f"{psi.STEP_LIST}{index}")]
    return [list(v) for v in {tuple(v): None for v in versions}]


@pytest.mark.parametrize("n", [2, 3])
def test_the_comparer_cannot_tell_its_own_common_records(n: int) -> None:
    """The privacy bug fixed: P_0 got its own list back fully masked in its own order, and its permutation
    `_perm` of the common positions was exactly its common records, even for the size. Now, mapping the
    common positions of every version of its own list it holds through `_perm` gives a set that is not
    its common records (chance bound above): for the size, the members when P_0 is no recipient, and the
    sum, for both comparers there (P_1 holds its own list only as a reference reshuffled by its last hop).
    P_0 a recipient of the members is no comparer and holds no fully masked version of its own list.
    Positive controls, the same mapping finding the records where the design lets it: P_0 a recipient
    with the comparer (its list kept its order: what its Keep holds), and, in a sum, a comparer colluding
    with the owner of a list it compares (the documented leaks)."""
    sets = private_sets(n)
    parties = names(n)
    truth = common_of(sets)
    assert len(truth) == PRIVATE_COMMON and all(len(s) >= 2 * PRIVATE_COMMON for s in sets.values())
    for mode, recipients in (("size", []), ("members", [parties[-1]]), ("sum", [])):
        result = run(sets, random_values(sets), mode, recipients)
        for i in ([0, 1] if mode == "sum" else [0]):
            versions = own_versions(result, i)
            assert len(versions) == 1, (mode, parties[i], len(versions))      # one fully masked version
            guess = linkage_guess(result, sets, i, {parties[i]}, versions[0])
            assert len(guess) == len(truth)                                   # the size, which it may know
            assert guess != truth, f"{mode}: {parties[i]} can tell which of its records are common"
        assert result.kept[parties[0]] == [], mode
        if mode == "sum":   # the documented leak: the comparer of a list, with its owner, links it
            alice, bob = (result.engines[p].engine for p in parties[:2])
            assert linkage_guess(result, sets, 0, {"alice", "bob"}, bob._full[0]) == truth
            assert linkage_guess(result, sets, 1, {"alice", "bob"}, alice._full[1]) == truth
    # P_0 a recipient: the next node compares, and P_0 holds its own list fully masked nowhere. Positive
    # control: its list kept its order at every hop, so P_0 with the comparer maps it exactly.
    result = run(sets, mode="members", recipients=[parties[0]])
    assert own_versions(result, 0) == [] and result.engines[parties[0]].engine.lead == 1
    assert linkage_guess(result, sets, 0, set(parties[:2]), result.engines[parties[1]].engine._full[0]) == truth
    assert {sets[parties[0]][int(j)] for j in result.kept[parties[0]][0]} == truth


@pytest.mark.parametrize("n", [2, 3, 4])
def test_recipients_get_exactly_their_members_from_a_comparer_that_is_none_of_them(n: int) -> None:
    """Every recipient, P_0 among them or not, keeps exactly its common records (distinct indices into its
    own records); the others keep nothing. The comparer is the first node by name that receives none (P_0
    when both of two nodes are recipients); every recipient but the comparer gets its positions from it,
    once. The comparer holds its own list in its own order only when it is a recipient, that is with two
    nodes both receiving (a reshuffled list of 12 or more points keeps its order with chance below
    1/12! < 2.1e-9)."""
    sets = overlapping(n, 8, [4 + i for i in range(n)])
    parties = names(n)
    common = common_of(sets)
    for recipients in ([parties[0]], parties[:2], [parties[-1]], parties[1:], parties[:-1]) + ((parties,) if n == 2 else ()):
        lead = lead_of(parties, "members", recipients)
        for overtaking in (False, True):
            result = run(sets, mode="members", recipients=recipients, overtaking=overtaking)
            assert opened(result) == [len(common)]
            assert [int(o[0]) for o in result.outputs.values()] == [len(common) if p == lead else 0 for p in parties]
            check_members(result, sets, recipients)
            sent_members = Counter((me, s) for me, msgs in result.router.received.items()
                                   for s, st, _ in msgs if st == psi.STEP_MEMBERS)
            assert sent_members == Counter({(r, lead): 1 for r in recipients if r != lead})
            comparer = result.engines[lead].engine
            i = parties.index(lead)
            assert sorted(comparer._full) == list(range(n))
            in_order = comparer._full[i] == [fully_masked(result, sets[lead][int(j)]) for j in comparer._perm]
            assert in_order == (lead in recipients), recipients


def reshuffles(mode: str, owner: str, recipients: Sequence[str]) -> bool:
    """Whether, by the design, every hop reshuffles the owner's list."""
    return mode == "size" or (mode == "members" and owner not in recipients)


@pytest.mark.parametrize("mode", psi.MODES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_which_hops_reshuffle(n: int, mode: str) -> None:
    """Each hop's output against its input masked by its key: the same points always; in another order
    exactly where the design reshuffles (size: every hop of every list; members: every hop of the lists of
    non-recipients; sum: none, but the reference a last hop sends is reshuffled). So the positions of a
    list at its comparer are its owner's order exactly where no hop reshuffles. A reshuffle keeps 12 or
    more points in order with chance below 1/12! < 2.1e-9; at most 40 such checks a run, 80 a test."""
    sets = overlapping(n, 8, [4 + i for i in range(n)])
    parties = names(n)
    for recipients in ((parties[::2], parties[1::2]) if mode == "members" else ([],)):
        result = run(sets, random_values(sets), mode, recipients)
        for o, owner in enumerate(parties):
            comparer = parties[1] if mode == "sum" and o == 0 else lead_of(parties, mode, recipients)
            final = result.engines[comparer].engine._full[o]
            shuffled = reshuffles(mode, owner, recipients)
            for hop, received, sent in hops_of(result, o, final):
                masked = psi.mask(result.engines[hop].engine._key, received, "test")
                assert sorted(sent) == sorted(masked), (owner, hop)
                assert (sent != masked) == shuffled, (mode, recipients, owner, hop)
            owner_order = [fully_masked(result, sets[owner][int(j)]) for j in result.engines[owner].engine._perm]
            assert (final != owner_order) == shuffled, (mode, owner)
            if mode == "sum":
                other = parties[0] if o == 0 else parties[1]
                reference = result.engines[other].engine._ref[o]
                assert sorted(reference) == sorted(final) and reference != final, owner


@pytest.mark.parametrize("owner", [1, 2])
def test_an_owner_and_the_comparer_together_cannot_link_positions(owner: int) -> None:
    """Size, 3 nodes: the owner of a list and P_0 together follow it exactly through P_0's hop (bob's list:
    P_0 is its last hop; carlos's: its first) but not through the third node's reshuffle: their guess of
    the owner's common records is wrong (chance bound above). Positive control: with the owner a
    recipient of the members its list keeps its order, and the same guess is exactly right."""
    sets = private_sets(3)
    parties = names(3)
    truth = common_of(sets)
    coalition = {parties[0], parties[owner]}
    for seed in range(5):
        result = run(sets)
        guess = linkage_guess(result, sets, owner, coalition, result.engines["alice"].engine._full[owner])
        assert len(guess) == len(truth) and guess != truth, seed
    result = run(sets, mode="members", recipients=[parties[owner]])
    assert linkage_guess(result, sets, owner, coalition, result.engines["alice"].engine._full[owner]) == truth


@pytest.mark.parametrize("n", [3, 4])
def test_no_coalition_short_of_all_links_positions_in_the_size(n: int) -> None:
    """Size: for every list and every node h other than its owner, all nodes but h together (the owner and
    P_0 among them) cannot follow the list through h's reshuffle: their guess is wrong (chance bound above;
    at most 12 guesses). Positive control: all n nodes together follow every list exactly."""
    sets = private_sets(n)
    parties = names(n)
    truth = common_of(sets)
    result = run(sets)
    p0 = result.engines[parties[0]].engine
    for o, owner in enumerate(parties):
        assert linkage_guess(result, sets, o, set(parties), p0._full[o]) == truth, owner
        for honest in parties:
            if honest != owner:
                guess = linkage_guess(result, sets, o, set(parties) - {honest}, p0._full[o])
                assert guess != truth, (owner, honest)


def pairwise_sets(n: int) -> dict[str, list[bytes]]:
    """16 identifiers common to all, 16 + i of node i's own, and 4 shared by each pair of nodes only: each
    pairwise intersection holds 20 identifiers, the n-way one 16 (n > 2)."""
    parties = names(n)
    shared = fresh(PRIVATE_COMMON)
    sets = {p: shared + fresh(16 + i) for i, p in enumerate(parties)}
    for i, p in enumerate(parties):
        for q in parties[i + 1:]:
            extra = fresh(4)
            sets[p] += extra
            sets[q] += extra
    return sets


def pairwise_guess(result: Result, sets: Sets, me: str, own: Sequence[bytes], other: Sequence[bytes]) -> set[bytes]:
    """The records `me` takes for those also in another node's set: the positions of `own`, a fully masked
    version of its list, whose points are in `other`, that node's fully masked list, mapped through `me`'s
    permutation (exact if `own` kept `me`'s order)."""
    perm = result.engines[me].engine._perm
    points = set(other)
    return {sets[me][int(perm[j])] for j, p in enumerate(own) if p in points}


@pytest.mark.parametrize("n", [3, 4])
def test_the_comparer_cannot_tell_its_records_in_each_other_set(n: int) -> None:
    """The attack on the members when the comparer was a recipient: it held its own list fully masked in its
    own order beside every other list, so matching the two it learnt which of its records are in each
    other node's set (here 20 each), not only in all (16). Now the comparer receives none: for the size
    and for recipients that include P_0, all but the last, all but the first, or only the last, the same
    matching of every version of its own list it holds against each other list gives a wrong set
    (a uniform 20-subset of 40 or more records: right with chance below 1/C(40, 20) < 1e-11; at most 15
    guesses a test). Positive control (the documented collusion): a recipient with the comparer matches
    its own list, kept in its order, exactly against every other one. And every one of 3 or more nodes
    a recipient is refused, by the catalogue before anything is shared and by the engine."""
    sets = pairwise_sets(n)
    parties = names(n)
    pairwise = {(p, q): set(sets[p]) & set(sets[q]) for p in parties for q in parties if p != q}
    assert all(len(v) == PRIVATE_COMMON + 4 for v in pairwise.values()) and len(common_of(sets)) == PRIVATE_COMMON
    for mode, recipients in (("size", []), ("members", [parties[0]]), ("members", parties[:-1]),
                             ("members", parties[1:]), ("members", [parties[-1]])):
        result = run(sets, mode=mode, recipients=recipients)
        lead = lead_of(parties, mode, recipients)
        assert lead not in recipients and result.engines[lead].engine.lead == parties.index(lead)
        lists = result.engines[lead].engine._full
        assert sorted(lists) == list(range(n))
        i = parties.index(lead)
        versions = own_versions(result, i)
        assert versions == [lists[i]], (mode, recipients)
        for k, other in enumerate(parties):
            if other != lead:
                guess = pairwise_guess(result, sets, lead, lists[i], lists[k])
                assert len(guess) == PRIVATE_COMMON + 4          # the size, which it learns
                assert guess != pairwise[lead, other], f"{mode} to {recipients}: {lead} knows its records in {other}'s set"
        for r in recipients:
            j = parties.index(r)
            for k, other in enumerate(parties):
                if other != r:
                    assert pairwise_guess(result, sets, r, lists[j], lists[k]) == pairwise[r, other], (r, other)
    with pytest.raises(InputError, match=f"at most {n - 1} of the {n}"):
        ENTRY.check(params("members", parties, parties), Declared("ids", parties[0], "set", None, 40, 0, False), n, 0)
    with pytest.raises(LocalProtocolError, match=f"at most {n - 1} of the {n}"):
        engines(sets, {p: [0] * len(v) for p, v in sets.items()}, "members", parties)
    ENTRY.check(params("members", parties[1:], parties), Declared("ids", parties[0], "set", None, 40, 0, False), n, 0)
    ENTRY.check(params("members", ["a", "b"], ["a", "b"]), Declared("ids", "a", "set", None, 40, 0, False), 2, 0)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_sum_with_two_comparers(n: int) -> None:
    """The sum, first in first out and overtaking (the starts interleaved): P_0 outputs [size, share] and
    every other node [0, share], and the shares add up to the sum; the OTs run between P_0 and every other
    node (P_0 choosing, for their lists) and between P_1 and P_0 (P_1 choosing, for P_0's list), and no
    other pair; no node's share alone is the sum (false alarm 2^-64 a node)."""
    sets = overlapping(n, 7, [3 + i for i in range(n)])
    parties = names(n)
    common = common_of(sets)
    schedules = [(False, None)] + [(True, rng(f"psi-sum-{n}-{seed}")) for seed in range(4)]
    for k, (overtaking, order) in enumerate(schedules):
        values = random_values(sets, LOWEST, LIMIT) if k % 2 else random_values(sets)
        result = run(sets, values, "sum", overtaking=overtaking, order=order)
        size, total = opened(result)
        assert size == len(common)
        assert int(to_signed(np.array([total], dtype=np.uint64))[0]) == expected_sum(sets, values)
        assert int(result.outputs[parties[0]][0]) == len(common)
        assert all(int(result.outputs[p][0]) == 0 for p in parties[1:])
        assert all(int(result.outputs[p][1]) != total for p in parties)
        assert psi_messages(result) == expected_psi_messages(parties, "sum")
        ot_pairs = {frozenset((me, s)) for me, msgs in result.router.received.items() for s, st, _ in msgs
                    if st.startswith("ot/")}
        assert ot_pairs == {frozenset((parties[0], p)) for p in parties[1:]}, ot_pairs


# ---- the sum's output shares: what the coordinator and P_0 learn from them ----------------------------
#
# Each list's comparer and owner hold additive shares of that owner's sum over the intersection: the
# comparer Σ_p m_(e_p) (its OT outputs), the owner −Σ_p m0_p. Before the zero-sharing an owner o >= 2
# output exactly −Σ m0, so P_0 (the comparer of its list), given that output share by the coordinator,
# added its own part and had o's sum alone. P_1's output also held its comparer part for P_0's list, which
# P_0's own OT part cancels: the same attack gave P_0's and P_1's sums together. Now every pair of nodes
# exchanges a random word ("psi/zero"), and the words a third node exchanges with o stay unknown to P_0.

M64 = 1 << 64


def record_cot_parts(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str, str, str], int]:
    """Record what each correlated-OT message adds to its receiver's share of the sum, keyed
    (session, receiver, sender, step), mod 2^64: PsiParty._take_cot wrapped (what a nested call, an
    overtaking cot/u taken when its setup arrives, adds is its own). Works wherever the engines run in
    this process (the sim's Router, or node daemons on the test's event loop)."""
    parts: dict[tuple[str, str, str, str], int] = {}
    nested: list[int] = []
    original = psi.PsiParty._take_cot

    def take(self: psi.PsiParty, sender: str, step: str, payload: bytes, where: str) -> list[Any]:
        before = self._share
        nested.append(0)
        try:
            return original(self, sender, step, payload, where)
        finally:
            inner = nested.pop()
            added = self._share - before
            if nested:
                nested[-1] += added
            key = (self.session_id, self.me, sender, step)
            parts[key] = (parts.get(key, 0) + added - inner) % M64

    monkeypatch.setattr(psi.PsiParty, "_take_cot", take)
    return parts


def zero_words(received: Mapping[str, Sequence[tuple[str, str, bytes]]]) -> dict[tuple[str, str], int]:
    """(sender, receiver) -> the zero-sharing word, from what each node received (sender, step, payload)."""
    out = {}
    for me, msgs in received.items():
        for sender, step, payload in msgs:
            if step == psi.STEP_ZERO:
                assert len(payload) == 8 and (sender, me) not in out
                out[(sender, me)] = int.from_bytes(payload, "little")
    return out


@dataclass
class OwnerAttack:
    """What P_0 with the coordinator computes for owner `o` of a sum (mod 2^64)."""

    ot_share: int       # the owner's share before the zero-sharing: its OT parts alone
    old: int            # P_0's part plus ot_share: the attack before the fix, exactly the target
    now: int            # P_0's part plus the owner's output share
    informed: int       # the same, less the zero-sharing words P_0 itself exchanged with the owner


def attack_owner(parts: Mapping[tuple[str, str, str, str], int], session: str, parties: Sequence[str], o: int,
                 share: int, zeros: Mapping[tuple[str, str], int]) -> OwnerAttack:
    """The attack on owner index o >= 1, from what P_0 knows (its OT parts, the zero words it sent and got)
    and the owner's output share; checks the share is the owner's OT parts plus its zero words, exactly."""
    order = sorted(parties)
    p0, owner = order[0], order[o]
    known = parts[(session, p0, owner, psi.STEP_COT_T)]          # P_0's comparer part for list o
    ot_share = parts[(session, owner, p0, psi.STEP_COT_U)]       # the owner's −Σ m0 for list o
    if o == 1:   # P_1 compares P_0's list too: its comparer part; P_0's own −Σ m0 for list 0 cancels it
        known += parts[(session, p0, owner, psi.STEP_COT_U)]
        ot_share += parts[(session, owner, p0, psi.STEP_COT_T)]
    zeros_in = sum(w for (s, r), w in zeros.items() if r == owner)
    zeros_out = sum(w for (s, r), w in zeros.items() if s == owner)
    assert share % M64 == (ot_share + zeros_in - zeros_out) % M64, "a share is its OT parts and its zero words"
    informed = share - zeros[(p0, owner)] + zeros[(owner, p0)]
    return OwnerAttack(ot_share % M64, (known + ot_share) % M64, (known + share) % M64, (known + informed) % M64)


def attack_target(sets: Sets, values: Values, o: int) -> int:
    """What the attack on owner index o is after (mod 2^64): its own sum over the intersection; for P_1,
    P_0's and P_1's together."""
    order = sorted(sets)
    common = common_of(sets)
    owners = order[:2] if o == 1 else [order[o]]
    return sum(v for p in owners for x, v in zip(sets[p], values[p]) if x in common) % M64


ZERO_RUNS = 8


@pytest.mark.parametrize("n", [3, 4])
def test_p0_with_one_owners_output_share_does_not_get_that_owners_sum(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The zero-sharing of the sum's output, over ZERO_RUNS sums (OT setups reused): for every owner o >= 1,
    P_0's comparer part for o's list plus o's output share (the old attack), even with the zero words
    P_0 exchanged with o taken out, is not o's sum over the intersection (nor, for P_1, P_0's and P_1's
    sums together); the attack is right on the shares without the zero-sharing (positive control, and
    each share is exactly those parts plus its zero words). What the informed attack misses by is
    uniform (the words a third node exchanged with o), and so is each node's output share, the
    coordinator's view: their bits are balanced (FALSE_ALARM, split over the n + 1 checks). The words
    are uniform mod 2^64 whatever the values (|v| <= LIMIT < 2^40): each inequality fails by chance
    with probability 2^-64 (below 3e-18 over the test's 48 at most)."""
    parts = record_cot_parts(monkeypatch)
    sets = overlapping(n, 5, [3] * n)
    parties = names(n)
    setups = {p: OtSetups() for p in parties}
    misses: list[int] = []                       # the informed attack's error on the last owner, per run
    shares: dict[str, list[int]] = {p: [] for p in parties}
    for _ in range(ZERO_RUNS):
        values = random_values(sets, LOWEST, LIMIT)
        result = run(sets, values, "sum", setups=setups)
        session = result.engines[parties[0]].engine.session_id
        zeros = zero_words(result.router.received)
        assert len(zeros) == n * (n - 1)
        size, total = opened(result)
        assert size == len(common_of(sets)) and total == expected_sum(sets, values) % M64
        for p in parties:
            shares[p].append(int(result.outputs[p][1]))
        for o in range(1, n):
            target = attack_target(sets, values, o)
            attack = attack_owner(parts, session, parties, o, int(result.outputs[parties[o]][1]), zeros)
            assert attack.old == target, o                                  # the old share gave it away
            assert attack.now != target and attack.informed != target, o
        misses.append((attack.informed - target) % M64)
    assert len(set(misses)) == ZERO_RUNS
    assert_balanced(np.array(misses, dtype=np.uint64), FALSE_ALARM / (n + 1))
    for p, words in shares.items():
        assert len(set(words)) == ZERO_RUNS, p
        assert balanced(np.array(words, dtype=np.uint64), FALSE_ALARM / (n + 1)), (p, [hex(w) for w in words])


def test_waiting_for_names_the_comparer_of_the_first_nodes_list() -> None:
    """A sum of 3 delivered first in first out, bob's cot/u to alice held back: carlos is done, bob waits
    for alice's cot/t, and alice for bob's cot/u only."""
    sets = overlapping(3, 3, [2, 2, 2])
    es = engines(sets, random_values(sets), "sum")
    pending: list[tuple[str, Send]] = []
    for p, e in es.items():
        pending += [(p, s) for s in e.start() if isinstance(s, Send)]
    held = []
    while pending:
        sender, send = pending.pop(0)
        if send.step == psi.STEP_COT_U and sender == "bob":
            held.append(send)
            continue
        pending += [(send.to, s) for s in es[send.to].receive(sender, send.step, send.payload) if isinstance(s, Send)]
    assert len(held) == 1
    assert es["carlos"].engine.waiting_for == () and es["bob"].engine.waiting_for == ("alice",)
    assert es["alice"].engine.waiting_for == ("bob",)


# ---- malformed input -------------------------------------------------------------------------------


def started(n: int = 3, mode: str = "size", recipients: Sequence[str] = (),
            sizes: Sequence[int] | None = None) -> tuple[dict[str, psi.PsiParty], dict[str, list[Any]], Sets]:
    """n engines, each started (its own list sent on), nothing delivered: (engines, each one's start events, sets)."""
    parties = names(n)
    sizes = sizes or [3 + i for i in range(n)]
    sets = {p: fresh(k) for p, k in zip(parties, sizes)}
    es = engines(sets, {p: [1] * len(s) for p, s in sets.items()}, mode, recipients)
    return {p: e.engine for p, e in es.items()}, {p: e.start() for p, e in es.items()}, sets


def sent(events: Sequence[Any], step: str) -> Send:
    [send] = [e for e in events if isinstance(e, Send) and e.step == step]
    return send


def refused(engine: psi.PsiParty, sender: str, step: str, payload: bytes,
            error: type[Exception], *needles: str) -> str:
    with pytest.raises(error) as info:
        engine.receive(sender, step, payload)
    message = str(info.value)
    assert repr(step) in message and repr(sender) in message, message
    for needle in needles:
        assert needle in message, message
    return message


def point_list(count: int, *special: bytes) -> bytes:
    """`count` valid points (fresh hashes), the first ones replaced by `special`."""
    points = [psi.hash_to_curve(os.urandom(32)) for _ in range(count)]
    points[:len(special)] = special
    return b"".join(points)


NON_CANONICAL = [(P + k).to_bytes(32, "little") for k in (0, 1, 9)] + [b"\xff" * 32]
SMALL_ORDER = [(0).to_bytes(32, "little"), (1).to_bytes(32, "little"), (P - 1).to_bytes(32, "little"),
               (325606250916557431795983626356110631294008115727848805560023387167927233504).to_bytes(32, "little")]


def test_a_list_with_a_non_canonical_or_small_order_point_is_refused() -> None:
    for bad in NON_CANONICAL:          # bob takes alice's list (origin 0) and masks it; fresh engines each
        es, _, sets = started(3)      # time (a refused list ends the session: the node fails it)
        refused(es["bob"], "alice", f"{psi.STEP_LIST}0", point_list(len(sets["alice"]), bad),
                RemoteProtocolError, "canonical")
    for bad in SMALL_ORDER:
        es, _, sets = started(3)
        refused(es["bob"], "alice", f"{psi.STEP_LIST}0", point_list(len(sets["alice"]), bad),
                RemoteProtocolError, "small order")
    # At the comparer, a fully masked list of alice's (origin 0; carlos is its last hop) with a
    # non-canonical point, naming the point's position.
    es, _, sets = started(3)
    msg = refused(es["alice"], "carlos", f"{psi.STEP_FULL}0", point_list(len(sets["alice"]), NON_CANONICAL[0]),
                  RemoteProtocolError, "canonical")
    assert "point 0" in msg


def test_a_fully_masked_list_with_a_small_order_point_is_refused() -> None:
    for bad in SMALL_ORDER[:2]:
        es, _, sets = started(3)
        refused(es["alice"], "carlos", f"{psi.STEP_FULL}0", point_list(len(sets["alice"]), bad), RemoteProtocolError)


def test_a_list_of_the_wrong_length_is_refused() -> None:
    es, _, sets = started(3)
    size = len(sets["alice"])
    for payload in (point_list(size - 1), point_list(size + 1), point_list(size)[:-1], b""):
        refused(es["bob"], "alice", f"{psi.STEP_LIST}0", payload, RemoteProtocolError, "expected")
    refused(es["alice"], "carlos", f"{psi.STEP_FULL}0", point_list(size)[:-5], RemoteProtocolError, "expected")


def test_a_list_with_one_point_twice_is_refused() -> None:
    """Distinct identifiers stay distinct under every key: a repeated point could only inflate the size."""
    es, _, sets = started(3)
    size = len(sets["alice"])
    twice = psi.hash_to_curve(os.urandom(32))
    refused(es["bob"], "alice", f"{psi.STEP_LIST}0", point_list(size, twice, twice), RemoteProtocolError,
            "a point appears twice in one list")
    refused(es["alice"], "carlos", f"{psi.STEP_FULL}0", point_list(size, twice, twice), RemoteProtocolError,
            "a point appears twice in one list")


def test_a_list_from_the_wrong_sender_or_repeated_is_refused() -> None:
    es, starts, sets = started(4)
    size = {p: len(s) for p, s in sets.items()}
    # carlos takes lists from bob only: alice's own list (origin 0) sent by david, or by alice herself.
    refused(es["carlos"], "david", f"{psi.STEP_LIST}0", point_list(size["alice"]), RoundMismatch, "previous node")
    refused(es["carlos"], "alice", f"{psi.STEP_LIST}0", point_list(size["alice"]), RoundMismatch, "previous node")
    # A node's own list coming back to it, as a list to mask.
    refused(es["carlos"], "bob", f"{psi.STEP_LIST}2", point_list(size["carlos"]), RoundMismatch, "previous node")
    # Repeated: bob's own list arrives at carlos once; the second time it is refused.
    own = sent(starts["bob"], f"{psi.STEP_LIST}1")
    assert own.to == "carlos"
    es["carlos"].receive("bob", own.step, own.payload)
    refused(es["carlos"], "bob", own.step, own.payload, RoundMismatch, "once")
    # Fully masked lists: to the comparer only, from the last hop only, once.
    refused(es["bob"], "alice", f"{psi.STEP_FULL}0", point_list(size["alice"]), RoundMismatch, "once")
    refused(es["alice"], "bob", f"{psi.STEP_FULL}0", point_list(size["alice"]), RoundMismatch, "last hop")
    es["alice"].receive("david", f"{psi.STEP_FULL}0", point_list(size["alice"]))
    refused(es["alice"], "david", f"{psi.STEP_FULL}0", point_list(size["alice"]), RoundMismatch, "once")
    # Unknown origins and steps; a sender that is not a peer.
    for step in (f"{psi.STEP_LIST}4", f"{psi.STEP_LIST}-1", f"{psi.STEP_LIST}01", f"{psi.STEP_LIST}x",
                 f"{psi.STEP_FULL}9", "psi/other"):
        refused(es["carlos"], "bob", step, point_list(1), RoundMismatch, "unknown step")
    refused(es["carlos"], "mallory", f"{psi.STEP_LIST}1", point_list(size["bob"]), RemoteProtocolError, "not a peer")


def test_members_to_the_wrong_node_or_from_a_non_comparer_are_refused() -> None:
    es, _, sets = started(3, "members", ["carlos"])
    positions = words_to_bytes(np.array([0, 1], dtype=np.uint64))
    refused(es["bob"], "alice", psi.STEP_MEMBERS, positions, RoundMismatch, "recipient")       # bob receives none
    refused(es["carlos"], "bob", psi.STEP_MEMBERS, positions, RoundMismatch, "from alice")    # not the comparer
    refused(es["alice"], "bob", psi.STEP_MEMBERS, positions, RoundMismatch)                   # the comparer
    # Positions outside carlos's records, repeated, or not whole words.
    for bad in (words_to_bytes(np.array([len(sets["carlos"])], dtype=np.uint64)),
                words_to_bytes(np.array([1, 1], dtype=np.uint64))):
        es, _, sets = started(3, "members", ["carlos"])
        refused(es["carlos"], "alice", psi.STEP_MEMBERS, bad, RemoteProtocolError, "positions")
    es, _, _ = started(3, "members", ["carlos"])
    with pytest.raises((RemoteProtocolError, RoundMismatch)) as info:
        es["carlos"].receive("alice", psi.STEP_MEMBERS, b"\x01\x02\x03")
    assert repr(psi.STEP_MEMBERS) in str(info.value) and "'alice'" in str(info.value)
    # In the size mode nobody takes members.
    es, _, _ = started(3, "size")
    refused(es["carlos"], "alice", psi.STEP_MEMBERS, positions, RoundMismatch)
    # Repeated: the second delivery of the positions is refused.
    es, _, _ = started(3, "members", ["carlos"])
    es["carlos"].receive("alice", psi.STEP_MEMBERS, words_to_bytes(np.array([0], dtype=np.uint64)))
    refused(es["carlos"], "alice", psi.STEP_MEMBERS, positions, RoundMismatch)


def test_cot_messages_to_the_wrong_node_or_mode_are_refused() -> None:
    es, _, _ = started(3, "size")
    for step in (psi.STEP_COT_U, psi.STEP_COT_T):
        refused(es["bob"], "alice", step, b"\0" * 64, RoundMismatch, "unexpected")
        refused(es["alice"], "bob", step, b"\0" * 64, RoundMismatch, "unexpected")
    # The sum of 3: alice compares bob's and carlos's lists, bob compares alice's; carlos compares none.
    es, _, _ = started(3, "sum")
    refused(es["bob"], "carlos", psi.STEP_COT_U, b"\0" * 64, RoundMismatch, "unexpected")    # carlos compares none
    refused(es["carlos"], "bob", psi.STEP_COT_U, b"\0" * 64, RoundMismatch, "unexpected")    # bob: alice's list only
    refused(es["alice"], "carlos", psi.STEP_COT_U, b"\0" * 64, RoundMismatch, "unexpected")  # nor alice's list
    refused(es["carlos"], "alice", psi.STEP_COT_T, b"\0" * 64, RoundMismatch, "unexpected")  # carlos only owns
    refused(es["bob"], "alice", psi.STEP_COT_T, b"\0" * 64, RoundMismatch, "unexpected")     # no cot/u sent yet
    refused(es["alice"], "bob", psi.STEP_COT_T, b"\0" * 64, RoundMismatch, "unexpected")     # no cot/u sent yet
    refused(es["alice"], "carlos", psi.STEP_COT_T, b"\0" * 64, RoundMismatch, "unexpected")  # no cot/u sent yet
    # bob's cot/u for alice's list is taken (kept until the setup it uses); a second one is refused.
    assert es["alice"].receive("bob", psi.STEP_COT_U, b"\0" * 64) == []
    refused(es["alice"], "bob", psi.STEP_COT_U, b"\0" * 64, RoundMismatch, "repeated")
    # Hellos: only in the sum, once, of whole setup ids.
    refused(es["bob"], "carlos", psi.STEP_HELLO, b"", RoundMismatch)          # bob's OTs are with alice only
    refused(es["carlos"], "bob", psi.STEP_HELLO, b"", RoundMismatch)          # carlos's too
    refused(es["bob"], "alice", psi.STEP_HELLO, b"\0" * 15, RemoteProtocolError, "bytes")
    es, _, _ = started(3, "sum")
    es["bob"].receive("alice", psi.STEP_HELLO, b"")
    refused(es["bob"], "alice", psi.STEP_HELLO, b"", RoundMismatch, "repeated")
    es, _, _ = started(3, "size")
    refused(es["bob"], "alice", psi.STEP_HELLO, b"", RoundMismatch)


@pytest.mark.parametrize("n", [2, 3])
def test_a_cot_message_of_the_wrong_size_is_refused(n: int) -> None:
    """Run a sum, holding back every cot/u (alice's to each other owner, bob's to alice), then hand each
    receiver a truncated one."""
    sets = overlapping(n, 2, [1] * n)
    es = engines(sets, random_values(sets), "sum")
    pending: list[tuple[str, Send]] = []
    for p, e in es.items():
        pending += [(p, s) for s in e.start() if isinstance(s, Send)]
    held: list[tuple[str, Send]] = []
    for _ in range(10_000):     # FIFO delivery of everything else
        if not pending:
            break
        sender, send = pending.pop(0)
        if send.step == psi.STEP_COT_U:
            held.append((sender, send))
            continue
        pending += [(send.to, s) for s in es[send.to].receive(sender, send.step, send.payload) if isinstance(s, Send)]
    parties = names(n)
    assert sorted((s, m.to) for s, m in held) == sorted([("bob", "alice")] + [("alice", p) for p in parties[1:]])
    for sender, send in held:
        refused(es[send.to].engine, sender, send.step, send.payload[:-1], RemoteProtocolError, "bytes for")


def test_a_reference_list_to_the_wrong_node_or_from_the_wrong_sender_is_refused() -> None:
    """The sum of 3 (alice 3 points, bob 4, carlos 5): list 0's last hop is carlos (full/0 to bob, ref/0
    to alice), list 1's is alice (keeps full/1, ref/1 to bob), list 2's is bob (full/2 to alice, keeps
    ref/2). Anything else is refused; so is a reference outside the sum."""
    es, _, sets = started(3, "sum")
    size = {p: len(s) for p, s in sets.items()}
    once = "a fully masked list goes once to its comparer, from its last hop"
    refused(es["alice"], "carlos", f"{psi.STEP_FULL}0", point_list(size["alice"]), RoundMismatch, once)  # bob's
    refused(es["alice"], "bob", f"{psi.STEP_REF}2", point_list(size["carlos"]), RoundMismatch, once)     # bob keeps it
    refused(es["alice"], "bob", f"{psi.STEP_REF}0", point_list(size["alice"]), RoundMismatch, once)      # not last hop
    refused(es["alice"], "carlos", f"{psi.STEP_REF}1", point_list(size["bob"]), RoundMismatch, once)     # bob's
    refused(es["bob"], "carlos", f"{psi.STEP_REF}0", point_list(size["alice"]), RoundMismatch, once)     # alice's
    refused(es["bob"], "carlos", f"{psi.STEP_REF}1", point_list(size["bob"]), RoundMismatch, once)       # from alice
    refused(es["bob"], "alice", f"{psi.STEP_FULL}1", point_list(size["bob"]), RoundMismatch, once)       # alice keeps
    for step, origin in ((psi.STEP_REF, 0), (psi.STEP_FULL, 0), (psi.STEP_REF, 2), (psi.STEP_FULL, 2)):
        refused(es["carlos"], "bob", f"{step}{origin}", point_list(size[names(3)[origin]]), RoundMismatch, once)
    # The right ones are taken, once.
    es["bob"].receive("alice", f"{psi.STEP_REF}1", point_list(size["bob"]))
    refused(es["bob"], "alice", f"{psi.STEP_REF}1", point_list(size["bob"]), RoundMismatch, "once")
    es["bob"].receive("carlos", f"{psi.STEP_FULL}0", point_list(size["alice"]))
    refused(es["bob"], "carlos", f"{psi.STEP_FULL}0", point_list(size["alice"]), RoundMismatch, "once")
    es["alice"].receive("carlos", f"{psi.STEP_REF}0", point_list(size["alice"]))
    refused(es["alice"], "carlos", f"{psi.STEP_REF}0", point_list(size["alice"]), RoundMismatch, "once")
    # Points checked, naming the position; lengths; unknown origins.
    es, _, sets = started(3, "sum")
    msg = refused(es["alice"], "carlos", f"{psi.STEP_REF}0", point_list(size["alice"], b"\0" * 31 + b"\x01",
                                                                         NON_CANONICAL[0]),
                  RemoteProtocolError, "canonical")
    assert "point 1" in msg, msg
    refused(es["bob"], "alice", f"{psi.STEP_REF}1", point_list(size["bob"], SMALL_ORDER[0]), RemoteProtocolError,
            "small order")
    refused(es["bob"], "alice", f"{psi.STEP_REF}1", point_list(size["bob"])[:-1], RemoteProtocolError, "expected")
    for step in (f"{psi.STEP_REF}3", f"{psi.STEP_REF}x", f"{psi.STEP_REF}00"):
        refused(es["bob"], "alice", step, point_list(1), RoundMismatch, "unknown step")
    # Outside the sum nobody takes a reference, and P_1 no fully masked list.
    for mode, recipients in (("size", []), ("members", ["alice", "bob"])):
        es, _, sets = started(3, mode, recipients)
        refused(es["alice"], "carlos", f"{psi.STEP_REF}0", point_list(size["alice"]), RoundMismatch, once)
        refused(es["bob"], "alice", f"{psi.STEP_REF}1", point_list(size["bob"]), RoundMismatch, once)
        refused(es["bob"], "carlos", f"{psi.STEP_FULL}0", point_list(size["alice"]), RoundMismatch, once)


def test_messages_after_the_end_and_before_the_start() -> None:
    sets = overlapping(2, 2, [1, 2])
    result = run(sets)
    refused(result.engines["bob"].engine, "alice", f"{psi.STEP_LIST}0", point_list(len(sets["alice"])),
            RoundMismatch, "after the end")
    # Before start: kept, then judged at start; a repeat of a kept message is refused at once.
    es = engines(sets, {p: [0] * len(s) for p, s in sets.items()}, "size")
    bob = es["bob"].engine
    bob.receive("alice", f"{psi.STEP_LIST}0", point_list(len(sets["alice"]), SMALL_ORDER[0]))
    refused(bob, "alice", f"{psi.STEP_LIST}0", point_list(len(sets["alice"])), RoundMismatch, "repeated")
    with pytest.raises(RemoteProtocolError, match="small order"):
        es["bob"].start()


def test_local_misuse() -> None:
    sets = overlapping(2, 1, [1, 1])
    es = engines(sets, {p: [0] * len(s) for p, s in sets.items()}, "size")
    with pytest.raises(LocalProtocolError, match="shape"):
        es["alice"].engine.start(es["alice"].contribution[:-1])
    es["alice"].start()
    with pytest.raises(LocalProtocolError, match="already started"):
        es["alice"].start()
    sizes = {"alice": 1, "bob": 1}
    with pytest.raises(LocalProtocolError, match="unknown intersection output"):
        psi.PsiParty("ab" * 16, "alice", ["alice", "bob"], sizes, "union", [], SystemRng(), OtSetups())
    with pytest.raises(LocalProtocolError, match="at least two"):
        psi.PsiParty("ab" * 16, "alice", ["alice"], sizes, "size", [], SystemRng(), OtSetups())
    with pytest.raises(LocalProtocolError, match="at least two"):
        psi.PsiParty("ab" * 16, "erin", ["alice", "bob"], sizes, "size", [], SystemRng(), OtSetups())
