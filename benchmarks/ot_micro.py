"""Micro-benchmark of the OT layer (mpc/ot/, PROTOCOLS.md §3-4), all in one process, no network.

1. The one-off base OTs of one ordered pair: 128 Chou-Orlandi OTs on Ed25519 (libsodium)
   (sender's A, receiver's B's and keys, sender's key pairs), best and median of repeats.
2. IKNP alone on one pair: m random 1-bit OTs (receiver side, sender side), OTs per second.
3. Dealerless bit triples for n parties (default 3) over an in-memory FIFO router, after a real
   pairwise setup: AND gates per second for 10^5 and 10^6 gates. Every party runs in this one
   process, so the wall time is the sum of all parties' work; per pair of parties it is
   n (n - 1) / 2 times the gate rate.

    python benchmarks/ot_micro.py [--parties 3] [--repeat 3] [--gates 100000 1000000]

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mpc.ot.base import BASE_OTS, ChouOrlandiReceiver, ChouOrlandiSender  # noqa: E402
from mpc.ot.extension import KAPPA, IknpReceiver, IknpSender  # noqa: E402
from mpc.ot.triples import PairwiseOt, PairwiseOtSetup, TripleDealerless  # noqa: E402
from mpc.prg import SystemRng  # noqa: E402
from mpc.events import Send  # noqa: E402

NAMES = ("alice", "bob", "carlos", "david", "erin", "frank", "grace")


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_router(engines: Mapping[str, Any]) -> dict[str, Any]:
    """FIFO delivery: start everyone, then deliver messages in order until nothing is left.

    Returns: each engine's last non-Send event.
    Raises: RuntimeError if messages are still flowing after a bounded number of deliveries.
    """
    queue: deque[tuple[str, Send]] = deque()
    results: dict[str, Any] = {}

    def take(me: str, events: Sequence[Any]) -> None:
        for event in events:
            if isinstance(event, Send):
                queue.append((me, event))
            else:
                results[me] = event

    for name, engine in engines.items():
        take(name, engine.start())
    for _ in range(100_000):  # bounded: a triple session needs a few messages per pair
        if not queue:
            break
        sender, send = queue.popleft()
        take(send.to, engines[send.to].receive(sender, send.step, send.payload))
    else:
        raise RuntimeError("engines still exchanging messages after 100000 deliveries")
    return results


def bench_base(repeat: int) -> None:
    rng = SystemRng()
    rows = []
    for _ in range(repeat):
        choices = [b & 1 for b in os.urandom(BASE_OTS)]
        t_a, sender = timed(lambda: ChouOrlandiSender(rng))
        receiver = ChouOrlandiReceiver(choices, rng)
        t_b, bs = timed(lambda: receiver.respond(sender.first_message()))
        t_k, _ = timed(lambda: sender.finish(bs))
        rows.append((t_a, t_b, t_k, t_a + t_b + t_k))
    med = [statistics.median(col) for col in zip(*rows)]
    emit(bench="base_ot", ots=BASE_OTS, sender_a_ms=round(1e3 * med[0], 1),
         receiver_ms=round(1e3 * med[1], 1), sender_keys_ms=round(1e3 * med[2], 1),
         total_ms_median=round(1e3 * med[3], 1), total_ms_best=round(1e3 * min(r[3] for r in rows), 1))


def bench_iknp(ms: Sequence[int], repeat: int) -> None:
    pairs = [(os.urandom(16), os.urandom(16)) for _ in range(KAPPA)]
    s = os.urandom(KAPPA // 8)
    bits = np.unpackbits(np.frombuffer(s, dtype=np.uint8), bitorder="little")
    sender, receiver = IknpSender(s, [pairs[i][bits[i]] for i in range(KAPPA)]), IknpReceiver(pairs)
    for m in ms:
        choices = np.frombuffer(os.urandom(8 * -(-m // 64)), dtype=np.uint64)
        t_r, t_s = [], []
        for _ in range(repeat):
            dt, (u, _) = timed(lambda: receiver.extend(choices, m))
            t_r.append(dt)
            dt, _ = timed(lambda: sender.extend(m, u))
            t_s.append(dt)
        best = min(r + s_ for r, s_ in zip(t_r, t_s))
        emit(bench="iknp", ots=m, receiver_ms=round(1e3 * min(t_r), 1), sender_ms=round(1e3 * min(t_s), 1),
             ots_per_s=round(m / best), message_bytes=len(u))


def bench_triples(n: int, gates: Sequence[int], repeat: int) -> None:
    parties = NAMES[:n]
    dt, ready = timed(lambda: run_router({p: PairwiseOtSetup(p, parties, SystemRng()) for p in parties}))
    ot: dict[str, Mapping[str, PairwiseOt]] = {p: ready[p].pairs for p in parties}
    emit(bench="pairwise_setup", parties=n, pairs=n * (n - 1) // 2, seconds=round(dt, 2))
    for g in gates:
        words = -(-g // 64)
        times = []
        for k in range(repeat):
            engines = {p: TripleDealerless(p, parties, words, SystemRng(), ot[p], f"bench-{k}") for p in parties}
            dt, results = timed(lambda: run_router(engines))
            assert len(results) == n
            times.append(dt)
        best = min(times)
        emit(bench="triples", parties=n, and_gates=64 * words, seconds_best=round(best, 3),
             seconds_median=round(statistics.median(times), 3), triples_per_s=round(64 * words / best),
             pair_triples_per_s=round(64 * words * n * (n - 1) // 2 / best))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parties", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gates", type=int, nargs="+", default=[10**5, 10**6])
    args = parser.parse_args()
    bench_base(args.repeat)
    bench_iknp(args.gates, args.repeat)
    bench_triples(args.parties, args.gates, args.repeat)


if __name__ == "__main__":
    main()
