"""Tests of mpc.store.collections: collection specs, contributors' submissions, revocation, and the
attacks on them (resubmission, replay, revoked credentials, malformed shares, racing writers)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mpc.errors import AuthError, InputError, MpcError, PolicyError
from mpc.prg import SystemRng, random_words
from mpc.store import CollectionInfo, CollectionSpec, Store, SubmissionOutcome
from mpc.store.schema import _MIGRATIONS, SCHEMA_VERSION

OWNER = bytes(range(32))
STORED = SubmissionOutcome(stored=True, replaced=False)
REPLACED = SubmissionOutcome(stored=True, replaced=True)


def make_spec(name: str = "poll", **changes: object) -> CollectionSpec:
    fields: dict[str, object] = {"kind": "range", "lo": -5, "hi": 100, "length": 2, "min_batch": 3,
                                 "resubmit": "refuse", "owner_key": OWNER}
    fields.update(changes)
    return CollectionSpec(name, **fields)  # type: ignore[arg-type]


def cred(i: int) -> bytes:
    return b"\xc0" + i.to_bytes(15, "big")


def nonce(i: int) -> bytes:
    return b"\x4e" + i.to_bytes(15, "big")


def share(*words: int) -> bytes:
    return np.array(words, dtype="<u8").tobytes()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open_dir(tmp_path / "data")
    s.create_collection(make_spec("poll"))
    s.create_collection(make_spec("open", resubmit="replace"))
    yield s
    s.close()


# -- specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"kind": "number"}, "kind"),
    ({"kind": 3}, "kind"),
    ({"kind": "ballot", "lo": 0, "hi": 2}, "ballot"),
    ({"kind": "ballot", "lo": -1, "hi": 1}, "ballot"),
    ({"lo": 2**62}, "lo"),
    ({"lo": -(2**62), "hi": 0}, "lo"),
    ({"hi": 2**62}, "hi"),
    ({"lo": 5, "hi": 4}, "lo"),
    ({"lo": 1.5}, "lo"),
    ({"hi": True}, "hi"),
    ({"length": 0}, "length"),
    ({"length": 4097}, "length"),
    ({"length": "2"}, "length"),
    ({"min_batch": 0}, "min_batch"),
    ({"resubmit": "ignore"}, "resubmit"),
    ({"resubmit": None}, "resubmit"),
    ({"owner_key": OWNER[:31]}, "owner_key"),
    ({"owner_key": OWNER.hex()}, "owner_key"),
])
def test_a_spec_refuses_each_bad_field_naming_it_and_the_collection(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InputError, match=field) as err:
        make_spec("poll", **changes)
    assert "'poll'" in str(err.value)


@pytest.mark.parametrize("name", ["", "-x", "a b", "a/b", "x" * 129, "é"])
def test_a_spec_refuses_a_bad_name(name: str) -> None:
    with pytest.raises(InputError, match="collection name"):
        make_spec(name)


def test_a_spec_accepts_its_limits_and_describes_itself_in_json() -> None:
    make_spec(lo=-(2**62) + 1, hi=2**62 - 1, length=4096, min_batch=1)
    ballot = make_spec("vote.2026", kind="ballot", lo=0, hi=1, length=1, resubmit="replace")
    described = ballot.describe()
    assert json.loads(json.dumps(described)) == described == {
        "name": "vote.2026", "kind": "ballot", "lo": 0, "hi": 1, "length": 1, "min_batch": 3,
        "resubmit": "replace", "owner_key": OWNER.hex(), "nodes": []}
    held = make_spec("held", nodes=("alice", "bob", "carlos"))
    assert held.describe()["nodes"] == ["alice", "bob", "carlos"]


@pytest.mark.parametrize("nodes", [("alice",), ("bob", "alice"), ("alice", "alice"), ("Alice", "bob"), ["alice", "bob"]])
def test_a_spec_refuses_a_bad_node_set(nodes: object) -> None:
    with pytest.raises(InputError, match="nodes must be at least two distinct node names, sorted"):
        make_spec("poll", nodes=nodes)


# -- create, get, list ------------------------------------------------------------------------


def test_create_is_idempotent_and_a_conflicting_spec_is_refused(store: Store) -> None:
    assert store.create_collection(make_spec("poll")) is False
    assert store.get_collection("poll") == make_spec("poll")
    with pytest.raises(InputError, match=r"collection 'poll' exists at this node with another spec.*length, "
                                         r"resubmit") as err:
        store.create_collection(make_spec("poll", length=3, resubmit="replace"))
    assert "kind" not in str(err.value) and "owner_key" not in str(err.value)
    with pytest.raises(InputError, match="owner_key"):
        store.create_collection(make_spec("poll", owner_key=bytes(32)))
    assert store.get_collection("poll") == make_spec("poll")        # unchanged
    with pytest.raises(InputError, match="a CollectionSpec"):
        store.create_collection({"name": "x"})  # type: ignore[arg-type]


def test_get_and_list(store: Store) -> None:
    with pytest.raises(InputError, match="no collection 'nope' at this node"):
        store.get_collection("nope")
    with pytest.raises(InputError, match=r"no collection 'xxxx.*\(500 characters\)"):
        store.get_collection("x" * 500)
    store.put_submissions("open", [(cred(1), nonce(1), share(1, 2)), (cred(2), nonce(2), share(3, 4))])
    assert store.list_collections() == [CollectionInfo(make_spec("open", resubmit="replace"), 2),
                                        CollectionInfo(make_spec("poll"), 0)]
    assert store.submission_count("open") == 2 and store.submission_count("poll") == 0
    for call in (store.submission_count, store.submission_keys):
        with pytest.raises(InputError, match="no collection"):
            call("nope")
    with pytest.raises(InputError, match="no collection"):
        store.put_submissions("nope", [(cred(1), nonce(1), share(1, 2))])


# -- the resubmission rules ---------------------------------------------------------------------


def test_refuse_keeps_the_first_submission(store: Store) -> None:
    assert store.put_submissions("poll", [(cred(1), nonce(1), share(7, 8))]) == [STORED]
    [refused] = store.put_submissions("poll", [(cred(1), nonce(2), share(9, 9))])
    assert isinstance(refused, PolicyError)
    assert str(refused) == f"credential {cred(1)[:4].hex()} already submitted to collection 'poll'; its rule is refuse"
    assert store.submission_keys("poll") == [(cred(1), nonce(1))]
    assert store.submission_shares("poll", [(cred(1), nonce(1))]).tolist() == [[7, 8]]


def test_replace_overwrites_share_and_nonce(store: Store) -> None:
    assert store.put_submissions("open", [(cred(1), nonce(1), share(7, 8))]) == [STORED]
    assert store.put_submissions("open", [(cred(1), nonce(2), share(9, 10))]) == [REPLACED]
    assert store.submission_keys("open") == [(cred(1), nonce(2))]
    assert store.submission_shares("open", [(cred(1), nonce(2))]).tolist() == [[9, 10]]
    assert store.submission_count("open") == 1


@pytest.mark.parametrize("name", ["poll", "open"])
def test_the_same_nonce_again_is_an_idempotent_retry(store: Store, name: str) -> None:
    """A client whose reply was lost sends the same submission again: under either rule it is told
    stored, and nothing changes."""
    entry = (cred(1), nonce(1), share(7, 8))
    assert store.put_submissions(name, [entry]) == [STORED]
    assert store.put_submissions(name, [entry, entry]) == [STORED, STORED]
    assert store.submission_keys(name) == [(cred(1), nonce(1))]
    assert store.submission_shares(name, [(cred(1), nonce(1))]).tolist() == [[7, 8]]


@pytest.mark.parametrize("name", ["poll", "open"])
def test_the_same_nonce_with_another_share_is_refused(store: Store, name: str) -> None:
    """A client that re-split its value but kept the nonce would leave the nodes with shares of two
    different splits under one (credential, nonce): refused, and the stored share kept."""
    store.put_submissions(name, [(cred(1), nonce(1), share(7, 8))])
    [refused] = store.put_submissions(name, [(cred(1), nonce(1), share(7, 9))])
    assert isinstance(refused, InputError) and "another share" in str(refused)
    assert store.submission_shares(name, [(cred(1), nonce(1))]).tolist() == [[7, 8]]


def test_a_credential_twice_in_one_batch_is_a_resubmission(store: Store) -> None:
    first, again = (cred(1), nonce(1), share(1, 1)), (cred(1), nonce(2), share(2, 2))
    outcomes = store.put_submissions("poll", [first, again, first])
    assert outcomes[0] == STORED and isinstance(outcomes[1], PolicyError) and outcomes[2] == STORED
    assert store.submission_shares("poll", [(cred(1), nonce(1))]).tolist() == [[1, 1]]
    replaced = store.put_submissions("open", [first, again, again, (cred(1), nonce(2), share(2, 3))])
    assert replaced[:3] == [STORED, REPLACED, STORED] and isinstance(replaced[3], InputError)
    assert store.submission_keys("open") == [(cred(1), nonce(2))]
    assert store.submission_shares("open", [(cred(1), nonce(2))]).tolist() == [[2, 2]]


def test_replace_within_a_batch_keeps_the_last(store: Store) -> None:
    batch = [(cred(1), nonce(i), share(i, i)) for i in range(5)]
    assert store.put_submissions("open", batch) == [STORED] + [REPLACED] * 4
    assert store.submission_keys("open") == [(cred(1), nonce(4))]
    assert store.submission_shares("open", [(cred(1), nonce(4))]).tolist() == [[4, 4]]


# -- revocation ---------------------------------------------------------------------------------


def test_a_revoked_credential_is_refused_and_its_share_deleted(store: Store) -> None:
    store.put_submissions("poll", [(cred(1), nonce(1), share(1, 2)), (cred(2), nonce(2), share(3, 4))])
    assert store.revoke("poll", [cred(1), cred(3), cred(1)]) == 2
    assert store.revoke("poll", [cred(1)]) == 0
    assert store.is_revoked("poll", cred(1)) and store.is_revoked("poll", cred(3))
    assert not store.is_revoked("poll", cred(2)) and not store.is_revoked("open", cred(1))
    assert store.submission_keys("poll") == [(cred(2), nonce(2))]
    for retry in ((cred(1), nonce(1), share(1, 2)), (cred(1), nonce(9), share(5, 5)), (cred(3), nonce(3), b"")):
        [refused] = store.put_submissions("poll", [retry])
        assert isinstance(refused, AuthError)
        assert str(refused) == f"credential {retry[0][:4].hex()} of collection 'poll' is revoked"
    with pytest.raises(InputError, match="poll"):
        store.submission_shares("poll", [(cred(1), nonce(1))])
    assert store.submission_count("poll") == 1
    # Revocation is per collection.
    assert store.put_submissions("open", [(cred(1), nonce(1), share(1, 2))]) == [STORED]


def test_revoke_refuses_bad_ids_and_unknown_collections(store: Store) -> None:
    with pytest.raises(InputError, match="credential id 2 of 2 is not 16 bytes; nothing was revoked"):
        store.revoke("poll", [cred(1), cred(2)[:15]])
    assert not store.is_revoked("poll", cred(1))
    with pytest.raises(InputError, match="no collection"):
        store.revoke("nope", [cred(1)])


def test_a_revoked_share_is_not_left_in_the_file(tmp_path: Path) -> None:
    marker = share(*([0x5EC2E75EC2E75EC2] * 64))
    with Store(tmp_path / "node.sqlite3") as s:
        s.create_collection(make_spec("poll", length=64))
        s.put_submissions("poll", [(cred(1), nonce(1), marker)])
        s.revoke("poll", [cred(1)])
    # close() checkpoints the WAL into the main file; secure_delete zeroed the freed space.
    for f in tmp_path.iterdir():
        assert marker[:32] not in f.read_bytes(), f.name


# -- malformed entries --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 8, 15, 17, 24, 32])
def test_a_share_of_the_wrong_size_is_refused(store: Store, size: int) -> None:
    [refused] = store.put_submissions("poll", [(cred(1), nonce(1), bytes(size))])
    assert isinstance(refused, InputError)
    assert f"share of {size} bytes; expected 16" in str(refused)
    assert store.submission_count("poll") == 0


@pytest.mark.parametrize("entry", [
    (cred(1)[:15], nonce(1), share(1, 2)),
    (cred(1) + b"\0", nonce(1), share(1, 2)),
    (cred(1), nonce(1)[:8], share(1, 2)),
    (b"", b"", share(1, 2)),
])
def test_a_malformed_id_or_nonce_is_refused(store: Store, entry: tuple[bytes, bytes, bytes]) -> None:
    [refused] = store.put_submissions("poll", [entry])
    assert isinstance(refused, InputError) and "expected 16 and 16" in str(refused)
    assert store.submission_count("poll") == 0


def test_a_batch_stores_exactly_its_good_entries(store: Store) -> None:
    store.put_submissions("poll", [(cred(9), nonce(9), share(9, 9))])
    store.revoke("poll", [cred(8)])
    batch: list[object] = [
        (cred(1), nonce(1), share(1, 1)),          # good
        (cred(2), nonce(2), share(2)),             # short share
        (cred(8), nonce(8), share(8, 8)),          # revoked
        (cred(3), nonce(3), share(3, 3)),          # good
        (cred(9), nonce(1), share(5, 5)),          # already submitted, rule refuse
        [cred(4), nonce(4), share(4, 4)],          # not a tuple
        (cred(5), nonce(5), "share"),              # not bytes
        (cred(6), nonce(6)),                       # two fields
        (cred(7), nonce(7)[:3], share(7, 7)),      # short nonce
        (cred(9), nonce(9), share(9, 9)),          # a retry
    ]
    outcomes = store.put_submissions("poll", batch)  # type: ignore[arg-type]
    kinds = [type(o) for o in outcomes]
    assert kinds == [SubmissionOutcome, InputError, AuthError, SubmissionOutcome, PolicyError, InputError,
                     InputError, InputError, InputError, SubmissionOutcome]
    assert "entry 6 of the batch" in str(outcomes[5])
    assert store.submission_keys("poll") == [(cred(1), nonce(1)), (cred(3), nonce(3)), (cred(9), nonce(9))]
    assert store.submission_shares("poll", store.submission_keys("poll")).tolist() == [[1, 1], [3, 3], [9, 9]]
    with pytest.raises(InputError, match="sequence"):
        store.put_submissions("poll", b"abc")  # type: ignore[arg-type]
    assert store.put_submissions("poll", []) == []


def test_messages_and_reprs_show_no_share_nonce_or_full_id(store: Store) -> None:
    secret_id, secret_nonce, secret_share = os.urandom(16), os.urandom(16), os.urandom(16)
    store.put_submissions("poll", [(secret_id, secret_nonce, secret_share)])
    texts = [str(o) + repr(o) for o in store.put_submissions("poll", [
        (secret_id, os.urandom(16), secret_share), (secret_id, secret_nonce, secret_share[::-1]),
        (secret_id, secret_nonce, secret_share + b"\0" * 8)])]
    store.revoke("poll", [secret_id])
    texts += [str(o) + repr(o) for o in store.put_submissions("poll", [(secret_id, secret_nonce, secret_share)])]
    with pytest.raises(InputError) as err:
        store.submission_shares("poll", [(secret_id, secret_nonce)])
    texts += [str(err.value), repr(store.list_collections()), repr(store)]
    for text in texts:
        for secret in (secret_id, secret_nonce, secret_share):
            assert secret.hex() not in text and repr(secret) not in text and secret[4:12].hex() not in text
    assert all(secret_id[:4].hex() in t for t in texts[:4])


# -- reading shares -----------------------------------------------------------------------------


def test_submission_shares_follow_the_keys_order_and_refuse_unknown_keys(store: Store) -> None:
    store.put_submissions("open", [(cred(i), nonce(i), share(i, 2**64 - 1 - i)) for i in (3, 1, 2)])
    assert store.submission_keys("open") == [(cred(i), nonce(i)) for i in (1, 2, 3)]
    got = store.submission_shares("open", [(cred(2), nonce(2)), (cred(3), nonce(3))])
    assert got.dtype == np.uint64 and got.shape == (2, 2)
    assert got.tolist() == [[2, 2**64 - 3], [3, 2**64 - 4]]
    assert store.submission_shares("open", []).shape == (0, 2)
    with pytest.raises(InputError, match=f"credential {cred(4)[:4].hex()} has no submission"):
        store.submission_shares("open", [(cred(1), nonce(1)), (cred(4), nonce(4))])
    with pytest.raises(InputError, match="another nonce"):
        store.submission_shares("open", [(cred(1), nonce(2))])
    with pytest.raises(InputError, match="appears twice"):
        store.submission_shares("open", [(cred(1), nonce(1)), (cred(1), nonce(1))])
    with pytest.raises(InputError, match="key 1 is not"):
        store.submission_shares("open", [(cred(1), "n")])  # type: ignore[list-item]
    # Replaced: the old (credential, nonce) is gone, so a session planned on it cannot read the new share.
    store.put_submissions("open", [(cred(1), nonce(7), share(0, 0))])
    with pytest.raises(InputError, match="another nonce"):
        store.submission_shares("open", [(cred(1), nonce(1))])


def test_a_hundred_thousand_submissions_round_trip(tmp_path: Path) -> None:
    n, length = 100_000, 3
    ids = os.urandom(16 * n)
    nonces = os.urandom(16 * n)
    words = random_words(SystemRng(), n * length).reshape(n, length)
    blob = words.astype("<u8").tobytes()
    entries = [(ids[16 * i:16 * i + 16], nonces[16 * i:16 * i + 16], blob[24 * i:24 * i + 24]) for i in range(n)]
    with Store(tmp_path / "node.sqlite3") as s:
        s.create_collection(make_spec("big", length=length))
        for start in range(0, n, 25_000):
            outcomes = s.put_submissions("big", entries[start:start + 25_000])
            assert outcomes == [STORED] * 25_000
        assert s.submission_count("big") == n
        keys = s.submission_keys("big")
        order = sorted(range(n), key=lambda i: entries[i][0])
        assert keys == [(entries[i][0], entries[i][1]) for i in order]
        got = s.submission_shares("big", keys)
        assert got.shape == (n, length) and np.array_equal(got, words[order])
        reverse = s.submission_shares("big", [(e[0], e[1]) for e in entries])
        assert np.array_equal(reverse, words)


# -- concurrency and migration ------------------------------------------------------------------


def test_two_stores_writing_interleaved_batches_keep_every_row_once(tmp_path: Path) -> None:
    """Two Store objects on one file (the daemon and a second process) write from two threads: every
    distinct submission is stored once; racing on the same credentials under "refuse", exactly one of
    each pair is stored and the other is refused."""
    path = tmp_path / "node.sqlite3"
    with Store(path) as s:
        s.create_collection(make_spec("poll"))
    stores = [Store(path), Store(path)]
    results: list[list[SubmissionOutcome | MpcError]] = [[], []]
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for b in range(20):
                own = [(cred(10_000 * (k + 1) + 100 * b + j), nonce(k), share(k, j)) for j in range(100)]
                shared = [(cred(100 * b + j), nonce(k), share(k, j)) for j in range(100)]
                results[k] += stores[k].put_submissions("poll", own + shared)[100:]
        except BaseException as exc:   # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        keys = stores[0].submission_keys("poll")
        assert len(keys) == len({c for c, _ in keys}) == 2 * 2000 + 2000 == stores[1].submission_count("poll")
        winners = {c: n for c, n in keys if int.from_bytes(c[1:], "big") < 2000}
        for j, (a, b) in enumerate(zip(*results)):
            assert (a == STORED) != (b == STORED)
            assert isinstance(b if a == STORED else a, PolicyError)
            assert winners[cred(j)] == nonce(0 if a == STORED else 1)
    finally:
        for s in stores:
            s.close()


def test_migration_from_schema_7_keeps_inputs_and_adds_collections(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == len(_MIGRATIONS) == 9
    assert not any("collections" in s or "submissions" in s for step in _MIGRATIONS[:7] for s in step)
    path = tmp_path / "node.sqlite3"
    raw = sqlite3.connect(path)
    for statement in [s for step in _MIGRATIONS[:7] for s in step]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 7")
    raw.execute("INSERT INTO inputs VALUES ('raise', 2, 0, 0, 't', 't', ?)", (np.array([3, 1], dtype="<i8").tobytes(),))
    raw.execute("INSERT INTO input_meta VALUES ('raise', 2, 'number', 0, 10, NULL, NULL)")
    raw.commit()
    raw.close()
    with Store(path) as store:
        got = store.get_input("raise")
        assert (got.version, got.bounds, got.values.tolist()) == (2, (0, 10), [3, 1])
        assert store.list_collections() == []
        assert store.create_collection(make_spec("poll")) is True
        assert store.put_submissions("poll", [(cred(1), nonce(1), share(1, 2))]) == [STORED]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # The tables' CHECKs hold even for a writer that skips mpc.store.collections.
        for statement, args in [
            ("INSERT INTO submissions VALUES ('poll', ?, ?, 't', ?)", (cred(2), nonce(2), b"\0" * 12)),
            ("INSERT INTO submissions VALUES ('poll', ?, ?, 't', ?)", (cred(2), nonce(2), b"")),
            ("INSERT INTO submissions VALUES ('poll', ?, ?, 't', ?)", (cred(2)[:8], nonce(2), b"\0" * 8)),
            ("INSERT INTO revoked VALUES ('poll', ?)", (b"x",)),
            ("INSERT INTO collections VALUES ('b', 'ballot', 0, 2, 1, 1, 'refuse', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('r', 'range', 3, 2, 1, 1, 'refuse', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('r', 'range', 0, 2, 4097, 1, 'refuse', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('r', 'range', 0, 2, 1, 0, 'refuse', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('r', 'range', 0, 2, 1, 1, 'keep', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('r', 'range', 0, 2, 1, 1, 'refuse', '', 't', ?)", (OWNER[:16],)),
            ("INSERT INTO collections VALUES ('o', 'option', 0, 1, 1, 1, 'refuse', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('o', 'option', 0, 2, 3, 1, 'refuse', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('o', 'option', 0, 1, 257, 1, 'refuse', '', 't', ?)", (OWNER,)),
            ("INSERT INTO collections VALUES ('x', 'other', 0, 1, 2, 1, 'refuse', '', 't', ?)", (OWNER,)),
        ]:
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(statement, args)


def test_migration_from_schema_8_keeps_collections_and_their_submissions_and_takes_option_collections(
        tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    raw = sqlite3.connect(path)
    for statement in [s for step in _MIGRATIONS[:8] for s in step]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 8")
    raw.execute("INSERT INTO collections VALUES ('poll', 'ballot', 0, 1, 1, 2, 'replace', 'alice,bob', 't', ?)",
                (OWNER,))
    raw.execute("INSERT INTO submissions VALUES ('poll', ?, ?, 't', ?)", (cred(1), nonce(1), share(1, 1)))
    raw.execute("INSERT INTO closed_collections VALUES ('poll', 't')")
    with pytest.raises(sqlite3.IntegrityError):   # schema 8 knows no option collection
        raw.execute("INSERT INTO collections VALUES ('o', 'option', 0, 1, 3, 1, 'refuse', '', 't', ?)", (OWNER,))
    raw.commit()
    raw.close()
    with Store(path) as store:
        spec = store.get_collection("poll")
        assert (spec.kind, spec.min_batch, spec.resubmit, spec.nodes) == ("ballot", 2, "replace", ("alice", "bob"))
        assert store.submission_keys("poll") == [(cred(1), nonce(1))] and store.is_closed("poll")
        assert store.create_collection(make_spec("colour", kind="option", lo=0, hi=1, length=3)) is True
        assert store.get_collection("colour").length == 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize(("changes", "message"), [
    ({"lo": 0, "hi": 2, "length": 3}, "an option collection has lo=0 and hi=1"),
    ({"lo": 0, "hi": 1, "length": 1}, "an option collection has 2 to 256 options"),
    ({"lo": 0, "hi": 1, "length": 257}, "an option collection has 2 to 256 options"),
])
def test_an_option_collection_is_one_of_2_to_256_options_one_hot(changes: dict[str, int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_spec("colour", kind="option", **changes)
