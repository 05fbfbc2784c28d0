"""OT extension: Ishai, Kilian, Nissim, Petrank, "Extending Oblivious Transfers Efficiently",
CRYPTO 2003 (§3, semi-honest), κ = 128, with random-OT outputs (PROTOCOLS.md §4).

Roles swap against the base OTs: the extension *sender* S was the base-OT receiver with
choice s ∈ {0,1}^128 and holds k_i^{s_i}; the extension *receiver* R was the base-OT sender
and holds every pair (k_i^0, k_i^1). For m OTs with R's choices r ∈ {0,1}^m:

    R:  t_i = G(k_i^0),  u_i = t_i ⊕ G(k_i^1) ⊕ r      (i < 128; u goes to S)
    S:  q_i = G(k_i^{s_i}) ⊕ (s_i · u_i) = t_i ⊕ (s_i · r)
    transpose the 128 × m bit matrices: column j satisfies q^j = t^j ⊕ (r_j · s)
    S gets (H(j, q^j), H(j, q^j ⊕ s)),  R gets H(j, t^j) = the r_j-th of them.

G(k) is AES-128-CTR under k whose 128-bit counter starts at the pair's running offset (blocks
already consumed), so no keystream block is ever used twice across successive extensions.
H is the tweakable correlation-robust hash from fixed-key AES, H(j, x) = π(π(x) ⊕ j) ⊕ π(x)
(Guo, Katz, Wang, Yu, "Efficient and Secure Multiparty Computation from Fixed-Key Block
Ciphers", IEEE S&P 2020, §7.4, the TCCR construction), where j is the OT's index over the
pair's lifetime, so tweaks never repeat either. π runs as one AES-ECB call over all rows.

Bit order everywhere: OT j is bit j % 8 of byte j // 8, which is bit j % 64 of uint64 word
j // 64 on little-endian words; s and the 128-bit columns use the same order.

API (sans-I/O; both objects keep their offsets in step; each is thread-safe: a lock makes the
reservation of a PRG window atomic, and the AES and transpose work on it runs outside the lock,
so extensions of one pair may run concurrently from several threads):
    IknpReceiver(pairs).extend(choices, m)       -> (message u for S, m_r as packed bits)
    IknpSender(s, keys).extend(m, u)             -> (m0, m1) as packed bits
    .extend_strings(...)                          -> the same with full 128-bit outputs,
                                                     an (m, 16) uint8 array per output
The message u is a 16-byte header (offset in blocks, m; little-endian uint64) and then the
128 rows u_i of ceil(m / 128) * 16 bytes each. m is padded to a multiple of 128 internally.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from mpc.errors import LocalProtocolError, RemoteProtocolError, RoundMismatch
from mpc.ring import WORD, Words

KAPPA = 128
KEY_BYTES = 16
BLOCK = 16
Blocks = npt.NDArray[np.uint8]  # shape (m, 16): one 128-bit OT output a row
_HEADER = struct.Struct("<QQ")  # running offset in AES blocks per key, number of OTs m
# The public fixed key of π (GKWY20 §7: any fixed key; here the first 128 bits of pi's fraction).
_FIXED_KEY = bytes.fromhex("243f6a8885a308d313198a2e03707344")
_CHUNK_BYTES = 4096  # 32768 OTs a chunk: 512 KiB of rows, within a core's L2 cache
_MAX_OTS = 1 << 32  # one extension; keeps a message under 64 GiB
_MAX_OFFSET = 1 << 56  # blocks per key over a pair's life: OT indices (tweaks) stay below 2^63
# Disjoint answered windows a sender keeps apart: each gap between two is an extension the receiver
# made that never arrived (an aborted session, a refused fill). Beyond this, the oldest gap counts as
# used: a very late message for it is refused as a replay, and the list, which every extension scans
# under the lock, stays short however many extensions a peer leaves unsent.
MAX_WINDOWS = 64


def _cipher_pi() -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(_FIXED_KEY), modes.ECB())


def _padded(m: int) -> int:
    return -(-m // KAPPA) * KAPPA


def _check_m(m: int) -> None:
    if not 1 <= m <= _MAX_OTS:
        raise LocalProtocolError(f"an extension needs 1..{_MAX_OTS} OTs, got {m}")


class _Keys:
    """The 128 base keys of one side as AES-ECB encryptors, expanded once per thread that uses them.

    Expanding 128 AES keys took most of a small extension's time (about 1 ms, against 0.06 ms for
    the keystream of a vote's few hundred OTs). An OpenSSL cipher context must not be used by two
    threads at once, so each thread keeps its own set; ECB keeps no state between whole blocks.
    """

    __slots__ = ("_keys", "_local")

    def __init__(self, keys: Sequence[algorithms.AES]) -> None:
        self._keys = list(keys)
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self._keys)

    def encryptors(self) -> list[CipherContext]:
        """This thread's encryptors, one per key, in order."""
        encryptors: list[CipherContext] | None = getattr(self._local, "encryptors", None)
        if encryptors is None:
            encryptors = [Cipher(key, modes.ECB()).encryptor() for key in self._keys]
            self._local.encryptors = encryptors
        return encryptors


