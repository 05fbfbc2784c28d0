"""Tests of mpc.prg: the HKDF-keyed AES-128-CTR PRG and the CSPRNG sources (PROTOCOLS.md §1)."""

from __future__ import annotations

import math
import secrets
import statistics

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpc.prg import SEED_BYTES, AesCtrRng, KeyDeriver, SystemRng, derive_key, keystream_word, keystream_words, prg_words, \
    random_words

# Statistical tests below fail a correct implementation with probability below this (PROTOCOLS.md §6).
FALSE_ALARM = 1e-6
CHUNK_WORDS = 1 << 17  # keystream_words encrypts in 1 MiB chunks


def chi_square_critical(df: int, p: float) -> float:
    """The upper-p critical value of chi-square with df degrees of freedom (Wilson-Hilferty).

    For df = 255, p = 1e-6 this gives 377.25; the exact value is 377.08 (tail 9.7e-7 at 377.25),
    so the approximation errs on the safe side. (384.5, sometimes quoted, is the p = 2.8e-7 point.)
    """
    z = statistics.NormalDist().inv_cdf(1.0 - p)
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def chi_square_uniform(counts: np.ndarray) -> float:
    """Pearson's statistic of observed counts against the uniform distribution over their bins."""
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2).sum() / expected)


def byte_chi_square(words: np.ndarray) -> float:
    """Chi-square of the 256 byte values in the little-endian bytes of `words`."""
    return chi_square_uniform(np.bincount(np.ascontiguousarray(words).view(np.uint8), minlength=256))


def reference_keystream(key: bytes, n_bytes: int) -> bytes:
    """AES-128-CTR with a zero initial counter block, straight from pyca/cryptography."""
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(n_bytes))


def seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


# -- the statistics helper itself ----------------------------------------------------------------


def _upper_tail(df: int, x: float) -> float:
    """P(chi2_df > x): the regularised upper incomplete gamma Q(df/2, x/2) by its continued fraction."""
    a, y = df / 2.0, x / 2.0
    b, c, d = y + 1.0 - a, 1e300, 1.0 / (y + 1.0 - a)
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = 1.0 / (an * d + b)
        c = b + an / c
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(-y + a * math.log(y) - math.lgamma(a)) * h


def test_chi_square_critical_value_is_right() -> None:
    crit = chi_square_critical(255, FALSE_ALARM)
    assert 377.0 < crit < 377.5
    assert 0.9e-6 < _upper_tail(255, crit) <= FALSE_ALARM
    # Known table values check the tail function: df = 255 at p = 0.05 and 0.01.
    assert _upper_tail(255, 293.2478) == pytest.approx(0.05, rel=1e-4)
    assert _upper_tail(255, 310.4574) == pytest.approx(0.01, rel=1e-4)


def test_chi_square_detects_a_biased_source() -> None:
    biased = (prg_words(seed(), 1 << 12, b"test") & np.uint64(0xFEFE_FEFE_FEFE_FEFE))  # every byte even
    assert byte_chi_square(biased) > 10 * chi_square_critical(255, FALSE_ALARM)


# -- prg_words -----------------------------------------------------------------------------------


def test_prg_words_is_deterministic_per_seed_and_purpose() -> None:
    s = seed()
    assert np.array_equal(prg_words(s, 100, b"sum/mask/a"), prg_words(s, 100, b"sum/mask/a"))


def test_distinct_purposes_and_seeds_give_distinct_streams() -> None:
    s, t = seed(), seed()
    streams = [prg_words(s, 64, b"sum/mask/a"), prg_words(s, 64, b"sum/mask/b"), prg_words(s, 64, b""),
               prg_words(t, 64, b"sum/mask/a")]
    for i in range(len(streams)):
        for j in range(i + 1, len(streams)):
            assert not np.any(streams[i] == streams[j]), (i, j)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, CHUNK_WORDS, CHUNK_WORDS + 1])
def test_prg_words_has_exactly_n_writable_words(n: int) -> None:
    out = prg_words(seed(), n, b"p")
    assert out.shape == (n,) and out.dtype == np.uint64
    assert out.flags.writeable
    out += np.uint64(1)  # the engines mask in place


def test_prg_words_is_prefix_consistent() -> None:
    s = seed()
    assert np.array_equal(prg_words(s, 10, b"p"), prg_words(s, 1000, b"p")[:10])
    # Across the 1 MiB chunk boundary of keystream_words too.
    long = prg_words(s, 2 * CHUNK_WORDS + 3, b"p")
    assert np.array_equal(prg_words(s, CHUNK_WORDS + 1, b"p"), long[:CHUNK_WORDS + 1])
    assert np.array_equal(prg_words(s, CHUNK_WORDS, b"p"), long[:CHUNK_WORDS])


def test_prg_words_is_aes_ctr_under_the_hkdf_key() -> None:
    s = seed()
    key = HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=b"mpc/v1 prg sum/mask/x").derive(s)
    assert derive_key(s, b"sum/mask/x") == key
    n = CHUNK_WORDS + 5
    expected = np.frombuffer(reference_keystream(key, 8 * n), dtype="<u8")
    assert np.array_equal(prg_words(s, n, b"sum/mask/x"), expected)
    assert np.array_equal(keystream_words(key, n), expected)


