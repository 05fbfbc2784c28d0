"""The release budget (mpc/node/releases.py) and its record in the store: which queries are distinct,
which follow from earlier ones, the atomic check-and-record, restarts, and the store migration."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mpc.config import Policy, Rules
from mpc.errors import InputError, PolicyError, StoreError
from mpc.node.releases import Query, ReleaseBook, decide, implied_by, might_be_implied
from mpc.store import NewSession, RepeatRecords, Store, Transfer
from mpc.store import base
from mpc.store.base import DEFERRED_MAX

ALL = {"alice": 1, "bob": 1, "carlos": 1, "david": 1}


def q(aggregate: str, threshold: int | None = None, versions: dict[str, int] | None = None) -> Query:
    return Query.of(aggregate, threshold, ALL if versions is None else versions)


def test_query_json_round_trip_and_party_order() -> None:
    query = Query.of("vote", 7, {"carlos": 2, "alice": 1, "bob": 5})
    assert Query.from_json(query.to_json()) == query
    assert query.participants == ("alice", "bob", "carlos")
    assert json.loads(query.to_json())["versions"] == [["alice", 1], ["bob", 5], ["carlos", 2]]


@pytest.mark.parametrize("new, old, scalar, implied", [
    (q("sum"), q("sum"), False, True),                          # a repeat
    (q("average-records"), q("sum"), False, True),               # counts are public for a sum
    (q("average-elementwise"), q("sum"), False, True),
    (q("threshold", 5), q("sum"), False, True),                  # bits follow from the sums
    (q("sum"), q("average-elementwise"), False, True),           # it opens the sums
    (q("sum"), q("average-records"), True, True),                # scalars: the same numbers
    (q("sum"), q("average-records"), False, False),              # vectors: elementwise sums say more
    (q("average-elementwise"), q("average-records"), False, False),
    (q("sum"), q("threshold", 5), False, False),
    (q("threshold", 6), q("threshold", 5), False, False),
    (q("vote", 7), q("vote"), False, False),                     # the binary search on a tally
    (q("vote"), q("vote", 7), False, False),
    (q("vote", 7), q("vote", 7), False, True),
    (q("sum", versions={"alice": 1, "bob": 1, "carlos": 1}), q("sum"), False, False),   # a subset
    (q("sum", versions={**ALL, "bob": 2}), q("sum"), False, False),                      # bob's new data
])
def test_what_follows_from_what(new: Query, old: Query, scalar: bool, implied: bool) -> None:
    assert (implied_by(new, [old], scalar) is not None) is implied


def test_decide_counts_distinct_queries_only() -> None:
    earlier: list[tuple[Query, bool]] = []
    for query in (q("sum"), q("sum"), q("average-records"), q("threshold", 3)):
        counted, text = decide(query, earlier, max_releases=1, scalar=True, node="alice", input_name="raise",
                               version=1)
        earlier.append((query, counted))
        assert ("not counted" in text) is (not counted)
    assert [c for _, c in earlier] == [True, False, False, False]
    with pytest.raises(PolicyError) as err:
        decide(q("vote"), earlier, max_releases=1, scalar=True, node="alice", input_name="raise", version=1)
    message = str(err.value)
    assert "node alice" in message and "'raise'" in message and "version 1" in message
    assert "(max_releases)" in message


def test_a_budget_of_k_allows_k_distinct_queries() -> None:
    earlier: list[tuple[Query, bool]] = []
    for k in range(5):
        query = q("vote", k)
        counted, _ = decide(query, earlier, max_releases=5, scalar=False, node="a", input_name="b", version=1)
        earlier.append((query, counted))
    with pytest.raises(PolicyError):
        decide(q("vote", 99), earlier, max_releases=5, scalar=False, node="a", input_name="b", version=1)
    # ... and every one of them may still be repeated.
    for k in range(5):
        assert decide(q("vote", k), earlier, max_releases=5, scalar=False, node="a", input_name="b",
                      version=1)[0] is False


def test_might_be_implied_ignores_versions_but_not_participants() -> None:
    earlier = [q("sum")]
    assert might_be_implied("average-records", None, list(ALL), earlier, False)
    assert not might_be_implied("sum", None, ["alice", "bob", "carlos"], earlier, False)
    assert not might_be_implied("vote", 3, list(ALL), earlier, False)


def store_with_session(tmp_path: Path, session: str = "a" * 32) -> Store:
    store = Store(tmp_path / "node.sqlite3")
    store.put_input("raise", np.array([3800], dtype=np.int64), 0, True)
    store.record_session(session, "sum", "raise", list(ALL), "spiffe://mpc/coordinator/c")
    return store


def test_record_release_is_kept_across_a_reopen_and_audited(tmp_path: Path) -> None:
    with store_with_session(tmp_path) as store:
        query = q("sum")

        def check(earlier: list[object]) -> tuple[bool, str]:
            return True, "sum over alice,bob,carlos,david: release 1 of at most 1"
        store.record_release("a" * 32, "raise", 1, query.to_json(), check)
    with Store(tmp_path / "node.sqlite3") as store:
        records = store.releases("raise", 1)
        assert len(records) == 1 and records[0].counted and Query.from_json(records[0].query) == query
        entry = store.audit_log()[-1]
        assert entry.release.startswith("sum over alice") and entry.outcome == "prepared"
        with pytest.raises(Exception, match="append-only"):
            with sqlite3.connect(tmp_path / "node.sqlite3") as raw:
                raw.execute("DELETE FROM releases")


def test_two_sessions_cannot_both_take_the_last_release(tmp_path: Path) -> None:
    store = store_with_session(tmp_path)
    store.record_session("b" * 32, "vote", "raise", list(ALL), "spiffe://mpc/coordinator/c")
    results: list[str] = []
    start = threading.Barrier(2)

    def attempt(session: str, threshold: int) -> None:
        query = q("vote", threshold)

        def check(earlier: list[tuple[str, bool]]) -> tuple[bool, str]:
            return decide(query, [(Query.from_json(text), counted) for text, counted in earlier],
                          max_releases=1, scalar=True, node="alice", input_name="raise", version=1)
        start.wait()
        try:
            store.record_release(session, "raise", 1, query.to_json(), check)
            results.append("ok")
        except PolicyError:
            results.append("refused")
    threads = [threading.Thread(target=attempt, args=(s, k)) for s, k in (("a" * 32, 1), ("b" * 32, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["ok", "refused"]
    assert len(store.releases("raise", 1)) == 1
    store.close()


def test_versions_are_never_reused_even_after_rm(tmp_path: Path) -> None:
    with Store(tmp_path / "node.sqlite3") as store:
        assert store.put_input("x", np.array([1], dtype=np.int64), 0, True) == 1
        assert store.put_input("x", np.array([2], dtype=np.int64), 0, True, overwrite=True) == 2
        store.delete_input("x")
        assert store.put_input("x", np.array([3], dtype=np.int64), 0, True) == 3
        assert store.get_input("x").version == 3


_BALLOTS_ONLY = ("ballots are the integers 0 and 1 (no other bounds or scale; option indices for a plurality "
                 "vote are stored with --options K)")
_OPTIONS_ONLY = "options are ballots 0..K-1 for K from 2 to 256 (--options K); no other bounds or scale"


@pytest.mark.parametrize("values, kwargs, needle", [
    ([1 << 31], {}, "value 1 lies outside the declared bounds (the default"),
    ([5, 11], {"bounds": (0, 10)}, "value 2 lies outside the declared bounds"),
    ([1, 2], {"ballots": True}, "value 2 is not a ballot (0..1)"),
    ([1, -1], {"ballots": True}, "value 2 is not a ballot (0..1)"),
    ([1, 0, 2], {"kind": "ballots"}, "value 3 is not a ballot (0..1)"),
    ([1], {"ballots": True, "bounds": (1, 5)}, _BALLOTS_ONLY),
    ([1], {"ballots": True, "bounds": (0, 256)}, _BALLOTS_ONLY),
    ([1], {"ballots": True, "bounds": (0, 2)}, _BALLOTS_ONLY),       # option indices are not ballots any more
    ([1], {"kind": "ballots", "bounds": (0, 3)}, _BALLOTS_ONLY),
    ([16], {"ballots": True, "frac_bits": 4}, _BALLOTS_ONLY),
    ([0, 3, 2], {"kind": "options", "bounds": (0, 2)}, "value 2 is not a ballot (0..2)"),
    ([0, 1, -1], {"kind": "options", "bounds": (0, 1)}, "value 3 is not a ballot (0..1)"),
    ([0, 1], {"kind": "options"}, _OPTIONS_ONLY),                      # options declare their K
    ([1], {"kind": "options", "bounds": (1, 3)}, _OPTIONS_ONLY),
    ([0], {"kind": "options", "bounds": (0, 0)}, _OPTIONS_ONLY),       # K = 1
    ([0], {"kind": "options", "bounds": (0, 256)}, _OPTIONS_ONLY),     # K = 257
    ([0], {"kind": "options", "bounds": (-1, 2)}, _OPTIONS_ONLY),
    ([16], {"kind": "options", "bounds": (0, 32), "frac_bits": 4}, _OPTIONS_ONLY),
    ([9, 7, 7, 8, -2], {"kind": "curve"}, "value 4 is above value 3; a net-demand curve never increases"),
    ([1], {"ballots": True, "kind": "curve"}, "ballots or curve, not both"),
    ([1], {"ballots": True, "kind": "options", "bounds": (0, 1)}, "ballots or options, not both"),
    ([1], {"ballots": True, "kind": "bids"}, "ballots or bids, not both"),
    ([16, 32], {"kind": "bids", "frac_bits": 4}, "bids are integers (no fractional bits)"),
    ([16, 32], {"kind": "bids", "frac_bits": 4, "bounds": (0, 1 << 10)}, "bids are integers (no fractional bits)"),
    ([50, 101], {"kind": "bids", "bounds": (0, 100)}, "value 2 lies outside the declared bounds"),
    ([1 << 31], {"kind": "bids"}, "value 1 lies outside the declared bounds (the default"),
    ([1], {"kind": "votes"}, "unknown kind 'votes'; known: number, ballots, options, curve, bids"),
    ([1], {"bounds": (5, 0)}, "lower bound is above the upper bound"),
])
def test_values_outside_their_declaration_are_refused_at_put(tmp_path: Path, values: list[int],
                                                            kwargs: dict[str, object], needle: str) -> None:
    kwargs = dict(kwargs)
    frac_bits = kwargs.pop("frac_bits", 0)
    with Store(tmp_path / "node.sqlite3") as store:
        with pytest.raises(InputError) as err:
            store.put_input("x", np.array(values, dtype=np.int64), frac_bits, False, **kwargs)  # type: ignore[arg-type]
        assert needle in str(err.value)
        assert all(str(v) not in str(err.value) for v in values if abs(v) >= 10)   # positions, never values
        assert store.list_inputs() == []


@pytest.mark.parametrize("values, kwargs, kind, bounds", [
    ([0, 1, 1], {"ballots": True}, "ballots", (0, 1)),
    ([0, 1, 1], {"kind": "ballots", "bounds": (0, 1)}, "ballots", (0, 1)),
    ([0, 1], {"kind": "options", "bounds": (0, 1)}, "options", (0, 1)),                # K = 2
    ([0, 255, 7], {"kind": "options", "bounds": (0, 255)}, "options", (0, 255)),       # K = 256
    ([9, 7, 7, -2], {"kind": "curve"}, "curve", (-(2 ** 31 - 1), 2 ** 31 - 1)),
    ([-5, 0, 3], {"kind": "bids", "bounds": (-10, 10)}, "bids", (-10, 10)),
])
def test_each_kind_is_stored_and_listed_as_declared(tmp_path: Path, values: list[int], kwargs: dict[str, object],
                                                    kind: str, bounds: tuple[int, int]) -> None:
    with Store(tmp_path / "node.sqlite3") as store:
        store.put_input("x", np.array(values, dtype=np.int64), 0, False, **kwargs)  # type: ignore[arg-type]
        info = store.list_inputs()[0]
        assert (info.kind, info.bounds, info.length) == (kind, bounds, len(values))
        assert (store.get_input("x").kind, store.get_input("x").bounds) == (kind, bounds)


def test_option_ballots_keep_their_tally_and_curves_are_stored(tmp_path: Path) -> None:
    with Store(tmp_path / "node.sqlite3") as store:
        store.put_input("poll", np.array([0, 2, 2, 1, 2], dtype=np.int64), 0, False, kind="options", bounds=(0, 3))
        declared, yes, length = store.get_declared("poll")
        # options keep only their tally per option (no yes count: that is for 0/1 ballots)
        assert (declared.kind, declared.bounds, declared.tally, yes, length) == ("options", (0, 3), (1, 1, 3, 0), 0, 5)
        assert declared.values.size == 0   # the ballots themselves are not read
        store.put_input("yesno", np.array([1, 0, 1], dtype=np.int64), 0, False, ballots=True)
        assert store.get_declared("yesno")[0].tally == (1, 2)
        with store._writing() as conn:   # as a store before schema 4 left it: no tally column value
            conn.execute("UPDATE input_meta SET tally = NULL WHERE name = 'yesno'")
        assert store.get_declared("yesno")[0].tally == (1, 2)
        store.put_input("demand", np.array([9, 7, 7, -2], dtype=np.int64), 0, False, kind="curve")
        assert store.get_input("demand").kind == "curve"
        store.put_input("bids", np.array([5, 3], dtype=np.int64), 0, False, kind="bids")
        assert store.get_input("bids").kind == "bids"
        assert store.get_input("bids").tally == ()          # only ballots and options keep a tally



def test_a_vote_counts_only_0_1_ballots_even_from_a_store_that_kept_options_as_ballots(tmp_path: Path) -> None:
    """Before options were a kind of their own a plurality's ballots were stored as ballots with
    bounds (0, K-1); such an input may still be in a store. A yes/no vote refuses it on its
    declaration (it would count every option but 0 as yes), and takes 0/1 ballots as before."""
    from mpc.protocols.catalogue import Declared, VoteParams, entry
    vote = entry("vote")
    with Store(tmp_path / "node.sqlite3") as store:
        store.put_input("poll", np.array([0, 1, 1], dtype=np.int64), 0, False, ballots=True)
        store.put_input("yesno", np.array([0, 1, 1], dtype=np.int64), 0, False, ballots=True)
        with store._writing() as conn:   # as a plurality's ballots were stored: kind ballots, bounds (0, 3)
            conn.execute("UPDATE input_meta SET hi = 3, tally = '[1, 2, 0, 0]' WHERE name = 'poll'")
        for name, refused in (("poll", True), ("yesno", False)):
            stored, _, records = store.get_declared(name)
            assert (stored.kind, stored.bounds) == ("ballots", (0, 3) if refused else (0, 1))
            declared = Declared(name, "alice", stored.kind, stored.bounds, records, 0, False)
            for params in (VoteParams(), VoteParams(2)):
                if refused:
                    with pytest.raises(InputError, match=r"input 'poll' at node alice declares ballots other than "
                                                         r"0 and 1; store them again with --ballots"):
                        vote.check(params, declared, 3, 0)
                else:
                    vote.check(params, declared, 3, 0)


def test_a_store_of_the_previous_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    raw = sqlite3.connect(path)
    from mpc import store as store_module
    for statement in [s for step in store_module._MIGRATIONS[:2] for s in step]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    raw.execute("INSERT INTO inputs VALUES ('old', 1, 0, 1, 't', 't', ?)", (np.array([7], dtype="<i8").tobytes(),))
    raw.execute("INSERT INTO audit (at, event, session_id, coordinator, protocol, inputs, participants) "
                "VALUES ('t', 'refused', 'x', 'c', 'sum', '[]', '[]')")
    raw.commit()
    raw.close()
    with Store(path) as store:
        old = store.get_input("old")
        assert old.version == 1 and old.kind == "number" and old.bounds is None   # must be declared again
        assert [e.outcome for e in store.audit_log()] == ["refused"]
        store.append_audit("refused", "y", "c", "sum", [], [])
        with pytest.raises(Exception, match="append-only"):
            with sqlite3.connect(path) as conn:
                conn.execute("DELETE FROM audit")


def test_a_vote_reads_the_tally_kept_beside_the_ballots(tmp_path: Path) -> None:
    with Store(tmp_path / "node.sqlite3") as store:
        store.put_input("b", np.array([1, 0, 1, 1], dtype=np.int64), 0, False, ballots=True)
        declared, yes, n = store.get_declared("b")
        assert (yes, n, declared.kind, declared.version, declared.values.size) == (3, 4, "ballots", 1, 0)
        store.put_input("b", np.array([0, 0], dtype=np.int64), 0, False, ballots=True, overwrite=True)
        assert store.get_declared("b")[1:] == (0, 2)
        store.put_input("b", np.array([5], dtype=np.int64), 0, True, overwrite=True)      # now a number
        declared, yes, n = store.get_declared("b")
        assert (declared.kind, yes, n) == ("number", 0, 1)
        with pytest.raises(Exception, match="no input named"):
            store.get_declared("missing")


def test_release_book_reservations_hold_slots_but_never_make_a_release_free(tmp_path: Path) -> None:
    with Store(tmp_path / "node.sqlite3") as store:
        store.put_input("b", np.array([1, 0, 1], dtype=np.int64), 0, False, ballots=True)
        stored = store.get_declared("b")[0]
        for sid in ("a" * 32, "b" * 32, "c" * 32, "d" * 32):
            store.record_session(sid, "vote", "b", list(ALL), "spiffe://mpc/coordinator/c")
        book = ReleaseBook(store, "alice", Policy())
        book.reserve("a" * 32, stored, q("vote", 5))
        book.reserve("b" * 32, stored, q("vote", 5))        # shares the pending slot of the same query
        with pytest.raises(PolicyError, match=r"\(max_releases\)"):
            book.reserve("c" * 32, stored, q("vote", 7))    # the only slot is held
        book.drop("a" * 32)                                 # a decoy that never agreed
        assert "release 1 of at most 1" in book.record("b" * 32, stored, q("vote", 5))   # counted, not free
        book.reserve("d" * 32, stored, q("vote", 5))        # a repeat of a recorded release
        assert "repeat" in book.record("d" * 32, stored, q("vote", 5))
        with pytest.raises(PolicyError, match=r"\(max_releases\)"):
            book.reserve("c" * 32, stored, q("vote", 7))
        assert [r.counted for r in store.releases("b", 1)] == [True, False]


def test_repeats_add_log_rows_but_not_distinct_queries(tmp_path: Path) -> None:
    """Deciding on a release reads the distinct queries of the version, in order of first release,
    each counted once: a node that answered the same query ten thousand times decides as fast as
    after the first, and as it did when it read every row."""
    store = store_with_session(tmp_path)
    book = ReleaseBook(store, "alice", Policy(defaults=Rules(max_releases=2)))
    stored = store.get_input("raise")
    sessions = [f"{i:032x}" for i in range(1, 8)]
    queries = [q("sum"), q("sum"), q("vote", 3), q("sum"), q("average-records"), q("vote", 3), q("vote", 3)]
    for session, query in zip(sessions, queries):
        store.record_session(session, query.aggregate, "raise", list(ALL), "spiffe://mpc/coordinator/c")
        book.reserve(session, stored, query)
        book.record(session, stored, query)
    assert [r.counted for r in store.releases("raise", 1)] == [True, False, True, False, False, False, False]
    assert store.distinct_releases("raise", 1) == [(q("sum").to_json(), True), (q("vote", 3).to_json(), True),
                                                    (q("average-records").to_json(), False)]
    store.record_session("f" * 32, "vote", "raise", list(ALL), "spiffe://mpc/coordinator/c")
    with pytest.raises(PolicyError, match="max_releases"):
        book.reserve("f" * 32, stored, q("vote", 2))
    store.close()


def test_migration_to_schema_7_keeps_each_versions_distinct_queries(tmp_path: Path) -> None:
    """A store of schema 6 with a release log of repeats: after the migration the distinct queries
    (release_queries) are what the log says, in order of first release, each counted as its first row;
    the next release is decided on them, and release_queries is append-only like the log."""
    from mpc.store.schema import _MIGRATIONS, SCHEMA_VERSION
    path = tmp_path / "node.sqlite3"
    raw = sqlite3.connect(path)
    for statement in [s for step in _MIGRATIONS[:6] for s in step]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 6")
    rows = [("sum", 1, 1), ("sum", 1, 0), ("vote", 1, 1), ("sum", 2, 1), ("vote", 1, 0), ("average-records", 1, 0)]
    for i, (aggregate, version, counted) in enumerate(rows):
        raw.execute("INSERT INTO releases (at, session_id, input_name, version, query, counted) VALUES (?, ?, ?, ?, ?, ?)",
                    ("t", f"{i:032x}", "raise", version, q(aggregate, 3 if aggregate == "vote" else None).to_json(),
                     counted))
    raw.commit()
    raw.close()
    with Store(path) as store:
        assert store.distinct_releases("raise", 1) == [(q("sum").to_json(), True), (q("vote", 3).to_json(), True),
                                                        (q("average-records").to_json(), False)]
        assert store.distinct_releases("raise", 2) == [(q("sum").to_json(), True)]
        assert len(store.releases("raise")) == 6
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
        for statement in ("UPDATE release_queries SET counted = 0", "DELETE FROM release_queries"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(statement)


class _DurabilitySeen(Store):
    """The real store, noting how each release was committed (durable: fsync'd before it returns)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits: list[tuple[str, bool]] = []

    def record_release(self, session_id: str, *args: Any, **kwargs: Any) -> str:
        described = super().record_release(session_id, *args, **kwargs)
        self.commits.append((session_id, kwargs.get("durable", True)))
        return described


def test_a_counted_release_waits_for_the_disk_and_only_a_release_a_recorded_one_implies_does_not(
        tmp_path: Path) -> None:
    """What the budget rests on (a counted release, a new distinct query) is fsync'd before the output
    leaves; a repeat, or a query an earlier recorded release implies, reveals nothing new and is
    committed without the fsync. A session that reserved before the first was recorded still waits."""
    store = _DurabilitySeen(tmp_path / "node.sqlite3")
    store.put_input("raise", np.array([3800], dtype=np.int64), 0, True)
    book = ReleaseBook(store, "alice", Policy(defaults=Rules(max_releases=4)))
    stored = store.get_input("raise")
    plan = [("1", q("sum")), ("2", q("sum")), ("3", q("average-records")), ("4", q("vote", 3)),
            ("5", q("vote", 3)), ("6", q("sum", versions={**ALL, "bob": 2}))]
    for sid, query in plan:
        session = sid * 32
        store.record_session(session, query.aggregate, "raise", list(ALL), "spiffe://mpc/coordinator/c")
        book.reserve(session, stored, query)
        book.record(session, stored, query)
    late, early = "7" * 32, "8" * 32      # both reserve a new query; the first to record makes the other a repeat
    for session in (late, early):
        store.record_session(session, "vote", "raise", list(ALL), "spiffe://mpc/coordinator/c")
        book.reserve(session, stored, q("vote", 9))
    assert not book.is_repeat(early) and not book.is_repeat(late)
    book.record(early, stored, q("vote", 9))
    book.record(late, stored, q("vote", 9))
    assert [durable for _, durable in store.commits] == [True, False, False, True, False, True, True, True]
    assert book._repeats == set()   # each remembered until its release is recorded
    assert [r.counted for r in store.releases("raise", 1)] == [True, False, False, True, False, True, True, False]
    store.close()


def test_a_repeat_is_committed_with_synchronous_normal_and_a_counted_release_with_full(tmp_path: Path) -> None:
    """What durable=False means at the disk: the transaction runs with synchronous=NORMAL (WAL: no fsync
    at commit), a durable one with FULL, and the setting is FULL again after either."""
    with store_with_session(tmp_path) as store:
        conn = store._conn
        assert conn is not None
        seen: list[int] = []

        def decide(counted: bool) -> Callable[[list[object]], tuple[bool, str]]:
            def check(earlier: list[object]) -> tuple[bool, str]:
                seen.append(conn.execute("PRAGMA synchronous").fetchone()[0])   # inside the transaction
                return counted, "sum over alice,bob,carlos,david"
            return check

        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), decide(True))
        store.record_session("b" * 32, "sum", "raise", list(ALL), "spiffe://mpc/coordinator/c")
        store.record_release("b" * 32, "raise", 1, q("sum").to_json(), decide(False), durable=False)
        assert seen == [2, 1]   # FULL, then NORMAL
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_release_committed_without_the_disk_may_not_count(tmp_path: Path) -> None:
    """The store refuses, and records nothing, if a release it was told is a repeat counts after all,
    or spends a differential-privacy budget; its later commits are durable again."""
    with store_with_session(tmp_path) as store:
        def counted(earlier: list[object]) -> tuple[bool, str]:
            return True, "sum over alice,bob,carlos,david: release 1 of at most 1"

        with pytest.raises(StoreError, match="must be committed to disk"):
            store.record_release("a" * 32, "raise", 1, q("sum").to_json(), counted, durable=False)
        with pytest.raises(StoreError, match="always committed to disk"):
            store.record_release("a" * 32, "raise", 1, q("sum").to_json(), counted, durable=False,
                                 spend=(Decimal(1), Decimal(0)))
        assert store.releases("raise", 1) == []
        assert store._conn is not None and store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL
        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), counted)
        assert [r.counted for r in store.releases("raise", 1)] == [True]