def _prg_rows(keys: _Keys, offset: int, row_bytes: int) -> npt.NDArray[np.uint8]:
    """G(k_i) for every key, starting at block `offset`: a (128, row_bytes) array.

    G(k) is the AES-128-CTR keystream under k with a 128-bit big-endian counter, computed as AES-ECB
    of the counter blocks offset, offset + 1, ... (the same bytes, without a new context per key).
    """
    if row_bytes % BLOCK:
        raise LocalProtocolError(f"IKNP rows are whole AES blocks, got {row_bytes} bytes")
    blocks = row_bytes // BLOCK
    counters = np.zeros((blocks, 2), dtype=">u8")   # offset < 2^56: the high 64 bits stay zero
    counters[:, 1] = np.arange(offset, offset + blocks, dtype=np.uint64)
    data = counters.tobytes()
    out = np.empty(len(keys) * row_bytes + BLOCK, dtype=np.uint8)  # update_into wants 15 spare bytes
    view = out.data
    for i, enc in enumerate(keys.encryptors()):
        enc.update_into(data, view[i * row_bytes:(i + 1) * row_bytes + BLOCK - 1])
    return out[:len(keys) * row_bytes].reshape(len(keys), row_bytes)


_U = np.uint64

# (plane distance d, shift, mask) of an 8 x 8 byte transpose across 8 words, and
# (shift, mask) of an 8 x 8 bit transpose inside each word (Warren, Hacker's Delight, §7-3)
_BYTE_STAGES = ((4, _U(32), _U(0x00000000FFFFFFFF)), (2, _U(16), _U(0x0000FFFF0000FFFF)),
                (1, _U(8), _U(0x00FF00FF00FF00FF)))
_BIT_STAGES = ((_U(7), _U(0x00AA00AA00AA00AA)), (_U(14), _U(0x0000CCCC0000CCCC)),
               (_U(28), _U(0x00000000F0F0F0F0)))


