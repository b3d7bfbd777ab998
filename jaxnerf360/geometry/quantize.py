"""Affine min/max quantisation in float32 arithmetic, on the host (numpy) or under jit.

`quantize(values, bits=8, xnp=np) -> (codes, scale, offset)` / `dequantize(codes, scale, offset)`:
offset = min, scale = range / (2**bits - 1). The masked wavelet field calls the same function
with `xnp=jax.numpy` for its quantisation-aware rounding, and the codec stores its codes, so a
file holds exactly the grid the field trained on.
"""

import numpy as np

from jaxnerf360.errors import UserError

_FLT_MAX = float(np.finfo(np.float32).max)


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
