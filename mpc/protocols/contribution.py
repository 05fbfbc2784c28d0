"""What a node feeds into a protocol, and the checks on its declaration (DESIGN.md §4, §9).

The pieces the catalogue's entries (mpc/protocols/catalogue.py) are built from:
sum:                   the stored vector, elementwise.
average (records):     [sum of this node's records, number of records]; the mean over every
                       record of every node is total / count, and both are revealed.
average (elementwise): [v_1 .. v_L, 1]; the elementwise mean over nodes, count = node count.
vote, threshold:       the tally (2t - n, or t), or the integer values, compared with k.
All values are first brought to the session's common scale and checked against the bound
that keeps a sum over `parties` contributions from wrapping (PROTOCOLS.md §1); refusals at
prepare use the declaration only (check_*_declared).
"""

from __future__ import annotations

import numpy as np

from mpc.encoding import INT64_MAX, MAX_BALLOTS, check_sum_bound, exact_local_sum, rescale
from mpc.errors import InputError
from mpc.ring import Signed, Words, from_signed

# Comparisons run on ell = 32 bits (mpc/protocols/threshold.py): totals within +-(2^30 - 1) and
# thresholds within +-2^30, so that total - k never leaves [-2^31, 2^31).
COMPARE_BITS = 32
COMPARE_BOUND = 1 << (COMPARE_BITS - 2)


def sum_contribution(values: Signed, frac_bits: int, session_frac_bits: int, parties: int, what: str) -> Words:
    """A sum's contribution: the stored vector at the session's scale.

    Returns: uint64 words, one per value.
    Raises: InputError naming `what` when a value could make the sum over `parties` overflow.
    """
    return _checked(rescale(values, frac_bits, session_frac_bits), parties, session_frac_bits, what)


def records_contribution(values: Signed, frac_bits: int, session_frac_bits: int, parties: int,
                         what: str) -> Words:
    """An average over records: [sum of this node's records, number of records].

    Returns: two uint64 words.
    Raises: InputError naming `what` when the record sum or count could overflow the sum.
    """
    scaled = rescale(values, frac_bits, session_frac_bits)
    body = np.array([exact_local_sum(scaled, what), scaled.size], dtype=np.int64)
    return _checked(body, parties, session_frac_bits, what)


def elementwise_contribution(values: Signed, frac_bits: int, session_frac_bits: int, parties: int,
                             what: str) -> Words:
    """An elementwise average: [v_1 .. v_L, 1]; the count is the number of nodes.

    Returns: L + 1 uint64 words.
    Raises: InputError naming `what` when a value could make the sum overflow.
    """
    scaled = rescale(values, frac_bits, session_frac_bits)
    return _checked(np.append(scaled, np.int64(1)), parties, session_frac_bits, what)


def _checked(body: Signed, parties: int, frac_bits: int, what: str) -> Words:
    check_sum_bound(body, parties, frac_bits, what)
    return from_signed(body)


def require_bounds(bounds: tuple[int, int] | None, what: str) -> tuple[int, int]:
    """The declared bounds. Raises: InputError naming `what` when the input declares none."""
    if bounds is None:
        raise InputError(f"{what} declares no bounds (it was stored by an older mpc); store it again with "
                         f"--bounds LO,HI")
    return bounds


def check_sum_declared(bounds: tuple[int, int] | None, records: int, frac_bits: int, session_frac_bits: int,
                       parties: int, what: str) -> None:
    """Refuse, on the declaration alone (DESIGN.md §9), a sum that could wrap: `records` values per
    node (1 unless a node adds up its records first), over `parties` nodes, at the session's scale.

    Raises: InputError naming `what` and the public quantity at fault.
    """
    lo, hi = require_bounds(bounds, what)
    magnitude = max(-lo, hi, 0)
    if (magnitude << (session_frac_bits - frac_bits)) * records * parties > INT64_MAX:
        raise InputError(f"{what} declares bounds that could overflow a sum over {parties} parties at "
                         f"{session_frac_bits} fractional bits; declare narrower bounds (--bounds LO,HI); "
                         f"nothing was shared")


