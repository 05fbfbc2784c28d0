"""The protocol catalogue: every protocol mpc runs, declared once (DESIGN.md §10).

An entry says what the protocol is called (its policy and audit name), its wire id, its typed
parameters, which inputs it takes and what it refuses on their declaration, what a node
contributes, which engine runs it, how the nodes' lengths and output shares combine, how the
coordinator decodes the result, and what that result reveals. Node core, the servicer, the
coordinator, the policy, the audit log and the CLI all read it; a new protocol is one engine
(or program) module, one entry here and one CLI command.

Parameters travel as `map<string, Param>` in PrepareRequest (protos/mpc/v1/mpc.proto), typed by
the entry's parameter dataclass: int, bool, int | None (absent: None) and tuple[int, ...].
Every parameter enters the session description the nodes agree on (mpc/protocols/agreement.py)
and the release query the owner's budget counts (mpc/node/releases.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from mpc import dp
from mpc.encoding import MAX_BALLOTS, MAX_OPTIONS, decode_ratio, decode_value
from mpc.errors import InputError, RemoteProtocolError
from mpc.ot.triples import OtSetups
from mpc.prg import Rng
from mpc.protocols import auction, clearing, psi
from mpc.protocols.collection import (
    ID_WORDS,
    MAX_AUCTION,
    MAX_SUBMISSIONS,
    CollectionParty,
    CollectionSource,
    Finish,
    finish_auction,
    finish_sum,
    finish_threshold,
    finish_vote,
    finish_winner,
)
from mpc.protocols.circuit import Combine, Context, Program, public
from mpc.protocols.compute import ComputeParty, Pooled
from mpc.protocols.contribution import (
    COMPARE_BITS,
    COMPARE_BOUND,
    check_ballots_declared,
    check_compare_declared,
    check_sum_declared,
    check_threshold,
    compare_contribution,
    elementwise_contribution,
    records_contribution,
    require_bounds,
    sum_contribution,
    vote_bits,
    vote_contribution,
    vote_threshold,
)
from mpc.protocols.engine import Engine
from mpc.protocols.names import HALF as HALF   # the vote rule "at least half", in a policy's `thresholds`
from mpc.protocols.names import PROTOCOL_NAMES
from mpc.protocols.noise import check_edges, histogram_counts, joint_noise, local_noise, units, units_total
from mpc.protocols.sum import SecureSumParty
from mpc.protocols.threshold import ThresholdParty
from mpc.results import (
    AuctionResult,
    AverageResult,
    ClearingResult,
    CollectionAuctionResult,
    CollectionSumResult,
    HistogramResult,
    IntersectionResult,
    PluralityResult,
    Result,
    SumResult,
    ThresholdResult,
    VoteResult,
)
from mpc.ring import Signed, Words, from_signed, to_signed

ParamValue = int | bool | float | tuple[int, ...] | None


class _SumEngine(SecureSumParty):
    """The secure sum as a node engine: no triples, nothing slow."""

    triple_counts: tuple[int, int] | None = None

    def is_slow(self, step: str) -> bool:
        """Nothing in a sum is slow."""
        return False


@dataclass(frozen=True, slots=True)
class Declared:
    """What a node has declared about its input, in public (DESIGN.md §9): refusals use only this."""

    name: str
    node: str
    kind: str                             # one of mpc.store.KINDS
    bounds: tuple[int, int] | None        # encoded at frac_bits; None: undeclared
    records: int = dataclasses.field(repr=False)   # stored length (a ballot input's count stays private)
    frac_bits: int
    is_scalar: bool

    @property
    def what(self) -> str:
        """How messages name the input: "input 'raises' at node alice"."""
        return f"input {self.name!r} at node {self.node}"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Contributing:
    """Everything a node's contribution depends on, at compute (when every length is known)."""

    declared: Declared
    values: Signed = dataclasses.field(repr=False)   # never logged
    tally: tuple[int, ...]         # ballots' or options' count per option 0..hi (empty for other kinds)
    scale: int                     # the session's fractional bits
    parties: int
    offset: int                    # words before this node's ("concat" protocols: participants in name order)
    total: int                     # the sum of every participant's length ("concat" protocols)
    rng: Rng = dataclasses.field(repr=False)   # the node's CSPRNG (a DP sum's rounding, local noise)
    identifiers: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)   # a set's, in stored order


@dataclass(frozen=True, slots=True)
class Opened:
    """The combined output shares of a session, before the entry decodes them."""

    session_id: str
    input_name: str
    nodes: tuple[str, ...]
    lengths: Mapping[str, int]
    words: Words
    frac_bits: int
    is_scalar: bool


# ---- parameters ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NoParams:
    """A protocol without parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Private:
    """A differentially private release (mpc/dp.py), when epsilon is set; the coordinator chooses the
    noise, and every node checks that it gives (epsilon, delta) before it joins.

    coins: the binomial noise's coins per noised word; sensitivity: how many units one record can
    move a noised word; unit: a sum's unit is 2^unit (None for counts); local_noise: every node adds
    its own full noise (n times the variance) instead of one noise made jointly.
    """

    epsilon: float | None = None
    delta: float | None = None
    coins: int | None = None
    sensitivity: int | None = None
    unit: int | None = None
    local_noise: bool = False


@dataclass(frozen=True, slots=True)
class SumParams(Private):
    """A sum has no parameters but a DP release's."""


@dataclass(frozen=True, slots=True)
class AverageParams(Private):
    """elementwise: the mean of one vector per node, element by element (else over all records)."""

    elementwise: bool = False


@dataclass(frozen=True, slots=True)
class HistogramParams(Private):
    """edges: the public bin edges, strictly increasing: bins [e0, e1), ..., [e(k-1), ek]."""

    edges: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class VoteParams:
    """threshold: YES if at least this many yes ballots; None: at least half of those cast."""

    threshold: int | None = None


@dataclass(frozen=True, slots=True)
class ThresholdParams:
    """threshold: one bit per element, [sum >= threshold]."""

    threshold: int


@dataclass(frozen=True, slots=True)
class AuctionParams:
    """second_price: the winner pays the second-highest bid (Vickrey), and only that is opened."""

    second_price: bool = False


@dataclass(frozen=True, slots=True)
class ClearingParams:
    """prices: the public price grid, strictly increasing."""

    prices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PluralityParams(Private):
    """options: the number of options (ballots are 0..options-1); winner_only: open the winner alone."""

    options: int
    winner_only: bool = False


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)   # resolved once per parameter class (it evaluates annotations)