def _byte_transpose(x: Words) -> None:
    """In place, for x of shape (P, 8, Q): byte b of word w <-> byte w of word b along axis 1."""
    p, _, q = x.shape
    for d, shift, mask in _BYTE_STAGES:  # swap the off-diagonal d x d blocks of every 2d x 2d block
        v = x.reshape(p, 8 // (2 * d), 2, d, q)
        a, b = v[:, :, 0], v[:, :, 1]
        t = a >> shift
        t ^= b
        t &= mask
        b ^= t
        t <<= shift
        a ^= t


def _bit_transpose(x: Words) -> None:
    """In place: bit c of byte r <-> bit r of byte c, inside every word."""
    t = np.empty_like(x)
    for shift, mask in _BIT_STAGES:
        np.right_shift(x, shift, out=t)
        t ^= x
        t &= mask
        x ^= t
        t <<= shift
        x ^= t


def transpose(rows: npt.NDArray[np.uint8]) -> Blocks:
    """Transpose the 128 × 8nb bit matrix held as (128, nb) bytes (8 | nb) into (8nb, 16) columns.

    Column j's bit i (bit i % 8 of byte i // 8) is row i's bit j. Viewing the rows as uint64
    words, a bit's address is (word index, byte in word, bit in byte); two 8 x 8 byte
    transposes across words and one 8 x 8 bit transpose inside words move the row index down
    and the column index up, and a shuffle of whole words finishes. No loop over bits.
    Returns: a new C-contiguous uint8 array.
    """
    nb = rows.shape[1]
    nw = nb // 8
    x = np.array(rows, dtype=np.uint8, order="C", copy=True).view(WORD)
    # address now: word (i, j // 64), byte (j // 8) % 8, bit j % 8
    _byte_transpose(x.reshape(16, 8, nw))     # word (i // 8, (j // 8) % 8, j // 64), byte i % 8
    _bit_transpose(x)                         # byte j % 8, bit i % 8
    _byte_transpose(x.reshape(2, 8, 8 * nw))  # word (i // 64, j % 8, (j // 8) % 8, j // 64), byte (i // 8) % 8
    # words in the order (j // 64, (j // 8) % 8, j % 8, i // 64) = (j, i // 64)
    return np.ascontiguousarray(x.reshape(2, 8, 8, nw).transpose(3, 2, 1, 0)).view(np.uint8).reshape(8 * nb, 16)


def tccr_hash(columns: Blocks, tweaks: Words) -> Blocks:
    """H(j, x) = π(π(x) ⊕ j) ⊕ π(x) row by row, with tweak j = tweaks[row] (GKWY20 TCCR).

    Returns: a new (len(columns), 16) uint8 array.
    """
    n = columns.shape[0]
    pi = _cipher_pi().encryptor()
    y = np.empty(n * BLOCK + BLOCK, dtype=np.uint8)  # update_into wants 15 spare bytes
    pi.update_into(np.ascontiguousarray(columns).data, y.data)
    z = y.copy()
    z[:n * BLOCK].view(WORD)[::2] ^= tweaks  # tweak j in the low 64 bits of the block
    out = np.empty_like(y)
    pi.update_into(z[:n * BLOCK].data, out.data)
    np.bitwise_xor(out, y, out=out)
    return out[:n * BLOCK].reshape(n, BLOCK)


def _outputs(rows: npt.NDArray[np.uint8], m: int, offset: int, xor: npt.NDArray[np.uint8] | None,
             strings: bool) -> list[npt.NDArray[np.uint8]]:
    """Transpose and hash the 128 rows chunk by chunk (so that each chunk stays in cache).

    Returns: H(j, column j) and, when xor is given, H(j, column j ⊕ xor): as (m, 16) arrays if
    `strings`, else bit 0 of each packed into 8 * ceil(m / 64) bytes (zero past m).
    """
    count = 1 if xor is None else 2
    outs: list[npt.NDArray[np.uint8]]
    if strings:
        outs = [np.empty((m, BLOCK), dtype=np.uint8) for _ in range(count)]
    else:
        outs = [np.zeros(8 * -(-m // 64), dtype=np.uint8) for _ in range(count)]
    first = offset * KAPPA
    for c0 in range(0, -(-m // 8), _CHUNK_BYTES):
        j0, j1 = 8 * c0, min(8 * (c0 + _CHUNK_BYTES), m)
        columns = transpose(rows[:, c0:c0 + _CHUNK_BYTES])[:j1 - j0]
        tweaks = np.arange(first + j0, first + j1, dtype=np.uint64)
        for out, x in zip(outs, (columns, columns if xor is None else columns ^ xor)):
            hashed = tccr_hash(x, tweaks)
            if strings:
                out[j0:j1] = hashed
            else:
                out[c0:c0 + -(-(j1 - j0) // 8)] = np.packbits(hashed[:, 0] & 1, bitorder="little")
    return outs


def _words(packed: npt.NDArray[np.uint8]) -> Words:
    return packed.view(WORD).astype(np.uint64, copy=False)


def _aes_keys(keys: Sequence[bytes], what: str) -> _Keys:
    if len(keys) != KAPPA or any(len(k) != KEY_BYTES for k in keys):
        raise LocalProtocolError(f"IKNP {what} needs {KAPPA} keys of {KEY_BYTES} bytes")
    return _Keys([algorithms.AES(bytes(k)) for k in keys])


class IknpReceiver:
    """The IKNP extension receiver R: holds all base pairs (k_i^0, k_i^1), chooses r."""

    __slots__ = ("_k0", "_k1", "_offset", "_lock")

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        if len(pairs) != KAPPA:
            raise LocalProtocolError(f"IKNP receiver needs {KAPPA} base key pairs, got {len(pairs)}")
        self._k0 = _aes_keys([k0 for k0, _ in pairs], "receiver")
        self._k1 = _aes_keys([k1 for _, k1 in pairs], "receiver")
        self._offset = 0
        self._lock = threading.Lock()  # held while _offset is read and advanced

    @property
    def offset(self) -> int:
        """Blocks of G consumed per base key so far (the running PRG offset)."""
        return self._offset

    def extend_strings(self, choices: Words, m: int) -> tuple[bytes, Blocks]:
        """Run R's side of m random OTs with choice bits `choices` (bit j = r_j).

        Returns: (the message u for S, H(j, t^j) as an (m, 16) uint8 array).
        Raises: LocalProtocolError if m is out of range or `choices` is not ceil(m/64) words.
        """
        message, t, offset = self._rows(choices, m)
        return message, _outputs(t, m, offset, None, True)[0]

    def extend(self, choices: Words, m: int) -> tuple[bytes, Words]:
        """Run R's side of m 1-bit random OTs with choice bits `choices`.

        Returns: (the message u for S, m_{r_j} at bit j of packed uint64 words).
        Raises: LocalProtocolError if m is out of range or `choices` is not ceil(m/64) words.
        """
        message, t, offset = self._rows(choices, m)
        return message, _words(_outputs(t, m, offset, None, False)[0])

    def _rows(self, choices: Words, m: int) -> tuple[bytes, npt.NDArray[np.uint8], int]:
        _check_m(m)
        if choices.shape != (-(-m // 64),):
            raise LocalProtocolError(f"IKNP: {m} OTs need {-(-m // 64)} choice words, got shape {choices.shape}")
        padded = _padded(m)
        row_bytes = padded // 8
        r = np.zeros(row_bytes, dtype=np.uint8)
        r[:-(-m // 8)] = np.ascontiguousarray(choices, dtype=WORD).view(np.uint8)[:-(-m // 8)]
        if m % 8:
            r[m // 8] &= (1 << (m % 8)) - 1  # padding OTs choose 0
        with self._lock:  # reserve the window atomically; other threads may extend this pair too
            offset = self._offset
            if offset + padded // KAPPA > _MAX_OFFSET:
                raise LocalProtocolError("IKNP: this pair's PRG offsets are used up; run a new base-OT setup")
            self._offset = offset + padded // KAPPA
        t = _prg_rows(self._k0, offset, row_bytes)
        u = _prg_rows(self._k1, offset, row_bytes)
        u ^= t
        u ^= r
        return _HEADER.pack(offset, m) + u.tobytes(), t, offset


def merge_windows(windows: list[tuple[int, int]], new: tuple[int, int],
                  limit: int | None = None) -> list[tuple[int, int]]:
    """Insert a disjoint window and coalesce neighbours, so the list stays short; with a limit,
    close the oldest gaps (count them as used) until at most `limit` windows remain."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted([*windows, new]):
        if merged and merged[-1][1] == s:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    if limit is not None and len(merged) > limit:
        excess = len(merged) - limit
        merged[:excess + 1] = [(merged[0][0], merged[excess][1])]
    return merged


class IknpSender:
    """The IKNP extension sender S: holds s and the base keys k_i^{s_i}."""

    __slots__ = ("_s", "_s_rows", "_keys", "_offset", "_used", "_lock")

    def __init__(self, s: bytes, keys: Sequence[bytes]) -> None:
        if len(s) != KAPPA // 8:
            raise LocalProtocolError(f"IKNP sender needs a {KAPPA}-bit s, got {len(s)} bytes")
        self._s = np.frombuffer(bytes(s), dtype=np.uint8).copy()
        bits = np.unpackbits(self._s, bitorder="little")
        self._s_rows = np.nonzero(bits)[0]  # rows i with s_i = 1 take u_i
        self._keys = _aes_keys(keys, "sender")
        self._offset = 0
        # PRG windows [start, end) already answered. The receiver allocates windows in order,
        # but concurrent sessions may deliver them out of order; any window is taken once only.
        self._used: list[tuple[int, int]] = []
        self._lock = threading.Lock()  # held while _used and _offset are checked and updated

    @property
    def offset(self) -> int:
        """Blocks of G consumed per base key so far (the running PRG offset)."""
        return self._offset

    def extend_strings(self, m: int, u: bytes) -> tuple[Blocks, Blocks]:
        """Run S's side of m random OTs on R's message u.

        Returns: (H(j, q^j), H(j, q^j ⊕ s)) as two (m, 16) uint8 arrays.
        Raises: RemoteProtocolError for a message of the wrong size or announcing another m;
        RoundMismatch if it was made at another PRG offset (a lost or replayed extension);
        LocalProtocolError if m is out of range.
        """
        q, offset = self._rows(m, u)
        h0, h1 = _outputs(q, m, offset, self._s, True)
        return h0, h1

    def extend(self, m: int, u: bytes) -> tuple[Words, Words]:
        """Run S's side of m 1-bit random OTs on R's message u.

        Returns: (m0, m1) as packed uint64 words, bit j of each for OT j.
        Raises: as `extend_strings`.
        """
        q, offset = self._rows(m, u)
        m0, m1 = _outputs(q, m, offset, self._s, False)
        return _words(m0), _words(m1)

    def _rows(self, m: int, u: bytes) -> tuple[npt.NDArray[np.uint8], int]:
        _check_m(m)
        padded = _padded(m)
        row_bytes = padded // 8
        expected = _HEADER.size + KAPPA * row_bytes
        if len(u) != expected:
            raise RemoteProtocolError(f"IKNP: message for {m} OTs must be {expected} bytes, got {len(u)}")
        offset, their_m = _HEADER.unpack_from(u)
        if their_m != m:
            raise RemoteProtocolError(f"IKNP: message announces {their_m} OTs, expected {m}")
        end = offset + padded // KAPPA
        with self._lock:  # check and claim the window atomically; other threads may extend this pair too
            if end > _MAX_OFFSET or any(offset < e and s < end for s, e in self._used):
                raise RoundMismatch(f"IKNP: PRG window [{offset}, {end}) was already used (a replayed extension)")
            self._used = merge_windows(self._used, (offset, end), MAX_WINDOWS)
            self._offset = max(self._offset, end)
        q = _prg_rows(self._keys, offset, row_bytes)
        rows = np.frombuffer(u, dtype=np.uint8, offset=_HEADER.size).reshape(KAPPA, row_bytes)
        q[self._s_rows] ^= rows[self._s_rows]
        return q, offset
