"""Multi-level 2D discrete wavelet transforms in JAX (periodization boundary, matrix form).

Each axis of each level is one precomputed `[n, n]` matrix: the analysis matrix stacks the
low-pass rows over the high-pass rows (so `A @ x` is `[approx; detail]`), the synthesis matrix
puts the low-pass columns beside the high-pass columns. A 2D level is `A_rows @ X @ A_cols^T`
on the top-left block, which leaves the four bands in exactly PyWavelets' packed layout:

    [[cA, cV],      cA: low along rows and columns     cV: low along rows, high along columns
     [cH, cD]]      cH: high along rows, low along columns    cD: high along both

Coefficients equal `pywt.dwt2` / `pywt.wavedec2` + `pywt.coeffs_to_array` with
`mode='periodization'` and `axes=(-2, -1)`. Filter banks come from PyWavelets; the transforms
are plain einsums, so they jit, run on any device and differentiate.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.errors import UserError

# Full float32 matmuls: TF32 on GPUs would cost ~1e-3 relative error in every plane.
_PRECISION = jax.lax.Precision.HIGHEST


def _check_levels(levels) -> int:
    """`levels` as an int, or UserError unless it is a whole number >= 1."""
    if isinstance(levels, bool) or not isinstance(levels, int | np.integer) or levels < 1:
        raise UserError(f"wavelet levels={levels!r} must be a whole number >= 1 (1 to 4 in the "
                        "field)")
    return int(levels)


def check_size(n: int, levels: int, what: str) -> None:
    """Raises UserError (naming `what`) unless `n` is a positive multiple of 2**levels."""
    levels = _check_levels(levels)
    m = 2 ** levels
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < m or n % m:
        hint = round_size(n, levels) if isinstance(n, int | np.integer) else m
        raise UserError(f"{what}={n!r} is not a positive multiple of 2**{levels}={m}, which "
                        f"{levels} wavelet level(s) need; use a multiple of {m} such as {hint}")


def round_size(n: int, levels: int) -> int:
    """The multiple of 2**levels nearest to `n` (ties round up), and at least 2**levels."""
    m = 2 ** _check_levels(levels)
    return max(m, int((int(n) + m // 2) // m) * m)


@functools.cache
def filter_bank(name: str, what: str = "wavelet") -> tuple:
    """(dec_lo, dec_hi, rec_lo, rec_hi) float64 `[F]` filters of PyWavelets' wavelet `name`."""
    try:
        import pywt
    except ImportError as e:  # pragma: no cover - PyWavelets is a dependency
        raise UserError("wavelet planes need PyWavelets; run `pip install PyWavelets`") from e
    if not isinstance(name, str):
        raise UserError(f"{what}={name!r} must be a PyWavelets discrete wavelet name such as "
                        "'haar', 'db2' or 'bior4.4'")
    try:
        wavelet = pywt.Wavelet(name)
    except (ValueError, TypeError) as e:
        raise UserError(f"{what}={name!r} is not a PyWavelets discrete wavelet; use a name "
                        "from pywt.wavelist(kind='discrete') such as 'haar', 'db2' or "
                        "'bior4.4'") from e
    bank = tuple(np.asarray(f, np.float64) for f in wavelet.filter_bank)
    for f in bank:
        f.setflags(write=False)  # shared through the cache
    return bank