def params_from_wire(entry: "Entry[Any]", raw: Mapping[str, ParamValue]) -> Any:
    """Build an entry's typed parameters from decoded wire values, refusing anything else.

    Returns: the parameter dataclass, validated by the entry.
    Raises: RemoteProtocolError naming the protocol and the parameter at fault.
    """
    hints = _field_types(entry.params)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise RemoteProtocolError(f"protocol {entry.name} takes no parameter {unknown[0][:40]!r} "
                                  f"(it takes: {', '.join(hints) or 'none'})")
    values: dict[str, object] = {}
    for f in dataclasses.fields(entry.params):
        kind = hints[f.name]
        value = raw.get(f.name)
        optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
        if value is None:
            if optional:
                values[f.name] = None
                continue
            if f.default is not dataclasses.MISSING:
                continue
            raise RemoteProtocolError(f"protocol {entry.name} needs the parameter {f.name!r}")
        base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
        if base is bool and not isinstance(value, bool) or base is int and (isinstance(value, bool) or
                                                                              not isinstance(value, int)):
            raise RemoteProtocolError(f"protocol {entry.name}: parameter {f.name!r} must be {base.__name__}")
        if base is float and not isinstance(value, float):
            raise RemoteProtocolError(f"protocol {entry.name}: parameter {f.name!r} must be a real number")
        if base not in (bool, int, float) and not (isinstance(value, tuple) and
                                                   all(isinstance(v, int) for v in value)):
            raise RemoteProtocolError(f"protocol {entry.name}: parameter {f.name!r} must be a list of integers")
        values[f.name] = value
    params = entry.params(**values)
    try:
        entry.check_params(params)
    except InputError as exc:
        raise RemoteProtocolError(f"protocol {entry.name}: {exc}") from None
    return params


def params_to_wire(params: object) -> dict[str, ParamValue]:
    """The wire values of typed parameters (None left out: absent means None)."""
    out: dict[str, ParamValue] = {}
    for f in dataclasses.fields(params):  # type: ignore[arg-type]
        value = getattr(params, f.name)
        if value is not None:
            out[f.name] = value
    return out


def describe_params(params: object) -> dict[str, object]:
    """Canonical JSON-ready form of parameters (for the session digest, the release query, the audit)."""
    return {f.name: (list(v) if isinstance(v := getattr(params, f.name), tuple) else v)
            for f in dataclasses.fields(params)}  # type: ignore[arg-type]


# ---- entries ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EngineArgs:
    """What an engine factory gets: the session's public shape and the node's resources."""

    session_id: str
    me: str
    parties: tuple[str, ...]
    length: int          # words of each contribution
    rng: Rng
    setups: OtSetups
    lengths: Mapping[str, int] = dataclasses.field(default_factory=dict)   # every participant's, from prepare
    # A keyed session (mpc/protocols/pairing.py): the sum's mask seed with each peer; else None.
    mask_seeds: Mapping[str, bytes] | None = dataclasses.field(default=None, repr=False)
    on_seed: Callable[[str, bytes], None] | None = None   # told of each sum seed sent or received
    collection: CollectionSource | None = None   # a session over a collection: its rule, keys and shares
    # Pool tickets for every ordered pair (a one-round session): a program of bit triples alone then
    # sends no hello (mpc/protocols/compute.py "Without a hello"); engines of other kinds take none.
    pooled: Pooled | None = dataclasses.field(default=None, repr=False)


P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Noise:
    """A DP release's noise, as its parameters set it (see `Private`)."""

    epsilon: float
    delta: float
    coins: int
    sensitivity: int
    unit: int
    local: bool

    @property
    def mode(self) -> str:
        """"joint" (one noise made inside MPC) or "local" (one full noise per node)."""
        return "local" if self.local else "joint"

    def report(self, parties: int, scale: float = 1.0, rounded: bool = False) -> dp.NoiseReport:
        """What the coordinator prints about this noise; `scale` divides the output (an average's count);
        rounded: each node rounded its value to the unit once (a sum's, an average's; not counts)."""
        return dp.report(self.epsilon, self.delta, self.mode, self.coins, 2.0 ** self.unit, self.sensitivity, parties,
                         scale, rounded)


def private(params: object) -> Noise | None:
    """The noise of a differentially private release, or None for an exact one."""
    if not isinstance(params, Private) or params.epsilon is None:
        return None
    return Noise(params.epsilon, params.delta or 0.0, params.coins or 0, params.sensitivity or 0, params.unit or 0,
                 params.local_noise)


def _check_private(entry: "Entry[Any]", params: object) -> None:
    """The DP parameters: all or none, in range, and enough coins for (epsilon, delta). Raises: InputError."""
    if not isinstance(params, Private):
        return
    if params.epsilon is None:
        if (params.delta, params.coins, params.sensitivity, params.unit) != (None,) * 4 or params.local_noise:
            raise InputError(f"{entry.name}: noise parameters without epsilon")
        return
    if not entry.private:
        raise InputError(f"{entry.name} has no differentially private form")
    epsilon = dp.check_epsilon(params.epsilon)
    if params.delta is None:
        raise InputError(f"{entry.name}: a differentially private release needs delta as well as epsilon")
    delta = dp.check_delta(params.delta)
    if params.coins is None or params.sensitivity is None:
        raise InputError(f"{entry.name}: a differentially private release needs its noise's coins and sensitivity")
    if entry.counts:
        if params.sensitivity != 1 or params.unit is not None:
            raise InputError(f"{entry.name} releases counts: one record moves them by 1 (sensitivity 1, no unit), "
                             f"got sensitivity {params.sensitivity} and unit {params.unit}")
    elif params.unit is None or not -64 <= params.unit <= 64:
        raise InputError(f"{entry.name}: a differentially private sum needs a unit exponent within +-64, "
                         f"got {params.unit}")
    per_word = count_budget(epsilon, delta) if entry.counts else (epsilon, delta)
    if not dp.coins_calibrated(params.coins, *per_word, params.sensitivity):
        raise InputError(f"{entry.name}: {params.coins} noise coins are not calibrated for epsilon {epsilon!r}, "
                         f"delta {delta!r} at a sensitivity of {params.sensitivity} unit(s): too few weaken the "
                         f"guarantee, more than needed waste the output (mpc/dp.py calibrate)")


def count_budget(epsilon: float, delta: float) -> tuple[float, float]:
    """What each count of a DP histogram or plurality is calibrated for. Record counts are public, so
    neighbouring data differ in one record's bin (or ballot's option): two counts move by 1, each
    noised for (ε/2, δ/2), which composes to (ε, δ)."""
    return epsilon / 2, delta / 2


