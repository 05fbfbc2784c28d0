"""Market-clearing price of a double auction (Bogetoft et al., "Secure Multiparty Computation Goes
Live", Financial Cryptography 2009: the Danish sugar-beet auction; PROTOCOLS.md §5).

Each node holds a net-demand vector over a public, increasing price grid p_0 < ... < p_{G-1}:
the quantity its bidders would buy (positive) or sell (negative) at each price, monotone
non-increasing per bidder (checked when it is stored, `mpc input put NAME ... --curve`: a
refusal at prepare would depend on the values). The market clears at the first grid price where the total net
demand D_g (the secure sum of the vectors, never opened) is at most 0.

Program, on the additive shares of D (ell = 32, as every comparison of a sum; the declared
bounds keep |D_g| < 2^30):
  z_g = [D_g >= 1]                                   (one batched comparison)
  Q_g = z_0 & z_1 & ... & z_g  ("still short")       (prefix AND, ceil(log2 G) rounds of AND gates)
  f_g = Q_{g-1} ^ Q_g, with Q_{-1} = 1               (local: Q is non-increasing)
f is opened: all zeros if demand exceeds supply at every price, else exactly one 1, at the
clearing price. It says nothing more even if some curve was not monotone: the opened vector
is a function of the first g with D_g <= 0 alone, and the aggregate curve is never opened.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import InputError
from mpc.protocols.circuit import Context, Program, and_gates, at_least, public
from mpc.ring import Words

CLEARING_ELL = 32
MAX_PRICES = 1 << 16


def check_grid(prices: tuple[int, ...]) -> None:
    """Refuse a price grid that is empty, too long, or not strictly increasing.

    Raises: InputError naming the first fault.
    """
    if not prices:
        raise InputError("a clearing price needs a price grid (--prices P1,P2,...)")
    if len(prices) > MAX_PRICES:
        raise InputError(f"a price grid has at most {MAX_PRICES} prices, got {len(prices)}")
    for i, price in enumerate(prices, 1):
        if not -(1 << 63) <= price < 1 << 63:
            raise InputError(f"price {i} of the grid ({price}) is not within +-9223372036854775807")
    for i in range(1, len(prices)):
        if prices[i] <= prices[i - 1]:
            raise InputError(f"the price grid must be strictly increasing: price {i + 1} ({prices[i]}) is not above "
                             f"price {i} ({prices[i - 1]})")


def clearing_program(ctx: Context, demand: Words) -> Program[Words]:
    """This party's XOR share of the one-hot vector of the clearing price (all zeros: none).

    Returns: one word (0 or 1) per grid price.
    """
    z = yield from at_least(ctx, "cmp", demand, 1, CLEARING_ELL)
    still = z.astype(np.bool_)
    d, level = 1, 0
    while d < still.size:
        still[d:] = yield from and_gates(ctx, f"pre/{level}", still[d:], still[:-d])
        d, level = 2 * d, level + 1
    before = np.concatenate((public(ctx, np.ones(1, dtype=np.uint64)).astype(np.bool_), still[:-1]))
    return (before ^ still).astype(np.uint64)
