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
from nacl import bindings as sodium

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.ot import base
from mpc.ot.base import ELEMENT_BYTES, ChouOrlandiReceiver, ChouOrlandiSender, decode_point, random_scalar
from mpc.ot.extension import KAPPA, MAX_WINDOWS, IknpReceiver, IknpSender, merge_windows, tccr_hash, transpose
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


# --- the group: Ed25519's prime-order subgroup, points validated ----------------------------------

# The eight points of small order (orders 1, 2, 4, 4, 8, 8, 8, 8), as libsodium lists them.
SMALL_ORDER = [bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
)]
# y = p = 2^255 - 19 and y = p + 1: encodings that are not canonical.
NON_CANONICAL = [bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
                 bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")]


def valid_point() -> bytes:
    return sodium.crypto_scalarmult_ed25519_base_noclamp(random_scalar(SystemRng()))


def off_curve_point() -> bytes:
    """A y whose x^2 = (y^2 - 1) / (d y^2 + 1) has no square root: about half of all y."""
    while True:
        candidate = bytearray(os.urandom(32))
        candidate[31] &= 0x7F
        try:
            sodium.crypto_core_ed25519_add(bytes(candidate), valid_point())
        except Exception:   # libsodium refuses to decode it
            return bytes(candidate)


def mixed_order_point() -> bytes:
    """A point on the curve but outside the prime-order subgroup: a valid point plus the point of order 2."""
    return bytes(sodium.crypto_core_ed25519_add(valid_point(), SMALL_ORDER[1]))


BAD_POINTS = {
    **{f"small order {i}": p for i, p in enumerate(SMALL_ORDER)},
    **{f"non-canonical {i}": p for i, p in enumerate(NON_CANONICAL)},
    "off the curve": off_curve_point(),
    "mixed order": mixed_order_point(),
}


def test_small_order_points_really_have_small_order() -> None:
    """The list is right: 8T is the identity for each T, and only the first is the identity itself."""
    identity = SMALL_ORDER[0]
    for point in SMALL_ORDER:
        twice = sodium.crypto_core_ed25519_add(point, point)
        four = sodium.crypto_core_ed25519_add(twice, twice)
        assert sodium.crypto_core_ed25519_add(four, four) == identity
    assert len(set(SMALL_ORDER)) == 8 and identity not in SMALL_ORDER[1:]


@pytest.mark.parametrize("what", sorted(BAD_POINTS))
def test_every_received_point_is_validated(what: str) -> None:
    bad = BAD_POINTS[what]
    assert not sodium.crypto_core_ed25519_is_valid_point(bad)
    with pytest.raises(RemoteProtocolError, match="base OT point"):
        decode_point(bad, "base OT point X")
    # as the sender's A
    with pytest.raises(RemoteProtocolError, match="point A"):
        ChouOrlandiReceiver([0, 1], SystemRng()).respond(bad)
    # as one of the receiver's B's
    sender = ChouOrlandiSender(SystemRng(), count=3)
    good = valid_point()
    with pytest.raises(RemoteProtocolError, match="point B_1"):
        sender.finish(good + bad + good)


def test_decode_accepts_subgroup_points() -> None:
    for _ in range(4):
        point = valid_point()
        assert decode_point(point, "test") == point


def test_scalars_are_full_strength_and_reduced() -> None:
    order = 2**252 + 27742317777372353535851937790883648493
    scalars = [int.from_bytes(random_scalar(SystemRng()), "little") for _ in range(64)]
    assert all(0 < x < order for x in scalars)
    assert max(scalars).bit_length() >= 250   # uniform in Z_L, not short exponents


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
        sender.finish(bs + valid_point())  # one point too many: leftover bytes


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


def test_base_ot_context_binds_the_keys() -> None:
    rng = SystemRng()
    sender = ChouOrlandiSender(rng, count=2, context=b"x")
    receiver = ChouOrlandiReceiver([1, 0], rng, context=b"x")
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


def test_a_sender_keeps_few_windows_however_many_extensions_never_arrive_and_answers_none_twice() -> None:
    """Every other extension is lost (an aborted session, a refused fill): the sender's list of answered
    windows, scanned on every extension, stays at MAX_WINDOWS; the newest gaps may still be answered
    (once), the oldest count as used (a very late message is refused as a replay), and no window
    answered before is answered again."""
    sender, receiver = ideal_base_ot()
    m = 128
    delivered, lost = [], []
    for i in range(4 * MAX_WINDOWS):
        u, _ = receiver.extend(random_words(2), m)
        if i % 2:
            lost.append(u)
        else:
            sender.extend(m, u)
            delivered.append(u)
        assert len(sender._used) <= MAX_WINDOWS   # what every extension scans under the lock
    sender.extend(m, lost[-1])                     # a recent gap: still answered, once
    with pytest.raises(RoundMismatch):
        sender.extend(m, lost[-1])
    with pytest.raises(RoundMismatch):
        sender.extend(m, lost[0])                  # the oldest gap was closed
    for u in delivered:
        with pytest.raises(RoundMismatch):
            sender.extend(m, u)


def test_merge_windows_closes_the_oldest_gaps_beyond_its_limit() -> None:
    windows = [(0, 1), (2, 3), (4, 5)]
    assert merge_windows(windows, (6, 7)) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert merge_windows(windows, (6, 7), 3) == [(0, 3), (4, 5), (6, 7)]
    assert merge_windows(windows, (6, 7), 2) == [(0, 5), (6, 7)]
    assert merge_windows(windows, (1, 2), 2) == [(0, 3), (4, 5)]   # coalesced first: within the limit


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


def test_the_extension_prg_is_aes_ctr_under_each_base_key_from_any_thread() -> None:
    """G(k) is AES-128-CTR under k with a 128-bit big-endian counter starting at the pair's offset
    (computed as AES-ECB of the counter blocks with encryptors kept per thread): checked against
    cryptography's own CTR mode, at offsets that carry into the high bytes of the low word, and
    from several threads at once (each thread has its own OpenSSL contexts)."""
    from mpc.ot.extension import _aes_keys, _prg_rows
    raw = [secrets.token_bytes(16) for _ in range(KAPPA)]
    keys = _aes_keys(raw, "test")

    def expected(offset: int, row_bytes: int) -> np.ndarray:
        rows = [Cipher(algorithms.AES(k), modes.CTR(offset.to_bytes(16, "big"))).encryptor().update(bytes(row_bytes))
                for k in raw]
        return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(KAPPA, row_bytes)

    cases = [(0, 16), (1, 32), (255, 48), ((1 << 32) - 1, 64), ((1 << 56) - 5, 80), (12345, 4096)]
    for offset, row_bytes in cases:
        assert np.array_equal(_prg_rows(keys, offset, row_bytes), expected(offset, row_bytes)), (offset, row_bytes)

    def run(case: tuple[int, int]) -> bool:
        return all(np.array_equal(_prg_rows(keys, *case), expected(*case)) for _ in range(20))
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, cases * 4))
