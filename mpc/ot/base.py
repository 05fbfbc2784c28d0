"""Base oblivious transfer: Chou & Orlandi, "The Simplest Protocol for Oblivious Transfer",
LATINCRYPT 2015 (Fig. 1), in the prime-order subgroup of the RFC 3526 2048-bit MODP group
(group 14; PROTOCOLS.md §4 "Base OT").

p is a safe prime, q = (p - 1) / 2 is prime, and g = 2 generates the subgroup of order q (the
quadratic residues) because p ≡ 7 (mod 8). One batch is `count` (default 128) OTs that share
the sender's A:

    sender    a <- Z_q,  A = g^a                                     --- A --->
    receiver  b_i <- Z_q,  B_i = g^b_i (c_i = 0) or A * g^b_i (c_i = 1) <--- B_0..B_{count-1} ---
    receiver  k_{c_i} = H(i, A, B_i, A^b_i)
    sender    k0_i = H(i, A, B_i, B_i^a),  k1_i = H(i, A, B_i, (B_i / A)^a) = H(.., B_i^a * (A^a)^-1)

with H = SHA-256(domain tag, context, i, A, B, shared)[:16] and every element written as 256
big-endian bytes. Received elements must lie in the order-q subgroup: 1 < x < p and x^q = 1
(mod p). x^q mod p is the Legendre symbol of x (Euler's criterion), so the check is computed
as a Jacobi symbol (Cohen, "A Course in Computational Algebraic Number Theory", Alg. 1.4.10),
which is about 60 times cheaper than the 2047-bit exponentiation and gives the same answer.

Exponents are uniform in [1, 2^exponent_bits) with exponent_bits = 256 by default: the
short-exponent choice RFC 3526 §8 gives for this group (220-320 bits) and NIST SP 800-56A
Rev. 3 §5.6.1.1.4 allows for safe-prime groups (at least twice the 112-bit strength); the
receiver's privacy then rests on g^b with short b looking uniform (Koshiba & Kurosawa, "Short
Exponent Diffie-Hellman Problems", PKC 2004) instead of being perfect. Pass
exponent_bits = 2047 for exponents uniform in all of Z_q (about 8 times slower).

Sans-I/O: `ChouOrlandiSender.first_message()` -> A; `ChouOrlandiReceiver.respond(A)` -> all
B_i (then `.keys()`); `ChouOrlandiSender.finish(Bs)` -> [(k0_i, k1_i)]. The receiver's keys and
the sender's pairs are secrets; nothing here logs or prints them.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence

from mpc.errors import LocalProtocolError, RemoteProtocolError
from mpc.prg import Rng

# RFC 3526 §3, 2048-bit MODP group: p = 2^2048 - 2^1984 - 1 + 2^64 * (floor(2^1918 pi) + 124476).
P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
Q = (P - 1) // 2
G = 2
ELEMENT_BYTES = 256
KEY_BYTES = 16
BASE_OTS = 128
DEFAULT_EXPONENT_BITS = 256
_TAG = b"mpc/v1 ot/base chou-orlandi modp2048"
_WINDOW = 6  # fixed-base comb: ceil(bits/6) multiplications per power, 63 table entries a row


def legendre_is_one(x: int) -> bool:
    """Whether (x / p) = 1, i.e. x^q = 1 mod p (Euler's criterion), via the binary Jacobi algorithm.

    Returns: True exactly when x mod p is a nonzero quadratic residue mod p.
    """
    a, n, result = x % P, P, 1
    while a:
        zeros = (a & -a).bit_length() - 1
        if zeros:
            a >>= zeros
            if zeros & 1 and n & 7 in (3, 5):
                result = -result
        if a & n & 3 == 3:  # quadratic reciprocity: both are 3 mod 4
            result = -result
        a, n = n % a, a
    return n == 1 and result == 1


def decode_element(data: bytes | memoryview, what: str) -> int:
    """Parse one 256-byte big-endian group element and check it lies in the order-q subgroup.

    Returns: the element as an int in (1, p).
    Raises: RemoteProtocolError naming `what` for a wrong length, a value outside (1, p), or a
    value outside the subgroup (0, 1, p - 1 of order 2, non-residues).
    """
    if len(data) != ELEMENT_BYTES:
        raise RemoteProtocolError(f"{what}: expected {ELEMENT_BYTES} bytes, got {len(data)}")
    x = int.from_bytes(data, "big")
    if not 1 < x < P or not legendre_is_one(x):
        raise RemoteProtocolError(f"{what}: not an element of the order-q subgroup of RFC 3526 group 14")
    return x


def encode_element(x: int) -> bytes:
    """Write a group element as 256 big-endian bytes.

    Returns: 256 bytes.
    """
    return x.to_bytes(ELEMENT_BYTES, "big")


def random_exponent(rng: Rng, bits: int = DEFAULT_EXPONENT_BITS) -> int:
    """A secret exponent: uniform in [1, 2^bits) for bits < 2047, uniform in [1, q) for bits = 2047.

    Returns: the exponent.
    Raises: LocalProtocolError if bits is outside 256..2047.
    """
    if not DEFAULT_EXPONENT_BITS <= bits <= Q.bit_length():
        raise LocalProtocolError(f"exponent size must be 256..{Q.bit_length()} bits, got {bits}")
    while True:  # rejection sampling; a retry happens with probability < 2^-255
        e = int.from_bytes(rng.random_bytes((bits + 7) // 8), "big") & ((1 << bits) - 1)
        if 0 < e < Q:
            return e


class _FixedBase:
    """Powers of one base by many exponents: a fixed-window comb (Menezes et al., Handbook of
    Applied Cryptography, Alg. 14.109), row k holding base^(d * 2^(6k)) for d = 1..63."""

    __slots__ = ("_rows",)

    def __init__(self, base: int, bits: int) -> None:
        rows: list[list[int]] = []
        step = base % P
        for _ in range(-(-bits // _WINDOW)):
            row = [1, step]
            for _ in range((1 << _WINDOW) - 2):
                row.append(row[-1] * step % P)
            rows.append(row)
            step = row[-1] * step % P
        self._rows = rows

    def power(self, e: int) -> int:
        """base^e mod p for 0 <= e < 2^bits.

        Returns: the power.
        """
        acc, mask = 1, (1 << _WINDOW) - 1
        for row in self._rows:
            if not e:
                break
            digit = e & mask
            if digit:
                acc = acc * row[digit] % P
            e >>= _WINDOW
        return acc


@functools.lru_cache(maxsize=2)
def _generator_table(bits: int) -> _FixedBase:
    return _FixedBase(G, bits)


def _powers(base: int, exponents: Sequence[int], bits: int) -> list[int]:
    """base^e mod p for every e: a comb table when there are enough exponents to pay for it."""
    if base == G and bits == DEFAULT_EXPONENT_BITS:
        table = _generator_table(bits)  # built once per process, 43 multiplications a power
    elif len(exponents) * bits >= 16 * DEFAULT_EXPONENT_BITS:
        table = _FixedBase(base, bits)
    else:
        return [pow(base, e, P) for e in exponents]
    return [table.power(e) for e in exponents]


def _key(context: bytes, index: int, a_bytes: bytes, b_bytes: bytes, shared: int) -> bytes:
    h = hashlib.sha256(_TAG)
    h.update(struct.pack(">H", len(context)) + context + struct.pack(">I", index))
    h.update(a_bytes + b_bytes + encode_element(shared))
    return h.digest()[:KEY_BYTES]


def _check_context(context: bytes) -> None:
    if len(context) > 0xFFFF:
        raise LocalProtocolError(f"base OT context is {len(context)} bytes, at most 65535 allowed")


class ChouOrlandiSender:
    """The sender of one batch of Chou-Orlandi OTs; it ends with `count` random key pairs."""

    def __init__(self, rng: Rng, count: int = BASE_OTS, context: bytes = b"",
                 exponent_bits: int = DEFAULT_EXPONENT_BITS) -> None:
        if count < 1:
            raise LocalProtocolError(f"a base OT batch needs at least one OT, got {count}")
        _check_context(context)
        self.count = count
        self._context = context
        self._a: int | None = random_exponent(rng, exponent_bits)
        self._a_bytes = encode_element(_powers(G, [self._a], exponent_bits)[0])
        self._finished = False

    def first_message(self) -> bytes:
        """The sender's message A = g^a.

        Returns: 256 bytes.
        """
        return self._a_bytes

    def finish(self, payload: bytes) -> list[tuple[bytes, bytes]]:
        """Consume the receiver's B_0..B_{count-1} and derive both keys of every OT.

        Returns: [(k0_i, k1_i)] for i < count, 16-byte keys.
        Raises: RemoteProtocolError for a wrong length or an element outside the subgroup;
        LocalProtocolError if called twice.
        """
        if self._finished or self._a is None:
            raise LocalProtocolError("base OT sender already finished")
        if len(payload) != self.count * ELEMENT_BYTES:
            raise RemoteProtocolError(f"base OT: expected {self.count} elements "
                                      f"({self.count * ELEMENT_BYTES} bytes), got {len(payload)} bytes")
        self._finished = True
        a, self._a = self._a, None
        view = memoryview(payload)
        bs = [decode_element(view[i * ELEMENT_BYTES:(i + 1) * ELEMENT_BYTES], f"base OT element B_{i}")
              for i in range(self.count)]
        big_a = int.from_bytes(self._a_bytes, "big")
        a_to_minus_a = pow(pow(big_a, a, P), -1, P)  # (B / A)^a = B^a * (A^a)^-1: one modexp per OT
        pairs = []
        for i, b in enumerate(bs):
            shared = pow(b, a, P)
            b_bytes = bytes(view[i * ELEMENT_BYTES:(i + 1) * ELEMENT_BYTES])
            pairs.append((_key(self._context, i, self._a_bytes, b_bytes, shared),
                          _key(self._context, i, self._a_bytes, b_bytes, shared * a_to_minus_a % P)))
        return pairs


class ChouOrlandiReceiver:
    """The receiver of one batch of Chou-Orlandi OTs with choice bits c_i; it ends with k_{c_i}."""

    def __init__(self, choices: Sequence[int], rng: Rng, context: bytes = b"",
                 exponent_bits: int = DEFAULT_EXPONENT_BITS) -> None:
        if not choices or any(c not in (0, 1) for c in choices):
            raise LocalProtocolError("base OT choices must be a non-empty sequence of 0/1 bits")
        _check_context(context)
        self.count = len(choices)
        self._choices = tuple(int(c) for c in choices)
        self._context = context
        self._bits = exponent_bits
        self._exponents: list[int] | None = [random_exponent(rng, exponent_bits) for _ in choices]
        self._keys: list[bytes] | None = None

    def respond(self, payload: bytes) -> bytes:
        """Consume the sender's A and answer with B_0..B_{count-1}; the keys are then ready.

        Returns: count * 256 bytes.
        Raises: RemoteProtocolError for a wrong length or an A outside the subgroup;
        LocalProtocolError if called twice.
        """
        if self._exponents is None:
            raise LocalProtocolError("base OT receiver already responded")
        big_a = decode_element(payload, "base OT element A")
        exponents, self._exponents = self._exponents, None
        a_bytes = bytes(payload)
        out, keys = [], []
        g_b = _powers(G, exponents, self._bits)
        a_b = _powers(big_a, exponents, self._bits)  # A^b_i for 128 exponents: one comb table pays off
        for i, c in enumerate(self._choices):
            b_bytes = encode_element(g_b[i] * big_a % P if c else g_b[i])
            out.append(b_bytes)
            keys.append(_key(self._context, i, a_bytes, b_bytes, a_b[i]))
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
