"""Entropy coding of the scene codec: run lengths and canonical Huffman.

- `rle_encode(bits) -> (first_bit, runs)` / `rle_decode(first_bit, runs, n)`: alternating run
  lengths over the flattened array.
- `huffman_encode(symbols) -> bytes` / `huffman_decode(data) -> uint32 [n]`: canonical Huffman with
  code lengths limited to 15 bits. Symbols must lie in [0, 2**32). Large values use an escape in the
  style of DEFLATE: a value v < 256 is its own token; a value v >= 256 with bit length b (9..32) is
  token 247 + b (256..279) followed by its b - 1 low bits, which are kept in a separate raw bit
  stream. Stream layout (little endian):
      u64 n_symbols | u16 n_lengths | ceil(n_lengths/2) bytes of 4-bit code lengths (high nibble
      first, 0 = unused token) | u64 n_code_bits | code bytes | u64 n_extra_bits | extra bytes.

Every decoder validates its input before allocating.
"""

import heapq
import struct

import numpy as np

from jaxnerf360.errors import UserError

MAX_CODE_LENGTH = 15  # Fits a 4-bit length field and keeps the decoding table at 32768 entries.
_LITERALS = 256
_N_TOKENS = _LITERALS + 24  # Escape tokens for bit lengths 9..32.


def rle_encode(bits) -> tuple[int, np.ndarray]:
    """Run lengths uint32 [r] of alternating runs over flattened bits, and the first run's bit."""
    flat = np.asarray(bits).reshape(-1).astype(bool)
    if flat.size == 0:
        return 0, np.zeros(0, np.uint32)
    if flat.size >= 1 << 32:
        raise UserError(f"rle_encode: {flat.size} elements exceed the 2**32 run-length limit")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    return int(flat[0]), np.diff(edges).astype(np.uint32)


def rle_decode(first_bit: int, runs, n: int) -> np.ndarray:
    """Flat bool [n] from `rle_encode` output; validates the runs before allocating."""
    if first_bit not in (0, 1):
        raise UserError(f"run-length data: first bit is {first_bit!r}, expected 0 or 1")
    runs = np.asarray(runs)
    if runs.ndim != 1 or not (runs.size == 0 or np.issubdtype(runs.dtype, np.integer)):
        raise UserError("run-length data: runs must be a 1-D integer array")
    if n < 0 or runs.size > n:
        raise UserError(f"run-length data: {runs.size} runs cannot cover {n} elements")
    runs = runs.astype(np.int64)
    if runs.size and runs.min() <= 0:
        raise UserError("run-length data: a run has length 0 or less")
    total = int(runs.sum())
    if total != n:
        raise UserError(f"run-length data: runs sum to {total}, expected {n}")
    values = (np.arange(runs.size) + first_bit) % 2 == 1
    return np.repeat(values, runs)


def _code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths [a] for token counts [a], at most MAX_CODE_LENGTH bits."""
    counts = counts.astype(np.int64)
    while True:
        used = np.flatnonzero(counts)
        lengths = np.zeros(counts.size, np.int64)
        if used.size == 1:
            lengths[used] = 1
            return lengths
        heap = [(int(counts[s]), int(s), [int(s)]) for s in used]
        heapq.heapify(heap)
        while len(heap) > 1:
            c1, k1, m1 = heapq.heappop(heap)
            c2, k2, m2 = heapq.heappop(heap)
            lengths[m1 + m2] += 1
            heapq.heappush(heap, (c1 + c2, min(k1, k2), m1 + m2))
        if lengths.max() <= MAX_CODE_LENGTH:
            return lengths
        # Flattening the counts shortens the deepest codes; it terminates at a balanced tree.
        counts = np.where(counts > 0, (counts + 1) // 2, 0)


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes [a] for code lengths [a] (codes ordered by (length, token))."""
    codes = np.zeros(lengths.size, np.int64)
    code, prev = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def _pack_fields(values: np.ndarray, widths: np.ndarray, max_width: int) -> tuple[int, bytes]:
    """Concatenates values [k] MSB first in widths [k] bits; returns (bit count, bytes)."""
    if values.size == 0:
        return 0, b""
    # Column j holds bit (width - 1 - j) of each value; one uint8 column at a time keeps memory low.
    bits = np.zeros((values.size, max_width), np.uint8)
    keep = np.zeros((values.size, max_width), bool)
    for j in range(max_width):
        shift = widths - 1 - j
        keep[:, j] = shift >= 0
        bits[:, j] = (values >> np.maximum(shift, 0)) & 1
    bits = bits[keep]
    return int(bits.size), np.packbits(bits).tobytes()


