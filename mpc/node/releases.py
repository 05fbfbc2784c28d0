"""What a sequence of sessions may reveal about one stored input version (DESIGN.md §9).

The rule follows DAP's batch rules (draft-ietf-ppm-dap, §4.6 "min_batch_size" and
"max_batch_query_count"): a stored input version takes part in at most `max_releases`
*distinct* queries. A query is what a session computes and over which data: the protocol, its
parameters (a vote's rule or a threshold), the set of participants and every participant's input
version. Two releases count once when the second reveals nothing the first did not:
- the identical query over the identical data (a repeat);
- an output that is a function of an earlier one over the same data and participants, with
  public shapes: an average, a threshold or the sum itself after a sum (the counts are public:
  n for scalars, n·L for equal-length vectors); a sum or threshold after an elementwise average
  (it opens the sums); and, for scalar inputs, any of sum and average after the other.
Everything else is a distinct query: another participant set (the differencing attack), another
threshold (the binary search on a tally), another protocol, or another node's new data.

Differentially private releases (DESIGN.md §11) are counted differently: each one spends its
(epsilon, delta) from the input's budget, over all its versions, by sequential composition (Dwork &
Roth, "The Algorithmic Foundations of Differential Privacy", 2014, Theorem 3.16). A repeat is never
free (fresh noise reveals more), and they take no place among the `max_releases` distinct exact
queries. Amounts are exact decimals, so that ten releases of epsilon 0.1 spend exactly 1.

`decide` and `implied_by` are pure; `ReleaseBook` keeps one node's releases, recorded in its
store and reserved by its live sessions, and node core asks it whether one more may go.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from mpc.config import Policy
from mpc.errors import PolicyError
from mpc.protocols.catalogue import describe_release, implies
from mpc.store import NewSession, RepeatRecords, Store, StoredInput, Transfer



@dataclass(frozen=True, slots=True)
class Query:
    """One release: the aggregate, its parameter, and exactly which data it ran over."""

    aggregate: str                          # the catalogue's variant: "sum", "average-records", "vote", ...
    parameter: object                       # its parameter as JSON (a vote's K, None: at least half; ...)
    participants: tuple[str, ...]           # sorted: a sum does not depend on the party order
    versions: tuple[tuple[str, int], ...]   # (node, input version), sorted by node

    @classmethod
    def of(cls, aggregate: str, parameter: object, versions: Mapping[str, int]) -> Query:
        """The query of a session over `versions` (one entry per participant)."""
        return cls(aggregate, parameter, tuple(sorted(versions)), tuple(sorted(versions.items())))

    def to_json(self) -> str:
        """Canonical JSON, as the store keeps it."""
        return json.dumps({"aggregate": self.aggregate, "parameter": self.parameter,
                           "participants": list(self.participants),
                           "versions": [[n, v] for n, v in self.versions]}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Query:
        """Parse what to_json wrote (queries are immutable: the parses of recent texts are kept)."""
        return _parse_query(text)

    def describe(self) -> str:
        """A short human description: "vote (at least 7) over alice,bob,carlos"."""
        return f"{describe_release(self.aggregate, self.parameter)} over {','.join(self.participants)}"


@functools.lru_cache(maxsize=4096)
def _parse_query(text: str) -> Query:
    raw = json.loads(text)
    # Stores written before the protocol catalogue call the parameter "threshold".
    parameter = raw["parameter"] if "parameter" in raw else raw["threshold"]
    return Query(str(raw["aggregate"]), parameter, tuple(raw["participants"]),
                 tuple((str(n), int(v)) for n, v in raw["versions"]))


def _implied(new: Query, old: Query, scalar: bool) -> bool:
    """Whether `new`'s output is a function of `old`'s and public data; same data assumed."""
    return (new.aggregate, new.parameter) == (old.aggregate, old.parameter) or implies(
        old.aggregate, old.parameter, new.aggregate, new.parameter, scalar)


def implied_by(new: Query, earlier: Iterable[Query], scalar: bool) -> Query | None:
    """The earlier query over the same data and participants that already revealed `new`, if any."""
    for old in earlier:
        if old.participants == new.participants and old.versions == new.versions and _implied(new, old, scalar):
            return old
    return None


def might_be_implied(aggregate: str, parameter: object, participants: Sequence[str],
                     earlier: Iterable[Query], scalar: bool) -> bool:
    """At prepare, before the other nodes' versions are known: could an earlier release imply this one?"""
    parties = tuple(sorted(participants))
    probe = Query(aggregate, parameter, parties, ())
    return any(old.participants == parties and _implied(probe, old, scalar) for old in earlier)


