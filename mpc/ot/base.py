"""Base oblivious transfer: Chou & Orlandi, "The Simplest Protocol for Oblivious Transfer",
LATINCRYPT 2015 (Fig. 1), in the prime-order group of Ed25519 (RFC 8032 §5.1), with libsodium's
point arithmetic through PyNaCl (PROTOCOLS.md §7, "Base OT on Ed25519").

G is the Ed25519 base point, L = 2^252 + 27742317777372353535851937790883648493 its prime order.
One batch is `count` (default 128) OTs that share the sender's A:

    sender    a <- Z_L, a != 0,  A = aG                                  --- A --->
    receiver  b_i <- Z_L, b_i != 0,  B_i = b_i G (c_i = 0) or A + b_i G (c_i = 1)   <--- B_0..B_{count-1} ---
    receiver  k_{c_i} = H(i, A, B_i, b_i A)
    sender    k0_i = H(i, A, B_i, a B_i),  k1_i = H(i, A, B_i, a (B_i - A)) = H(.., a B_i - a A)

with H = SHA-256(domain tag, context, i, A, B, shared)[:16] and every point in its 32-byte
encoding. Scalars are full strength: uniform in Z_L (64 CSPRNG bytes reduced mod L, bias below
2^-250), never clamped. Every received point is validated with libsodium's
`crypto_core_ed25519_is_valid_point`: a canonical encoding of a point on the curve, in the
prime-order subgroup, and not of small order (so neither the identity nor a torsion point).

Sans-I/O: `ChouOrlandiSender.first_message()` -> A; `ChouOrlandiReceiver.respond(A)` -> all
B_i (then `.keys()`); `ChouOrlandiSender.finish(Bs)` -> [(k0_i, k1_i)]. The receiver's keys and
the sender's pairs are secrets; nothing here logs or prints them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from nacl import bindings as sodium

from mpc.errors import LocalProtocolError, RemoteProtocolError
from mpc.prg import Rng

ELEMENT_BYTES = 32          # an Ed25519 point, encoded
SCALAR_BYTES = 32
KEY_BYTES = 16
BASE_OTS = 128
_TAG = b"mpc/v1 ot/base chou-orlandi ed25519"


def random_scalar(rng: Rng) -> bytes:
    """A secret scalar, uniform in Z_L without 0: 64 bytes from the CSPRNG reduced mod L.

    Returns: 32 bytes, little-endian, below L.
    """
    while True:   # 0 comes with probability 2^-252
        scalar: bytes = sodium.crypto_core_ed25519_scalar_reduce(rng.random_bytes(64))
        if any(scalar):
            return scalar


def decode_point(data: bytes | memoryview, what: str) -> bytes:
    """Check one received point: 32 bytes, a valid point of the prime-order subgroup, not of small order.

    Returns: the point's bytes.
    Raises: RemoteProtocolError naming `what` otherwise.
    """
    point = bytes(data)
    if len(point) != ELEMENT_BYTES:
        raise RemoteProtocolError(f"{what}: expected {ELEMENT_BYTES} bytes, got {len(point)}")
    if not sodium.crypto_core_ed25519_is_valid_point(point):
        raise RemoteProtocolError(f"{what}: not a point of Ed25519's prime-order subgroup (or of small order)")
    return point


def _key(context: bytes, index: int, a_bytes: bytes, b_bytes: bytes, shared: bytes) -> bytes:
    h = hashlib.sha256(_TAG)
    h.update(struct.pack(">H", len(context)) + context + struct.pack(">I", index))
    h.update(a_bytes + b_bytes + shared)
    return h.digest()[:KEY_BYTES]


def _check_context(context: bytes) -> None:
    if len(context) > 0xFFFF:
        raise LocalProtocolError(f"base OT context is {len(context)} bytes, at most 65535 allowed")


class ChouOrlandiSender:
    """The sender of one batch of Chou-Orlandi OTs; it ends with `count` random key pairs."""

    def __init__(self, rng: Rng, count: int = BASE_OTS, context: bytes = b"") -> None:
        if count < 1:
            raise LocalProtocolError(f"a base OT batch needs at least one OT, got {count}")
        _check_context(context)
        self.count = count
        self._context = context
        self._a: bytes | None = random_scalar(rng)
        self._a_bytes: bytes = sodium.crypto_scalarmult_ed25519_base_noclamp(self._a)
        self._finished = False

    def first_message(self) -> bytes:
        """The sender's message A = aG.

        Returns: 32 bytes.
        """
        return self._a_bytes

    def finish(self, payload: bytes) -> list[tuple[bytes, bytes]]:
        """Consume the receiver's B_0..B_{count-1} and derive both keys of every OT.

        Returns: [(k0_i, k1_i)] for i < count, 16-byte keys.
        Raises: RemoteProtocolError for a wrong length or an invalid point; LocalProtocolError if
        called twice.
        """
        if self._finished or self._a is None:
            raise LocalProtocolError("base OT sender already finished")
        if len(payload) != self.count * ELEMENT_BYTES:
            raise RemoteProtocolError(f"base OT: expected {self.count} points "
                                      f"({self.count * ELEMENT_BYTES} bytes), got {len(payload)} bytes")
        view = memoryview(payload)
        bs = [decode_point(view[i * ELEMENT_BYTES:(i + 1) * ELEMENT_BYTES], f"base OT point B_{i}")
              for i in range(self.count)]
        self._finished = True
        a, self._a = self._a, None
        a_a = sodium.crypto_scalarmult_ed25519_noclamp(a, self._a_bytes)   # aA, once: a(B - A) = aB - aA
        pairs = []
        for i, b in enumerate(bs):
            shared = sodium.crypto_scalarmult_ed25519_noclamp(a, b)
            pairs.append((_key(self._context, i, self._a_bytes, b, shared),
                          _key(self._context, i, self._a_bytes, b, sodium.crypto_core_ed25519_sub(shared, a_a))))
        return pairs


class ChouOrlandiReceiver:
    """The receiver of one batch of Chou-Orlandi OTs with choice bits c_i; it ends with k_{c_i}."""

    def __init__(self, choices: Sequence[int], rng: Rng, context: bytes = b"") -> None:
        if not choices or any(c not in (0, 1) for c in choices):
            raise LocalProtocolError("base OT choices must be a non-empty sequence of 0/1 bits")
        _check_context(context)
        self.count = len(choices)
        self._choices = tuple(int(c) for c in choices)
        self._context = context
        self._scalars: list[bytes] | None = [random_scalar(rng) for _ in choices]
        self._keys: list[bytes] | None = None

    def respond(self, payload: bytes) -> bytes:
        """Consume the sender's A and answer with B_0..B_{count-1}; the keys are then ready.

        Returns: count * 32 bytes.
        Raises: RemoteProtocolError for a wrong length or an invalid point; LocalProtocolError if
        called twice.
        """
        if self._scalars is None:
            raise LocalProtocolError("base OT receiver already responded")
        big_a = decode_point(payload, "base OT point A")
        scalars, self._scalars = self._scalars, None
        out, keys = [], []
        for i, (c, b) in enumerate(zip(self._choices, scalars)):
            b_g = sodium.crypto_scalarmult_ed25519_base_noclamp(b)
            b_bytes = sodium.crypto_core_ed25519_add(big_a, b_g) if c else b_g
            out.append(b_bytes)
            keys.append(_key(self._context, i, big_a, b_bytes, sodium.crypto_scalarmult_ed25519_noclamp(b, big_a)))
        self._keys = keys
        return b"".join(out)

    def keys(self) -> list[bytes]:
        """The chosen keys k_{c_i}.

        Returns: count 16-byte keys.
        Raises: LocalProtocolError before `respond`.
        """
        if self._keys is None:
            raise LocalProtocolError("base OT receiver has not responded yet")
        return list(self._keys)
