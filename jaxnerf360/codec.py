"""Compressed-scene codec: quantisation, run lengths, canonical Huffman and a checked container.

Everything here is numpy plus the standard library; a scene file is data, never code (no pickle).

Primitives
- `quantize(values, bits=8, xnp=np) -> (codes, scale, offset)` / `dequantize(codes, scale, offset)`:
  affine min/max quantisation in float32 arithmetic (offset = min, scale = range / (2**bits - 1)).
  The masked wavelet field calls the same function with `xnp=jax.numpy` for its
  quantisation-aware rounding, so a file stores exactly the grid the field trained on.
- `rle_encode(bits) -> (first_bit, runs)` / `rle_decode(first_bit, runs, n)`: alternating run
  lengths over the flattened array.
- `huffman_encode(symbols) -> bytes` / `huffman_decode(data) -> uint32 [n]`: canonical Huffman with
  code lengths limited to 15 bits. Symbols must lie in [0, 2**32). Large values use an escape in the
  style of DEFLATE: a value v < 256 is its own token; a value v >= 256 with bit length b (9..32) is
  token 247 + b (256..279) followed by its b - 1 low bits, which are kept in a separate raw bit
  stream. Stream layout (little endian):
      u64 n_symbols | u16 n_lengths | ceil(n_lengths/2) bytes of 4-bit code lengths (high nibble
      first, 0 = unused token) | u64 n_code_bits | code bytes | u64 n_extra_bits | extra bytes.
- A bit plane (`encode_bits` / `decode_bits`): u8 first bit | u64 length L | L bytes of the
  Huffman-coded run lengths.
- `Masked(values, mask, levels=0)`: the tag asking the container to store a float tensor masked and
  quantised. All `values` are quantised (the grid of quantisation-aware training), and the codes
  of the entries where `mask` holds are kept. With `levels > 0` the last two axes are a packed
  wavelet plane (`wavelets.level_of`), and mask and codes are coded per level, coarsest first:
  coarse levels are mostly kept and fine ones mostly dropped, so each gets its own statistics.
  `masked_values(values, mask)` is the in-memory result that decoding reproduces bit for bit.
  Record: u8 ndim | u64 dims | f32 scale | f32 offset | u8 levels | per level group: a bit plane of
  the group's mask | u64 length V | V bytes of Huffman-coded codes of its kept entries.
- `Bits(mask)`: a bool tensor as one bit plane (the occupancy grid). Record: u8 ndim | u64 dims |
  a bit plane.

Container (`write_scene` / `read_scene`), little endian:
    b"JNRF" | u16 version (1) | u32 header length H | H bytes of UTF-8 JSON header | records |
    u32 CRC32 of every byte before it.
The header is {"tensors": [{"name", "kind", "dtype", "shape", "offset", "length"}, ...],
"text": [{"name", "offset", "length"}, ...]}; offsets are relative to the first record byte.
Kinds: "raw" (dtype float16, float32 or uint8, the little-endian C-order bytes), "masked"
(dtype float32, an `encode_masked` record) and "bits" (dtype bool, an `encode_bits_tensor`
record). Text entries are UTF-8 bytes.

Every decoder validates its input before allocating, and `read_scene` turns any damage into one
`UserError` line naming the file.
"""

import heapq
import json
import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

from jaxnerf360.errors import UserError

MAGIC = b"JNRF"
VERSION = 1
# Largest tensor (in elements) a file may ask us to allocate: 2**28 float32 is 1 GiB.
MAX_ELEMENTS = 1 << 28
MAX_NDIM = 32
MAX_CODE_LENGTH = 15  # Fits a 4-bit length field and keeps the decoding table at 32768 entries.
_LITERALS = 256
_N_TOKENS = _LITERALS + 24  # Escape tokens for bit lengths 9..32.
_FLT_MAX = float(np.finfo(np.float32).max)
_PREFIX = struct.Struct("<4sHI")
_CRC = struct.Struct("<I")


class Masked(NamedTuple):
    """Tags a tensor for masked quantisation: `values` [...] float, `mask` [...] bool.

    `levels` > 0: the last two axes are a packed wavelet plane of that many levels.
    """

    values: np.ndarray
    mask: np.ndarray
    levels: int = 0


class Bits(NamedTuple):
    """Tags a bool tensor `mask` [...] to be stored as one run-length coded bit plane."""

    mask: np.ndarray


# ----------------------------------------------------------------------------- quantisation