def decide(new: Query, earlier: Sequence[tuple[Query, bool]], *, max_releases: int, scalar: bool, node: str,
           input_name: str, version: int) -> tuple[bool, str]:
    """Whether this release may go, and whether it counts against the budget.

    Args:
        earlier: the version's earlier releases, each with whether it was counted.
    Returns: (counted, a description for the audit log).
    Raises: PolicyError naming the node, the input, its version and the rule when the budget is spent.
    """
    used = sum(1 for _, counted in earlier if counted)
    previous = implied_by(new, (q for q, _ in earlier), scalar)
    if previous is not None:
        how = "a repeat of" if previous == new else "implied by"
        return False, f"{new.describe()}: {how} an earlier release ({previous.describe()}); not counted"
    if used >= max_releases:
        raise budget_spent(node, input_name, version, max_releases, new.describe())
    return True, f"{new.describe()}: release {used + 1} of at most {max_releases} of {input_name!r} v{version}"


def budget_spent(node: str, input_name: str, version: int, max_releases: int, query: str) -> PolicyError:
    """The refusal when an input version has taken part in all the distinct queries it may."""
    return PolicyError(f"node {node}: input {input_name!r} version {version} has taken part in its "
                       f"{max_releases} distinct release(s) (max_releases); {query} would be another. "
                       f"Repeating an earlier query is allowed; the owner may raise max_releases or store "
                       f"a new version")


Spend = tuple[Decimal, Decimal]   # (epsilon, delta) of a differentially private release


@dataclass(frozen=True, slots=True)
class Budget:
    """An input's differential-privacy budget: what its DP releases spent, and what the policy allows."""

    epsilon_spent: Decimal
    epsilon: Decimal
    delta_spent: Decimal
    delta: Decimal
    exact: bool                    # whether the policy allows exact releases too

    @property
    def epsilon_left(self) -> Decimal:
        """What is left of epsilon (never negative)."""
        return max(Decimal(0), self.epsilon - self.epsilon_spent)

    @property
    def delta_left(self) -> Decimal:
        """What is left of delta (never negative)."""
        return max(Decimal(0), self.delta - self.delta_spent)


def _spent_pairs(spends: Iterable[Spend]) -> Spend:
    epsilon = delta = Decimal(0)
    for e, d in spends:
        epsilon += e
        delta += d
    return epsilon, delta


def overspent(node: str, input_name: str, budget: Budget, spend: Spend, pending: Spend = (Decimal(0), Decimal(0)),
              query: str = "") -> PolicyError | None:
    """The refusal of a DP release that would overspend the input's budget, or None if it fits.

    Args:
        pending: what the node's other live DP sessions of this input have reserved.
    """
    epsilon = budget.epsilon_spent + pending[0] + spend[0]
    delta = budget.delta_spent + pending[1] + spend[1]
    if epsilon <= budget.epsilon and delta <= budget.delta:
        return None
    held = f" ({pending[0]}, {pending[1]} held by live sessions)" if any(pending) else ""
    return PolicyError(f"node {node}: input {input_name!r} has epsilon {budget.epsilon_left} and delta "
                       f"{budget.delta_left} left of its differential-privacy budget{held}; "
                       f"{query or 'this release'} would spend epsilon {spend[0]} and delta {spend[1]}. "
                       f"The owner may raise the policy's epsilon/delta")


