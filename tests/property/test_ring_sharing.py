"""Property tests of mpc.ring and mpc.sharing: additive sharing over Z_2^64 (PROTOCOLS.md §1),
two's-complement signed values, the fixed-width wire format (STYLE.md §3) and reduction of a
sharing mod 2^ell (PROTOCOLS.md §5)."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mpc.prg import AesCtrRng, Rng, SystemRng
from mpc.ring import RING_BITS, from_signed, reduce_bits, to_signed, words_from_bytes, words_to_bytes
from mpc.sharing import reconstruct, share

MOD = 1 << RING_BITS

word_vectors = hnp.arrays(np.uint64, st.integers(1, 64))
signed_vectors = hnp.arrays(np.int64, st.integers(1, 64))
party_counts = st.integers(1, 7)
rng_kinds = st.sampled_from(["aes", "system"])


def fresh_rng(kind: str = "aes") -> Rng:
    """A CSPRNG for one example: AES-CTR under a fresh random key, or the OS generator."""
    return AesCtrRng(secrets.token_bytes(16)) if kind == "aes" else SystemRng()


# -- reconstruct(share(x)) == x ------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(x=word_vectors, n=party_counts, kind=rng_kinds)
def test_reconstruct_inverts_share(x: np.ndarray, n: int, kind: str) -> None:
    before = x.copy()
    shares = share(x, n, fresh_rng(kind))
    assert len(shares) == n
    for s in shares:
        assert s.dtype == np.uint64 and s.shape == x.shape
    assert np.array_equal(reconstruct(shares), x)
    # The same identity in Python integers, independent of numpy's wraparound.
    for k in range(x.size):
        assert sum(int(s[k]) for s in shares) % MOD == int(x[k])
    assert np.array_equal(x, before), "share() must not modify the secret"


@settings(deadline=None, max_examples=25)
@given(x=hnp.arrays(np.uint64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=5)), n=party_counts)
def test_share_keeps_the_shape_of_the_secret(x: np.ndarray, n: int) -> None:
    shares = share(x, n, fresh_rng())
    assert all(s.shape == x.shape for s in shares)
    assert np.array_equal(reconstruct(shares), x)


@settings(deadline=None, max_examples=30)
@given(x=word_vectors, y=word_vectors, n=party_counts)
def test_sharewise_sum_is_a_sharing_of_the_sum(x: np.ndarray, y: np.ndarray, n: int) -> None:
    size = min(x.size, y.size)
    x, y = x[:size], y[:size]
    sx, sy = share(x, n, fresh_rng()), share(y, n, fresh_rng())
    assert np.array_equal(reconstruct([a + b for a, b in zip(sx, sy)]), x + y)


def test_one_party_holds_the_secret_itself() -> None:
    x = np.array([0, 1, MOD - 1], dtype=np.uint64)
    (only,) = share(x, 1, fresh_rng())
    assert np.array_equal(only, x)
    assert only is not x


def test_two_sharings_of_the_same_secret_differ() -> None:
    x = np.arange(16, dtype=np.uint64)
    a, b = share(x, 3, fresh_rng()), share(x, 3, fresh_rng())
    assert not np.array_equal(a[1], b[1])
    assert not any(np.array_equal(s, x) for s in a[1:])


def test_empty_vector_shares_and_reconstructs() -> None:
    x = np.empty(0, dtype=np.uint64)
    shares = share(x, 4, fresh_rng())
    assert [s.shape for s in shares] == [(0,)] * 4
    assert reconstruct(shares).shape == (0,)


@pytest.mark.parametrize("parties", [0, -1])
def test_share_refuses_fewer_than_one_party(parties: int) -> None:
    with pytest.raises(ValueError, match=str(parties)):
        share(np.zeros(3, dtype=np.uint64), parties, fresh_rng())


def test_reconstruct_refuses_no_shares_and_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="no shares"):
        reconstruct([])
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruct([np.zeros(3, dtype=np.uint64), np.zeros(4, dtype=np.uint64)])


# -- signed values -------------------------------------------------------------------------------


@settings(deadline=None, max_examples=50)
@given(v=signed_vectors, n=party_counts)
def test_signed_values_survive_sharing(v: np.ndarray, n: int) -> None:
    w = from_signed(v)
    assert w.dtype == np.uint64
    assert [int(a) % MOD for a in v] == [int(b) for b in w]  # two's complement
    assert np.array_equal(to_signed(reconstruct(share(w, n, fresh_rng()))), v)


@settings(deadline=None, max_examples=40)
@given(w=word_vectors)
def test_to_signed_inverts_from_signed(w: np.ndarray) -> None:
    v = to_signed(w)
    assert v.dtype == np.int64
    assert [int(a) for a in v] == [int(b) - MOD if int(b) >= MOD // 2 else int(b) for b in w]
    assert np.array_equal(from_signed(v), w)


def test_signed_conversions_accept_non_contiguous_input() -> None:
    v = np.arange(-10, 10, dtype=np.int64)[::3]
    assert np.array_equal(to_signed(from_signed(v)), v)


@settings(deadline=None, max_examples=40)
@given(a=signed_vectors, n=party_counts)
def test_sum_of_signed_values_is_exact_while_it_fits(a: np.ndarray, n: int) -> None:
    # Halve the values so the sum of two always fits in int64.
    a = a // 2
    b = a[::-1].copy()
    sa, sb = share(from_signed(a), n, fresh_rng()), share(from_signed(b), n, fresh_rng())
    total = to_signed(reconstruct([x + y for x, y in zip(sa, sb)]))
    assert [int(t) for t in total] == [int(x) + int(y) for x, y in zip(a, b)]


# -- wire format ---------------------------------------------------------------------------------


@settings(deadline=None, max_examples=40)
@given(x=hnp.arrays(np.uint64, st.integers(0, 64)))
def test_words_bytes_round_trip(x: np.ndarray) -> None:
    data = words_to_bytes(x)
    assert data == b"".join(int(v).to_bytes(8, "little") for v in x)  # fixed-width little-endian
    for buffer in (data, bytearray(data), memoryview(data)):
        back = words_from_bytes(buffer)
        assert back.dtype == np.uint64 and np.array_equal(back, x)
        assert np.array_equal(words_from_bytes(buffer, expected_words=x.size), x)


def test_words_from_bytes_over_bytes_is_read_only() -> None:
    out = words_from_bytes(bytes(16))
    assert not out.flags.writeable


@settings(deadline=None, max_examples=50)
@given(data=st.binary(max_size=200).filter(lambda b: len(b) % 8 != 0))
def test_words_from_bytes_refuses_partial_words(data: bytes) -> None:
    with pytest.raises(ValueError, match=f"^{len(data)} bytes is not a whole number"):
        words_from_bytes(data)
    with pytest.raises(ValueError):
        words_from_bytes(data, expected_words=len(data) // 8)


@settings(deadline=None, max_examples=50)
@given(words=st.integers(0, 40), expected=st.integers(0, 40))
def test_words_from_bytes_refuses_an_unexpected_count(words: int, expected: int) -> None:
    data = bytes(8 * words)
    if words == expected:
        assert words_from_bytes(data, expected_words=expected).size == expected
    else:
        with pytest.raises(ValueError, match=f"expected {expected} words .* got {8 * words} bytes"):
            words_from_bytes(data, expected_words=expected)


# -- reduction mod 2^ell -------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(x=word_vectors, n=party_counts, ell=st.integers(1, RING_BITS))
def test_reduce_bits_gives_a_sharing_mod_2_ell(x: np.ndarray, n: int, ell: int) -> None:
    mod = 1 << ell
    reduced = [reduce_bits(s, ell) for s in share(x, n, fresh_rng())]
    for r in reduced:
        assert r.dtype == np.uint64
        assert all(int(v) < mod for v in r)
    for k in range(x.size):
        assert sum(int(r[k]) for r in reduced) % mod == int(x[k]) % mod
    assert np.array_equal(reduce_bits(reconstruct(reduced), ell), reduce_bits(x, ell))


@settings(deadline=None, max_examples=40)
@given(data=st.data(), ell=st.integers(2, RING_BITS), n=party_counts)
def test_small_signed_values_survive_reduction(data: st.DataObject, ell: int, n: int) -> None:
    # PROTOCOLS.md §5: a value in [-2^(ell-1), 2^(ell-1)) is recovered from its sharing mod 2^ell
    # by reading the ell-bit result in two's complement.
    half = 1 << (ell - 1)
    values = data.draw(st.lists(st.integers(-half, half - 1), min_size=1, max_size=20))
    x = from_signed(np.array(values, dtype=np.int64))
    reduced = [reduce_bits(s, ell) for s in share(x, n, fresh_rng())]
    opened = [sum(int(r[k]) for r in reduced) % (1 << ell) for k in range(len(values))]
    assert [o - (1 << ell) if o >= half else o for o in opened] == values


def test_reduce_bits_returns_a_new_array() -> None:
    x = np.array([MOD - 1, 5], dtype=np.uint64)
    for ell in (1, 63, 64):
        out = reduce_bits(x, ell)
        out[:] = 0
        assert int(x[0]) == MOD - 1 and int(x[1]) == 5


@pytest.mark.parametrize("ell", [0, -1, 65, 128])
def test_reduce_bits_refuses_ell_out_of_range(ell: int) -> None:
    with pytest.raises(ValueError, match=str(ell)):
        reduce_bits(np.zeros(2, dtype=np.uint64), ell)
