"""MPyC program: a sealed-bid auction over M bids split across the parties; only the winner and
the price are opened.

Run once per party (3 parties by default), e.g.

    python auction.py -M3 -I0 -P 127.0.0.1:p0 -P 127.0.0.1:p1 -P 127.0.0.1:p2 --ssl --M 1000 [--second-price]

Bid j is ((2654435761 j + 12345) mod (2 B + 1)) - B with B = BID_LIMIT, so negative bids too;
every 13th bid repeats the one before it, and the highest possible bid B is planted at three
places (global indices M//2, M//2 + 2 and M - 1: with 3 parties two at party 1 and one at
party 2), so the maximum is tied within a party and across parties. The same formula as
benchmarks/mpc_runner.py auction_bids. The M bids are split into contiguous chunks, party i
holding chunk i (np.array_split, sizes differ by at most one). |bid| <= B = 2^30 - 1, the most
for which the difference of two bids (and of a bid and LOW below), which MPyC's comparison
takes the sign of, stays inside the signed 32-bit range of SecInt(32) (mpyc/runtime.py, sgn).

Every party inputs its chunk as a secure array of SecInt(32) (as compare.py and vote.py do);
mpc.np_argmax over the concatenation in party order (arg_unary=True, arg_only=False) gives the
winner as a secret unit vector and the maximum: a tournament of M - 1 comparisons in
ceil(log2 M) batched rounds. MPyC breaks ties by the *first* occurrence (mpyc/runtime.py
_np_argmax pairs neighbours, "odd-even split to return first occurrence", and takes the right
one only if strictly greater; mpc.argmax on lists, the same rule), so the winner is the highest
bid that comes first in (party, index at the party): mpc's tie rule. The winning index is the
unit vector times (0, 1, ..., M - 1), local.

--second-price: the winner's bid is replaced by LOW = -B - 1, below every bid, with that unit
vector (x - u (x - LOW), one elementwise product), and mpc.np_amax over the result gives the
second-highest bid (equal to the highest when the maximum is tied, as in these bids). The
winning index and that price are opened; the maximum is not. About M - 1 more comparisons.

--lists: the same with lists of SecInt(32) and mpc.argmax, mpc.unit_vector, mpc.max (one
coroutine per element; with 1000 bids several times slower than the arrays: 8 s against 2 s
first price, 16-29 s against 4-7 s second price, on 2 loaded cores), for reference only.

Opened to everybody: the winning index (global; with the public chunk sizes the same as
(party, index at the party)) and the price. Party 0 verifies them against the plaintext and
prints one JSON line {"compute_s": ..., "M": ..., "parties": ..., "second_price": ..., "lists": ...,
"winner_party": ..., "winner_index": ..., "price": ..., "ok": ..., "tls": ...} on stdout.
"""

import argparse
import json
import time

import numpy as np
from mpyc.runtime import mpc

from mpyc_tls import tls_info

BITS = 32
BID_LIMIT = (1 << 30) - 1
LOW = -BID_LIMIT - 1  # below every bid


def bids(M: int, parties: int) -> list[np.ndarray]:
    """Party i's bids, for every i."""
    j = np.arange(M, dtype=np.int64)
    every = (j * 2_654_435_761 + 12_345) % (2 * BID_LIMIT + 1) - BID_LIMIT
    every[13::13] = every[12:-1:13]  # ties below the top
    every[[M // 2, min(M // 2 + 2, M - 1), M - 1]] = BID_LIMIT  # the top, tied
    return [np.ascontiguousarray(chunk) for chunk in np.array_split(every, parties)]


def expected(chunks: list[np.ndarray], second_price: bool) -> tuple[int, int, int]:
    """Plaintext (winning party, index at that party, price) under the first-occurrence rule."""
    every = np.concatenate(chunks)
    winner = int(np.argmax(every))  # numpy's argmax also returns the first occurrence
    price = int(every[winner])
    if second_price:
        price = int(np.max(np.delete(every, winner)))
    starts = np.cumsum([0] + [len(c) for c in chunks])
    party = int(np.searchsorted(starts, winner, side='right')) - 1
    return party, winner - int(starts[party]), price


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--M', type=int, default=1000, help='number of bids in all')
    parser.add_argument('--second-price', action='store_true',
                        help='open the second-highest bid instead of the highest')
    parser.add_argument('--lists', action='store_true',
                        help='lists of secure integers and mpc.argmax instead of secure arrays')
    args = parser.parse_args()  # MPyC already consumed its own options from sys.argv
    M = args.M
    m = len(mpc.parties)
    secint = mpc.SecInt(BITS)
    chunks = bids(M, m)  # plaintext, untimed; every party needs the chunk sizes (public)
    # Non-owners pass zeros of the owner's length; MPyC ignores them.
    plain = [chunks[i] if i == mpc.pid else np.zeros_like(chunks[i]) for i in range(m)]
    if args.lists:
        plain_lists = [[secint(int(v)) for v in p] for p in plain]

    await mpc.start()
    tls = tls_info()
    await mpc.transfer(mpc.pid)  # network barrier: all-to-all exchange, everyone has started
    t0 = time.perf_counter()
    if args.lists:
        index, price = _auction_lists([mpc.input(plain_lists[i], senders=i) for i in range(m)],
                                      args.second_price)
    else:
        index, price = _auction_arrays([mpc.input(secint.array(plain[i]), senders=i) for i in range(m)],
                                       args.second_price)
    winner, opened_price = await mpc.output([index, price])
    t1 = time.perf_counter()
    winner, opened_price = int(winner), int(opened_price)
    starts = np.cumsum([0] + [len(c) for c in chunks])
    party = int(np.searchsorted(starts, winner, side='right')) - 1
    at_party = winner - int(starts[party])
    ok = None
    if mpc.pid == 0:
        ok = (party, at_party, opened_price) == expected(chunks, args.second_price)
    await mpc.shutdown()
    if mpc.pid == 0:
        print(json.dumps({'compute_s': t1 - t0, 'M': M, 'parties': m, 'second_price': args.second_price,
                          'lists': args.lists, 'winner_party': party, 'winner_index': at_party,
                          'price': opened_price, 'ok': ok, 'tls': tls}), flush=True)


def _auction_arrays(xs, second_price):
    """(secret winning index, secret price) from the parties' secure arrays, in party order."""
    x = mpc.np_concatenate(xs)
    u, top = mpc.np_argmax(x, arg_unary=True, arg_only=False)  # u: unit vector of the winner
    index = u @ np.arange(x.shape[0])
    if not second_price:
        return index, top
    rest = x - u * (x - LOW)  # the winner's bid becomes LOW, every other bid stays
    return index, mpc.np_amax(rest)


def _auction_lists(xs, second_price):
    """The same with lists of secure integers: mpc.argmax, mpc.unit_vector, mpc.max."""
    x = [b for chunk in xs for b in chunk]
    index, top = mpc.argmax(x)
    if not second_price:
        return index, top
    u = mpc.unit_vector(index, len(x))
    rest = mpc.vector_sub(x, mpc.schur_prod(u, [b - LOW for b in x]))
    return index, mpc.max(rest)


if __name__ == '__main__':
    mpc.run(main())