def quantize(values, bits: int = 8, xnp=np):
    """Affine min/max codes of values [...] in float32: (codes [...], scale, offset).

    offset = min, scale = (max - min) / (2**bits - 1) (1 for a constant array), codes =
    round((x - offset) / scale) clipped to [0, 2**bits - 1], every step in float32. With numpy
    the codes are uint8 and scale/offset Python floats holding float32 values; with
    `xnp=jax.numpy` they stay float arrays (traceable, for quantisation-aware training). When
    the range spans fewer float32 steps than codes, re-quantising dequantised values may move a
    code; the decoded values are still exactly the encoded ones.
    """
    levels = (1 << bits) - 1 if isinstance(bits, int) and not isinstance(bits, bool) else 0
    if xnp is not np:
        x = xnp.asarray(values, xnp.float32)
        lo, hi = xnp.min(x), xnp.max(x)
        scale = xnp.where(hi > lo, (hi - lo) / xnp.float32(levels), xnp.float32(1))
        return xnp.clip(xnp.round((x - lo) / scale), 0, levels), scale, lo
    if not 1 <= bits <= 8 or not levels:
        raise UserError(f"quantize: bits={bits!r} must be an integer in 1..8")
    x = np.asarray(values)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise UserError(f"quantize: values have dtype {x.dtype}; pass a float array")
    if x.size == 0:
        return np.zeros(x.shape, np.uint8), 1.0, 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise UserError("quantize: values contain NaN or inf (or exceed the float32 range); "
                            "clean them before quantising")
        lo, hi = x.min(), x.max()
        scale = (hi - lo) / np.float32(levels) if hi > lo else np.float32(1)
        if not np.isfinite(scale):
            raise UserError("quantize: value range too large for float32; rescale the values")
        codes = np.clip(np.round((x - lo) / scale), 0, levels).astype(np.uint8)
    return codes, float(scale), float(lo)


def dequantize(codes, scale: float, offset: float, xnp=np):
    """Float32 values [...] of codes [...]: codes * scale + offset in float32 arithmetic."""
    if xnp is not np:
        return xnp.asarray(codes, xnp.float32) * scale + offset
    if not (np.isfinite(scale) and np.isfinite(offset) and scale >= 0):
        raise UserError(f"dequantize: scale={scale!r}, offset={offset!r}: need finite, scale >= 0")
    with np.errstate(over="ignore"):
        y = np.asarray(codes).astype(np.float32) * np.float32(scale) + np.float32(offset)
    return np.clip(y, -_FLT_MAX, _FLT_MAX).astype(np.float32)


def masked_values(values, mask) -> np.ndarray:
    """Float32 [...]: `values` quantised over all entries, dequantised where `mask` holds, else 0.

    Exactly what a `Masked(values, mask)` record decodes to.
    """
    codes, scale, offset = quantize(values)
    return np.where(np.asarray(mask, bool), dequantize(codes, scale, offset), np.float32(0))


# ----------------------------------------------------------------------------- run lengths


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


# ----------------------------------------------------------------------------- Huffman


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


class _Reader:
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
    r = _Reader(bytes(data), "Huffman data")
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


# ----------------------------------------------------------------------------- masked records


MAX_LEVELS = 8


def encode_bits(bits) -> bytes:
    """A bit plane: the run lengths of flattened bits [...], Huffman coded (module docstring)."""
    first_bit, runs = rle_encode(bits)
    code = huffman_encode(runs)
    return struct.pack("<BQ", first_bit, len(code)) + code


def _read_bits(r: "_Reader", n: int) -> np.ndarray:
    """Flat bool [n] from the bit plane at the reader's position."""
    first_bit, length = r.unpack("<BQ")
    return rle_decode(first_bit, huffman_decode(r.take(length)), n)


def _read_shape(r: "_Reader", max_elements: int, what: str) -> tuple[tuple, int]:
    """(shape, element count) read as u8 ndim | u64 dims; UserError when absurd."""
    (ndim,) = r.unpack("<B")
    if ndim > MAX_NDIM:
        raise UserError(f"{what}: {ndim} dimensions, at most {MAX_NDIM}")
    shape = r.unpack(f"<{ndim}Q")
    n = 1
    for d in shape:
        n *= d
    if n > max_elements or any(d > max_elements for d in shape):
        raise UserError(f"{what}: shape {tuple(shape)} has {n} elements, over {max_elements}")
    return shape, n


def _level_groups(shape, levels: int, what: str) -> list:
    """Bool `[H, W]` selectors of each level (coarsest first), or [None] when levels is 0."""
    if levels == 0:
        return [None]
    from jaxnerf360 import wavelets

    if levels > MAX_LEVELS or len(shape) < 2:
        raise UserError(f"{what}: {levels} wavelet levels for shape {tuple(shape)}; need at most "
                        f"{MAX_LEVELS} levels and a plane [..., H, W]")
    m = 1 << levels
    if any(d < m or d % m for d in shape[-2:]):
        raise UserError(f"{what}: plane {tuple(shape[-2:])} is not divisible by 2**{levels}")
    level = wavelets.level_of(tuple(int(d) for d in shape[-2:]), levels)
    return [level == k for k in range(levels + 1)]