def check_compare_declared(bounds: tuple[int, int] | None, frac_bits: int, parties: int, what: str) -> None:
    """Refuse, on the declaration alone, a comparison whose total could leave its range.

    Raises: InputError naming `what` and the public quantity at fault.
    """
    lo, hi = require_bounds(bounds, what)
    if frac_bits != 0:
        raise InputError(f"{what} is fixed point ({frac_bits} fractional bits); comparisons take integers")
    limit = (COMPARE_BOUND - 1) // max(parties, 1)
    if max(-lo, hi, 0) > limit:
        raise InputError(f"{what} declares bounds beyond +-{limit}, too large to compare over {parties} parties")


def check_ballots_declared(kind: str, parties: int, what: str) -> None:
    """Refuse a vote on an input not declared as ballots, or over so many nodes that the tally
    could leave the comparison's range.

    Raises: InputError naming `what` and the fault.
    """
    if kind != "ballots":
        raise InputError(f"{what} is not declared as ballots; a vote takes ballots stored with "
                         f"`mpc input put NAME 1 0 ... --ballots`")
    if parties * MAX_BALLOTS > COMPARE_BOUND - 1:
        raise InputError(f"a vote over {parties} parties could leave the comparison's range "
                         f"(each node may hold up to {MAX_BALLOTS} ballots); "
                         f"at most {(COMPARE_BOUND - 1) // MAX_BALLOTS} parties")


def vote_bits(parties: int) -> int:
    """The ring width of a vote among `parties` nodes (PROTOCOLS.md §5), from the tally's public bound
    N = parties * MAX_BALLOTS (no node holds more ballots): 2 t - n summed lies in [-N, N], and T - k for
    the threshold clamped to [0, N + 1] (vote_threshold) in [-(N + 1), N], both within
    [-2^(ell-1), 2^(ell-1)). 25 bits for 3 nodes, whose comparison of one value then takes 3 rounds
    instead of 4 on COMPARE_BITS (mpc/protocols/compare.py); never more than COMPARE_BITS.
    A bit narrower than compare.ell_for_tally(N), which allows any threshold up to 2(N + 1) unclamped
    (26 bits for 3 nodes: 4 rounds, its 25 carry positions one more than two fan-in levels cover).
    """
    return min(COMPARE_BITS, (parties * MAX_BALLOTS + 1).bit_length() + 1)


def vote_threshold(threshold: int, parties: int) -> int:
    """A vote's public threshold k clamped to [0, N + 1], N = parties * MAX_BALLOTS: [T >= k] is the same
    for every tally 0 <= T <= N, and T - k stays within vote_bits(parties)."""
    return min(max(threshold, 0), parties * MAX_BALLOTS + 1)


def check_threshold(threshold: int) -> None:
    """Refuse a public threshold outside the comparison's range.

    Raises: InputError naming the bound.
    """
    if not -COMPARE_BOUND <= threshold <= COMPARE_BOUND:
        raise InputError(f"threshold {threshold} is out of range: |k| must be at most {COMPARE_BOUND}")


def vote_contribution(yes: int, ballots: int, half_rule: bool) -> Words:
    """This node's contribution to a vote from its tally: 2 t - n for "at least half of the ballots
    cast" (compared with 0), else t (compared with the threshold). check_ballots_declared bounds both.

    Returns: one uint64 word.
    """
    return from_signed(np.array([2 * yes - ballots if half_rule else yes], dtype=np.int64))


def compare_contribution(values: Signed, frac_bits: int, parties: int, what: str) -> Words:
    """This node's contribution to an elementwise threshold: the integer values themselves (a vote
    contributes from its tally, vote_contribution).

    Returns: uint64 words.
    Raises: InputError naming `what` (never a value) for fixed-point values or totals that could
    leave the comparison's range (check_compare_declared rules both out first, on the declaration).
    """
    if frac_bits != 0:
        raise InputError(f"{what} is fixed point ({frac_bits} fractional bits); comparisons take integers")
    limit = (COMPARE_BOUND - 1) // max(parties, 1)  # totals within +-(2^30 - 1): total - k < 2^31
    if values.size and (int(values.max()) > limit or int(values.min()) < -limit):
        raise InputError(f"{what} is too large to compare: each node's total must stay within +-{limit} "
                         f"for {parties} parties; nothing was shared")
    return from_signed(np.ascontiguousarray(values, dtype=np.int64))
