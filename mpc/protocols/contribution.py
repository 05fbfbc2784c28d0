"""What a node feeds into a secure sum for each aggregate (DESIGN.md §4, "Sum" and "Average").

sum:                   the stored vector, elementwise.
average (records):     [sum of this node's records, number of records]; the mean over every
                       record of every node is total / count, and both are revealed.
average (elementwise): [v_1 .. v_L, 1]; the elementwise mean over nodes, count = node count.
All values are first brought to the session's common scale and checked against the bound
that keeps a sum over `parties` contributions from wrapping (PROTOCOLS.md §1).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mpc.encoding import INT64_MAX, MAX_BALLOTS, check_sum_bound, exact_local_sum, rescale
from mpc.errors import InputError
from mpc.ring import Signed, Words, from_signed

Aggregate = Literal["sum", "average-records", "average-elementwise", "vote", "threshold"]
# Comparisons run on ell = 32 bits (mpc/protocols/threshold.py): totals within +-(2^30 - 1) and
# thresholds within +-2^30, so that total - k never leaves [-2^31, 2^31).
COMPARE_BITS = 32
COMPARE_BOUND = 1 << (COMPARE_BITS - 2)


def contribution_length(aggregate: Aggregate, stored_length: int) -> int:
    """The number of words a node contributes.

    Returns: the length of the vector that enters the secure sum.
    """
    if aggregate == "sum":
        return stored_length
    if aggregate in ("average-records", "vote"):
        return 2 if aggregate == "average-records" else 1
    if aggregate == "threshold":
        return stored_length
    return stored_length + 1


def contribution(aggregate: Aggregate, values: Signed, frac_bits: int, session_frac_bits: int,
                 parties: int, what: str) -> Words:
    """Build this node's contribution at the session's scale.

    Returns: uint64 words of length contribution_length(aggregate, len(values)).
    Raises: InputError naming `what` when a value (or this node's record sum, or the record
    count) could make the sum over `parties` contributions overflow.
    """
    scaled = rescale(values, frac_bits, session_frac_bits)
    if aggregate == "sum":
        body = scaled
    elif aggregate == "average-records":
        local = exact_local_sum(scaled, what)
        body = np.array([local, scaled.size], dtype=np.int64)
    else:
        body = np.append(scaled, np.int64(1))
    check_sum_bound(body, parties, session_frac_bits, what)
    return from_signed(body)


def check_declared(aggregate: Aggregate, kind: str, bounds: tuple[int, int] | None, length: int, frac_bits: int,
                   session_frac_bits: int, parties: int, what: str) -> None:
    """Refuse a session on public data only: the input's declared kind, bounds and (for number
    inputs) length, the participant count and the scale; never on the stored values (DESIGN.md
    §9: a refusal that depends on a value tells the caller something about it).

    Within these checks the sum over `parties` contributions cannot wrap and a comparison's
    total stays in range, whatever the stored values are.
    Raises: InputError naming `what` and the public quantity at fault.
    """
    if aggregate == "vote":
        if kind != "ballots":
            raise InputError(f"{what} is not declared as ballots; a vote takes ballots stored with "
                             f"`mpc input put NAME 1 0 ... --ballots`")
        if parties * MAX_BALLOTS > COMPARE_BOUND - 1:
            raise InputError(f"a vote over {parties} parties could leave the comparison's range "
                             f"(each node may hold up to {MAX_BALLOTS} ballots); "
                             f"at most {(COMPARE_BOUND - 1) // MAX_BALLOTS} parties")
        return
    if bounds is None:
        raise InputError(f"{what} declares no bounds (it was stored by an older mpc); store it again with "
                         f"--bounds LO,HI")
    magnitude = max(-bounds[0], bounds[1], 0)
    if aggregate == "threshold":
        if frac_bits != 0:
            raise InputError(f"{what} is fixed point ({frac_bits} fractional bits); comparisons take integers")
        limit = (COMPARE_BOUND - 1) // max(parties, 1)
        if magnitude > limit:
            raise InputError(f"{what} declares bounds beyond +-{limit}, too large to compare over {parties} parties")
        return
    records = length if aggregate == "average-records" else 1
    if (magnitude << (session_frac_bits - frac_bits)) * records * parties > INT64_MAX:
        raise InputError(f"{what} declares bounds that could overflow a sum over {parties} parties at "
                         f"{session_frac_bits} fractional bits; declare narrower bounds (--bounds LO,HI); "
                         f"nothing was shared")


def check_threshold(threshold: int) -> None:
    """Refuse a public threshold outside the comparison's range.

    Raises: InputError naming the bound.
    """
    if not -COMPARE_BOUND <= threshold <= COMPARE_BOUND:
        raise InputError(f"threshold {threshold} is out of range: |k| must be at most {COMPARE_BOUND}")


def vote_contribution(yes: int, ballots: int, half_rule: bool) -> Words:
    """This node's contribution to a vote from its tally: 2 t - n for "at least half of the ballots
    cast" (compared with 0), else t (compared with the threshold). check_declared bounds both.

    Returns: one uint64 word.
    """
    return from_signed(np.array([2 * yes - ballots if half_rule else yes], dtype=np.int64))


def compare_contribution(values: Signed, frac_bits: int, parties: int, what: str) -> Words:
    """This node's contribution to an elementwise threshold: the integer values themselves (a vote
    contributes from its tally, vote_contribution).

    Returns: uint64 words.
    Raises: InputError naming `what` (never a value) for fixed-point values or totals that could
    leave the comparison's range (check_declared rules both out first, on the declaration).
    """
    if frac_bits != 0:
        raise InputError(f"{what} is fixed point ({frac_bits} fractional bits); comparisons take integers")
    limit = (COMPARE_BOUND - 1) // max(parties, 1)  # totals within +-(2^30 - 1): total - k < 2^31
    if values.size and (int(values.max()) > limit or int(values.min()) < -limit):
        raise InputError(f"{what} is too large to compare: each node's total must stay within +-{limit} "
                         f"for {parties} parties; nothing was shared")
    return from_signed(np.ascontiguousarray(values, dtype=np.int64))