def _encode_masked_parts(values, mask, levels: int = 0) -> tuple[bytes, bytes, bytes]:
    """(shape and scale/offset, mask sections, value sections) of a masked record."""
    values = np.asarray(values)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise UserError(f"masked tensor: mask has dtype {mask.dtype}; pass a bool array")
    if values.shape != mask.shape:
        raise UserError(f"masked tensor: values {values.shape} and mask {mask.shape} differ")
    if not np.issubdtype(values.dtype, np.floating):
        raise UserError(f"masked tensor: values have dtype {values.dtype}; pass a float array")
    if values.ndim > MAX_NDIM:
        raise UserError(f"masked tensor: {values.ndim} dimensions, at most {MAX_NDIM}")
    if isinstance(levels, bool) or not isinstance(levels, int | np.integer) or levels < 0:
        raise UserError(f"masked tensor: levels={levels!r} must be a whole number >= 0")
    codes, scale, offset = quantize(values)
    mask_parts, value_parts = [], []
    for group in _level_groups(values.shape, int(levels), "masked tensor"):
        m = mask.reshape(-1) if group is None else mask[..., group].reshape(-1)
        q = codes.reshape(-1) if group is None else codes[..., group].reshape(-1)
        mask_parts.append(encode_bits(m))
        coded = huffman_encode(q[m])
        value_parts.append(struct.pack("<Q", len(coded)) + coded)
    meta = struct.pack(f"<B{values.ndim}QffB", values.ndim, *values.shape, scale, offset, levels)
    return meta, b"".join(mask_parts), b"".join(value_parts)


def _interleave(meta: bytes, mask_part: bytes, value_part: bytes) -> bytes:
    """Record bytes: meta, then each group's bit plane followed by its values."""
    out, mr, vr = [meta], _Reader(mask_part, "masks"), _Reader(value_part, "values")
    while mr.pos < len(mask_part):
        start = mr.pos
        mr.unpack("<B")
        (length,) = mr.unpack("<Q")
        mr.take(length)
        (vlen,) = vr.unpack("<Q")
        out += [mask_part[start:mr.pos], struct.pack("<Q", vlen), vr.take(vlen)]
    return b"".join(out)


def encode_masked(values, mask, levels: int = 0) -> bytes:
    """A masked-quantised record of float values [...] at bool mask [...] (module docstring)."""
    return _interleave(*_encode_masked_parts(values, mask, levels))


