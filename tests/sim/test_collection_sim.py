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
from typing import Any

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
    finish_auction,
    finish_sum,
    finish_threshold,
    finish_vote,
    finish_winner,
    keys_to_bytes,
    validated,
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
    factory = validated(lo, hi, length, len(values), finish_sum(), on_validity=seen.append)
    run = run_program(factory, shares_of(flat, n), f"coll-{case}-{n}")
    exact_draw(run)
    total, valid = expected([[x if x < M64 // 2 else x - M64 for x in sub] for sub in values], lo, hi)
    out = run.added()
    assert out.size == length + 2
    assert out[:length].view(np.int64).tolist() == total
    assert out[length:].tolist() == [sum(valid), len(values)]
    # every party opened the same bits (the first call is the plan's dry run, on zeros)
    assert len(seen) == n + 1 and all(s.tolist() == valid for s in seen[1:])


@pytest.mark.parametrize("k", [-25, -24, 0, 14, 15, 16])
def test_a_threshold_opens_one_bit_per_element_of_the_valid_submissions_sum(k: int) -> None:
    values = RANGES                                    # valid ones add up to (15, 5)... see expected()
    total, valid = expected([[x if x < M64 // 2 else x - M64 for x in sub] for sub in values], -10, 10)
    flat = [x for sub in values for x in sub]
    run = run_program(validated(-10, 10, 2, len(values), finish_threshold(k)), shares_of(flat, 3), f"coll-thr-{k}")
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
    run = run_program(validated(0, 1, 1, len(rows), finish_sum(), on_validity=seen.append), shares, "coll-mixed")
    assert seen[-1].tolist() == [int(x) for x in ok]
    assert run.added()[1] == sum(ok)


def test_what_the_nodes_open_is_the_validity_bits_and_masked_values() -> None:
    values = [[int(b)] for b in np.frombuffer(os.urandom(512), dtype=np.uint8) & 1]
    run = run_program(validated(0, 1, 1, len(values), finish_sum()), shares_of([v[0] for v in values], 3), "coll-views")
    for me, received in run.views.items():
        openings = [p for _, step, p in received if not step.endswith("/valid")]
        assert_balanced(b"".join(openings))
        valid = [np.frombuffer(p, dtype="<u8") for _, step, p in received if step.endswith("/valid")]
        assert len(valid) == 2                            # one XOR share of the bits from each peer
        assert_balanced(np.packbits((np.concatenate(valid) & 1).astype(np.uint8)))   # each a fair coin per submission


def node_engines(parties: Sequence[str], held: dict[str, dict[Key, Words]], lo: int, hi: int, length: int,
                 min_batch: int, **options: Any) -> dict[str, CollectionParty]:
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
                                     setups, **options)
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
    with pytest.raises(LocalProtocolError, match="of the 5 complete submissions, fewer than the collection's "
                                                 "minimum batch of 3 are valid; nothing is released") as err:
        router.run()
    assert "2 " not in str(err.value).split(": ", 1)[1]   # how many were valid is not said
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
            validated(lo, hi, 1, 1, finish_sum())


# ---- option collections: one-hot votes ---------------------------------------------------------

# Crafted option submissions over 4 options: each element must be 0 or 1 and the elements must add
# up to exactly 1. The crafted ones add up to 1 mod 2^64 where they can (so only the element check
# catches them), or put 2, or nothing, or two votes.
OPTION_VOTES = [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]
CRAFTED_VOTES = [[0, 0, 0, 0], [1, 1, 0, 0], [0, 2, 0, 0], [2, M64 - 1, 0, 0], [0, 1, 1, M64 - 1],
                 [1 << 63, (1 << 63) + 1, 0, 0], [0, 0, 0, 1 << 62], [M64 - 1, 0, 0, 0], [0, 3, M64 - 2, 0]]


def one_hot_run(n: int, votes: Sequence[Sequence[int]], finish: Any, label: str) -> Any:
    flat = [x % M64 for v in votes for x in v]
    seen: list[Words] = []
    run = run_program(validated(0, 1, len(votes[0]), len(votes), finish, on_validity=seen.append, one_hot=True),
                      shares_of(flat, n), label)
    exact_draw(run)
    return run, seen[-1].tolist()


@pytest.mark.parametrize("n", [2, 3, 4])
def test_an_option_vote_counts_only_one_hot_submissions(n: int) -> None:
    votes = OPTION_VOTES[:3] + CRAFTED_VOTES + OPTION_VOTES[3:]
    run, valid = one_hot_run(n, votes, finish_sum(), f"coll-opt-{n}")
    honest = [int(v in OPTION_VOTES) for v in votes]
    assert valid == honest
    out = run.added()
    assert out[:4].tolist() == [sum(col) for col in zip(*OPTION_VOTES)] == [1, 1, 3, 1]
    assert out[4:].tolist() == [len(OPTION_VOTES), len(votes)]


def test_the_winner_of_an_option_collection_is_over_the_valid_votes_alone() -> None:
    # Counted, the crafted votes would make option 1 win; over the valid ones option 2 does.
    votes = OPTION_VOTES + [[0, 5, 0, 0], [0, 1, 1, M64 - 1], [0, 1, 1, 0]] * 3
    run, valid = one_hot_run(3, votes, finish_winner, "coll-opt-win")
    assert sum(valid) == len(OPTION_VOTES)
    assert run.added().tolist() == [2]
    tie = [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [2, 0, 0]]   # 0 and 1 tie: the lower wins
    run, _ = one_hot_run(3, tie, finish_winner, "coll-opt-tie")
    assert run.added().tolist() == [0]


def test_noisy_option_counts_add_joint_noise_to_the_counts_alone() -> None:
    coins = 64
    run, valid = one_hot_run(3, OPTION_VOTES + CRAFTED_VOTES, finish_sum(coins), "coll-opt-dp")
    assert run.plan.dabits == coins * 4                 # one Binomial(coins) per count, made jointly
    out = run.added()
    noise = out[:4].view(np.int64) - np.array([1, 1, 3, 1])
    assert (np.abs(noise) <= coins // 2).all() and (noise != 0).any()   # the dealt daBits are fixed per label
    assert out[4:].tolist() == [len(OPTION_VOTES), len(OPTION_VOTES) + len(CRAFTED_VOTES)]   # exact, public


# ---- auctions over a collection of bids ------------------------------------------------------

def auction_run(bids: Sequence[int], lo: int, hi: int, second_price: bool, label: str) -> tuple[Any, list[Key]]:
    keys = sorted((os.urandom(16), os.urandom(16)) for _ in bids)
    run = run_program(validated(lo, hi, 1, len(bids), finish_auction(second_price), keys), shares_of(bids, 3),
                      label)
    exact_draw(run)
    return run, keys


def decoded(words: Words, second_price: bool, name: str = "bids") -> Any:
    from mpc.protocols.catalogue import AuctionParams, Opened, entry
    return entry("collection-auction").decode(AuctionParams(second_price), Opened(
        "s", name, ("alice", "bob", "carlos"), {"alice": 1, "bob": 1, "carlos": 1}, words, 0, True))


@pytest.mark.parametrize("second_price", [False, True])
def test_an_auction_over_a_collection_names_the_winning_credential_and_ignores_invalid_bids(
        second_price: bool) -> None:
    lo, hi = -1000, 1000
    # Invalid bids above every valid one: hi + 1, 2^31, 2^63 (a huge key if it counted), 2^64 - 1 is -1 (valid).
    bids = [500, hi + 1, 700, lo - 1, -3, 1 << 31, 650, 1 << 63, M64 - 1, 5000, 100]
    run, keys = auction_run(bids, lo, hi, second_price, f"coll-auc-{second_price}")
    result = decoded(run.added(), second_price)
    assert result.winner == keys[2][0].hex()
    assert result.price == (650 if second_price else 700)
    assert (result.valid, result.complete) == (6, len(bids))


def test_tied_highest_bids_go_to_the_earliest_credential() -> None:
    bids = [300, 900, 42, 900, 900]
    for second_price in (False, True):
        run, keys = auction_run(bids, 0, 1000, second_price, f"coll-auc-tie-{second_price}")
        result = decoded(run.added(), second_price)
        assert result.winner == keys[1][0].hex() and result.price == 900


def test_an_auction_needs_two_valid_bids_and_refuses_below() -> None:
    parties = names(3)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    submit(held, [10])
    for bad in (-1, 1 << 40):
        submit(held, [bad])
    router = Router(node_engines(parties, held, 0, 100, 1, 1, finish=finish_auction(False), min_valid=2))
    with pytest.raises(LocalProtocolError, match="of the 3 complete submissions, fewer than the 2 this session "
                                                 "needs are valid"):
        router.run()
    assert not router.results


def test_an_auction_takes_at_most_its_tournaments_share_of_submissions() -> None:
    parties = names(2)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    for bid in (10, 20, 30, 40):
        submit(held, [bid])
    router = Router(node_engines(parties, held, 0, 100, 1, 1, finish=finish_auction(False), min_valid=2,
                                 max_complete=3))
    with pytest.raises(LocalProtocolError, match="4 complete submissions, more than this session takes \\(3\\)"):
        router.run()
    assert not router.results


def test_a_vote_over_ballots_opens_one_bit() -> None:
    for ballots, passed in (([1, 0, 1, 2, 1 << 63, 0], 1), ([1, 0, 0, M64 - 1, 2, 0], 0), ([1, 0], 1)):
        run = run_program(validated(0, 1, 1, len(ballots), finish_vote), shares_of(ballots, 3), f"coll-v{passed}")
        assert run.xored().tolist() == [passed]


# ---- range checks in chunks (what a session over 10^6 submissions needs) ---------------------------------

def chunked_session(submissions: Sequence[Sequence[int]], lo: int, hi: int, chunk: int,
                    **options: Any) -> tuple[Router, list[bytes]]:
    """Three nodes over these submissions (each a row of values, taken mod 2^64), range-checking at most
    `chunk` values per program; the messages go in a CSPRNG-chosen order, so peers run ahead.

    Returns: the router after the run, and each row's credential id."""
    parties = names(3)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    cids = [submit(held, [v % M64 for v in row]) for row in submissions]
    router = Router(node_engines(parties, held, lo, hi, len(submissions[0]), 1, chunk_values=chunk, **options))
    router.run()
    return router, cids


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_range_checks_in_chunks_give_what_one_program_gives(chunk: int) -> None:
    router, _ = chunked_session(RANGES, -10, 10, chunk)
    total, valid = expected([[x if x < M64 // 2 else x - M64 for x in sub] for sub in RANGES], -10, 10)
    out = reduce(lambda x, y: x + y, (o.words for o in router.single().values()))
    assert out[:2].view(np.int64).tolist() == total and out[2:].tolist() == [sum(valid), len(RANGES)]
    steps = {step.split("/")[1] for msgs in router.received.values() for _, step, _ in msgs if step != STEP_KEYS}
    programs = -(-len(RANGES) // max(1, chunk // 2))          # two values per submission
    if chunk >= 2 * len(RANGES):
        assert steps >= {"run"} and not any(s.startswith("c") for s in steps)   # one program
    else:
        assert steps == {f"c{a}" for a in range(0, len(RANGES), max(1, chunk // 2))} | {"f"}, steps
        assert len(steps) == programs + 1
    for e in router.engines.values():
        assert isinstance(e, CollectionParty) and len(e.invalid) == len(RANGES) - sum(valid)


@pytest.mark.parametrize("chunk", [2, 5])
def test_every_release_runs_over_chunks(chunk: int) -> None:
    ballots = [[b] for b in (1, 0, 1, 2, 1 << 63, 0, 1, M64 - 1)]
    outputs = chunked_session(ballots, 0, 1, chunk, finish=finish_vote)[0].single()
    assert reduce(lambda x, y: x ^ y, (o.words for o in outputs.values())).tolist() == [1]   # 3 yes of 5 valid
    votes = OPTION_VOTES + CRAFTED_VOTES
    outputs = chunked_session(votes, 0, 1, chunk * 5, finish=finish_winner, one_hot=True)[0].single()
    assert reduce(lambda x, y: x + y, (o.words for o in outputs.values())).tolist() == [2]
    outputs = chunked_session(RANGES, -10, 10, chunk, finish=finish_threshold(15))[0].single()
    assert reduce(lambda x, y: x ^ y, (o.words for o in outputs.values())).tolist() == [1, 0]   # sums 15 and -3
    coins = 16
    router, _ = chunked_session(votes, 0, 1, chunk * 5, finish=finish_sum(coins), one_hot=True)
    out = reduce(lambda x, y: x + y, (o.words for o in router.single().values()))
    assert (np.abs(out[:4].view(np.int64) - [1, 1, 3, 1]) <= coins // 2).all()
    assert out[4:].tolist() == [len(OPTION_VOTES), len(votes)]
    finished = {st for msgs in router.received.values() for _, st, _ in msgs if st.startswith("coll/f/")}
    assert any(st.startswith("coll/f/arith/") for st in finished)   # the noise's daBits, made in the last program
    bids = [500, 1001, 700, -1001, 650, 1 << 63, 100]
    for second_price in (False, True):
        router, cids = chunked_session([[b] for b in bids], -1000, 1000, chunk,
                                       finish=finish_auction(second_price), min_valid=2, rows=True)
        result = decoded(reduce(lambda x, y: x + y, (o.words for o in router.single().values())), second_price)
        assert (result.winner, result.price, result.valid) == (cids[2].hex(), 650 if second_price else 700, 4)


def test_a_message_for_no_program_of_this_one_or_the_next_is_refused() -> None:
    parties = names(2)
    held: dict[str, dict[Key, Words]] = {p: {} for p in parties}
    for v in (1, 0, 1, 1):
        submit(held, [v])
    e = node_engines(parties, held, 0, 1, 1, 1, chunk_values=1)["alice"]
    e.start()
    e.receive("bob", STEP_KEYS, keys_to_bytes(list(held["bob"])))    # chunk c0 runs; c1 is next
    e.receive("bob", "coll/c1/mpc/hello", b"")                        # kept for the next program
    with pytest.raises(RoundMismatch, match="for no program of this one or the next"):
        e.receive("bob", "coll/c3/mpc/hello", b"")
    with pytest.raises(RoundMismatch):
        e.receive("bob", "coll/f/mpc/hello", b"")