def test_a_release_that_ends_its_session_records_both_or_neither(tmp_path: Path) -> None:
    """record_release(done=...): the release, the session's end ("done", with what it sent) and both
    audit rows in one transaction; a session that has already ended keeps its end, and the release
    is not recorded either."""
    sent = (Transfer("output share", "spiffe://mpc/coordinator/c", 1, 8),)
    with store_with_session(tmp_path) as store:
        def free(earlier: list[object]) -> tuple[bool, str]:
            return False, "sum over alice,bob,carlos,david: a repeat; not counted"

        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), free, done=sent)
        record = store.get_session("a" * 32)
        assert record is not None and record.status == "done"
        (entry,) = store.audit_log()
        assert (entry.outcome, entry.sent, entry.release) == ("done", sent, "sum over alice,bob,carlos,david: "
                                                                           "a repeat; not counted")
        store.record_session("b" * 32, "sum", "raise", list(ALL), "spiffe://mpc/coordinator/c")
        store.set_session_status("b" * 32, "failed", "peer gone")
        with pytest.raises(StoreError, match="already ended"):
            store.record_release("b" * 32, "raise", 1, q("sum").to_json(), free, done=sent)
        assert [r.session_id for r in store.releases("raise", 1)] == ["a" * 32]
        ended = store.get_session("b" * 32)
        assert ended is not None and ended.status == "failed"


