"""Threshold of a secure sum, revealing only bits: votes and batched [sum >= k] (DESIGN.md §4).

A `ComputeParty` (mpc/protocols/compute.py) whose input is the pairwise-masked secure sum of the
contributions and whose program is one batched comparison ([total >= k], mpc/protocols/circuit.py
`at_least`, the sign-bit circuit of mpc/protocols/compare.py on ell bits) under the step prefix
"cmp/". Each party's Output is its XOR share of one bit per element.

For a vote on "at least half of the ballots cast", a node holding t_i yes-ballots out of n_i
contributes 2 t_i - n_i and k = 0: 2T >= N needs neither T nor N opened. With an explicit
threshold K a node contributes t_i and k = K.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mpc.ot.pool import SETUP_ID_BYTES
from mpc.ot.triples import MAX_SETUPS_ADVERTISED, OtSetups
from mpc.prg import Rng
from mpc.protocols.circuit import at_least
from mpc.protocols.compute import STEP_HELLO, ComputeParty, Pooled

DEFAULT_ELL = 32
__all__ = ["DEFAULT_ELL", "MAX_SETUPS_ADVERTISED", "SETUP_ID_BYTES", "STEP_HELLO", "ThresholdParty"]


class ThresholdParty(ComputeParty):
    """One party of [sum of contributions >= k], elementwise over `length` values."""

    def __init__(self, session_id: str, me: str, parties: Sequence[str], length: int, threshold: int,
                 rng: Rng, setups: OtSetups, ell: int = DEFAULT_ELL, *,
                 mask_seeds: Mapping[str, bytes] | None = None,
                 on_seed: Callable[[str, bytes], None] | None = None, pooled: Pooled | None = None) -> None:
        super().__init__(session_id, me, parties, length, lambda ctx, x: at_least(ctx, "", x, threshold, ell),
                         rng, setups, summed=True, prefix="cmp", mask_seeds=mask_seeds, on_seed=on_seed,
                         shape=("at_least", ell), pooled=pooled)   # its shape: ell, the parties and the length (not k)