def decode_masked(data: bytes, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """Float32 [...] from `encode_masked`: dequantised values at the mask, 0 elsewhere."""
    r = _Reader(bytes(data), "masked record")
    shape, n = _read_shape(r, max_elements, "masked record")
    scale, offset, levels = r.unpack("<ffB")
    if not (np.isfinite(scale) and np.isfinite(offset) and scale >= 0):
        raise UserError(f"masked record: invalid scale {scale} or offset {offset}")
    groups = _level_groups(shape, levels, "masked record")
    mask = np.zeros(shape, bool)
    codes = np.zeros(shape, np.uint8)
    lead = n // max(1, int(np.prod(shape[-2:]))) if levels else 1
    for k, group in enumerate(groups):
        size = n if group is None else lead * int(group.sum())
        try:
            m = _read_bits(r, size)
        except UserError as e:
            raise UserError(f"masked record: mask of level group {k}: {e}") from None
        try:
            (vlen,) = r.unpack("<Q")
            q = huffman_decode(r.take(vlen))
        except UserError as e:
            raise UserError(f"masked record: values of level group {k}: {e}") from None
        if q.size != int(m.sum()):
            raise UserError(f"masked record: {q.size} values for {int(m.sum())} mask entries "
                            f"in level group {k}")
        if q.size and int(q.max()) > 255:
            raise UserError("masked record: quantised value above 255")
        full = np.zeros(size, np.uint8)
        full[m] = q
        if group is None:
            mask, codes = m.reshape(shape), full.reshape(shape)
        else:
            mask[..., group] = m.reshape(shape[:-2] + (-1,))
            codes[..., group] = full.reshape(shape[:-2] + (-1,))
    r.done()
    return np.where(mask, dequantize(codes, scale, offset), np.float32(0))


def encode_bits_tensor(mask) -> bytes:
    """A bits record of a bool tensor [...]: u8 ndim | u64 dims | a bit plane."""
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.ndim > MAX_NDIM:
        raise UserError(f"bits tensor: need a bool array of at most {MAX_NDIM} dimensions, got "
                        f"{mask.dtype} with {mask.ndim}")
    return struct.pack(f"<B{mask.ndim}Q", mask.ndim, *mask.shape) + encode_bits(mask)


def decode_bits_tensor(data: bytes, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """Bool [...] from `encode_bits_tensor`."""
    r = _Reader(bytes(data), "bits record")
    shape, n = _read_shape(r, max_elements, "bits record")
    try:
        out = _read_bits(r, n).reshape(shape)
    except UserError as e:
        raise UserError(f"bits record: {e}") from None
    r.done()
    return out


# ----------------------------------------------------------------------------- container

_RAW_DTYPES = {"float16": "<f2", "float32": "<f4", "uint8": "u1"}


def write_scene(path, tensors: dict, text: dict) -> dict:
    """Writes tensors (ndarray, Masked or Bits) and UTF-8 text to `path`; returns bytes per section.

    Sections: header, raw (plain tensors), mask (bit planes of masked records), values (codes,
    scales and shapes of masked records), bits (Bits records), text, crc and the total.
    """
    entries, blobs = [], []
    sizes = {"header": 0, "raw": 0, "mask": 0, "values": 0, "bits": 0, "text": 0,
             "crc": _CRC.size}
    offset = 0
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise UserError(f"write_scene: tensor name {name!r} is not a string")
        if isinstance(tensor, Masked):
            meta, mask_part, value_part = _encode_masked_parts(*tensor)
            blob = _interleave(meta, mask_part, value_part)
            sizes["mask"] += len(mask_part)
            sizes["values"] += len(meta) + len(value_part)
            kind, dtype, shape = "masked", "float32", np.shape(tensor.values)
        elif isinstance(tensor, Bits):
            blob = encode_bits_tensor(tensor.mask)
            sizes["bits"] += len(blob)
            kind, dtype, shape = "bits", "bool", np.shape(tensor.mask)
        else:
            array = np.asarray(tensor)
            dtype = array.dtype.name
            if dtype not in _RAW_DTYPES:
                raise UserError(
                    f"write_scene: tensor {name!r} has dtype {dtype}; use float16, float32, "
                    "uint8, Masked(values, mask) or Bits(mask)"
                )
            blob = np.ascontiguousarray(array, _RAW_DTYPES[dtype]).tobytes()
            sizes["raw"] += len(blob)
            kind, shape = "raw", array.shape
        entries.append({"name": name, "kind": kind, "dtype": dtype, "shape": list(shape),
                        "offset": offset, "length": len(blob)})  # fmt: skip
        blobs.append(blob)
        offset += len(blob)
    text_entries = []
    for name, value in text.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UserError(f"write_scene: text entry {name!r} must map a string to a string")
        blob = value.encode("utf-8")
        text_entries.append({"name": name, "offset": offset, "length": len(blob)})
        blobs.append(blob)
        sizes["text"] += len(blob)
        offset += len(blob)
    header = json.dumps({"tensors": entries, "text": text_entries}, separators=(",", ":"))
    header = header.encode("utf-8")
    head = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
    sizes["header"] = len(head)
    body = head + b"".join(blobs)
    body += _CRC.pack(zlib.crc32(body))
    sizes["total"] = len(body)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(body)
    os.replace(tmp, path)  # A crash mid-write never leaves a half-written scene behind.
    return sizes


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(entry, keys: set, data_len: int, seen: set) -> None:
    """Validates one header entry's fields, its name and its byte range."""
    if not isinstance(entry, dict) or set(entry) != keys:
        raise UserError(f"header entry {str(entry)[:60]!r} must have exactly keys {sorted(keys)}")
    name = entry["name"]
    if not isinstance(name, str) or name in seen:
        raise UserError(f"header entry name {name!r} is not a string or is repeated")
    seen.add(name)
    off, length = entry["offset"], entry["length"]
    if not (_is_int(off) and _is_int(length) and 0 <= off and 0 <= length):
        raise UserError(f"record {name!r}: offset/length must be non-negative integers")
    if off + length > data_len:
        raise UserError(
            f"record {name!r}: bytes {off}..{off + length} lie outside the {data_len}-byte data"
        )


def _decode_tensor(entry: dict, blob: memoryview, max_elements: int) -> np.ndarray:
    """The ndarray of one validated tensor entry."""
    name, kind, dtype, shape = entry["name"], entry["kind"], entry["dtype"], entry["shape"]
    if not isinstance(kind, str) or not isinstance(dtype, str):
        raise UserError(f"tensor {name!r}: kind and dtype must be strings")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise UserError(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} dims")
    if not all(_is_int(d) and d >= 0 for d in shape):
        raise UserError(f"tensor {name!r}: shape {shape} must hold non-negative integers")
    n = 1
    for d in shape:
        n *= d
    if n > max_elements or any(d > max_elements for d in shape):  # [0, 2**70] is empty yet absurd.
        raise UserError(f"tensor {name!r}: shape {shape} has {n} elements, over {max_elements}")
    if kind == "raw":
        if dtype not in _RAW_DTYPES:
            raise UserError(f"tensor {name!r}: unknown raw dtype {dtype!r}")
        itemsize = np.dtype(_RAW_DTYPES[dtype]).itemsize
        if n * itemsize != len(blob):
            raise UserError(
                f"tensor {name!r}: shape {shape} of {dtype} needs {n * itemsize} bytes, "
                f"record has {len(blob)}"
            )
        return np.frombuffer(blob, _RAW_DTYPES[dtype]).astype(dtype).reshape(shape)
    decoders = {"masked": ("float32", decode_masked), "bits": ("bool", decode_bits_tensor)}
    if kind in decoders:
        want, decode = decoders[kind]
        if dtype != want:
            raise UserError(f"tensor {name!r}: {kind} tensors are {want}, header says {dtype!r}")
        out = decode(blob, max_elements)
        if list(out.shape) != shape:
            raise UserError(f"tensor {name!r}: record shape {out.shape} != header shape {shape}")
        return out
    raise UserError(f"tensor {name!r}: unknown kind {kind!r}")


def read_scene(path, max_elements: int = MAX_ELEMENTS) -> tuple[dict, dict]:
    """(tensors, text) of a scene file; any damage raises a one-line UserError naming the file."""
    try:
        size = os.path.getsize(path)
        if size > 8 * max_elements + (1 << 24):
            raise UserError(f"file is {size} bytes, larger than any scene this reader accepts")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read scene file ({e.strerror}); check the path") from None
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    try:
        return _parse(data, max_elements)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _parse(data: bytes, max_elements: int) -> tuple[dict, dict]:
    """Checks and decodes a whole scene file held in memory."""
    if len(data) < 4 and MAGIC.startswith(data):
        raise UserError(f"truncated scene file ({len(data)} bytes)")
    if data[:4] != MAGIC:
        raise UserError(f"not a jaxnerf360 scene file (magic {bytes(data[:4])!r}, want {MAGIC!r})")
    if len(data) < 6:
        raise UserError("truncated scene file (no version)")
    (version,) = struct.unpack_from("<H", data, 4)
    if version != VERSION:
        raise UserError(f"unsupported scene format version {version}; this reader knows {VERSION}")
    if len(data) < _PREFIX.size + _CRC.size:
        raise UserError(f"truncated scene file ({len(data)} bytes)")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != crc:
        raise UserError("checksum mismatch: the file is truncated or corrupted")
    _, _, header_len = _PREFIX.unpack_from(data, 0)
    body_end = len(data) - _CRC.size
    if header_len > body_end - _PREFIX.size:
        raise UserError(f"header length {header_len} runs past the end of the file")
    try:
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UserError("header is not valid UTF-8 JSON") from None
    if not isinstance(header, dict) or set(header) != {"tensors", "text"}:
        raise UserError("header must be an object with exactly the keys 'tensors' and 'text'")
    if not isinstance(header["tensors"], list) or not isinstance(header["text"], list):
        raise UserError("header 'tensors' and 'text' must be lists")
    records = memoryview(data)[_PREFIX.size + header_len : body_end]
    tensors, seen = {}, set()
    keys = {"name", "kind", "dtype", "shape", "offset", "length"}
    for entry in header["tensors"]:
        _check_entry(entry, keys, len(records), seen)
        blob = records[entry["offset"] : entry["offset"] + entry["length"]]
        try:
            tensors[entry["name"]] = _decode_tensor(entry, blob, max_elements)
        except UserError as e:
            message = str(e)
            if not message.startswith(("tensor ", "record ")):
                message = f"tensor {entry['name']!r}: {message}"
            raise UserError(message) from None
    text, seen = {}, set()
    for entry in header["text"]:
        _check_entry(entry, {"name", "offset", "length"}, len(records), seen)
        blob = records[entry["offset"] : entry["offset"] + entry["length"]]
        try:
            text[entry["name"]] = bytes(blob).decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"text {entry['name']!r} is not valid UTF-8") from None
    return tensors, text
