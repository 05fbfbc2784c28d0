"""Micro-benchmark: M batched secure comparisons x[j] < y[j] of 32-bit values among n parties,
all engines in one process over an in-memory FIFO router (no network, no TLS).

Each party runs the comparison as a program (`less_than`, the sign-bit circuit of
mpc/protocols/compare.py) on a `CircuitParty`, the engine of mpc/protocols/circuit.py, under the
step prefix and with the round labels a node uses.

Triples come from the trusted-dealer TEST DOUBLE (tests/sim/dealer.py), so this measures the
comparison protocol alone (PROTOCOLS.md §5): its local computation, its number of rounds and
the triple words it consumes; not OT triple generation (PROTOCOLS.md §3), which the nodes pay
on top. Inputs follow benchmarks/mpyc_programs/compare.py (0 <= v < 2^31, so x - y fits the
signed 32-bit range, ell = 32), so the result answers the same question as MPyC's run.

    python benchmarks/compare_micro.py [--batch 1000] [--parties 3] [--repeat 7]

Prints one JSON line: protocol seconds (best and median of the repeats, from the first start
to the last output), dealer seconds, rounds, triple words per party, bytes each party sends.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the dealer double lives in tests/, which is not installed
    sys.path.insert(0, str(ROOT))

from mpc.events import Output, Send  # noqa: E402
from mpc.prg import SystemRng, random_words  # noqa: E402
from mpc.protocols.circuit import CircuitParty, Context, Program, less_than, plan  # noqa: E402
from mpc.protocols.compare import rounds, triple_words  # noqa: E402
from mpc.ring import Words  # noqa: E402
from tests.sim.dealer import TrustedDealer  # noqa: E402

BITS = 32
NAMES = ("alice", "bob", "carlos", "david", "erin", "frank", "grace")
PREFIX = "cmp"


def program(ctx: Context, share: Words) -> Program[Words]:
    """[x < y] on this party's shares of [x | y]."""
    x, y = np.split(share, 2)
    return (yield from less_than(ctx, "", x, y, BITS))


def x_input(m: int) -> np.ndarray:
    j = np.arange(m, dtype=np.int64)
    return (j * 2_654_435_761 + 12_345) % (1 << (BITS - 1))


def y_input(m: int) -> np.ndarray:
    j = np.arange(m, dtype=np.int64)
    y = (j * 40_503 + 977_777_777) % (1 << (BITS - 1))
    y[::7] = x_input(m)[::7]
    return y


def share(values: np.ndarray, n: int, rng: SystemRng) -> list[np.ndarray]:
    rest = [random_words(rng, values.size) for _ in range(n - 1)]
    first = values.astype(np.uint64)
    for s in rest:
        first = first - s
    return [first, *rest]


def once(batch: int, parties: int) -> dict[str, float | int | bool]:
    rng = SystemRng()
    names = NAMES[:parties]
    shape = plan(program, parties, 2 * batch)
    words = triple_words(parties, BITS, batch)
    assert shape.bit_words == words and shape.arith_triples == shape.dabits == 0
    dealer = TrustedDealer(parties, rng)
    arith, dabits = dealer.arith_pools(0), dealer.dabit_pools(0)   # a comparison draws only bit triples
    t0 = time.perf_counter()
    bits = dealer.pools(words)
    dealer_s = time.perf_counter() - t0
    x, y = x_input(batch), y_input(batch)
    xs, ys = share(x, parties, rng), share(y, parties, rng)
    labels = [label for label, _ in shape.rounds]
    engines = {me: CircuitParty("bench", me, names, program(Context(i, parties, bits[i], arith[i], dabits[i]),
                                                             np.concatenate((xs[i], ys[i]))), PREFIX, labels)
               for i, me in enumerate(names)}
    queue: deque[tuple[str, Send]] = deque()
    outputs: dict[str, np.ndarray] = {}
    sent = dict.fromkeys(names, 0)

    def handle(me: str, events: list[Send | Output]) -> None:
        for ev in events:
            if isinstance(ev, Send):
                sent[me] += len(ev.payload)
                queue.append((me, ev))
            else:
                outputs[me] = ev.words

    t0 = time.perf_counter()
    for me in names:
        handle(me, engines[me].start())
    while queue:
        sender, ev = queue.popleft()
        handle(ev.to, engines[ev.to].receive(sender, ev.step, ev.payload))
    protocol_s = time.perf_counter() - t0
    result = np.zeros(batch, dtype=np.uint64)
    for me in names:
        result ^= outputs[me]
    return {"protocol_s": protocol_s, "dealer_s": dealer_s, "triple_words": words,
            "bytes_sent_per_party": sent[names[0]], "ok": bool(np.array_equal(result, (x < y).astype(np.uint64)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--parties", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    once(args.batch, args.parties)  # warm-up: imports, numpy, plan caches
    runs = [once(args.batch, args.parties) for _ in range(args.repeat)]
    times = [r["protocol_s"] for r in runs]
    words = int(runs[0]["triple_words"])
    print(json.dumps({
        "benchmark": "compare_micro", "comparisons": args.batch, "parties": args.parties, "ell": BITS,
        "rounds": rounds(args.parties, BITS, args.batch),
        "triple_words_per_party": words,
        "triple_bits_per_comparison": round(64 * words / args.batch, 1),
        "protocol_s_best": round(min(times), 5), "protocol_s_median": round(statistics.median(times), 5),
        "comparisons_per_s": round(args.batch / min(times)),
        "dealer_s_median": round(statistics.median(r["dealer_s"] for r in runs), 5),
        "bytes_sent_per_party": runs[0]["bytes_sent_per_party"],
        "ok": all(r["ok"] for r in runs),
    }))


if __name__ == "__main__":
    main()
