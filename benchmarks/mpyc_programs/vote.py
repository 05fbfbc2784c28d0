"""MPyC program: a vote over N 0/1 ballots split across the parties; only [2 * tally >= N] is opened.

Run once per party (3 parties by default), e.g.

    python vote.py -M3 -I0 -P 127.0.0.1:p0 -P 127.0.0.1:p1 -P 127.0.0.1:p2 --ssl --N 1000

Ballot j is 1 when (7919 j + 13) mod 100 < 52 (the formula of benchmarks/mpc_runner.py
vote_ballots), and the N ballots are split into contiguous chunks, party i holding chunk i
(np.array_split, sizes differ by at most one). Every party inputs its chunk as a secure array
of SecInt(32) (32 bits, as mpc's comparison ring); the tally is the sum of all entries (local
on the shares), and one secure comparison 2 * tally >= N (N public here) is opened to everybody.
Party 0 verifies it and prints one JSON line
{"compute_s": ..., "N": ..., "parties": ..., "passed": ..., "ok": ..., "tls": ...} on stdout.

--repeats R (default 1): R votes one after the other, each after a network barrier (untimed), as mpc's
benchmark runs its votes on running nodes; compute_s is then the median of the votes after the first,
first_s the first's, and ok holds if every vote was right.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
from mpyc.runtime import mpc

from mpyc_tls import tls_info

BITS = 32


def ballots(N: int, parties: int) -> list[np.ndarray]:
    """Party i's ballots, for every i."""
    j = np.arange(N, dtype=np.int64)
    every = ((j * 7919 + 13) % 100 < 52).astype(np.int64)
    return [np.ascontiguousarray(chunk) for chunk in np.array_split(every, parties)]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--N', type=int, default=1000, help='number of ballots in all')
    parser.add_argument('--repeats', type=int, default=1, help='votes one after the other (see the docstring)')
    args = parser.parse_args()  # MPyC already consumed its own options from sys.argv
    N = args.N
    m = len(mpc.parties)
    secint = mpc.SecInt(BITS)
    chunks = ballots(N, m)  # plaintext, untimed; every party needs the chunk sizes (public)
    # Non-owners pass zeros of the owner's shape; MPyC ignores them.
    plain = [chunks[i] if i == mpc.pid else np.zeros_like(chunks[i]) for i in range(m)]

    if args.repeats < 1:
        sys.exit(f'--repeats {args.repeats}: at least 1')
    expected = 2 * sum(int(c.sum()) for c in chunks) >= N

    await mpc.start()
    tls = tls_info()
    times, ok = [], True
    later = 0.0   # the repeats after the first, each from its barrier to its output (not the checks)
    for rep in range(args.repeats):
        t_barrier = time.perf_counter()
        await mpc.transfer(mpc.pid)  # network barrier: all-to-all exchange, everyone is here
        t0 = time.perf_counter()
        xs = [mpc.input(secint.array(plain[i]), senders=i) for i in range(m)]
        tally = xs[0].sum()
        for x in xs[1:]:
            tally = tally + x.sum()
        passed = await mpc.output(2 * tally >= N)  # the only opened value: one bit
        times.append(time.perf_counter() - t0)
        if rep:
            later += time.perf_counter() - t_barrier
        ok = ok and bool(passed) == expected
    await mpc.shutdown()
    if mpc.pid == 0:
        print(json.dumps({'compute_s': statistics.median(times[1:]) if len(times) > 1 else times[0],
                          'first_s': times[0], 'later_s': later, 'times': times, 'repeats': args.repeats, 'N': N,
                          'parties': m, 'passed': bool(passed), 'ok': ok, 'tls': tls}), flush=True)


if __name__ == '__main__':
    mpc.run(main())
