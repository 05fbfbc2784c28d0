"""Sessions over a collection (mpc/protocols/collection.py), in memory: the range check inside MPC
against crafted submissions, and the nodes' agreement on the complete submissions.

From the attacks of issue 13: a contributor who sends shares of 2, -1, 2^63 or 2^64 - 1 as a
ballot, or lo - 1 or hi + 1 in a range, or one bad value in a vector, or shares that do not add up
to what it claims (any shares define some value in Z_2^64), is excluded, and the output equals the
sum over the honest submissions. A submission not stored at every node with the same nonce is
not counted. Below the minimum batch nothing is computed. What the nodes open among themselves is
the validity bits and masked openings only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import reduce

import numpy as np
import pytest

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.ot.triples import OtSetups
from mpc.prg import SystemRng
from mpc.protocols.collection import (
    PREFIX,
    STEP_KEYS,
    CollectionParty,
    Key,
    keys_from_bytes,
    keys_to_bytes,
    output_words,
    valid_sum,
)
from mpc.ring import Words
from tests.sim.common import Router, assert_balanced, exact_draw, ideal_setup, names, run_program

M64 = 1 << 64


def shares_of(values: Sequence[int], n: int) -> list[Words]:
    """Additive shares mod 2^64 of the values (any integers, taken mod 2^64) for n parties."""
    v = np.array([x % M64 for x in values], dtype=np.uint64)
    parts = [np.frombuffer(os.urandom(8 * v.size), dtype="<u8").astype(np.uint64) for _ in range(n - 1)]
    last = v.copy()
    for p in parts:
        last -= p
    return [*parts, last]


def expected(values: Sequence[Sequence[int]], lo: int, hi: int) -> tuple[list[int], list[int]]:
    valid = [int(all(lo <= x <= hi for x in sub)) for sub in values]
    total = [sum(sub[j] for sub, ok in zip(values, valid) if ok) for j in range(len(values[0]))]
    return total, valid


BALLOTS = [[1], [0], [2], [-1], [1 << 63], [M64 - 1], [1], [(1 << 63) + 1], [M64 + 1 - 2], [0], [1], [1 << 62]]
RANGES = [[3, -10], [10, 10], [-11, 0], [0, 11], [5, 5], [-10, -10], [1 << 63, 0], [0, M64 - 11], [7, 2]]


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("case", ["ballots", "ranges"])
def test_invalid_submissions_are_excluded_and_the_sum_is_over_the_honest_ones(n: int, case: str) -> None:
    values, lo, hi = (BALLOTS, 0, 1) if case == "ballots" else (RANGES, -10, 10)
    length = len(values[0])
    flat = [x for sub in values for x in sub]
    seen: list[Words] = []
    factory = valid_sum(lo, hi, length, len(values), seen.append)
    run = run_program(factory, shares_of(flat, n), f"coll-{case}-{n}")
    exact_draw(run)
    total, valid = expected([[x if x < M64 // 2 else x - M64 for x in sub] for sub in values], lo, hi)
    out = run.added()
    assert out.size == output_words(length)
    assert out[:length].view(np.int64).tolist() == total
    assert out[length:].tolist() == [sum(valid), len(values)]
    # every party opened the same bits (the first call is the plan's dry run, on zeros)
    assert len(seen) == n + 1 and all(s.tolist() == valid for s in seen[1:])


@pytest.mark.parametrize("k", [-25, -24, 0, 14, 15, 16])
def test_a_threshold_opens_one_bit_per_element_of_the_valid_submissions_sum(k: int) -> None:
    values = RANGES                                    # valid ones add up to (15, 5)... see expected()
    total, valid = expected([[x if x < M64 // 2 else x - M64 for x in sub] for sub in values], -10, 10)
    flat = [x for sub in values for x in sub]
    run = run_program(valid_sum(-10, 10, 2, len(values), threshold=k), shares_of(flat, 3), f"coll-thr-{k}")
    assert run.xored().tolist() == [int(t >= k) for t in total]


def test_a_sum_that_could_pass_two_to_the_62_is_refused() -> None:
    from mpc.protocols.collection import check_sum_fits
    check_sum_fits(-(1 << 40), 1 << 40, (1 << 21) - 1, "x")
    with pytest.raises(LocalProtocolError, match="could add up beyond 2\\^62"):
        check_sum_fits(-(1 << 40), 1 << 40, 1 << 22, "x")


def test_shares_that_do_not_add_up_to_a_ballot_are_some_value_and_checked_as_such() -> None:
    """Inconsistent shares: each node's share from a different honest split of a different ballot."""
    n = 3
    rows = []
    for _ in range(64):
        a, b, c = shares_of([1], n), shares_of([0], n), shares_of([1], n)
        rows.append([a[0][0], b[1][0], c[2][0]])        # adds up to some random word: never a ballot
    shares = [np.array([r[i] for r in rows], dtype=np.uint64) for i in range(n)]
    real = reduce(lambda x, y: x + y, shares)
    ok = [int(w) in (0, 1) for w in real]
    seen: list[Words] = []
    run = run_program(valid_sum(0, 1, 1, len(rows), seen.append), shares, "coll-mixed")
    assert seen[-1].tolist() == [int(x) for x in ok]
    assert run.added()[1] == sum(ok)