class Entry(Generic[P]):
    """One protocol of the catalogue. Subclasses fill in the class attributes and override what differs."""

    name: ClassVar[str]              # policy, audit and CLI name
    wire_id: ClassVar[int]           # PrepareRequest.protocol
    params: ClassVar[type]           # the parameter dataclass
    reveals: ClassVar[str]           # what the opened output reveals, for people
    kinds: ClassVar[frozenset[str]] = frozenset({"number"})   # the input kinds it takes
    takes: ClassVar[str] = "numbers stored with `mpc input put NAME VALUE...`"   # the same, for people
    lengths: ClassVar[Literal["equal", "concat"]] = "equal"   # nodes' lengths: equal, or laid end to end
    combine: ClassVar[Combine] = "add"                          # how output shares combine
    integers: ClassVar[bool] = False   # the session runs at scale 0 (comparisons take integers)
    shapes_match: ClassVar[bool] = False   # scalar and vector inputs may not mix (sum, average)
    private: ClassVar[bool] = False    # has a differentially private form (--epsilon; mpc/dp.py)
    counts: ClassVar[bool] = False     # its noised words are counts: one record added or removed moves one by 1
    # The kinds of collection (mpc/store/collections.py) a session over a collection takes.
    collection_kinds: ClassVar[frozenset[str]] = frozenset({"ballot", "range", "option"})

    def validate(self, params: P) -> None:
        """Refuse parameters out of range (public data). Raises: InputError."""

    def check_params(self, params: P) -> None:
        """Refuse parameters out of range, a DP release's too. Raises: InputError."""
        self.validate(params)
        _check_private(self, params)

    def admit(self, params: P, declared: Declared, parties: int, scale: int) -> None:
        """`check`, and a DP release's public limits: declared bounds, and the coins one session makes jointly.

        Raises: InputError naming the input and the public quantity at fault.
        """
        self.check(params, declared, parties, scale)
        noise = private(params)
        if noise is None:
            return
        require_bounds(declared.bounds, declared.what)
        noised = self.noised(params, self.length(params, declared))
        if not noise.local and noise.coins * noised > dp.MAX_JOINT_COINS:
            raise InputError(f"{declared.what}: noise made jointly for {noised} values at {noise.coins} coins each "
                             f"needs {noise.coins * noised} daBits, more than a session makes "
                             f"({dp.MAX_JOINT_COINS}); use local noise (every node adds its own: n times the "
                             f"variance), fewer values, or a larger epsilon")

    def on_integers(self, params: P) -> bool:
        """Whether the session runs at scale 0: comparisons, and DP releases (counted in public units)."""
        return self.integers or private(params) is not None

    def noised(self, params: P, words: int) -> int:
        """How many leading words of a `words`-word contribution a DP release adds noise to."""
        return words

    def privacy_units(self, params: P, declared: Declared) -> int | None:
        """How many separately noised values one person's record can move (each by up to the
        sensitivity): a DP release spends this many times (ε, δ) unless the owner declares every
        element a record of its own (dp_per_element). 1 for scalars and for counts of ballots (a
        voter's one ballot moves two counts, each calibrated for half the budget).

        None: the release adds several of a vector's elements into one noised value (a histogram's
        counts, an average over records), so one person holding the whole vector could move that
        value by many times the sensitivity the noise is calibrated for. No spend covers that: the
        node refuses such a release of a vector unless the owner sets dp_per_element."""
        return 1

    def contribution(self, params: P, c: Contributing) -> Words:
        """This node's contribution, with its own full noise in a DP release with local noise."""
        words = self.contribute(params, c)
        noise = private(params)
        if noise is not None and noise.local:
            words = local_noise(c.rng, noise.coins, words, self.noised(params, int(words.size)))
        return words

    def release(self, params: P) -> tuple[str, object]:
        """The release as mpc/node/releases.py records it: a DP release is its own variant, with its spend."""
        variant, parameter = self.query(params)
        noise = private(params)
        if noise is None:
            return variant, parameter
        return f"{variant}+dp", {"of": parameter, "epsilon": noise.epsilon, "delta": noise.delta, "noise": noise.mode}

    def spend(self, params: P) -> tuple[Decimal, Decimal] | None:
        """What a DP release spends of the input's budget: (epsilon, delta), exact decimals; None if exact."""
        noise = private(params)
        return None if noise is None else (dp.decimal(noise.epsilon), dp.decimal(noise.delta))

    def thresholds(self, params: P) -> int | str | None:
        """The rule the owner's `thresholds` pin constrains, or None if it does not apply."""
        return None

    def check(self, params: P, declared: Declared, parties: int, scale: int) -> None:
        """Refuse on the input's declaration, the participant count and the scale only (DESIGN.md §9).

        Raises: InputError naming the input and the public quantity at fault.
        """

    def length(self, params: P, declared: Declared) -> int:
        """The length this node reports at prepare (its contribution, or for "concat" its records)."""
        return declared.records

    def contribution_length(self, params: P, lengths: Mapping[str, int]) -> int:
        """Words every node contributes, from every node's reported length."""
        return next(iter(lengths.values()))

    def output_length(self, params: P, lengths: Mapping[str, int]) -> int:
        """Words of each node's output share."""
        return self.contribution_length(params, lengths)

    def contribute(self, params: P, c: Contributing) -> Words:
        """This node's contribution. Raises: InputError naming the input (never a value)."""
        raise NotImplementedError

    def engine(self, params: P, args: EngineArgs) -> Engine:
        """The engine that runs the session at this node: a sum, with noise made jointly in a DP release."""
        noise = private(params)
        if noise is not None and not noise.local:
            return _program_engine(args, joint_noise(noise.coins, self.noised(params, args.length)), summed=True,
                                   prefix="dp")
        return _SumEngine(args.session_id, args.me, args.parties, args.length, args.rng, mask_seeds=args.mask_seeds,
                          on_seed=args.on_seed)

    def sums(self, params: P) -> bool:
        """Whether this session's engine is a plain secure sum (`engine` not overridden, no joint noise),
        which on the keyed path records its release when it starts (mpc/protocols/pairing.py)."""
        noise = private(params)
        return type(self).engine is Entry.engine and (noise is None or noise.local)

    def decode(self, params: P, opened: Opened) -> Result:
        """The coordinator's result from the combined output shares."""
        raise NotImplementedError

    def query(self, params: P) -> tuple[str, object]:
        """The release this session makes, as (variant, parameter) for mpc/node/releases.py."""
        return self.name, None

    def reveal_mode(self, params: P) -> str | None:
        """What an intersection reveals ("size", "members", "sum"), for the owner's `reveal` rule; None otherwise."""
        return None

    def recipients(self, params: P, participants: Sequence[str]) -> list[str] | None:
        """The participants an output goes to beside the coordinator (an intersection's members), for the
        owner's `members_to` rule; None if none does. Indices beyond the participants are left to `check`."""
        return None


def users(kind: str) -> list[str]:
    """The protocols made for inputs of `kind`."""
    return [e.name for e in CATALOGUE if kind in e.kinds]


def _program_engine(args: EngineArgs, program: Any, *, summed: bool, prefix: str) -> ComputeParty:
    return ComputeParty(args.session_id, args.me, args.parties, args.length, program, args.rng, args.setups,
                        summed=summed, prefix=prefix, mask_seeds=args.mask_seeds if summed else None,
                        on_seed=args.on_seed, pooled=args.pooled)


def _check_private_sum(noise: Noise, declared: Declared, records: int, parties: int) -> None:
    """A DP sum's checks on one node's declaration: its bounds fit the session's sensitivity at its
    unit, and the sum in units cannot wrap. Raises: InputError naming the input."""
    lo, hi = require_bounds(declared.bounds, declared.what)
    scale = Fraction(1, 1 << declared.frac_bits)
    moves = dp.sensitivity_at((lo * scale, hi * scale), noise.unit)
    if moves > noise.sensitivity:
        raise InputError(f"{declared.what}: one record within its declared bounds moves the sum by up to {moves} "
                         f"units of 2^{noise.unit}, more than the session's sensitivity of {noise.sensitivity} "
                         f"(the coordinator chooses it from every node's bounds: run it again)")
    largest = max(abs(lo), abs(hi)) * scale / Fraction(2) ** noise.unit + 1
    if largest * records * parties + noise.coins * parties >= 1 << 62:
        raise InputError(f"{declared.what}: {records} record(s) of up to {float(largest):.3g} units each could "
                         f"overflow the sum over {parties} nodes")


def _decode_units(opened: Opened, noise: Noise) -> list[int | float]:
    """A DP sum's opened words in the input's own units: unit·word."""
    return [w << noise.unit if noise.unit >= 0 else w / 2.0 ** -noise.unit
            for w in (int(x) for x in to_signed(opened.words))]


