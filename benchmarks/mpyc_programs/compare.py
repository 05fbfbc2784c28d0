"""MPyC program: M batched secure comparisons x[j] >= y[j] between party-owned inputs.

Run once per party (3 parties by default), e.g.

    python compare.py -M3 -I0 -P 127.0.0.1:p0 -P 127.0.0.1:p1 -P 127.0.0.1:p2 --ssl --M 1000

Party 0 owns x, party 1 owns y (both M values, deterministic formulas, 0 <= v < 2**31 so that
x - y fits the signed 32-bit range that MPyC's comparison protocol requires for SecInt(32)).
Any further parties only compute.  The comparison is vectorised: x and y are secure NumPy arrays
(mpc.SecInt(32).array) and `x >= y` runs MPyC's np_less / np_sgn protocol once for the whole
batch.  All M bits are opened to everybody; party 0 verifies them and prints one JSON line
{"compute_s": ..., "M": ..., "parties": ..., "ok": ..., "tls": ...} on stdout.
"""

import argparse
import json
import time

import numpy as np
from mpyc.runtime import mpc

from mpyc_tls import tls_info

BITS = 32


def x_input(M: int) -> np.ndarray:
    j = np.arange(M, dtype=np.int64)
    return (j * 2_654_435_761 + 12_345) % (1 << (BITS - 1))


def y_input(M: int) -> np.ndarray:
    j = np.arange(M, dtype=np.int64)
    y = (j * 40_503 + 977_777_777) % (1 << (BITS - 1))
    y[::7] = x_input(M)[::7]  # some ties, so x == y is exercised too
    return y


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--M', type=int, default=1000, help='number of comparisons')
    args = parser.parse_args()  # MPyC already consumed its own options from sys.argv
    M = args.M
    m = len(mpc.parties)
    secint = mpc.SecInt(BITS)
    # Plaintext inputs (untimed).  Non-owners pass zeros of the right shape; MPyC ignores them.
    zeros = np.zeros(M, dtype=np.int64)
    x_plain = x_input(M) if mpc.pid == 0 else zeros
    y_plain = y_input(M) if mpc.pid == 1 else zeros

    await mpc.start()
    tls = tls_info()
    await mpc.transfer(mpc.pid)  # network barrier: all-to-all exchange, everyone has started
    t0 = time.perf_counter()
    x = mpc.input(secint.array(x_plain), senders=0)
    y = mpc.input(secint.array(y_plain), senders=1)
    ge = x >= y  # secure array of bits, one batched comparison protocol
    bits = await mpc.output(ge)
    t1 = time.perf_counter()
    ok = None
    if mpc.pid == 0:
        expected = (x_input(M) >= y_input(M)).astype(np.int64)
        ok = bool(np.array_equal(np.asarray(bits, dtype=np.int64), expected))
    await mpc.shutdown()
    if mpc.pid == 0:
        print(json.dumps({'compute_s': t1 - t0, 'M': M, 'parties': m, 'ok': ok, 'tls': tls}),
              flush=True)


if __name__ == '__main__':
    mpc.run(main())
