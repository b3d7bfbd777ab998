"""Tensor records of the scene codec: bit planes, masked quantised tensors and bool tensors.

- A bit plane (`encode_bits` / `read_bits`): u8 first bit | u64 length L | L bytes of the
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
"""

import struct
from typing import NamedTuple

import numpy as np

from jaxnerf360.codec.entropy import Reader, huffman_decode, huffman_encode, rle_decode, rle_encode
from jaxnerf360.errors import UserError
from jaxnerf360.geometry.quantize import dequantize, quantize

# Largest tensor (in elements) a file may ask us to allocate: 2**28 float32 is 1 GiB.
MAX_ELEMENTS = 1 << 28
MAX_NDIM = 32
MAX_LEVELS = 8


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


def masked_values(values, mask) -> np.ndarray:
    """Float32 [...]: `values` quantised over all entries, dequantised where `mask` holds, else 0.

    Exactly what a `Masked(values, mask)` record decodes to.
    """
    codes, scale, offset = quantize(values)
    return np.where(np.asarray(mask, bool), dequantize(codes, scale, offset), np.float32(0))



def encode_bits(bits) -> bytes:
    """A bit plane: the run lengths of flattened bits [...], Huffman coded (module docstring)."""
    first_bit, runs = rle_encode(bits)
    code = huffman_encode(runs)
    return struct.pack("<BQ", first_bit, len(code)) + code


def read_bits(r: "Reader", n: int) -> np.ndarray:
    """Flat bool [n] from the bit plane at the reader's position."""
    first_bit, length = r.unpack("<BQ")
    return rle_decode(first_bit, huffman_decode(r.take(length)), n)


def read_shape(r: "Reader", max_elements: int, what: str) -> tuple[tuple, int]:
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


def level_groups(shape, levels: int, what: str) -> list:
    """Bool `[H, W]` selectors of each level (coarsest first), or [None] when levels is 0."""
    if levels == 0:
        return [None]
    from jaxnerf360.geometry import wavelets

    if levels > MAX_LEVELS or len(shape) < 2:
        raise UserError(f"{what}: {levels} wavelet levels for shape {tuple(shape)}; need at most "
                        f"{MAX_LEVELS} levels and a plane [..., H, W]")
    m = 1 << levels
    if any(d < m or d % m for d in shape[-2:]):
        raise UserError(f"{what}: plane {tuple(shape[-2:])} is not divisible by 2**{levels}")
    level = wavelets.level_of(tuple(int(d) for d in shape[-2:]), levels)
    return [level == k for k in range(levels + 1)]


def encode_masked_parts(values, mask, levels: int = 0) -> tuple[bytes, bytes, bytes]:
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
    for group in level_groups(values.shape, int(levels), "masked tensor"):
        m = mask.reshape(-1) if group is None else mask[..., group].reshape(-1)
        q = codes.reshape(-1) if group is None else codes[..., group].reshape(-1)
        mask_parts.append(encode_bits(m))
        coded = huffman_encode(q[m])
        value_parts.append(struct.pack("<Q", len(coded)) + coded)
    meta = struct.pack(f"<B{values.ndim}QffB", values.ndim, *values.shape, scale, offset, levels)
    return meta, b"".join(mask_parts), b"".join(value_parts)


def interleave(meta: bytes, mask_part: bytes, value_part: bytes) -> bytes:
    """Record bytes: meta, then each group's bit plane followed by its values."""
    out, mr, vr = [meta], Reader(mask_part, "masks"), Reader(value_part, "values")
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
    return interleave(*encode_masked_parts(values, mask, levels))


def decode_masked(data: bytes, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """Float32 [...] from `encode_masked`: dequantised values at the mask, 0 elsewhere."""
    r = Reader(bytes(data), "masked record")
    shape, n = read_shape(r, max_elements, "masked record")
    scale, offset, levels = r.unpack("<ffB")
    if not (np.isfinite(scale) and np.isfinite(offset) and scale >= 0):
        raise UserError(f"masked record: invalid scale {scale} or offset {offset}")
    groups = level_groups(shape, levels, "masked record")
    mask = np.zeros(shape, bool)
    codes = np.zeros(shape, np.uint8)
    lead = n // max(1, int(np.prod(shape[-2:]))) if levels else 1
    for k, group in enumerate(groups):
        size = n if group is None else lead * int(group.sum())
        try:
            m = read_bits(r, size)
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
    r = Reader(bytes(data), "bits record")
    shape, n = read_shape(r, max_elements, "bits record")
    try:
        out = read_bits(r, n).reshape(shape)
    except UserError as e:
        raise UserError(f"bits record: {e}") from None
    r.done()
    return out