class SumEntry(Entry[SumParams]):
    """Elementwise sum of the nodes' vectors."""

    name, wire_id, params = "sum", 1, SumParams
    reveals = "the sum (elementwise for vectors)"
    shapes_match = True
    private = True

    def check(self, params: SumParams, declared: Declared, parties: int, scale: int) -> None:
        noise = private(params)
        if noise is not None:
            _check_private_sum(noise, declared, 1, parties)
            return
        check_sum_declared(declared.bounds, 1, declared.frac_bits, scale, parties, declared.what)

    def privacy_units(self, params: SumParams, declared: Declared) -> int:
        return 1 if declared.is_scalar else declared.records   # a node's vector may be one person's

    def contribute(self, params: SumParams, c: Contributing) -> Words:
        d = c.declared
        noise = private(params)
        if noise is not None:
            return from_signed(units(c.rng, c.values, require_bounds(d.bounds, d.what), d.frac_bits, noise.unit))
        return sum_contribution(c.values, d.frac_bits, c.scale, c.parties, d.what)

    def decode(self, params: SumParams, opened: Opened) -> Result:
        noise = private(params)
        if noise is not None:
            values = _decode_units(opened, noise)
            return SumResult(opened.session_id, opened.input_name, opened.nodes,
                             values[0] if opened.is_scalar else values, noise.report(len(opened.nodes), rounded=True))
        values = [decode_value(int(w), opened.frac_bits) for w in to_signed(opened.words)]
        return SumResult(opened.session_id, opened.input_name, opened.nodes,
                         values[0] if opened.is_scalar else values)


class AverageEntry(Entry[AverageParams]):
    """Sum of values and of record counts, opened together."""

    name, wire_id, params = "average", 2, AverageParams
    reveals = "the sum(s) and the record count"
    shapes_match = True
    private = True

    def check(self, params: AverageParams, declared: Declared, parties: int, scale: int) -> None:
        records = 1 if params.elementwise else declared.records   # a node adds up its records first
        noise = private(params)
        if noise is not None:
            _check_private_sum(noise, declared, records, parties)
            return
        check_sum_declared(declared.bounds, records, declared.frac_bits, scale, parties, declared.what)

    def length(self, params: AverageParams, declared: Declared) -> int:
        return declared.records + 1 if params.elementwise else 2

    def noised(self, params: AverageParams, words: int) -> int:
        return words - 1   # the sums; the record count is opened as the exact average opens it

    def privacy_units(self, params: AverageParams, declared: Declared) -> int | None:
        if declared.is_scalar or declared.records == 1:
            return 1
        return declared.records if params.elementwise else None   # over records: one noised sum of them all

    def contribute(self, params: AverageParams, c: Contributing) -> Words:
        d = c.declared
        noise = private(params)
        if noise is not None:
            bounds = require_bounds(d.bounds, d.what)
            if params.elementwise:
                return from_signed(np.append(units(c.rng, c.values, bounds, d.frac_bits, noise.unit), np.int64(1)))
            total = units_total(c.rng, c.values, bounds, d.frac_bits, noise.unit)   # within int64: _check_private_sum
            return from_signed(np.array([total, c.values.size], dtype=np.int64))
        build = elementwise_contribution if params.elementwise else records_contribution
        return build(c.values, d.frac_bits, c.scale, c.parties, d.what)

    def decode(self, params: AverageParams, opened: Opened) -> Result:
        signed = [int(w) for w in to_signed(opened.words)]
        count = signed[-1]
        noise = private(params)
        mode = "elementwise" if params.elementwise else "records"
        if noise is not None:
            totals = _decode_units(opened, noise)[:-1]
            averages = [t / count if count else float("nan") for t in totals]
            report = noise.report(len(opened.nodes), float(count or 1), rounded=True)
        else:
            f = opened.frac_bits
            averages = [decode_ratio(s, count, f) for s in signed[:-1]]
            totals = [decode_value(s, f) for s in signed[:-1]]
            report = None
        if params.elementwise:
            return AverageResult(opened.session_id, opened.input_name, opened.nodes, mode, averages, totals, count,
                                 report)
        return AverageResult(opened.session_id, opened.input_name, opened.nodes, mode, averages[0], totals[0], count,
                             report)

    def query(self, params: AverageParams) -> tuple[str, object]:
        return ("average-elementwise" if params.elementwise else "average-records"), None


class VoteEntry(Entry[VoteParams]):
    """[yes ballots >= threshold] (default: at least half of the ballots cast); one bit."""

    name, wire_id, params = "vote", 3, VoteParams
    reveals = "YES or NO only (neither the tally nor the number of ballots)"
    kinds = frozenset({"ballots"})
    takes = "ballots stored with `mpc input put NAME 1 0 ... --ballots`"
    combine: ClassVar[Combine] = "xor"
    integers = True

    def validate(self, params: VoteParams) -> None:
        if params.threshold is not None:
            check_threshold(params.threshold)

    def thresholds(self, params: VoteParams) -> int | str | None:
        return HALF if params.threshold is None else params.threshold

    def check(self, params: VoteParams, declared: Declared, parties: int, scale: int) -> None:
        check_ballots_declared(declared.kind, parties, declared.what)
        if declared.bounds not in (None, (0, 1)):   # ballots are stored as 0/1 only; never count another value as yes
            raise InputError(f"{declared.what} declares ballots other than 0 and 1; store them again with --ballots")

    def length(self, params: VoteParams, declared: Declared) -> int:
        return 1

    def contribute(self, params: VoteParams, c: Contributing) -> Words:
        yes = c.tally[1] if len(c.tally) > 1 else 0   # 0/1 ballots: (no, yes)
        return vote_contribution(yes, c.declared.records, params.threshold is None)

    def engine(self, params: VoteParams, args: EngineArgs) -> Engine:
        # "At least half" compares 2T - N with 0; an explicit threshold K compares T with K (clamped to the
        # tallies' public range, which keeps every answer). The ring as wide as the tallies need.
        parties = len(args.parties)
        k = 0 if params.threshold is None else vote_threshold(params.threshold, parties)
        return ThresholdParty(args.session_id, args.me, args.parties, args.length, k, args.rng, args.setups,
                              vote_bits(parties), mask_seeds=args.mask_seeds, on_seed=args.on_seed,
                              pooled=args.pooled)

    def decode(self, params: VoteParams, opened: Opened) -> Result:
        rule = ("at least half of the ballots cast" if params.threshold is None
                else f"at least {params.threshold} yes ballots")
        return VoteResult(opened.session_id, opened.input_name, opened.nodes, bool(int(opened.words[0]) & 1), rule)

    def query(self, params: VoteParams) -> tuple[str, object]:
        return self.name, params.threshold