def huffman_encode(symbols) -> bytes:
    """Canonical Huffman code of non-negative integer symbols [...] (< 2**32) as one byte string."""
    s = np.asarray(symbols)
    if s.size and not (np.issubdtype(s.dtype, np.integer) or s.dtype == bool):
        raise UserError(f"huffman_encode: symbols have dtype {s.dtype}; pass integers")
    s = s.reshape(-1)
    if s.size and (int(s.min()) < 0 or int(s.max()) >= 1 << 32):
        raise UserError("huffman_encode: symbols must lie in [0, 2**32)")
    s = s.astype(np.int64)
    big = s >= _LITERALS
    nbit = np.frexp(s[big].astype(np.float64))[1].astype(np.int64)  # Exact bit length, < 2**53.
    tokens = s.copy()
    tokens[big] = _LITERALS - 9 + nbit
    counts = np.bincount(tokens, minlength=0) if s.size else np.zeros(0, np.int64)
    lengths = _code_lengths(counts) if s.size else np.zeros(0, np.int64)
    codes = _canonical_codes(lengths)
    n_code_bits, code_bytes = _pack_fields(codes[tokens], lengths[tokens], MAX_CODE_LENGTH)
    n_extra_bits, extra_bytes = _pack_fields(s[big] - (1 << (nbit - 1)), nbit - 1, 31)
    nibbles = np.zeros(lengths.size + lengths.size % 2, np.uint8)
    nibbles[: lengths.size] = lengths
    table = (nibbles[0::2] << 4 | nibbles[1::2]).astype(np.uint8).tobytes()
    return b"".join([
        struct.pack("<QH", s.size, lengths.size), table,
        struct.pack("<Q", n_code_bits), code_bytes,
        struct.pack("<Q", n_extra_bits), extra_bytes,
    ])  # fmt: skip