# ---- a repeat's records, deferred to a batch (mpc/store/base.py `_defer`) ----------------------------


def _new(session: str) -> NewSession:
    return NewSession(session, "sum", "raise", tuple(ALL), "spiffe://mpc/coordinator/c")


def _repeat(earlier: list[object]) -> tuple[bool, str]:
    return False, "sum over alice,bob,carlos,david: a repeat; not counted"


SENT = (Transfer("output share", "spiffe://mpc/coordinator/c", 1, 8),)


def _one_round(store: Store, session: str, query: Query | None = None, **kwargs: Any) -> str:
    """A one-round session's repeat release that ends it, as NodeCore records it."""
    options: dict[str, Any] = {"new": _new(session), "durable": False, "done": SENT, **kwargs}
    return store.record_release(session, "raise", 1, (query or q("sum")).to_json(), _repeat, **options)


def _rows(path: Path, session: str) -> dict[str, list[tuple[object, ...]]]:
    """What another connection (another process: `mpc audit`) reads of a session, without row numbers, times
    or the session's id."""
    with sqlite3.connect(path) as conn:
        return {
            "sessions": conn.execute("SELECT protocol, input_name, participants, coordinator, status, reason, "
                                     "created_at = updated_at FROM sessions WHERE session_id = ?",
                                     (session,)).fetchall(),
            "audit": conn.execute("SELECT event, coordinator, protocol, inputs, participants, sent, reason FROM audit "
                                  "WHERE session_id = ? ORDER BY seq", (session,)).fetchall(),
            "releases": conn.execute("SELECT input_name, version, query, counted, epsilon, delta FROM releases "
                                     "WHERE session_id = ?", (session,)).fetchall()}