class ThresholdEntry(Entry[ThresholdParams]):
    """[elementwise sum >= threshold]: one bit per element."""

    name, wire_id, params = "threshold", 4, ThresholdParams
    reveals = "one bit per element, [sum >= K]; the sums stay secret"
    combine: ClassVar[Combine] = "xor"
    integers = True

    def validate(self, params: ThresholdParams) -> None:
        check_threshold(params.threshold)

    def thresholds(self, params: ThresholdParams) -> int | str | None:
        return params.threshold

    def check(self, params: ThresholdParams, declared: Declared, parties: int, scale: int) -> None:
        check_compare_declared(declared.bounds, declared.frac_bits, parties, declared.what)

    def contribute(self, params: ThresholdParams, c: Contributing) -> Words:
        return compare_contribution(c.values, c.declared.frac_bits, c.parties, c.declared.what)

    def engine(self, params: ThresholdParams, args: EngineArgs) -> Engine:
        return ThresholdParty(args.session_id, args.me, args.parties, args.length, params.threshold, args.rng,
                              args.setups, COMPARE_BITS, mask_seeds=args.mask_seeds, on_seed=args.on_seed,
                              pooled=args.pooled)

    def decode(self, params: ThresholdParams, opened: Opened) -> Result:
        return ThresholdResult(opened.session_id, opened.input_name, opened.nodes, params.threshold,
                               [bool(int(w) & 1) for w in opened.words])

    def query(self, params: ThresholdParams) -> tuple[str, object]:
        return self.name, params.threshold


def _check_integers_within(declared: Declared, lo: int, hi: int, rule: str) -> None:
    """Refuse, on the declaration, an input that is not integers within [lo, hi]; `rule` says why."""
    bounds = require_bounds(declared.bounds, declared.what)
    if declared.frac_bits != 0:
        raise InputError(f"{declared.what} is fixed point ({declared.frac_bits} fractional bits): {rule}")
    if bounds[0] < lo or bounds[1] > hi:
        raise InputError(f"{declared.what} declares bounds {bounds[0]}..{bounds[1]}, outside {lo}..{hi}: {rule}")


class AuctionEntry(Entry[AuctionParams]):
    """Sealed-bid auction over every node's bids: the winner, and the highest or second-highest bid."""

    name, wire_id, params = "auction", 5, AuctionParams
    reveals = ("the winner (node and bid index) and the highest bid; with --second-price the winner and the "
               "second-highest bid only")
    lengths: ClassVar[Literal["equal", "concat"]] = "concat"
    kinds = frozenset({"bids"})
    takes = "bids stored with `mpc input put NAME BID... --bids`"
    integers = True

    def check(self, params: AuctionParams, declared: Declared, parties: int, scale: int) -> None:
        limit = auction.VALUE_OFFSET - 1
        _check_integers_within(declared, -limit, limit, f"bids must be integers within +-{limit}")
        if declared.records > auction.MAX_BIDS:
            raise InputError(f"{declared.what} holds {declared.records} bids, more than an auction takes "
                             f"({auction.MAX_BIDS})")

    def contribution_length(self, params: AuctionParams, lengths: Mapping[str, int]) -> int:
        m = sum(lengths.values())
        auction.check_bid_count(m)
        return 2 * m if params.second_price else m

    def output_length(self, params: AuctionParams, lengths: Mapping[str, int]) -> int:
        return 2 if params.second_price else 1

    def contribute(self, params: AuctionParams, c: Contributing) -> Words:
        keys = auction.bid_keys(c.values, c.offset, c.total)
        if not params.second_price:
            return keys
        return np.concatenate((keys, auction.bid_values(c.values, c.offset, c.total)))

    def engine(self, params: AuctionParams, args: EngineArgs) -> Engine:
        program = auction.second_price if params.second_price else auction.first_price
        return _program_engine(args, program, summed=False, prefix="auc")

    def decode(self, params: AuctionParams, opened: Opened) -> Result:
        m = sum(opened.lengths.values())
        words = [int(w) for w in opened.words]
        # Bids are laid out in the participants' name order, whatever order the session lists them in
        # (a reordered session would otherwise break ties differently and tell which tied bid lost).
        if params.second_price:
            position, price = words[0], words[1] - auction.VALUE_OFFSET - 1
        else:
            position, price = auction.decode_key(words[0], m)
        if not -auction.VALUE_OFFSET < price < auction.VALUE_OFFSET:
            raise RemoteProtocolError("the opened price is not a bid: the nodes' output shares do not agree")
        node, index = _locate(sorted(opened.nodes), opened.lengths, position)
        return AuctionResult(opened.session_id, opened.input_name, opened.nodes, node, index, price,
                             "second" if params.second_price else "first", m)

    def query(self, params: AuctionParams) -> tuple[str, object]:
        return "auction-second" if params.second_price else "auction-first", None


def _locate(nodes: Sequence[str], lengths: Mapping[str, int], position: int) -> tuple[str, int]:
    """The node and index of a global position in the session's layout."""
    if position < 0:
        raise RemoteProtocolError("the opened position lies before the first bid: the nodes' output shares do not "
                                  "agree")
    for node in nodes:
        if position < lengths[node]:
            return node, position
        position -= lengths[node]
    raise RemoteProtocolError(f"the opened position lies beyond the {sum(lengths.values())} bids: the nodes' "
                              f"output shares do not agree")


class ClearingPriceEntry(Entry[ClearingParams]):
    """Double auction: the first grid price where total net demand is at most 0."""

    name, wire_id, params = "clearing-price", 6, ClearingParams
    reveals = "the clearing price only (neither the aggregate curve nor any bidder's)"
    kinds = frozenset({"curve"})
    takes = "a net-demand curve stored with `mpc input put NAME VALUE... --curve` (checked never to increase)"
    combine: ClassVar[Combine] = "xor"
    integers = True

    def validate(self, params: ClearingParams) -> None:
        clearing.check_grid(params.prices)

    def check(self, params: ClearingParams, declared: Declared, parties: int, scale: int) -> None:
        if declared.records != len(params.prices):
            raise InputError(f"{declared.what} has {declared.records} values, the price grid {len(params.prices)} "
                             f"prices: one net demand per price")
        check_compare_declared(declared.bounds, declared.frac_bits, parties, declared.what)

    def contribute(self, params: ClearingParams, c: Contributing) -> Words:
        return compare_contribution(c.values, c.declared.frac_bits, c.parties, c.declared.what)

    def engine(self, params: ClearingParams, args: EngineArgs) -> Engine:
        return _program_engine(args, clearing.clearing_program, summed=True, prefix="clr")

    def decode(self, params: ClearingParams, opened: Opened) -> Result:
        hits = [i for i, w in enumerate(opened.words) if int(w) & 1]
        if len(hits) > 1:
            raise RemoteProtocolError("the opened clearing vector has more than one price: the nodes' output shares "
                                      "do not agree")
        index = hits[0] if hits else None
        return ClearingResult(opened.session_id, opened.input_name, opened.nodes, list(params.prices),
                              None if index is None else params.prices[index], index)

    def query(self, params: ClearingParams) -> tuple[str, object]:
        return self.name, list(params.prices)


def _plurality_result(params: PluralityParams, opened: Opened,
                      counted: tuple[int, int] | None = None) -> PluralityResult:
    """A plurality's result: the winning option alone (checked to be one), or the counts (the first
    `options` words) and their largest, the lowest option on a tie; `counted`: a collection's
    (valid, complete)."""
    if params.winner_only:
        option = int(opened.words[0])
        if option >= params.options:
            raise RemoteProtocolError("the opened winner is not an option: the nodes' output shares do not agree")
        return PluralityResult(opened.session_id, opened.input_name, opened.nodes, params.options, None, option)
    counts = [int(w) for w in to_signed(opened.words[:params.options])]
    best = max(range(params.options), key=lambda i: (counts[i], -i))
    noise = private(params)
    valid, complete = counted or (None, None)
    return PluralityResult(opened.session_id, opened.input_name, opened.nodes, params.options, counts, best,
                           None if noise is None else noise.report(len(opened.nodes)), valid, complete)