@functools.cache
def analysis_matrix(name: str, n: int) -> np.ndarray:
    """`[n, n]` float64 one-level periodized DWT along an axis of even length `n`.

    Row k < n/2 gives approximation k, row n/2 + k detail k:
    c[k] = sum_j f[j] x[(2k + F/2 - j) mod n], PyWavelets' periodization alignment.
    Filters longer than `n` wrap around several times (np.add.at accumulates).
    """
    check_size(n, 1, "wavelet transform length")
    dec_lo, dec_hi = filter_bank(name)[:2]
    half, taps = n // 2, len(dec_lo)
    k = np.arange(half)[:, None]
    j = np.arange(taps)[None, :]
    cols = np.broadcast_to((2 * k + taps // 2 - j) % n, (half, taps))
    rows = np.broadcast_to(k, (half, taps))
    out = np.zeros((n, n))
    np.add.at(out, (rows, cols), np.broadcast_to(dec_lo, (half, taps)))
    np.add.at(out, (rows + half, cols), np.broadcast_to(dec_hi, (half, taps)))
    out.setflags(write=False)
    return out


@functools.cache
def synthesis_matrix(name: str, n: int) -> np.ndarray:
    """`[n, n]` float64 one-level periodized inverse DWT: x = S @ [approx; detail].

    x[(2k + 1 - F/2 + j) mod n] += g[j] c[k] with the reconstruction filters g, which for
    orthogonal wavelets makes S the transpose of `analysis_matrix` and in general its inverse.
    """
    check_size(n, 1, "wavelet transform length")
    rec_lo, rec_hi = filter_bank(name)[2:]
    half, taps = n // 2, len(rec_lo)
    k = np.arange(half)[None, :]
    j = np.arange(taps)[:, None]
    rows = np.broadcast_to((2 * k + 1 - taps // 2 + j) % n, (taps, half))
    cols = np.broadcast_to(k, (taps, half))
    out = np.zeros((n, n))
    np.add.at(out, (rows, cols), np.broadcast_to(rec_lo[:, None], (taps, half)))
    np.add.at(out, (rows, cols + half), np.broadcast_to(rec_hi[:, None], (taps, half)))
    out.setflags(write=False)
    return out


def _as_float(x):
    """`x` as a floating JAX array (integers become float32)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.float32)


def _apply(rows, x, cols):
    """rows @ x @ cols^T over the last two axes: `[h, h]`, `[..., h, w]`, `[w, w]`."""
    rows = jnp.asarray(rows, x.dtype)
    cols = jnp.asarray(cols, x.dtype)
    y = jnp.einsum("ij,...jk->...ik", rows, x, precision=_PRECISION)
    return jnp.einsum("...ij,kj->...ik", y, cols, precision=_PRECISION)


def _check_plane(x, levels: int, fn: str):
    """`x` as a float array `[..., H, W]` with H and W divisible by 2**levels (else UserError)."""
    x = _as_float(x)
    if x.ndim < 2:
        raise UserError(f"{fn} needs an array [..., H, W] with at least 2 axes, got shape "
                        f"{tuple(x.shape)}")
    h, w = x.shape[-2:]
    check_size(int(h), levels, f"{fn} height H")
    check_size(int(w), levels, f"{fn} width W")
    return x


def dwt2(x, wavelet: str):
    """One-level 2D DWT of `x [..., H, W]` -> (cA, (cH, cV, cD)), each `[..., H/2, W/2]`.

    Same bands as `pywt.dwt2(x, wavelet, mode='periodization', axes=(-2, -1))`: cH is the
    detail along axis -2 (rows), cV along axis -1, cD along both.
    """
    x = _check_plane(x, 1, "dwt2")
    filter_bank(wavelet)
    h, w = x.shape[-2:]
    y = _apply(analysis_matrix(wavelet, h), x, analysis_matrix(wavelet, w))
    hh, hw = h // 2, w // 2
    return y[..., :hh, :hw], (y[..., hh:, :hw], y[..., :hh, hw:], y[..., hh:, hw:])


def idwt2(ll, details, wavelet: str):
    """Inverse of `dwt2`: cA `[..., h, w]`, (cH, cV, cD) each `[..., h, w]` -> `[..., 2h, 2w]`.

    Equals `pywt.idwt2((ll, details), wavelet, mode='periodization', axes=(-2, -1))`.
    """
    filter_bank(wavelet)
    ll = _as_float(ll)
    if not isinstance(details, tuple | list) or len(details) != 3:
        raise UserError("idwt2 details must be the three bands (cH, cV, cD)")
    bands = [ll] + [_as_float(d) for d in details]
    shapes = {tuple(b.shape) for b in bands}
    if len(shapes) != 1 or ll.ndim < 2:
        raise UserError(f"idwt2 bands (cA, cH, cV, cD) must share one shape [..., h, w]; got "
                        f"{[tuple(b.shape) for b in bands]}")
    dtype = jnp.result_type(*bands)
    ll, lh, hl, hh = (b.astype(dtype) for b in bands)
    packed = jnp.concatenate([jnp.concatenate([ll, hl], -1), jnp.concatenate([lh, hh], -1)], -2)
    h, w = packed.shape[-2:]
    return _apply(synthesis_matrix(wavelet, h), packed, synthesis_matrix(wavelet, w))


def wavedec2(x, wavelet: str, levels: int):
    """Multi-level 2D DWT of `x [..., H, W]` packed into one `[..., H, W]` array.

    Equals `pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, mode='periodization',
    level=levels, axes=(-2, -1)), axes=(-2, -1))[0]`: the coarsest cA in
    `[:H/2^L, :W/2^L]`; each level's (cH, cV, cD) below, right of and diagonal to the block
    of the coarser levels (see `level_of`). H and W must be divisible by 2**levels.
    """
    levels = _check_levels(levels)
    filter_bank(wavelet)
    x = _check_plane(x, levels, "wavedec2")
    h, w = x.shape[-2:]
    for i in range(levels):  # finest first; each level re-transforms only the cA block
        bh, bw = h >> i, w >> i
        block = _apply(analysis_matrix(wavelet, bh), x[..., :bh, :bw],
                       analysis_matrix(wavelet, bw))
        x = block if i == 0 else x.at[..., :bh, :bw].set(block)
    return x


def waverec2(packed, wavelet: str, levels: int):
    """Inverse of `wavedec2`: packed coefficients `[..., H, W]` -> signal `[..., H, W]`.

    Equals `pywt.waverec2(pywt.array_to_coeffs(packed, slices, output_format='wavedec2'),
    wavelet, mode='periodization', axes=(-2, -1))`. Linear, jit-able and differentiable.
    """
    levels = _check_levels(levels)
    filter_bank(wavelet)
    x = _check_plane(packed, levels, "waverec2")
    h, w = x.shape[-2:]
    for i in reversed(range(levels)):  # coarsest first
        bh, bw = h >> i, w >> i
        block = _apply(synthesis_matrix(wavelet, bh), x[..., :bh, :bw],
                       synthesis_matrix(wavelet, bw))
        x = block if i == 0 else x.at[..., :bh, :bw].set(block)
    return x


@functools.cache
def _level_map(h: int, w: int, levels: int) -> np.ndarray:
    """Cached `level_of` (read-only)."""
    def axis_level(n):
        # Index i is at level k along an axis when n >> (L - k + 1) <= i < n >> (L - k).
        edges = np.array([n >> (levels - k) for k in range(levels + 1)])  # k = 0..L
        return np.searchsorted(edges, np.arange(n), side="right")

    out = np.maximum(axis_level(h)[:, None], axis_level(w)[None, :]).astype(np.int32)
    out.setflags(write=False)
    return out


def level_of(shape_hw, levels: int) -> np.ndarray:
    """int32 `[H, W]`: the level of each packed coefficient in the layout of `wavedec2`.

    0 is the coarsest cA block, 1 the coarsest details, ..., `levels` the finest details.
    """
    levels = _check_levels(levels)
    if len(shape_hw) != 2:
        raise UserError(f"level_of needs a plane shape (H, W), got {tuple(shape_hw)}")
    h, w = (int(n) for n in shape_hw)
    check_size(h, levels, "level_of height H")
    check_size(w, levels, "level_of width W")
    return _level_map(h, w, levels).copy()
