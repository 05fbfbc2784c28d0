"""The MPyC side of `make bench` (benchmarks/mpyc_runner.py) times its scalar sum and vote as mpc's side
times its own: the median of the computations after the first in one run, each after a barrier, the
first (cold) reported apart. Real MPyC processes with TLS on loopback; no timing is asserted, only that
the figures are the ones the README says they are."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pytest

from benchmarks.mpc_runner import RAISES
from benchmarks.mpyc_runner import run_mpyc_sum, run_mpyc_vote

# A vote over few ballots: the same formula as the benchmark's (benchmarks/mpyc_programs/vote.py).
BALLOTS = 30


def _expected_vote(ballots: int) -> bool:
    yes = sum(1 for j in range(ballots) if (j * 7919 + 13) % 100 < 52)
    return 2 * yes >= ballots


def _check_repeated(result: dict[str, object], repeats: int) -> None:
    times = result["times"]
    assert isinstance(times, list) and len(times) == repeats == result["repeats"]
    assert result["first_s"] == times[0]
    assert result["compute_s"] == statistics.median(times[1:])
    later = result["later_s"]
    assert isinstance(later, float) and later >= sum(times[1:])   # the later computations with their barriers
    assert result["ok"] is True and result["tls"]


def test_a_repeated_scalar_sum_is_timed_by_its_later_sums() -> None:
    result = run_mpyc_sum(1, scalar_raises=True, repeats=4, timeout=120)
    _check_repeated(result, 4)
    assert result["sum"] == sum(RAISES) and result["parties"] == len(RAISES)


def test_a_repeated_vote_is_timed_by_its_later_votes() -> None:
    result = run_mpyc_vote(BALLOTS, 3, repeats=3, timeout=120)
    _check_repeated(result, 3)
    assert result["passed"] is _expected_vote(BALLOTS)


def test_a_single_computation_is_its_own_figure() -> None:
    result = run_mpyc_vote(BALLOTS, 3, timeout=120)
    assert result["repeats"] == 1 and result["compute_s"] == result["first_s"] == result["times"][0]
    assert result["later_s"] == 0.0   # nothing after it to take off the end-to-end figure (not even its check)
    assert result["ok"] is True


@pytest.mark.parametrize("run", [lambda: run_mpyc_sum(1, scalar_raises=True, repeats=0),
                                 lambda: run_mpyc_vote(BALLOTS, 3, repeats=0)])
def test_no_computation_at_all_is_refused(run: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        run()