def test_what_the_nodes_open_is_the_validity_bits_and_masked_values() -> None:
    values = [[int(b)] for b in np.frombuffer(os.urandom(512), dtype=np.uint8) & 1]
    run = run_program(valid_sum(0, 1, 1, len(values)), shares_of([v[0] for v in values], 3), "coll-views")
    for me, received in run.views.items():
        openings = [p for _, step, p in received if not step.endswith("/valid")]
        assert_balanced(b"".join(openings))
        valid = [np.frombuffer(p, dtype="<u8") for _, step, p in received if step.endswith("/valid")]
        assert len(valid) == 2                            # one XOR share of the bits from each peer
        assert_balanced(np.packbits((np.concatenate(valid) & 1).astype(np.uint8)))   # each a fair coin per submission


def node_engines(parties: Sequence[str], held: dict[str, dict[Key, Words]], lo: int, hi: int, length: int,
                 min_batch: int) -> dict[str, CollectionParty]:
    ot = ideal_setup(parties)
    engines = {}
    for p in parties:
        setups = OtSetups()
        for q, pair in ot[p].items():
            setups.add(q, b"s" * 16, pair)
        mine = held[p]

        def load(keys: Sequence[Key], mine: dict[Key, Words] = mine) -> Words:
            return np.stack([mine[k] for k in keys])
        engines[p] = CollectionParty("0" * 32, p, parties, list(mine), load, lo, hi, length, min_batch, SystemRng(),
                                     setups)
    return engines


def submit(held: dict[str, dict[Key, Words]], values: Sequence[int], *, skip: str | None = None,
           other_nonce: str | None = None) -> bytes:
    """Store one submission at every node (but `skip`; `other_nonce` gets another nonce)."""
    cid, nonce = os.urandom(16), os.urandom(16)
    parts = shares_of(values, len(held))
    for (node, store), share in zip(held.items(), parts):
        if node != skip:
            store[(cid, os.urandom(16) if node == other_nonce else nonce)] = share
    return cid


def test_only_submissions_complete_at_every_node_count_and_every_node_agrees_on_them() -> None:
    parties = names(3)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    good = [submit(held, [v]) for v in (1, 0, 1, 1)]
    bad = submit(held, [2])
    partial = submit(held, [1], skip="bob")
    split = submit(held, [1], other_nonce="carlos")
    engines = node_engines(parties, held, 0, 1, 1, 3)
    router = Router(engines)
    router.run()
    outputs = router.single()
    total = reduce(lambda x, y: x + y, (o.words for o in outputs.values()))
    assert total.tolist() == [3, 4, 5]                  # three yes of the four valid; 4 valid of 5 complete
    for e in engines.values():
        assert {k[0] for k in e.complete} == {*good, bad}
        assert e.invalid == (bad,)
        assert partial not in {k[0] for k in e.complete} and split not in {k[0] for k in e.complete}
    steps = {step for msgs in router.received.values() for _, step, _ in msgs}
    assert STEP_KEYS in steps and any(s.startswith(PREFIX + "/") for s in steps)


def test_invalid_submissions_do_not_count_towards_the_minimum_batch() -> None:
    parties = names(3)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    submit(held, [1])
    submit(held, [0])
    for bad in (2, 1 << 63, M64 - 1):
        submit(held, [bad])
    router = Router(node_engines(parties, held, 0, 1, 1, 3))
    with pytest.raises(LocalProtocolError, match="2 of the 5 complete submissions are valid, fewer than the "
                                                 "collection's minimum batch of 3"):
        router.run()
    # nothing of the sum was opened: no party got past the validity bits
    assert not router.results


def test_below_the_minimum_batch_every_node_refuses_before_anything_value_dependent() -> None:
    parties = names(3)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    for v in (1, 0, 1):
        submit(held, [v])
    submit(held, [1], skip="alice")
    engines = node_engines(parties, held, 0, 1, 1, 4)
    for p, e in engines.items():
        e.start()
    lists = {p: keys_to_bytes(list(held[p])) for p in parties}
    for p, e in engines.items():
        others = [q for q in parties if q != p]
        e.receive(others[0], STEP_KEYS, lists[others[0]])
        with pytest.raises(LocalProtocolError, match="3 complete submission.*minimum batch of 4"):
            e.receive(others[1], STEP_KEYS, lists[others[1]])


def test_malformed_or_repeated_key_lists_are_refused() -> None:
    keys = [(os.urandom(16), os.urandom(16)) for _ in range(3)]
    good = keys_to_bytes(keys)
    assert keys_from_bytes(good, "x") == set(keys)
    for bad in (good[:-1],                          # not whole keys
                good[32:64] + good[:32] + good[64:],  # not sorted
                good[:32] + good[:32]):               # a credential twice
        with pytest.raises(RemoteProtocolError):
            keys_from_bytes(bad, "x")
    parties = names(2)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    submit(held, [1])
    e = node_engines(parties, held, 0, 1, 1, 1)["alice"]
    e.receive("bob", STEP_KEYS, keys_to_bytes(list(held["bob"])))
    with pytest.raises(RoundMismatch):
        e.receive("bob", STEP_KEYS, keys_to_bytes(list(held["bob"])))
    with pytest.raises(RemoteProtocolError):
        e.receive("mallory", STEP_KEYS, b"")


def test_a_range_beyond_two_to_the_62_is_refused() -> None:
    for lo, hi in ((-(1 << 62), 0), (0, 1 << 62), (5, 4)):
        with pytest.raises(LocalProtocolError):
            valid_sum(lo, hi, 1, 1)