class Reader:
    """Bounds-checked reads from a byte string; errors name `what`."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = memoryview(data), 0, what

    def take(self, n: int) -> memoryview:
        if n < 0 or n > len(self.data) - self.pos:
            raise UserError(f"{self.what}: truncated (needs {n} more bytes at byte {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def bits(self) -> tuple[int, np.ndarray]:
        """A u64 bit count and its bytes, checking that the padding bits are zero."""
        (nbits,) = self.unpack("<Q")
        if nbits > 8 * (len(self.data) - self.pos):
            raise UserError(f"{self.what}: bit count {nbits} exceeds the data")
        raw = np.frombuffer(self.take((nbits + 7) // 8), np.uint8)
        if nbits % 8 and raw[-1] & ((1 << (8 - nbits % 8)) - 1):
            raise UserError(f"{self.what}: non-zero padding bits")
        return nbits, raw

    def done(self) -> None:
        if self.pos != len(self.data):
            raise UserError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing bytes")


def _decode_tokens(raw: np.ndarray, nbits: int, n: int, lengths: np.ndarray) -> np.ndarray:
    """Decodes n tokens from a bit stream with a table indexed by the next `width` bits."""
    width = int(lengths.max())
    table_sym = np.zeros(1 << width, np.uint16)
    table_len = np.zeros(1 << width, np.int32)  # 0 marks a bit pattern no code starts with.
    codes = _canonical_codes(lengths)
    for s in np.flatnonzero(lengths):
        lo = int(codes[s]) << (width - int(lengths[s]))
        hi = (int(codes[s]) + 1) << (width - int(lengths[s]))
        table_sym[lo:hi], table_len[lo:hi] = s, lengths[s]
    # For every bit position: the token starting there and the position of the next one.
    b = np.concatenate([raw, np.zeros(3, np.uint8)]).astype(np.int32)
    w24 = (b[:-2] << 16) | (b[1:-1] << 8) | b[2:]
    nbytes = raw.size
    sym_at = np.zeros(8 * nbytes, np.uint16)
    next_at = np.zeros(8 * nbytes, np.int32 if 8 * nbytes < 1 << 30 else np.int64)
    for off in range(8):
        idx = (w24[:nbytes] >> (24 - width - off)) & ((1 << width) - 1)
        sym_at[off::8] = table_sym[idx]
        step = table_len[idx]
        # An invalid pattern jumps past the end, which the walk below reports.
        next_at[off::8] = np.where(step > 0, np.arange(off, 8 * nbytes, 8) + step, 8 * nbytes + 1)
    sym_view = memoryview(sym_at[:nbits])
    next_view = memoryview(next_at[:nbits])
    out = np.zeros(n, np.uint16)
    out_view = memoryview(out)
    p = 0
    try:
        # Sequential by nature; the table above keeps each step to two lookups.
        for k in range(n):
            out_view[k] = sym_view[p]
            p = next_view[p]
    except IndexError:
        raise UserError("Huffman data: code stream ends early or holds an invalid code") from None
    if p != nbits:
        raise UserError(f"Huffman data: decoding used {p} of {nbits} code bits")
    return out


def huffman_decode(data: bytes) -> np.ndarray:
    """Symbols uint32 [n] from `huffman_encode` output; validates everything before allocating."""
    r = Reader(bytes(data), "Huffman data")
    n, n_lengths = r.unpack("<QH")
    if n_lengths > _N_TOKENS:
        raise UserError(f"Huffman data: {n_lengths} code lengths, at most {_N_TOKENS} allowed")
    packed = np.frombuffer(r.take((n_lengths + 1) // 2), np.uint8)
    lengths = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)
    if n_lengths % 2 and lengths[-1]:
        raise UserError("Huffman data: non-zero padding in the code length table")
    lengths = lengths[:n_lengths].astype(np.int64)
    used = lengths[lengths > 0]
    kraft = sum(1 << (MAX_CODE_LENGTH - int(x)) for x in used)
    if kraft > 1 << MAX_CODE_LENGTH:
        raise UserError("Huffman data: code lengths do not form a prefix code")
    nbits, raw = r.bits()
    n_extra, extra_raw = r.bits()
    r.done()
    if n == 0:
        if nbits or n_extra or used.size:
            raise UserError("Huffman data: empty stream with code bits or code lengths")
        return np.zeros(0, np.uint32)
    if used.size == 0 or n > nbits:  # Every code is at least one bit long.
        raise UserError(f"Huffman data: {n} symbols cannot fit in {nbits} code bits")
    tokens = _decode_tokens(raw, nbits, n, lengths)
    big = tokens >= _LITERALS
    nbit = tokens[big].astype(np.int64) - (_LITERALS - 9)
    widths = nbit - 1
    if int(widths.sum()) != n_extra:
        raise UserError(f"Huffman data: escapes need {int(widths.sum())} bits, have {n_extra}")
    out = tokens.astype(np.uint32)
    if widths.size:
        bits = np.unpackbits(extra_raw)[:n_extra].astype(np.int64)
        starts = np.cumsum(widths) - widths
        low = np.zeros(widths.size, np.int64)
        for j in range(31):
            take = j < widths
            low[take] = (low[take] << 1) | bits[starts[take] + j]
        out[big] = ((1 << (nbit - 1)) + low).astype(np.uint32)
    return out