def test_a_repeated_one_round_query_waits_in_memory_and_is_written_as_an_undeferred_one(tmp_path: Path) -> None:
    """A new session whose release repeats a recorded query word for word and ends it is kept in memory:
    another connection does not see it, this store's own reads do (they write it first), and the rows
    written then are the rows the same release writes in its own transaction."""
    path = tmp_path / "node.sqlite3"
    with store_with_session(tmp_path) as store:
        first, second = "a" * 32, "b" * 32
        store.record_release(first, "raise", 1, q("sum").to_json(), lambda _: (True, "sum: release 1"))   # counted
        assert store.deferred == 0
        store.record_session("c" * 32, "sum", "raise", list(ALL), "spiffe://mpc/coordinator/c")   # written at once
        store.set_session_status("c" * 32, "failed", "peer gone")
        undeferred = "d" * 32   # its query is new to the version (implied, not the same): not deferred
        _one_round(store, undeferred, q("average-records"))
        assert store.deferred == 0
        _one_round(store, second)
        assert store.deferred == 1 and store.has_session(second)
        assert _rows(path, second) == {"sessions": [], "audit": [], "releases": []}
        assert store.distinct_releases("raise", 1) == [(q("sum").to_json(), True),
                                                        (q("average-records").to_json(), False)]
        assert store.deferred == 1   # reading the distinct queries needs no deferred row
        record = store.get_session(second)
        assert record is not None and record.status == "done" and store.deferred == 0
        written = _rows(path, second)
    expected = _rows(path, undeferred)
    expected["releases"] = [(name, version, q("sum").to_json(), counted, e, d)
                            for name, version, _, counted, e, d in expected["releases"]]
    assert written == expected
    assert [e for e, *_ in written["audit"]] == ["prepared", "released", "done"]


