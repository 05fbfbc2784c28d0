"""The keyed path without grpc (mpc/protocols/pairing.py, mpc/protocols/sum.py, mpc/protocols/agreement.py):
pair keys from the seeds of an unkeyed sum, tags that any change to the prepared description breaks,
keyed sums that add up and send nothing, and masks that stay fresh per session and description.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
import pytest

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.events import Output, Send
from mpc.prg import SEED_BYTES, AesCtrRng, derive_key
from mpc.protocols.agreement import STEP_DIGEST, AgreedParty
from mpc.protocols.pairing import KEY_ID_BYTES, TAG_BYTES, Evidence, PairKey, PairKeys, check_evidence, keyed
from mpc.protocols.sum import STEP_SEED, SecureSumParty
from mpc.ring import Words

from .common import assert_balanced, balanced

SESSION = "5e55" * 8
PREPARED = {"session": SESSION, "coordinator": "spiffe://mpc/coordinator/c", "protocol": "sum", "params": {},
            "input": "raise", "participants": ["a", "b", "c"]}


def rng() -> AesCtrRng:
    return AesCtrRng(secrets.token_bytes(16))


def unkeyed_sum(parties: Sequence[str], values: dict[str, Words]) -> tuple[dict[str, Words], dict[str, PairKeys]]:
    """An unkeyed sum, every seed delivered; returns the output shares and the pair keys each party kept."""
    kept = {p: PairKeys() for p in parties}

    def keep(me: str):  # type: ignore[no-untyped-def]
        return lambda peer, seed: kept[me].add(PairKey.from_seed(peer, seed))
    engines = {p: SecureSumParty(SESSION, p, parties, len(values[p]), rng(), on_seed=keep(p)) for p in parties}
    outputs: dict[str, Words] = {}
    queue: list[tuple[str, Send | Output]] = [(p, e) for p in parties for e in engines[p].start(values[p])]
    while queue:
        sender, event = queue.pop()
        if isinstance(event, Output):
            outputs[sender] = event.words
        else:
            queue += [(event.to, e) for e in engines[event.to].receive(sender, event.step, event.payload)]
    return outputs, kept


def test_an_unkeyed_sum_leaves_the_same_pair_key_at_both_ends_and_a_keyed_one_adds_up_sending_nothing() -> None:
    for n in (2, 3, 5):
        parties = [f"p{i}" for i in range(n)]
        values = {p: np.array([secrets.randbits(64) for _ in range(7)], dtype=np.uint64) for p in parties}
        total = sum(values.values(), np.zeros(7, dtype=np.uint64))
        shares, kept = unkeyed_sum(parties, values)
        assert np.array_equal(sum(shares.values(), np.zeros(7, dtype=np.uint64)), total)
        for a in parties:
            for b in parties:
                if a != b:
                    ka, kb = kept[a].newest(b), kept[b].newest(a)
                    assert ka is not None and kb is not None
                    assert ka.key == kb.key and ka.key_id == kb.key_id and len(ka.key_id) == KEY_ID_BYTES
                    assert ka.key != ka.key_id                       # the public id is not the key
        # A keyed sum: masks from the pair keys, bound to the session and its digest; no message at all.
        digest = secrets.token_bytes(32)
        outs = {}
        for p in parties:
            seeds = {q: kept[p].newest(q).mask_key("6" * 32, digest) for q in parties if q != p}  # type: ignore[union-attr]
            engine = SecureSumParty("6" * 32, p, parties, 7, rng(), mask_seeds=seeds)
            events = engine.start(values[p])
            assert not [e for e in events if isinstance(e, Send)]
            [out] = [e for e in events if isinstance(e, Output)]
            outs[p] = out.words
            assert engine.finished and engine.waiting_for == ()
            with pytest.raises(RemoteProtocolError, match="keyed session sends no seeds"):
                engine.receive(parties[0] if p != parties[0] else parties[1], STEP_SEED, bytes(SEED_BYTES + 8))
        assert np.array_equal(sum(outs.values(), np.zeros(7, dtype=np.uint64)), total)
        if n > 2:   # every share alone looks uniform (a 2-party share is the other's input minus the sum)
            assert_balanced(b"".join(o.tobytes() for o in outs.values()), 1e-6)


def test_keyed_masks_are_fresh_per_session_and_per_description() -> None:
    """A node never joins a session id twice, and the description's digest enters the mask: two keyed
    sessions (or two descriptions of one) never share a mask, so differences of shares reveal nothing."""
    key = PairKey.from_seed("b", secrets.token_bytes(SEED_BYTES))
    digest = secrets.token_bytes(32)
    seeds = {key.mask_key(s, d) for s in ("1" * 32, "2" * 32) for d in (digest, secrets.token_bytes(32))}
    assert len(seeds) == 4 and all(len(s) == SEED_BYTES for s in seeds)
    zero = np.zeros(4096, dtype=np.uint64)
    a = SecureSumParty("1" * 32, "a", ["a", "b"], 4096, rng(), mask_seeds={"b": key.mask_key("1" * 32, digest)})
    b = SecureSumParty("2" * 32, "a", ["a", "b"], 4096, rng(), mask_seeds={"b": key.mask_key("2" * 32, digest)})
    [oa] = a.start(zero)
    [ob] = b.start(zero)
    assert isinstance(oa, Output) and isinstance(ob, Output)
    assert balanced((oa.words - ob.words).tobytes())   # the masks differ: their difference is uniform


def test_a_keyed_sum_needs_a_mask_seed_with_every_peer() -> None:
    with pytest.raises(LocalProtocolError, match="mask seed with every peer; none for \\['c'\\]"):
        SecureSumParty(SESSION, "a", ["a", "b", "c"], 1, rng(), mask_seeds={"b": bytes(16)})
    with pytest.raises(LocalProtocolError, match="none for \\['b'\\]"):
        SecureSumParty(SESSION, "a", ["a", "b"], 1, rng(), mask_seeds={"b": bytes(8)})


def evidence(parties: Sequence[str], keys: dict[tuple[str, str], PairKey], prepared: dict[str, object],
             shapes: dict[str, tuple[int, int, int]]) -> dict[str, Evidence]:
    out = {}
    for p in parties:
        length, frac, version = shapes[p]
        e = Evidence(length, frac, version, {})
        full = {**prepared, **e.shape()}
        out[p] = Evidence(length, frac, version, {q: (keys[p, q].key_id, keys[p, q].tag(p, q, full))
                                                  for q in parties if q != p})
    return out


def pair_keys(parties: Sequence[str]) -> dict[tuple[str, str], PairKey]:
    keys = {}
    for i, a in enumerate(parties):
        for b in parties[i + 1:]:
            seed = secrets.token_bytes(SEED_BYTES)
            keys[a, b], keys[b, a] = PairKey.from_seed(b, seed), PairKey.from_seed(a, seed)
    return keys


def test_tags_check_out_only_for_the_identical_description_sender_recipient_and_shape() -> None:
    parties = ["a", "b", "c"]
    keys = pair_keys(parties)
    shapes = {"a": (1, 0, 3), "b": (1, 0, 1), "c": (1, 0, 9)}
    good = evidence(parties, keys, PREPARED, shapes)
    assert keyed(good, parties)
    for me in parties:
        check_evidence(me, {q: keys[me, q] for q in parties if q != me}, PREPARED, good, SESSION)
    for e in good.values():
        assert all(len(i) == KEY_ID_BYTES and len(t) == TAG_BYTES for i, t in e.tags.values())
    # Any field of the description that differs at one node: its peers refuse it by name.
    for field, value in (("input", "zeros"), ("protocol", "average"), ("params", {"threshold": 2}),
                         ("participants", ["a", "c", "b"]), ("session", "0" * 32),
                         ("coordinator", "spiffe://mpc/coordinator/mallory")):
        lying = evidence(parties, keys, {**PREPARED, field: value}, {"a": shapes["a"]} | {
            q: shapes[q] for q in ("b", "c")})
        mixed = {**good, "a": lying["a"]}
        for me in ("b", "c"):
            with pytest.raises(RemoteProtocolError, match="node a prepared a different session description"):
                check_evidence(me, {q: keys[me, q] for q in parties if q != me}, PREPARED, mixed, SESSION)
    # The coordinator relays a changed shape (another version or length), flips a bit, reflects a tag
    # back to its sender, or replays one from another session: refused.
    changed = {**good, "b": Evidence(2, 0, 1, good["b"].tags)}
    flipped_tag = bytes([good["b"].tags["a"][1][0] ^ 1]) + good["b"].tags["a"][1][1:]
    flipped = {**good, "b": Evidence(1, 0, 1, {**good["b"].tags, "a": (good["b"].tags["a"][0], flipped_tag)})}
    reflected = {**good, "b": Evidence(1, 0, 1, {**good["b"].tags, "a": good["a"].tags["b"]})}
    replayed = {**good, "b": evidence(parties, keys, {**PREPARED, "session": "f" * 32}, shapes)["b"]}
    for bad in (changed, flipped, reflected, replayed):
        with pytest.raises(RemoteProtocolError, match="node b prepared a different session description"):
            check_evidence("a", {q: keys["a", q] for q in parties if q != "a"}, PREPARED, bad, SESSION)
    # Another key than the one we named; no evidence for us at all.
    other = PairKey.from_seed("b", secrets.token_bytes(SEED_BYTES))
    with pytest.raises(RemoteProtocolError, match="another pair key"):
        check_evidence("a", {"b": other, "c": keys["a", "c"]}, PREPARED, good, SESSION)
    with pytest.raises(RemoteProtocolError, match="no evidence from node c"):
        check_evidence("a", {q: keys["a", q] for q in parties if q != "a"}, PREPARED,
                       {p: good[p] for p in ("a", "b")}, SESSION)


def test_the_coordinator_keys_a_session_only_when_every_pair_named_the_same_key() -> None:
    parties = ["a", "b", "c", "d"]
    keys = pair_keys(parties)
    shapes = {p: (1, 0, 1) for p in parties}
    good = evidence(parties, keys, PREPARED, shapes)
    assert keyed(good, parties)
    assert not keyed({p: good[p] for p in parties[:3]}, parties)           # a node named no key
    stale = PairKey.from_seed("d", secrets.token_bytes(SEED_BYTES))         # c restarted and paired anew with d
    c = good["c"]
    assert not keyed({**good, "c": Evidence(1, 0, 1, {**c.tags, "d": (stale.key_id, c.tags["d"][1])})}, parties)
    assert not keyed({**good, "c": Evidence(1, 0, 1, {q: t for q, t in c.tags.items() if q != "a"})}, parties)


def test_a_node_that_makes_keyed_masks_otherwise_names_the_same_pair_key_differently_so_no_session_is_keyed() -> None:
    """mpc before KEY_ID_LABEL "/2" made a keyed sum's masks as PRG(HKDF(K, "session/...")): such a node and
    this one, holding the same K from the same seed, would make masks that do not cancel (the sum is noise).
    They name K differently, so the coordinator keys none of their sessions (seeds are sent instead)."""
    parties = ["a", "b", "c"]
    keys, seeds = pair_keys(parties), {q: secrets.token_bytes(SEED_BYTES) for q in ("a", "b")}
    for q, seed in seeds.items():
        keys["c", q], keys[q, "c"] = PairKey.from_seed(q, seed), PairKey.from_seed("c", seed)
    old = {q: PairKey(q, derive_key(seed, b"pair-key"), derive_key(seed, b"pair-key-id")) for q, seed in seeds.items()}
    assert all(old[q].key == keys["c", q].key and old[q].key_id != keys[q, "c"].key_id for q in old)
    good = evidence(parties, keys, PREPARED, {p: (1, 0, 1) for p in parties})
    assert keyed(good, parties)
    c = good["c"]
    mixed = {**good, "c": Evidence(1, 0, 1, {q: (old[q].key_id, tag) for q, (_, tag) in c.tags.items()})}
    assert not keyed(mixed, parties)


def test_pair_keys_keep_the_newest_per_peer_and_say_nothing_in_a_repr() -> None:
    keys = PairKeys(per_peer=2)
    made = [PairKey.from_seed("b", secrets.token_bytes(SEED_BYTES)) for _ in range(3)]
    for k in made:
        keys.add(k)
    assert keys.newest("b") == made[2] and keys.newest("c") is None
    keys.add(made[1])                     # seen again: it becomes the newest
    assert keys.newest("b") == made[1]
    assert made[0].key.hex() not in repr(made[0]) and "redacted" in repr(made[0])
    with pytest.raises(LocalProtocolError):
        PairKeys(per_peer=0)


def test_agreed_at_prepare_sends_no_digest_releases_at_once_and_refuses_a_digest() -> None:
    released: list[bool] = []
    inner = SecureSumParty(SESSION, "a", ["a", "b", "c"], 1, rng(),
                           mask_seeds={"b": bytes(range(16)), "c": bytes(range(1, 17))})
    party = AgreedParty(inner, SESSION, "a", ["a", "b", "c"], lambda: released.append(True), agreed=True)
    events = party.start(np.array([5], dtype=np.uint64), bytes(32))
    assert released == [True] and party.agreed
    assert [type(e) for e in events] == [Output]
    with pytest.raises(RoundMismatch, match="checked from the coordinator's relayed tags"):
        party.receive("b", STEP_DIGEST, bytes(32))