def _check_plurality(params: PluralityParams) -> None:
    """Refuse a plurality vote's parameters out of range. Raises: InputError."""
    if not 2 <= params.options <= MAX_OPTIONS:
        raise InputError(f"a plurality vote takes 2..{MAX_OPTIONS} options, got {params.options}")
    if params.winner_only and params.epsilon is not None:
        raise InputError("a plurality vote's winner alone has no differentially private form here: release "
                         "the noisy counts (without --winner-only) and take their largest")


class PluralityEntry(Entry[PluralityParams]):
    """Plurality vote: ballots are option indices; the count per option, or the winner alone."""

    name, wire_id, params = "plurality", 7, PluralityParams
    reveals = "the count per option; with --winner-only the winning option alone"
    kinds = frozenset({"options"})
    takes = "ballots stored with `mpc input put NAME 0 2 1 ... --options K`"
    integers = True
    private = True
    counts = True

    def validate(self, params: PluralityParams) -> None:
        _check_plurality(params)

    def check(self, params: PluralityParams, declared: Declared, parties: int, scale: int) -> None:
        _check_integers_within(declared, 0, params.options - 1,
                               f"ballots must be option indices 0..{params.options - 1} (store them with "
                               f"--options {params.options}); ballots outside the options are refused")
        if parties * MAX_BALLOTS > COMPARE_BOUND - 1:   # a node holds at most MAX_BALLOTS (checked at put)
            raise InputError(f"{declared.what}: a plurality vote takes at most {(COMPARE_BOUND - 1) // MAX_BALLOTS} "
                             f"nodes (each may hold up to {MAX_BALLOTS} ballots)")

    def length(self, params: PluralityParams, declared: Declared) -> int:
        return params.options

    def contribute(self, params: PluralityParams, c: Contributing) -> Words:
        # From the tally kept beside the ballots: a vote never reads (or takes time with) the ballots.
        counts = np.zeros(params.options, dtype=np.uint64)
        counts[:len(c.tally)] = c.tally
        return counts

    def engine(self, params: PluralityParams, args: EngineArgs) -> Engine:
        if not params.winner_only:
            return super().engine(params, args)
        return _program_engine(args, lambda ctx, counts: auction.winner(ctx, counts, COMPARE_BITS - 1),
                               summed=True, prefix="plu")

    def output_length(self, params: PluralityParams, lengths: Mapping[str, int]) -> int:
        return 1 if params.winner_only else params.options

    def decode(self, params: PluralityParams, opened: Opened) -> Result:
        return _plurality_result(params, opened)

    def query(self, params: PluralityParams) -> tuple[str, object]:
        return ("plurality-winner" if params.winner_only else "plurality"), params.options


class HistogramEntry(Entry[HistogramParams]):
    """How many records fall into each public bin, over every node's records."""

    name, wire_id, params = "histogram", 8, HistogramParams
    reveals = "the count of records per bin (with --epsilon, noisy counts)"
    integers = True
    private = True
    counts = True

    def validate(self, params: HistogramParams) -> None:
        check_edges(params.edges)

    def check(self, params: HistogramParams, declared: Declared, parties: int, scale: int) -> None:
        require_bounds(declared.bounds, declared.what)   # records are clipped into the first and last bins
        if declared.records * parties >= 1 << 62:
            raise InputError(f"{declared.what}: too many records to count over {parties} nodes")

    def length(self, params: HistogramParams, declared: Declared) -> int:
        return len(params.edges) - 1

    def contribute(self, params: HistogramParams, c: Contributing) -> Words:
        return from_signed(histogram_counts(c.values, c.declared.frac_bits, params.edges))

    def decode(self, params: HistogramParams, opened: Opened) -> Result:
        noise = private(params)
        return HistogramResult(opened.session_id, opened.input_name, opened.nodes, list(params.edges),
                               [int(w) for w in to_signed(opened.words)],
                               None if noise is None else noise.report(len(opened.nodes)))

    def privacy_units(self, params: HistogramParams, declared: Declared) -> int | None:
        return 1 if declared.is_scalar or declared.records == 1 else None   # a vector's records move many counts

    def query(self, params: HistogramParams) -> tuple[str, object]:
        return self.name, list(params.edges)


@dataclass(frozen=True, slots=True)
class IntersectParams:
    """reveal: 0 the size, 1 the members (to `recipients`), 2 the sum of the associated values;
    recipients: indices, in name order, of the participants that receive the common members."""

    reveal: int = 0
    recipients: tuple[int, ...] = ()


class IntersectEntry(Entry[IntersectParams]):
    """Private set intersection of every node's set (mpc/protocols/psi.py)."""

    name, wire_id, params = "intersect", 9, IntersectParams
    reveals = ("the intersection's size; with --reveal members the common identifiers to the named nodes only; "
               "with --reveal sum the size and the sum of the associated values over the intersection")
    kinds = frozenset({"set"})
    takes = "a set stored with `mpc input put-set NAME --csv FILE --column COL`"
    lengths: ClassVar[Literal["equal", "concat"]] = "concat"
    integers = True

    def validate(self, params: IntersectParams) -> None:
        if not 0 <= params.reveal < len(psi.MODES):
            raise InputError(f"an intersection reveals one of {', '.join(psi.MODES)} (0..{len(psi.MODES) - 1}), "
                             f"got {params.reveal}")
        members = psi.MODES[params.reveal] == "members"
        if members != bool(params.recipients):
            raise InputError("--reveal members needs the nodes that receive them (--to), and only it takes them")
        if len(set(params.recipients)) != len(params.recipients) or any(r < 0 for r in params.recipients):
            raise InputError(f"recipients must be distinct participant indices, got {list(params.recipients)}")

    @staticmethod
    def check_recipients(params: IntersectParams, parties: int) -> None:
        """Refuse recipients beyond the participants, or every one of three or more: the node that compares
        the masked lists receives none (mpc/protocols/psi.py, PsiParty._lead). Raises: InputError."""
        if any(r >= parties for r in params.recipients):
            raise InputError(f"recipients {list(params.recipients)} name participants beyond the {parties} there are")
        if parties > 2 and len(params.recipients) == parties:
            raise InputError(f"--reveal members goes to at most {parties - 1} of the {parties} nodes: one that "
                             f"receives none compares the lists, and a recipient doing so would learn which of "
                             f"its identifiers are in each other node's set")

    def mode(self, params: IntersectParams) -> str:
        """The output: "size", "members" or "sum"."""
        return psi.MODES[params.reveal]

    def reveal_mode(self, params: IntersectParams) -> str | None:
        return self.mode(params)

    def recipients(self, params: IntersectParams, participants: Sequence[str]) -> list[str] | None:
        if self.mode(params) != "members":
            return None
        order = sorted(participants)
        return [order[r] for r in params.recipients if 0 <= r < len(order)]

    def check(self, params: IntersectParams, declared: Declared, parties: int, scale: int) -> None:
        self.check_recipients(params, parties)
        if declared.records > psi.MAX_SET_SIZE:
            raise InputError(f"{declared.what} holds {declared.records} identifiers, more than an intersection "
                             f"takes ({psi.MAX_SET_SIZE})")
        if self.mode(params) == "sum":
            limit = (1 << 62) // (psi.MAX_SET_SIZE * parties)   # n sets of up to MAX_SET_SIZE values each
            _check_integers_within(declared, -limit, limit, f"values summed over an intersection of {parties} sets "
                                                            f"must be integers that cannot overflow")

    def contribution_length(self, params: IntersectParams, lengths: Mapping[str, int]) -> int:
        return sum(lengths.values())

    def output_length(self, params: IntersectParams, lengths: Mapping[str, int]) -> int:
        return 2 if self.mode(params) == "sum" else 1

    def contribute(self, params: IntersectParams, c: Contributing) -> Words:
        if len(c.identifiers) != c.declared.records:
            raise InputError(f"{c.declared.what}: its identifiers were not read with it")
        rows = np.zeros((len(c.identifiers), psi.ELEMENT_WORDS), dtype=np.uint64)
        for j, identifier in enumerate(c.identifiers):
            rows[j, :psi.DIGEST_WORDS] = np.frombuffer(psi.identifier_digest(identifier), dtype=np.uint64)
        rows[:, psi.DIGEST_WORDS] = from_signed(np.asarray(c.values, dtype=np.int64))
        return rows.reshape(-1)

    def engine(self, params: IntersectParams, args: EngineArgs) -> Engine:
        order = sorted(args.parties)
        return psi.PsiParty(args.session_id, args.me, args.parties, args.lengths, self.mode(params),
                            [order[r] for r in params.recipients], args.rng, args.setups)

    def decode(self, params: IntersectParams, opened: Opened) -> Result:
        words = [int(w) for w in opened.words]
        if words[0] > min(opened.lengths.values()):
            raise RemoteProtocolError("the opened intersection is larger than the smallest set: the nodes' output "
                                      "shares do not agree")
        order = sorted(opened.nodes)
        total = int(to_signed(opened.words[1:2])[0]) if self.mode(params) == "sum" else None
        return IntersectionResult(opened.session_id, opened.input_name, opened.nodes, self.mode(params), words[0],
                                  total, [order[r] for r in params.recipients])

    def query(self, params: IntersectParams) -> tuple[str, object]:
        return f"intersect-{self.mode(params)}", list(params.recipients) or None


