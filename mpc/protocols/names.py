"""The catalogue's protocol names and the vote rule "half", without importing any protocol.

The owner's policy names protocols (mpc/config.py), and loading a cluster file must stay quick for
`mpc health` and `mpc status`; the catalogue (mpc/protocols/catalogue.py) imports numpy and every
engine. Its entries use these names, and tests/unit/test_startup.py checks that the two agree.
"""

from __future__ import annotations

# Every protocol of the catalogue, in its order (wire ids 1..14).
PROTOCOL_NAMES: tuple[str, ...] = ("sum", "average", "vote", "threshold", "auction", "clearing-price", "plurality",
                                   "histogram", "intersect", "collection-sum", "collection-vote", "collection-threshold",
                                   "collection-plurality", "collection-auction")
HALF = "half"                  # the vote rule "at least half of the ballots cast", in a policy's `thresholds`
