"""Oblivious transfer and dealerless Beaver bit triples (DESIGN.md §4, PROTOCOLS.md §3-4).

base.py       Chou-Orlandi base OT on Ed25519 with libsodium (LATINCRYPT 2015)
extension.py  IKNP OT extension with random-OT outputs (CRYPTO 2003), fixed-key-AES hash
triples.py    pairwise OT setup, bit triples from random OT (ABY, NDSS 2015), TriplePool, OtSetups
pool.py       random OTs made between sessions and derandomised by them (Beaver, CRYPTO 1995)
arith.py      arithmetic triples (Gilboa OT multiplication) and daBits (Rotaru-Wood), their pools
All sans-I/O: randomness comes in as an `mpc.prg.Rng`, messages go out as events.
"""

from mpc.ot.arith import ArithDealerless, ArithPool, ArithTriples, DaBitPool, DaBits
from mpc.ot.base import ChouOrlandiReceiver, ChouOrlandiSender
from mpc.ot.extension import IknpReceiver, IknpSender
from mpc.ot.triples import (BitTriples, OtReady, OtSetups, PairwiseOt, PairwiseOtSetup, TripleDealerless,
                            TriplePool)

__all__ = [
    "ArithDealerless",
    "ArithPool",
    "ArithTriples",
    "BitTriples",
    "DaBitPool",
    "DaBits",
    "ChouOrlandiReceiver",
    "ChouOrlandiSender",
    "IknpReceiver",
    "IknpSender",
    "OtReady",
    "OtSetups",
    "PairwiseOt",
    "PairwiseOtSetup",
    "TripleDealerless",
    "TriplePool",
]