# What one release implies about another over the same data and participants (mpc/node/releases.py):
# (earlier variant, later variant) where the later output is a function of the earlier one and public
# shapes. A sum gives its average (the counts are public: n for scalars, n·L for vectors), any
# threshold of it and its clearing price; an elementwise average gives the sums back.
_IMPLIES = frozenset({("sum", "average-records"), ("sum", "average-elementwise"), ("sum", "threshold"),
                      ("sum", "clearing-price"), ("average-elementwise", "sum"), ("average-elementwise", "threshold")})
# The same, when the parameters are equal too: a plurality's winner is a function of its counts.
_IMPLIES_SAME_PARAMETER = frozenset({("plurality", "plurality-winner"),
                                     ("collection-plurality", "collection-plurality-winner")})
# An intersection's sum, or its members (the coordinator gets the size with them), opens its size too.
_IMPLIES |= {("intersect-sum", "intersect-size"), ("intersect-members", "intersect-size")}
# For scalar inputs every record count is public (one per node): all three say "the sum".
_SCALAR_SUMS = frozenset({"sum", "average-records", "average-elementwise"})


def implies(old: str, old_parameter: object, new: str, new_parameter: object, scalar: bool) -> bool:
    """Whether release `new` reveals nothing beyond release `old` over the same data (not counting repeats).

    Returns: True when the new output is a function of the old one and public data.
    """
    if scalar and old in _SCALAR_SUMS and new in _SCALAR_SUMS:
        return True
    if (old, new) in _IMPLIES_SAME_PARAMETER:
        return old_parameter == new_parameter
    return (old, new) in _IMPLIES


def describe_release(variant: str, parameter: object) -> str:
    """A short description of a release: "vote (at least half)", "threshold (at least 7)", "auction-second"."""
    if variant.endswith("+dp") and isinstance(parameter, dict):
        return (f"{describe_release(variant[:-3], parameter.get('of'))} with epsilon {parameter.get('epsilon')}, "
                f"delta {parameter.get('delta')}")
    if variant == VoteEntry.name:
        return f"vote (at least {'half' if parameter is None else parameter})"
    if variant == ThresholdEntry.name:
        return f"threshold (at least {parameter})"
    return variant if parameter is None else f"{variant} ({json.dumps(parameter)[:60]})"


class _CollectionEntry(Entry[Any]):
    """A session over a closed collection of contributors' submissions (mpc/protocols/collection.py):
    the nodes agree on the complete submissions and range-check each inside MPC, then `finish`."""

    params: ClassVar[type] = NoParams
    kinds = frozenset({"collection"})
    takes = "a closed collection of contributors' submissions (`mpc collection close`)"
    integers = True
    min_valid: ClassVar[int] = 1      # the least count of valid submissions the output needs
    max_complete: ClassVar[int] = MAX_SUBMISSIONS   # the most complete submissions it takes
    rows: ClassVar[bool] = False      # its finish needs every submission, not only the valid ones' sum

    def length(self, params: Any, declared: Declared) -> int:
        return declared.records   # values per submission (the node reports its collection's length)

    def contribute(self, params: Any, c: Contributing) -> Words:
        return np.zeros(c.declared.records, dtype=np.uint64)   # the engine loads the agreed shares itself

    def validate(self, params: Any) -> None:
        if isinstance(params, Private) and params.local_noise:
            raise InputError(f"{self.name}: a collection's noise is made jointly (every node holds shares of the "
                             f"same submissions, none a contribution of its own to noise): leave out local noise")

    def finish(self, params: Any) -> Finish:
        """What the session computes from the valid submissions."""
        raise NotImplementedError

    def engine(self, params: Any, args: EngineArgs) -> Engine:
        source = args.collection
        if source is None:
            raise RemoteProtocolError(f"session {args.session_id}: {self.name} runs over a collection only")
        return CollectionParty(args.session_id, args.me, args.parties, source.keys, source.load, source.lo,
                               source.hi, source.length, source.min_batch, args.rng, args.setups,
                               finish=self.finish(params), one_hot=source.one_hot, min_valid=self.min_valid,
                               max_complete=self.max_complete, rows=self.rows)


class CollectionSumEntry(_CollectionEntry):
    """The sum of a collection's valid submissions, and how many were valid and complete."""

    name, wire_id = "collection-sum", 10
    reveals = ("the sum of the valid submissions, elementwise, and how many submissions were complete and valid; "
               "which submissions were invalid, to the nodes")

    def output_length(self, params: NoParams, lengths: Mapping[str, int]) -> int:
        return self.contribution_length(params, lengths) + 2

    def finish(self, params: NoParams) -> Finish:
        return finish_sum()

    def decode(self, params: NoParams, opened: Opened) -> Result:
        length = opened.words.size - 2
        sums = [int(v) for v in opened.words[:length].view(np.int64)]
        valid, complete = _collection_counts(opened.words[length:])
        return CollectionSumResult(opened.session_id, opened.input_name, opened.nodes,
                                   sums[0] if length == 1 else sums, valid, complete)


