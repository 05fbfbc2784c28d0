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

from mpc.encoding import check_sum_bound, exact_local_sum, rescale
from mpc.ring import Signed, Words, from_signed

Aggregate = Literal["sum", "average-records", "average-elementwise"]


def contribution_length(aggregate: Aggregate, stored_length: int) -> int:
    """The number of words a node contributes.

    Returns: the length of the vector that enters the secure sum.
    """
    if aggregate == "sum":
        return stored_length
    if aggregate == "average-records":
        return 2
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