@pytest.mark.parametrize("purpose", [b"", b"p", b"pair-key", b"session/" + b"ab" * 16 + b"/" + bytes(range(32)),
                                     bytes(range(256)) * 2])
def test_derive_key_is_hkdf_sha256_for_any_purpose(purpose: bytes) -> None:
    """derive_key writes RFC 5869 out (no salt, one block): the same key as cryptography's HKDF."""
    for _ in range(20):
        s = seed()
        assert derive_key(s, purpose) == HKDF(algorithm=hashes.SHA256(), length=16, salt=None,
                                              info=b"mpc/v1 prg " + purpose).derive(s)


@pytest.mark.parametrize("purpose", [b"", b"p", b"mask/" + b"ab" * 16 + b"/" + bytes(range(32)), bytes(range(256)) * 2])
def test_a_key_deriver_gives_derive_key_for_its_seed_and_any_purpose_each_time(purpose: bytes) -> None:
    """KeyDeriver (extract once, then one HMAC per key) is RFC 5869 HKDF as derive_key is, for every purpose
    and however often it is asked (its kept HMAC state is copied, never fed)."""
    for _ in range(20):
        s = seed()
        deriver = KeyDeriver(s)
        assert deriver.derive(purpose) == derive_key(s, purpose) == deriver.derive(purpose)
        assert deriver.derive(purpose + b"!") == derive_key(s, purpose + b"!")
    assert "redacted" in repr(deriver) and s.hex() not in repr(deriver)
    with pytest.raises(ValueError, match="16 bytes"):
        KeyDeriver(bytes(15))


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 66, 200])
def test_a_short_keystream_is_the_aes_ctr_keystream_too(n: int) -> None:
    """A few words take another code path (update, not update_into): the same words."""
    key = seed()
    expected = np.frombuffer(reference_keystream(key, 8 * n), dtype="<u8")
    out = keystream_words(key, n)
    assert np.array_equal(out, expected) and out.flags.writeable and out.dtype == np.uint64


@pytest.mark.parametrize("length", [0, 1, 15, 17, 32])
def test_seeds_must_be_16_bytes(length: int) -> None:
    with pytest.raises(ValueError, match=f"16 bytes, got {length}"):
        prg_words(bytes(length), 4, b"p")
    with pytest.raises(ValueError, match=f"16 bytes, got {length}"):
        derive_key(bytes(length), b"p")
    with pytest.raises(ValueError, match=f"16 bytes, got {length}"):
        AesCtrRng(bytes(length))


# -- CSPRNG sources ------------------------------------------------------------------------------


def test_system_rng_gives_fresh_bytes_of_the_requested_length() -> None:
    rng = SystemRng()
    a, b = rng.random_bytes(32), rng.random_bytes(32)
    assert len(a) == len(b) == 32 and a != b
    assert rng.random_bytes(0) == b""


def test_random_words_from_system_rng_differ_across_calls() -> None:
    rng = SystemRng()
    a, b = random_words(rng, 64), random_words(rng, 64)
    assert a.shape == b.shape == (64,) and a.dtype == np.uint64
    assert not np.any(a == b)
    assert random_words(rng, 0).shape == (0,)


def test_aes_ctr_rng_is_deterministic_and_a_continuous_stream() -> None:
    key = seed()
    one, two = AesCtrRng(key), AesCtrRng(key)
    stream = one.random_bytes(10) + one.random_bytes(0) + one.random_bytes(22) + one.random_bytes(100)
    assert stream == two.random_bytes(132)
    assert stream == reference_keystream(key, 132)
    assert AesCtrRng(seed()).random_bytes(32) != AesCtrRng(key).random_bytes(32)


def test_random_words_from_aes_ctr_rng_are_reproducible_and_fresh_per_call() -> None:
    key = seed()
    one, two = AesCtrRng(key), AesCtrRng(key)
    first, second = random_words(one, 50), random_words(one, 50)
    assert np.array_equal(first, random_words(two, 50))
    assert np.array_equal(second, random_words(two, 50))
    assert not np.any(first == second)


# -- uniformity ----------------------------------------------------------------------------------


def test_prg_output_bytes_are_uniform() -> None:
    words = prg_words(seed(), 1 << 17, b"uniformity")  # 2^20 bytes
    assert byte_chi_square(words) < chi_square_critical(255, FALSE_ALARM)


def test_system_rng_random_words_bytes_are_uniform() -> None:
    words = random_words(SystemRng(), 1 << 17)  # 2^20 bytes
    assert byte_chi_square(words) < chi_square_critical(255, FALSE_ALARM)


def test_keystream_word_is_the_first_word_of_the_aes_ctr_keystream() -> None:
    """A scalar's mask (keystream_word) is word 0 of keystream_words under the same key, and both are
    AES-128-CTR from a zero counter block, as computed here with `cryptography` directly."""
    for _ in range(50):
        key = seed()
        direct = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(8))
        assert keystream_word(key) == int.from_bytes(direct, "little") == int(keystream_words(key, 3)[0])