class ReleaseBook:
    """One node's releases: recorded ones in its store, and those its live sessions have reserved.

    A session reserves its release before its session digest leaves (`reserve`), records it once
    every peer has agreed, or a program once its output share is ready (`record`), and drops the
    reservation when it ends (`drop`).

    Only a *recorded* release can make a later one free (a repeat, or implied): a reservation may
    never release anything, so nothing may ride on it. Reservations only hold budget: a pending
    query that no recorded release implies takes a slot until its session ends, and a new query
    may share a pending slot (it is then counted when it is recorded, if that slot's own session
    never was). So two sessions cannot both take the last release, and concurrent or abandoned
    sessions never turn a distinct query into a free one.
    """

    def __init__(self, store: Store, node: str, policy: Policy) -> None:
        self.store = store
        self.node = node
        self.policy = policy
        self._reserved: dict[str, tuple[str, int, Query]] = {}   # session -> (input, version, query)
        self._spending: dict[str, tuple[str, Spend]] = {}        # session -> (input, DP spend)
        # Sessions whose query a recorded release already implied when they reserved: recorded
        # without waiting for the disk (see `record`).
        self._repeats: set[str] = set()
        self._lock = threading.RLock()   # over both: the event loop and worker threads reserve and record

    def budget(self, input_name: str) -> Budget:
        """An input's DP budget as recorded in the store (live sessions' reservations not counted)."""
        rules = self.policy.rules(input_name)
        epsilon, delta = self.store.dp_spent(input_name)
        return Budget(epsilon, rules.epsilon, delta, rules.delta, rules.exact)

    def _pending(self, input_name: str, skip: str = "") -> Spend:
        return _spent_pairs(spend for session, (name, spend) in self._spending.items()
                            if name == input_name and session != skip)

    def precheck(self, stored: StoredInput, aggregate: str, parameter: object, participants: Sequence[str],
                 spend: Spend | None = None) -> bool:
        """At prepare, before the other nodes' versions are known: refuse a query that no earlier
        release could make a repeat of when the version's budget is already spent, and a DP release
        that would overspend the input's budget (counting what live sessions hold).

        Returns: whether an earlier release of the version may imply this one (it would then take nothing
        from the budget); never for a DP release. A keyed sum runs only as such a repeat
        (mpc/protocols/pairing.py).
        Raises: PolicyError naming the node, the input and the rule (for DP: what is left).
        """
        with self._lock:   # sessions may record from a worker thread (a slow engine step)
            if spend is not None:
                probe = Query(aggregate, parameter, tuple(sorted(participants)), ())
                refusal = overspent(self.node, stored.name, self.budget(stored.name), spend, self._pending(stored.name),
                                    probe.describe())
                if refusal is not None:
                    raise refusal
                return False
            maximum = self.policy.rules(stored.name).max_releases
            records = self.store.distinct_releases(stored.name, stored.version)
            implied = might_be_implied(aggregate, parameter, participants, [Query.from_json(q) for q, _ in records],
                                       stored.is_scalar)
            if sum(1 for _, counted in records if counted) >= maximum and not implied:
                probe = Query(aggregate, parameter, tuple(sorted(participants)), ())
                raise budget_spent(self.node, stored.name, stored.version, maximum, probe.describe())
            return implied

    def reserve(self, session_id: str, stored: StoredInput, query: Query, spend: Spend | None = None) -> None:
        """Hold a session's place in its input version's budget until it is recorded or dropped
        (a DP release: its spend from the input's budget).

        Raises: PolicyError when the budget is spent, counting the slots other live sessions hold.
        """
        with self._lock:   # sessions may record from a worker thread (a slow engine step)
            if spend is not None:
                refusal = overspent(self.node, stored.name, self.budget(stored.name), spend,
                                    self._pending(stored.name, session_id), query.describe())
                if refusal is not None:
                    raise refusal
                self._spending[session_id] = (stored.name, spend)
                return
            recorded = [(Query.from_json(q), counted) for q, counted in self.store.distinct_releases(stored.name,
                                                                                                   stored.version)]
            queries = [q for q, _ in recorded]
            if implied_by(query, queries, stored.is_scalar) is not None:
                self._repeats.add(session_id)
            else:
                slots: list[Query] = []    # distinct pending queries that no recorded release implies
                for name, version, other in self._reserved.values():
                    if (name, version) == (stored.name, stored.version) and implied_by(
                            other, queries, stored.is_scalar) is None and implied_by(
                            other, slots, stored.is_scalar) is None:
                        slots.append(other)
                maximum = self.policy.rules(stored.name).max_releases
                used = sum(1 for _, counted in recorded if counted)
                if implied_by(query, slots, stored.is_scalar) is None and used + len(slots) >= maximum:
                    raise budget_spent(self.node, stored.name, stored.version, maximum, query.describe())
            self._reserved[session_id] = (stored.name, stored.version, query)

    def record(self, session_id: str, stored: StoredInput, query: Query, spend: Spend | None = None,
               new: NewSession | None = None, done: Sequence[Transfer] | None = None) -> str:
        """Record a reserved release in the store (and its audit log), deciding atomically against
        the recorded releases only (new: the session itself too, if not recorded yet; done: its end
        too, having sent that, if the release is all that is left of it).

        Returns: its description. Raises: PolicyError if the budget is spent after all.
        """
        with self._lock:   # sessions may record from a worker thread (a slow engine step)
            if spend is not None:
                return self._record_private(session_id, stored, query, spend, new, done)
            # A release that a recorded one implied at reserve is still implied now (releases are never
            # deleted, and the version is part of the query): it reveals nothing new and counts against
            # nothing, so its record (and audit entry) is committed without an fsync, atomic and safe
            # against a crash but not a power cut. Losing it can only make a later decision stricter.
            # A counted release, which the budget rests on, is on disk before anything it reveals leaves.
            durable = session_id not in self._repeats
            described = self.store.record_release(session_id, stored.name, stored.version, query.to_json(),
                                                  self._decider(stored, query), new=new, durable=durable, done=done)
            self._reserved.pop(session_id, None)
            self._repeats.discard(session_id)
            return described

    def defer_repeat(self, records: RepeatRecords, session_id: str) -> bool:
        """Record, deferred, the release of a new session that repeats a query the input version released
        before, word for word, and ends with it: `records` (made when an earlier session of the same
        query did so) for `session_id` (the store's `defer_repeat`). No reservation: it takes nothing from
        the budget, and no decision waits on it.

        Returns: whether it was recorded; False, recording nothing, unless the input is at the version
        still, the query is one of its releases, and the session is unknown.
        Raises: StoreError if it cannot be kept (nothing is recorded).
        """
        with self._lock:
            return self.store.defer_repeat(records, session_id)

    def _decider(self, stored: StoredInput, query: Query) -> Callable[[Sequence[tuple[str, bool]]], tuple[bool, str]]:
        """What the store calls, with the version's distinct queries, to decide on `query` (an exact release)."""
        maximum = self.policy.rules(stored.name).max_releases

        def check(recorded: Sequence[tuple[str, bool]]) -> tuple[bool, str]:
            return decide(query, [(Query.from_json(q), counted) for q, counted in recorded], max_releases=maximum,
                          scalar=stored.is_scalar, node=self.node, input_name=stored.name, version=stored.version)
        return check

    def _record_private(self, session_id: str, stored: StoredInput, query: Query, spend: Spend,
                        new: NewSession | None, done: Sequence[Transfer] | None) -> str:
        rules = self.policy.rules(stored.name)

        def afford(spent: Spend) -> None:
            epsilon, delta = spent
            refusal = overspent(self.node, stored.name, Budget(epsilon, rules.epsilon, delta, rules.delta, rules.exact),
                                spend, query=query.describe())
            if refusal is not None:
                raise refusal

        def decide(recorded: Sequence[tuple[str, bool]]) -> tuple[bool, str]:
            return False, (f"{query.describe()}: differentially private, spends epsilon {spend[0]} and delta "
                           f"{spend[1]} of {stored.name!r}")

        described = self.store.record_release(session_id, stored.name, stored.version, query.to_json(), decide,
                                              spend=spend, afford=afford, new=new, done=done)
        self._spending.pop(session_id, None)
        return described

    def is_repeat(self, session_id: str) -> bool:
        """Whether a session's reserved release was implied by a recorded one when it reserved (it
        then takes nothing from the budget, and `record` commits it without an fsync)."""
        with self._lock:
            return session_id in self._repeats

    def drop(self, session_id: str) -> None:
        """Forget a session's reservation (it ended before its release, or that was recorded)."""
        with self._lock:   # sessions may record from a worker thread (a slow engine step)
            self._reserved.pop(session_id, None)
            self._spending.pop(session_id, None)
            self._repeats.discard(session_id)