def _collection_counts(words: Words) -> tuple[int, int]:
    """The opened (valid, complete) counts. Raises: RemoteProtocolError unless 0 <= valid <= complete."""
    valid, complete = int(words[0]), int(words[1])
    if not 0 <= valid <= complete <= MAX_SUBMISSIONS:
        raise RemoteProtocolError("the opened counts do not agree: the nodes' output shares do not match")
    return valid, complete


class CollectionVoteEntry(_CollectionEntry):
    """A vote over a ballot collection: only whether the valid yes ballots are at least half of the valid ones."""

    name, wire_id = "collection-vote", 11
    reveals = "one bit: at least half of the valid ballots are yes; which ballots were invalid, to the nodes"
    combine: ClassVar[Combine] = "xor"
    collection_kinds = frozenset({"ballot", "range"})

    def check(self, params: NoParams, declared: Declared, parties: int, scale: int) -> None:
        if (declared.bounds, declared.records) != ((0, 1), 1):
            raise InputError(f"{declared.what}: a vote takes ballots, one value 0 or 1 per submission")

    def output_length(self, params: NoParams, lengths: Mapping[str, int]) -> int:
        return 1

    def finish(self, params: NoParams) -> Finish:
        return finish_vote

    def decode(self, params: NoParams, opened: Opened) -> Result:
        return VoteResult(opened.session_id, opened.input_name, opened.nodes, bool(int(opened.words[0]) & 1),
                          "at least half of the valid ballots")


class CollectionThresholdEntry(_CollectionEntry):
    """[sum of the valid submissions >= K], element by element: one bit each."""

    name, wire_id, params = "collection-threshold", 12, ThresholdParams
    reveals = "one bit per element, [sum of the valid submissions >= K]; which submissions were invalid, to the nodes"
    combine: ClassVar[Combine] = "xor"

    def validate(self, params: ThresholdParams) -> None:
        if not -(1 << 62) < params.threshold < 1 << 62:
            raise InputError(f"threshold {params.threshold} must lie within +-2^62")

    def thresholds(self, params: ThresholdParams) -> int | str | None:
        return params.threshold

    def finish(self, params: ThresholdParams) -> Finish:
        return finish_threshold(params.threshold)

    def decode(self, params: ThresholdParams, opened: Opened) -> Result:
        return ThresholdResult(opened.session_id, opened.input_name, opened.nodes, params.threshold,
                               [bool(int(w) & 1) for w in opened.words])

    def query(self, params: ThresholdParams) -> tuple[str, object]:
        return self.name, params.threshold


class CollectionPluralityEntry(_CollectionEntry):
    """A plurality vote over an option collection: the valid votes per option (noisy with --epsilon),
    or the winning option alone."""

    name, wire_id, params = "collection-plurality", 13, PluralityParams
    reveals = ("the count of valid votes per option and how many submissions were complete and valid (with "
               "--epsilon, noisy counts); with --winner-only the winning option alone; which submissions were "
               "invalid, to the nodes")
    collection_kinds = frozenset({"option"})
    private = True
    counts = True

    def validate(self, params: PluralityParams) -> None:
        super().validate(params)
        _check_plurality(params)

    def check(self, params: PluralityParams, declared: Declared, parties: int, scale: int) -> None:
        if declared.records != params.options:
            raise InputError(f"{declared.what} holds votes over {declared.records} options, the session counts "
                             f"{params.options}")

    def output_length(self, params: PluralityParams, lengths: Mapping[str, int]) -> int:
        return 1 if params.winner_only else params.options + 2

    def finish(self, params: PluralityParams) -> Finish:
        noise = private(params)
        return finish_winner if params.winner_only else finish_sum(0 if noise is None else noise.coins)

    def decode(self, params: PluralityParams, opened: Opened) -> Result:
        counted = None if params.winner_only else _collection_counts(opened.words[params.options:])
        return _plurality_result(params, opened, counted)

    def query(self, params: PluralityParams) -> tuple[str, object]:
        return (f"{self.name}-winner" if params.winner_only else self.name), params.options


class CollectionAuctionEntry(_CollectionEntry):
    """A sealed-bid auction over a range collection of bids: the winning credential and the price."""

    name, wire_id, params = "collection-auction", 14, AuctionParams
    reveals = ("the winning credential id and the highest valid bid; with --second-price the winning credential "
               "and the second-highest valid bid only; how many bids were complete and valid; which were "
               "invalid, to the nodes")
    collection_kinds = frozenset({"range"})
    min_valid = 2
    max_complete = MAX_AUCTION
    rows = True

    def check(self, params: AuctionParams, declared: Declared, parties: int, scale: int) -> None:
        limit = auction.VALUE_OFFSET - 1
        bounds = declared.bounds or (0, 0)
        if declared.records != 1 or not -limit <= bounds[0] <= bounds[1] <= limit:
            raise InputError(f"{declared.what}: an auction takes one bid per submission, within +-{limit}; the "
                             f"collection holds {declared.records} value(s) in [{bounds[0]}, {bounds[1]}]")

    def output_length(self, params: AuctionParams, lengths: Mapping[str, int]) -> int:
        return (2 if params.second_price else 1) + 2 + ID_WORDS

    def finish(self, params: AuctionParams) -> Finish:
        return finish_auction(params.second_price)

    def decode(self, params: AuctionParams, opened: Opened) -> Result:
        words = [int(w) for w in opened.words]
        head = 2 if params.second_price else 1
        valid, complete = _collection_counts(opened.words[head:head + 2])
        if valid < self.min_valid or complete > self.max_complete:
            raise RemoteProtocolError(f"the opened counts ({valid} valid of {complete}) are not an auction's: the "
                                      f"nodes' output shares do not agree")
        if params.second_price:
            price = words[1] - auction.VALUE_OFFSET - 1
        else:
            _, price = auction.decode_key(words[0], complete)
        if not -auction.VALUE_OFFSET < price < auction.VALUE_OFFSET:
            raise RemoteProtocolError("the opened price is not a bid: the nodes' output shares do not agree")
        winner = opened.words[head + 2:].astype("<u8").tobytes().hex()
        return CollectionAuctionResult(opened.session_id, opened.input_name, opened.nodes, winner, price,
                                       "second" if params.second_price else "first", valid, complete)

    def query(self, params: AuctionParams) -> tuple[str, object]:
        return f"{self.name}-{'second' if params.second_price else 'first'}", None


CATALOGUE: tuple[Entry[Any], ...] = (SumEntry(), AverageEntry(), VoteEntry(), ThresholdEntry(), AuctionEntry(),
                                     ClearingPriceEntry(), PluralityEntry(), HistogramEntry(), IntersectEntry(),
                                     CollectionSumEntry(), CollectionVoteEntry(), CollectionThresholdEntry(),
                                     CollectionPluralityEntry(), CollectionAuctionEntry())
BY_NAME: dict[str, Entry[Any]] = {e.name: e for e in CATALOGUE}
BY_WIRE_ID: dict[int, Entry[Any]] = {e.wire_id: e for e in CATALOGUE}
NAMES: tuple[str, ...] = tuple(BY_NAME)
if NAMES != PROTOCOL_NAMES:   # the configuration validates policies against mpc/protocols/names.py
    raise ImportError(f"mpc/protocols/names.py lists {PROTOCOL_NAMES}, the catalogue has {NAMES}")


def entry(name: str) -> Entry[Any]:
    """The catalogue entry named `name`. Raises: KeyError naming the known protocols."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(NAMES)}") from None
