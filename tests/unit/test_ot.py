"""Unit tests of the OT layer: Chou-Orlandi base OT (mpc/ot/base.py) and IKNP extension
(mpc/ot/extension.py), against PROTOCOLS.md §4. Statistical checks are set so that a correct
implementation fails with probability below 10^-6 per test (PROTOCOLS.md §6).
"""

from __future__ import annotations

import math
import os
import secrets
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.ot import base
from mpc.ot.base import (ELEMENT_BYTES, G, P, Q, ChouOrlandiReceiver, ChouOrlandiSender, decode_element,
                         encode_element, legendre_is_one)
from mpc.ot.extension import KAPPA, IknpReceiver, IknpSender, tccr_hash, transpose
from mpc.prg import AesCtrRng, SystemRng
from mpc.ring import Words

FALSE_ALARM = 1e-6
T = TypeVar("T")


# --- helpers ---------------------------------------------------------------------------------

def two_sided_z(alpha: float) -> float:
    """z with P(|N(0,1)| > z) = alpha, by bisection on erfc."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.erfc(mid / math.sqrt(2)) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def assert_balanced(ones: int, n: int, alpha: float = FALSE_ALARM) -> None:
    """Ones among n fair bits lie within the two-sided alpha band of Binomial(n, 1/2)."""
    bound = two_sided_z(alpha) * math.sqrt(n) / 2
    assert abs(ones - n / 2) <= bound, f"{ones} ones in {n} bits, allowed ±{bound:.0f} around {n / 2}"


def popcount(words: Words | np.ndarray) -> int:
    return int(np.unpackbits(np.ascontiguousarray(words).view(np.uint8)).sum())


def random_bits(count: int) -> list[int]:
    return [secrets.randbits(1) for _ in range(count)]


def random_words(count: int) -> Words:
    return np.frombuffer(os.urandom(8 * count), dtype=np.uint64).copy()


def bit_array(words: Words, m: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:m].astype(bool)


def ideal_base_ot() -> tuple[IknpSender, IknpReceiver]:
    """IKNP endpoints from an ideal base-OT functionality (the real one is tested above and in
    tests/sim/test_triples_sim.py)."""
    pairs = [(os.urandom(16), os.urandom(16)) for _ in range(KAPPA)]
    s = os.urandom(KAPPA // 8)
    bits = np.unpackbits(np.frombuffer(s, dtype=np.uint8), bitorder="little")
    return IknpSender(s, [pairs[i][bits[i]] for i in range(KAPPA)]), IknpReceiver(pairs)


def miller_rabin(n: int, bases: tuple[int, ...]) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def pi_fraction_bits(bits: int) -> int:
    """floor(2^bits * pi) with Machin's formula pi = 16 atan(1/5) - 4 atan(1/239), in integers."""
    guard = 64
    one = 1 << (bits + guard)

    def atan_inv(x: int) -> int:
        total, term, k, sign = 0, one // x, 1, 1
        while term:
            total += sign * (term // k)
            term //= x * x
            k += 2
            sign = -sign
        return total

    return (16 * atan_inv(5) - 4 * atan_inv(239)) >> guard


# --- the group -------------------------------------------------------------------------------

def test_group_is_rfc3526_group14() -> None:
    expected = 2**2048 - 2**1984 - 1 + 2**64 * (pi_fraction_bits(1918) + 124476)
    assert P == expected
    assert P.bit_length() == 2048 and P % 8 == 7
    assert Q == (P - 1) // 2
    assert miller_rabin(P, (2, 3, 5, 7)) and miller_rabin(Q, (2, 3, 5, 7))
    assert pow(G, Q, P) == 1 and G != 1  # g = 2 has order q: 2 is a residue since p = 7 mod 8


def test_legendre_check_equals_euler_criterion() -> None:
    samples = [int.from_bytes(os.urandom(ELEMENT_BYTES), "big") % P for _ in range(8)]
    samples += [pow(G, secrets.randbits(256), P), 3, 5, 7, P - 2, 0, 1, P - 1]
    for x in samples:
        assert legendre_is_one(x) == (x % P != 0 and pow(x, Q, P) == 1)


# p = 3 mod 4 makes -1 a non-residue and 2 a residue, so -4 = p - 4 is a non-residue; p - 1 has
# order 2; 0, 1, p and 2^2048 - 1 are not even candidates.
@pytest.mark.parametrize("bad", [0, 1, P - 1, P, 2**2048 - 1, P - 4, "g^k * (p - 1)"])
def test_subgroup_check_rejects(bad: int | str) -> None:
    value = pow(G, secrets.randbits(256), P) * (P - 1) % P if isinstance(bad, str) else bad
    assert pow(value, Q, P) != 1 or value in (0, 1) or value >= P  # truly outside the subgroup
    data = value.to_bytes(ELEMENT_BYTES, "big")
    with pytest.raises(RemoteProtocolError):
        decode_element(data, "test")
    # as the sender's A
    with pytest.raises(RemoteProtocolError):
        ChouOrlandiReceiver([0, 1], SystemRng()).respond(data)
    # as one of the receiver's B's
    sender = ChouOrlandiSender(SystemRng(), count=3)
    good = encode_element(pow(G, 12345, P))
    with pytest.raises(RemoteProtocolError):
        sender.finish(good + data + good)


def test_decode_accepts_subgroup_elements() -> None:
    for e in (1, 2, secrets.randbits(256)):
        x = pow(G, e, P)
        assert decode_element(encode_element(x), "test") == x


@pytest.mark.parametrize("delta", [-1, 1, -ELEMENT_BYTES])
def test_wrong_lengths_rejected(delta: int) -> None:
    rng = SystemRng()
    sender = ChouOrlandiSender(rng, count=2)
    a = sender.first_message()
    bad_a = a[:delta] if delta < 0 else a + bytes(delta)
    with pytest.raises(RemoteProtocolError):
        ChouOrlandiReceiver([1, 0], rng).respond(bad_a)
    receiver = ChouOrlandiReceiver([1, 0], rng)
    bs = receiver.respond(a)
    bad_bs = bs[:delta] if delta < 0 else bs + bytes(delta)
    with pytest.raises(RemoteProtocolError):
        sender.finish(bad_bs)
    with pytest.raises(RemoteProtocolError):
        sender.finish(bs + encode_element(4))  # one element too many: leftover bytes


# --- base OT ---------------------------------------------------------------------------------

def test_base_ot_128_random_choices() -> None:
    rng = SystemRng()
    choices = random_bits(base.BASE_OTS)
    sender = ChouOrlandiSender(rng, context=b"alice->bob")
    receiver = ChouOrlandiReceiver(choices, rng, context=b"alice->bob")
    a = sender.first_message()
    assert len(a) == ELEMENT_BYTES
    bs = receiver.respond(a)
    assert len(bs) == base.BASE_OTS * ELEMENT_BYTES
    pairs = sender.finish(bs)
    keys = receiver.keys()
    assert len(pairs) == len(keys) == base.BASE_OTS
    for c, key, pair in zip(choices, keys, pairs):
        assert len(key) == 16 and key == pair[c] and key != pair[1 - c]
    assert len({k for pair in pairs for k in pair}) == 2 * base.BASE_OTS


def test_base_ot_full_size_exponents_and_context() -> None:
    rng = SystemRng()
    sender = ChouOrlandiSender(rng, count=2, context=b"x", exponent_bits=Q.bit_length())
    receiver = ChouOrlandiReceiver([1, 0], rng, context=b"x", exponent_bits=Q.bit_length())
    pairs = sender.finish(receiver.respond(sender.first_message()))
    assert receiver.keys() == [pairs[0][1], pairs[1][0]]
    # a receiver bound to another context derives other keys
    other = ChouOrlandiReceiver([0, 0], rng, context=b"y")
    sender2 = ChouOrlandiSender(rng, count=2, context=b"x")
    pairs2 = sender2.finish(other.respond(sender2.first_message()))
    assert all(k not in pair for k, pair in zip(other.keys(), pairs2))


def test_base_ot_deterministic_given_rng() -> None:
    seed = os.urandom(16)

    def run() -> tuple[bytes, list[bytes]]:
        rng = AesCtrRng(seed)
        sender = ChouOrlandiSender(rng, count=2)
        receiver = ChouOrlandiReceiver([0, 1], rng)
        bs = receiver.respond(sender.first_message())
        sender.finish(bs)
        return bs, receiver.keys()

    assert run() == run()


def test_base_ot_misuse() -> None:
    rng = SystemRng()
    with pytest.raises(LocalProtocolError):
        ChouOrlandiReceiver([0, 2], rng)
    with pytest.raises(LocalProtocolError):
        ChouOrlandiReceiver([], rng)
    with pytest.raises(LocalProtocolError):
        ChouOrlandiSender(rng, count=0)
    with pytest.raises(LocalProtocolError):
        ChouOrlandiSender(rng, exponent_bits=255)
    sender = ChouOrlandiSender(rng, count=1)
    receiver = ChouOrlandiReceiver([1], rng)
    with pytest.raises(LocalProtocolError):
        receiver.keys()
    bs = receiver.respond(sender.first_message())
    with pytest.raises(LocalProtocolError):
        receiver.respond(sender.first_message())
    sender.finish(bs)
    with pytest.raises(LocalProtocolError):
        sender.finish(bs)


# --- IKNP: transpose and hash ----------------------------------------------------------------

@pytest.mark.parametrize("nb", [8, 16, 4104])
def test_transpose_matches_bit_reference(nb: int) -> None:
    rows = np.frombuffer(os.urandom(KAPPA * nb), dtype=np.uint8).reshape(KAPPA, nb)
    bits = np.unpackbits(rows, axis=1, bitorder="little")            # (128, 8 nb)
    expected = np.packbits(bits.T, axis=1, bitorder="little")         # (8 nb, 16)
    got = transpose(rows)
    assert got.shape == (8 * nb, 16) and np.array_equal(got, expected)
    if nb >= 16:
        square = rows[:, :16]  # a 128 x 128 block is its own transpose's transpose
        assert np.array_equal(transpose(transpose(square)), square)


def test_tccr_hash_is_gkwy_formula() -> None:
    x = np.frombuffer(os.urandom(16 * 5), dtype=np.uint8).reshape(5, 16)
    tweaks = np.array([0, 1, 2, 2**40, 2**64 - 1], dtype=np.uint64)
    out = tccr_hash(x, tweaks)
    pi = Cipher(algorithms.AES(bytes.fromhex("243f6a8885a308d313198a2e03707344")), modes.ECB())
    for row, j in zip(range(5), tweaks.tolist()):
        y = pi.encryptor().update(x[row].tobytes())
        z = (int.from_bytes(y, "little") ^ j).to_bytes(16, "little")
        expected = bytes(p ^ q for p, q in zip(pi.encryptor().update(z), y))
        assert out[row].tobytes() == expected
    # same x, other tweak: unrelated outputs
    same = tccr_hash(np.repeat(x[:1], 2, axis=0), np.array([7, 8], dtype=np.uint64))
    assert not np.array_equal(same[0], same[1])


# --- IKNP: random OTs ------------------------------------------------------------------------

@pytest.mark.parametrize("m", [2**16, 1000, 1])
def test_iknp_receiver_gets_chosen_bit(m: int) -> None:
    sender, receiver = ideal_base_ot()
    nwords = -(-m // 64)
    r = random_words(nwords)
    u, m_r = receiver.extend(r, m)
    m0, m1 = sender.extend(m, u)
    for out in (m_r, m0, m1):
        assert out.dtype == np.uint64 and out.shape == (nwords,)
    r_bits = bit_array(r, m)
    expected = np.where(r_bits, bit_array(m1, m), bit_array(m0, m))
    assert np.array_equal(bit_array(m_r, m), expected)
    # bits past m are zero in every output
    tail = np.unpackbits(np.concatenate([m_r, m0, m1]).view(np.uint8).reshape(3, -1), axis=1,
                         bitorder="little")[:, m:]
    assert not tail.any()
    if m >= 1000:
        diff = m0 ^ m1
        assert diff.any()
        assert_balanced(popcount(diff), m, FALSE_ALARM / 3)
        assert_balanced(popcount(m0), m, FALSE_ALARM / 3)
        assert_balanced(popcount(m_r), m, FALSE_ALARM / 3)


def test_iknp_string_outputs() -> None:
    sender, receiver = ideal_base_ot()
    m = 3000
    r = random_words(-(-m // 64))
    u, chosen = receiver.extend_strings(r, m)
    h0, h1 = sender.extend_strings(m, u)
    assert chosen.shape == h0.shape == h1.shape == (m, 16)
    r_bits = bit_array(r, m)
    assert np.array_equal(chosen, np.where(r_bits[:, None], h1, h0))
    assert (h0 != h1).any(axis=1).all()  # the other string differs on every OT


def test_successive_extensions_are_fresh() -> None:
    sender, receiver = ideal_base_ot()
    m = 4096
    r = random_words(m // 64)
    outs = []
    for round_ in range(3):
        u, m_r = receiver.extend(r, m)
        m0, m1 = sender.extend(m, u)
        assert receiver.offset == sender.offset == (round_ + 1) * m // KAPPA
        assert np.array_equal(m_r, m0 ^ (r & (m0 ^ m1)))
        outs.append((u[16:], m0, m1))
    for (u1, a0, a1), (u2, b0, b1) in ((outs[0], outs[1]), (outs[1], outs[2]), (outs[0], outs[2])):
        assert u1 != u2  # same choices, fresh PRG blocks
        assert_balanced(popcount(a0 ^ b0), m, FALSE_ALARM / 6)
        assert_balanced(popcount(a1 ^ b1), m, FALSE_ALARM / 6)


def test_iknp_u_message_is_balanced() -> None:
    sender, receiver = ideal_base_ot()
    m = 2**15
    for r in (np.zeros(m // 64, dtype=np.uint64), np.full(m // 64, 2**64 - 1, dtype=np.uint64)):
        u, _ = receiver.extend(r, m)
        sender.extend(m, u)
        rows = np.frombuffer(u, dtype=np.uint8, offset=16)
        assert_balanced(int(np.unpackbits(rows).sum()), rows.size * 8, FALSE_ALARM / 2)


def test_iknp_rejects_bad_messages() -> None:
    sender, receiver = ideal_base_ot()
    m = 1000
    u, _ = receiver.extend(random_words(16), m)
    for bad in (u[:-1], u + b"\x00", u[:16], b""):
        with pytest.raises(RemoteProtocolError):
            sender.extend(m, bad)
    with pytest.raises(RemoteProtocolError):
        sender.extend(1001, u)  # same padded size, other m announced
    with pytest.raises(RemoteProtocolError):
        sender.extend(2000, u)  # wrong size for 2000 OTs
    assert sender.offset == 0  # nothing consumed by refused messages
    sender.extend(m, u)
    with pytest.raises(RoundMismatch):
        sender.extend(m, u)  # replayed: made at an offset already used
    u2, _ = receiver.extend(random_words(16), m)  # delayed (another session's extension)
    u3, r3 = receiver.extend(random_words(16), m)
    sender.extend(m, u3)  # a later window may be answered first...
    sender.extend(m, u2)  # ...and the earlier one after it, once each
    with pytest.raises(RoundMismatch):
        sender.extend(m, u2)
    with pytest.raises(RoundMismatch):
        sender.extend(m, u3)


def test_iknp_misuse() -> None:
    sender, receiver = ideal_base_ot()
    with pytest.raises(LocalProtocolError):
        receiver.extend(random_words(2), 1000)  # needs 16 words
    with pytest.raises(LocalProtocolError):
        receiver.extend(random_words(1), 0)
    with pytest.raises(LocalProtocolError):
        IknpReceiver([(bytes(16), bytes(16))] * 127)
    with pytest.raises(LocalProtocolError):
        IknpSender(bytes(15), [bytes(16)] * KAPPA)
    with pytest.raises(LocalProtocolError):
        IknpSender(bytes(16), [bytes(16)] * 127 + [bytes(15)])


# --- IKNP: one pair extended from several threads ---------------------------------------------

THREADS = 4
EXTENSIONS = 50


def run_in_threads(work: Callable[[int], T], count: int = THREADS) -> list[T]:
    """Run work(0..count-1) in `count` threads that start together, with a tiny switch interval
    so that the interpreter swaps threads inside read-modify-write sequences; re-raise failures."""
    barrier = threading.Barrier(count)

    def started(i: int) -> T:
        barrier.wait()
        return work(i)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(started, range(count)))
    finally:
        sys.setswitchinterval(interval)


def test_one_pair_extended_from_several_threads() -> None:
    sender, receiver = ideal_base_ot()
    sizes = (1, 64, 128, 129, 1000, 4096)  # windows of 1, 1, 1, 2, 8 and 32 blocks

    def extensions(i: int) -> list[tuple[int, int, bytes]]:
        windows = []
        for k in range(EXTENSIONS):
            m = sizes[(i + k) % len(sizes)]
            r = random_words(-(-m // 64))
            u, m_r = receiver.extend(r, m)
            offset, their_m = struct.unpack_from("<QQ", u)
            assert their_m == m
            m0, m1 = sender.extend(m, u)
            assert np.array_equal(m_r, m0 ^ (r & (m0 ^ m1)))  # m_r = m1 where r is 1, else m0
            assert np.array_equal(bit_array(m_r, m), np.where(bit_array(r, m), bit_array(m1, m), bit_array(m0, m)))
            windows.append((offset, offset + -(-m // KAPPA), u))
        return windows

    windows = sorted(w for per_thread in run_in_threads(extensions) for w in per_thread)
    assert len(windows) == THREADS * EXTENSIONS
    for (_, end, _), (start, _, _) in zip(windows, windows[1:]):
        assert end == start  # never overlapping, and no block skipped
    assert windows[0][0] == 0
    assert receiver.offset == sender.offset == windows[-1][1]
    for _, _, u in windows:  # the sender remembers every window it answered (no update was lost)
        with pytest.raises(RoundMismatch):
            sender.extend(struct.unpack_from("<QQ", u)[1], u)


def test_string_outputs_of_one_pair_extended_from_several_threads() -> None:
    sender, receiver = ideal_base_ot()
    m = 300

    def extensions(_: int) -> list[bytes]:
        seen = []
        for _ in range(EXTENSIONS // 2):
            r = random_words(-(-m // 64))
            u, chosen = receiver.extend_strings(r, m)
            h0, h1 = sender.extend_strings(m, u)
            assert np.array_equal(chosen, np.where(bit_array(r, m)[:, None], h1, h0))
            seen += [row.tobytes() for row in h0]
        return seen

    outputs = [row for per_thread in run_in_threads(extensions) for row in per_thread]
    assert len(set(outputs)) == len(outputs)  # every OT got its own PRG blocks and tweak


def test_a_message_answered_from_several_threads_at_once_is_answered_once() -> None:
    sender, receiver = ideal_base_ot()
    m, rounds = 1000, 50
    for _ in range(rounds):
        r = random_words(-(-m // 64))
        u, m_r = receiver.extend(r, m)

        def answer(_: int) -> tuple[Words, Words] | None:
            try:
                return sender.extend(m, u)
            except RoundMismatch:
                return None

        answers = [a for a in run_in_threads(answer) if a is not None]
        assert len(answers) == 1
        m0, m1 = answers[0]
        assert np.array_equal(m_r, m0 ^ (r & (m0 ^ m1)))
    assert sender.offset == receiver.offset == rounds * 8