def test_once_the_deferred_rows_cannot_be_written_no_repeat_is_deferred_until_they_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the node went on answering repeated queries from records held in memory only (64
    sessions, which a clean stop then could not write either: their shares had left with no record on
    disk). Once a write of the waiting rows fails, the next repeat writes them first or is refused
    (StoreError: its session sends nothing); when the disk has room again, all are written."""
    real = base._transaction
    full = [False]

    def transaction(conn: sqlite3.Connection, durable: bool) -> Any:
        if full[0]:
            raise sqlite3.OperationalError("database or disk is full")
        return real(conn, durable)
    monkeypatch.setattr(base, "_transaction", transaction)
    first, refused, later = "1" * 32, "2" * 32, "3" * 32
    with store_with_session(tmp_path) as store:
        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), lambda _: (True, "sum: release 1"))
        _one_round(store, first)
        assert store.deferred == 1
        full[0] = True
        with pytest.raises(StoreError, match="disk is full"):
            store.write_deferred()
        with pytest.raises(StoreError, match="disk is full"):
            _one_round(store, refused)
        assert store.deferred == 1   # the first still waits; the refused one is not kept
        full[0] = False
        _one_round(store, later)     # the waiting rows are written first, then this one waits
        assert store.deferred == 1
        path = tmp_path / "node.sqlite3"
        assert _rows(path, first)["releases"] and not _rows(path, later)["releases"]
        assert not store.has_session(refused) and store.has_session(later)


def test_deferred_rows_are_written_before_any_later_write_and_when_the_store_closes(tmp_path: Path) -> None:
    """The audit log keeps the order of events: a refusal written after three deferred sessions comes
    after them. Closing the store writes what still waits, so a reopened store has every session."""
    path = tmp_path / "node.sqlite3"
    sessions = [c * 32 for c in "123456"]
    with store_with_session(tmp_path) as store:
        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), lambda _: (True, "sum: release 1"))
        for session in sessions[:3]:
            _one_round(store, session)
        store.append_audit("refused", "f" * 32, "spiffe://mpc/coordinator/c", "sum", ["raise"], list(ALL),
                           reason="not allowed")
        assert store.deferred == 0
        for session in sessions[3:]:
            _one_round(store, session)
        assert store.deferred == 3
    with Store(path) as reopened:
        order = [e.session_id for e in reopened.audit_log()]
        assert order == ["a" * 32, *sessions[:3], "f" * 32, *sessions[3:]]
        assert [r.session_id for r in reopened.releases("raise", 1)] == ["a" * 32, *sessions]
        assert all((s := reopened.get_session(sid)) is not None and s.status == "done" for sid in sessions)


def test_only_a_new_session_that_repeats_a_query_word_for_word_and_ends_with_it_is_deferred(
        tmp_path: Path) -> None:
    """Whatever a decision may rest on is written in its own transaction: a durable release, one of a
    session recorded at prepare, one after which the session goes on, a query the version has not
    released in those words, and a session id known already (it is refused, as undeferred)."""
    with store_with_session(tmp_path) as store:
        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), lambda _: (True, "sum: release 1"))
        _one_round(store, "1" * 32, durable=True)
        store.record_session("2" * 32, "sum", "raise", list(ALL), "spiffe://mpc/coordinator/c")
        store.record_release("2" * 32, "raise", 1, q("sum").to_json(), _repeat, durable=False, done=SENT)
        _one_round(store, "3" * 32, done=None)
        _one_round(store, "4" * 32, q("average-records"))
        assert store.deferred == 0
        with pytest.raises(StoreError, match="already ended"):
            _one_round(store, "1" * 32)
        assert store.deferred == 0
        _one_round(store, "5" * 32)
        assert store.deferred == 1
        assert [r.session_id for r in store.releases("raise", 1)] == ["a" * 32, *(c * 32 for c in "12345")]


def test_a_repeat_from_a_plan_is_deferred_only_while_its_input_version_query_and_id_hold(tmp_path: Path) -> None:
    """Store.defer_repeat, which a repeat run from its plan records with (mpc/node/core.py `repeat`): records
    made once, from an earlier session, give each later id the rows record_release's own deferral writes
    for it, and nothing at all is deferred unless the input is at the version, the version released the
    query word for word, and the session is unknown (written or deferred)."""
    path = tmp_path / "node.sqlite3"

    def records(version: int, query: str) -> RepeatRecords:
        return RepeatRecords.of(_new("e" * 32), "raise", version, q(query).to_json(), description, SENT)

    with store_with_session(tmp_path) as store:
        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), lambda _: (True, "sum: release 1"))
        _, description = _repeat([])
        sid = "b" * 32
        assert not store.defer_repeat(records(1, "average-records"), sid)
        assert not store.defer_repeat(records(2, "sum"), sid)
        assert not store.defer_repeat(records(1, "sum"), "a" * 32)
        assert store.deferred == 0
        assert store.defer_repeat(records(1, "sum"), sid)
        assert store.deferred == 1
        assert not store.defer_repeat(records(1, "sum"), sid)   # deferred
        _one_round(store, "c" * 32)   # the same release through record_release, deferred too
        assert store.deferred == 2
        store.put_input("raise", np.array([4000], dtype=np.int64), 0, True, overwrite=True)   # version 2
        assert not store.defer_repeat(records(1, "sum"), "d" * 32)
        assert not store.has_session("d" * 32)
    assert _rows(path, sid) == _rows(path, "c" * 32)
    assert [e for e, *_ in _rows(path, sid)["audit"]] == ["prepared", "released", "done"]
    assert not any(_rows(path, "e" * 32).values())   # the session the records were made from is not recorded


def test_a_deferred_repeat_that_counts_after_all_is_refused_and_not_kept(tmp_path: Path) -> None:
    with store_with_session(tmp_path) as store:
        store.record_release("a" * 32, "raise", 1, q("sum").to_json(), lambda _: (True, "sum: release 1"))
        with pytest.raises(StoreError, match="must be committed to disk"):
            store.record_release("b" * 32, "raise", 1, q("sum").to_json(), lambda _: (True, "?"), new=_new("b" * 32),
                                 durable=False, done=SENT)
        assert store.deferred == 0 and not store.has_session("b" * 32)


def _fill_a_batch(store: Store) -> list[str]:
    """A counted sum, then DEFERRED_MAX repeats of it waiting. Returns: their ids and one more."""
    store.record_release("a" * 32, "raise", 1, q("sum").to_json(), lambda _: (True, "sum: release 1"))
    sessions = [f"{i:032x}" for i in range(1, DEFERRED_MAX + 2)]
    for session in sessions[:-1]:
        _one_round(store, session)
    return sessions


def test_a_full_batch_is_written_before_another_session_waits(tmp_path: Path) -> None:
    """At most DEFERRED_MAX sessions wait; the next writes them first, and waits alone."""
    path = tmp_path / "node.sqlite3"
    with store_with_session(tmp_path) as store:
        sessions = _fill_a_batch(store)
        assert store.deferred == DEFERRED_MAX
        _one_round(store, sessions[-1])
        assert store.deferred == 1
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM releases").fetchone()[0] == DEFERRED_MAX + 1


def test_a_batch_that_cannot_be_written_keeps_waiting_and_the_next_repeat_records_nothing(tmp_path: Path) -> None:
    """A full batch the disk refuses (here: another connection holds the write lock past the busy
    timeout) still waits; the session that found it full gets the error, and nothing of it is kept."""
    path = tmp_path / "node.sqlite3"
    with store_with_session(tmp_path) as store:
        sessions = _fill_a_batch(store)
        assert store._conn is not None
        store._conn.execute("PRAGMA busy_timeout = 0")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                _one_round(store, sessions[-1])
            assert store.deferred == DEFERRED_MAX and not store.has_session(sessions[-1])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.write_deferred()
        assert store.deferred == 0
        assert [r.session_id for r in store.releases("raise", 1)] == ["a" * 32, *sessions[:-1]]
