"""Cryptographic randomness: the CSPRNG interface and the AES-128-CTR PRG (DESIGN.md §3).

Every random value in mpc comes from here: `os.urandom` directly, or an AES-CTR keystream
under a key that itself came from `os.urandom`. Never `random`, never numpy's generators.
Seeds are expanded through HKDF with a purpose label (PROTOCOLS.md §1: "derive distinct
streams for distinct purposes, never reuse a keystream").
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpc.ring import WORD, Words

SEED_BYTES = 16
_ZERO_BLOCK = bytes(1 << 20)
_CTR_FROM_ZERO = modes.CTR(bytes(16))   # the keystream's first counter block (each key makes one keystream)
_SHORT_WORDS = 64
_INFO = b"mpc/v1 prg "   # every derived key's HKDF info starts so; its purpose follows


class Rng(Protocol):
    """Source of cryptographic randomness, passed into the pure protocol code."""

    def random_bytes(self, n: int) -> bytes:
        """Return n bytes from a CSPRNG."""
        ...


class SystemRng:
    """The operating system's CSPRNG (`os.urandom`)."""

    def random_bytes(self, n: int) -> bytes:
        """Return n bytes from os.urandom."""
        return os.urandom(n)


class AesCtrRng:
    """A deterministic CSPRNG: AES-128-CTR keystream under a given key.

    Used to make simulations reproducible; as secure as its key is secret and fresh.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != SEED_BYTES:
            raise ValueError(f"AesCtrRng key must be {SEED_BYTES} bytes, got {len(key)}")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def random_bytes(self, n: int) -> bytes:
        """Return the next n keystream bytes."""
        return self._enc.update(bytes(n))


def derive_key(seed: bytes, purpose: bytes) -> bytes:
    """Derive a 128-bit AES key for one purpose from a seed with HKDF-SHA256 (RFC 5869).

    Returns: 16 bytes.
    Raises: ValueError if the seed is not 16 bytes.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=_INFO + purpose).derive(seed)


class KeyDeriver:
    """derive_key for one seed and many purposes: HKDF's extract step (RFC 5869 §2.2, no salt: HashLen
    zero bytes) made once, so each key costs the one HMAC of its expand step (§2.3; 16 bytes: one block).

    Raises: ValueError if the seed is not 16 bytes.
    """

    __slots__ = ("_expand",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self._expand = hmac.new(hmac.digest(bytes(32), seed, "sha256"), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "KeyDeriver(<key redacted>)"

    def derive(self, purpose: bytes) -> bytes:
        """Returns: derive_key(seed, purpose), 16 bytes."""
        expand = self._expand.copy()
        expand.update(_INFO + purpose + b"\x01")
        return expand.digest()[:16]


def keystream_words(key: bytes, n: int) -> Words:
    """AES-128-CTR keystream under key, read as n little-endian uint64 words.

    Returns: a writable uint64 array of length n.
    """
    enc = Cipher(algorithms.AES(key), _CTR_FROM_ZERO).encryptor()
    if n <= _SHORT_WORDS:   # a scalar's masks: no buffer to set up
        return np.frombuffer(bytearray(enc.update(_ZERO_BLOCK[:8 * n])), dtype=WORD).astype(np.uint64, copy=False)
    out = np.empty(n + 2, dtype=WORD)  # update_into wants block_size - 1 spare bytes
    view = out.data.cast("B")
    total = 8 * n
    done = 0
    while done < total:
        step = min(len(_ZERO_BLOCK), total - done)
        done += enc.update_into(_ZERO_BLOCK[:step] if step < len(_ZERO_BLOCK) else _ZERO_BLOCK,
                                view[done:done + step + 15])
    return out[:n].astype(np.uint64, copy=False)


def keystream_word(key: bytes) -> int:
    """keystream_words(key, 1)[0] as a Python int (a scalar's mask: no array made for one word)."""
    return int.from_bytes(Cipher(algorithms.AES(key), _CTR_FROM_ZERO).encryptor().update(_ZERO_BLOCK[:8]), "little")


def prg_words(seed: bytes, n: int, purpose: bytes) -> Words:
    """PRG(seed) for one purpose: n uniform uint64 words (PROTOCOLS.md §1).

    Returns: a writable uint64 array of length n.
    Raises: ValueError if the seed is not 16 bytes.
    """
    return keystream_words(derive_key(seed, purpose), n)


def random_words(rng: Rng, n: int) -> Words:
    """n uniform uint64 words: AES-CTR under a fresh 128-bit key drawn from rng.

    Returns: a writable uint64 array of length n.
    """
    return keystream_words(rng.random_bytes(SEED_BYTES), n)
