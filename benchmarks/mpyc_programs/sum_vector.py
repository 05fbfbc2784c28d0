"""MPyC program: secure elementwise sum of one integer vector per party.

Run once per party, e.g. for 3 parties on loopback with TLS (cwd must hold .config/ with
party_<i>.crt/.key and mpyc_ca.crt, see benchmarks/mpyc_runner.py):

    python sum_vector.py -M3 -I0 -P 127.0.0.1:p0 -P 127.0.0.1:p1 -P 127.0.0.1:p2 --ssl --L 10000

Party i's input is vector_input(i, L), a deterministic formula (values < 2**32).  All parties
input their vector as a secure array of SecInt(64) (field prime of 64+30+2 = 96 bits), the
elementwise sum is computed locally on the shares and opened to everybody.  Party 0 checks the
result against the plaintext sum and prints exactly one JSON line
{"compute_s": ..., "L": ..., "parties": ..., "ok": ..., "tls": ...} on stdout (MPyC's own log lines
also go to stdout; they never start with '{').

--scalar-raises: 4 parties, party i inputs RAISES[i] as a single secure integer, expected sum 12686.

--repeats R (default 1): R sums one after the other, each after a network barrier (untimed), as mpc's
benchmark runs its sessions on running nodes; compute_s is then the median of the sums after the first
(warm: MPyC's code paths and connections in use, as mpc's are), first_s the first's, and ok holds if
every sum was right.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
from mpyc.runtime import mpc

from mpyc_tls import tls_info

RAISES = (3800, 2514, 2982, 3390)  # sum 12686
BITS = 64  # sums of m values < 2**32 need 32 + ceil(log2 m) + 1 signed bits; 64 is ample


def vector_input(i: int, L: int) -> np.ndarray:
    """Deterministic input of party i: (i+1)*1_000_003 + j*7919 mod 2**32, for j < L."""
    j = np.arange(L, dtype=np.int64)
    return ((i + 1) * 1_000_003 + j * 7919) % (1 << 32)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--L', type=int, default=10_000, help='vector length per party')
    parser.add_argument('--scalar-raises', action='store_true',
                        help='4 parties, scalar inputs 3800, 2514, 2982, 3390')
    parser.add_argument('--repeats', type=int, default=1, help='sums one after the other (see the docstring)')
    args = parser.parse_args()  # MPyC already consumed its own options from sys.argv

    m = len(mpc.parties)
    secint = mpc.SecInt(BITS)
    if args.scalar_raises and m != len(RAISES):
        sys.exit(f'--scalar-raises needs {len(RAISES)} parties, got {m}')

    if args.repeats < 1:
        sys.exit(f'--repeats {args.repeats}: at least 1')
    L = 1 if args.scalar_raises else args.L
    mine = None if args.scalar_raises else vector_input(mpc.pid, L)  # plaintext, untimed
    expected = sum(RAISES) if args.scalar_raises else sum(vector_input(i, L) for i in range(m))
    await mpc.start()
    tls = tls_info()
    times, ok = [], True
    later = 0.0   # the repeats after the first, each from its barrier to its output (not the checks)
    for rep in range(args.repeats):
        t_barrier = time.perf_counter()
        await mpc.transfer(mpc.pid)  # network barrier: all-to-all exchange, everyone is here
        t0 = time.perf_counter()
        if args.scalar_raises:
            xs = mpc.input(secint(RAISES[mpc.pid]))  # list of m secure integers, one per party
            total = await mpc.output(mpc.sum(xs))  # Python int
        else:
            xs = mpc.input(secint.array(mine))  # m secure arrays, one per party
            s = xs[0]
            for x in xs[1:]:
                s = s + x
            total = await mpc.output(s)  # numpy array (dtype object) of Python ints
        times.append(time.perf_counter() - t0)
        if rep:
            later += time.perf_counter() - t_barrier
        if mpc.pid == 0:
            ok = ok and (total == expected if args.scalar_raises
                         else bool(np.array_equal(np.asarray(total, dtype=np.int64), expected)))
    await mpc.shutdown()
    if mpc.pid == 0:
        res = {'compute_s': statistics.median(times[1:]) if len(times) > 1 else times[0], 'first_s': times[0],
               'later_s': later, 'times': times, 'repeats': args.repeats, 'L': L, 'parties': m, 'ok': bool(ok),
               'tls': tls}
        if args.scalar_raises:
            res['sum'] = int(total)
        print(json.dumps(res), flush=True)


if __name__ == '__main__':
    mpc.run(main())
