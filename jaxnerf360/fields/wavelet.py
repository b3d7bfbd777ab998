"""Masked wavelet planes (Rho et al., "Masked Wavelet Representation for Compact NeRF").

`TensoRFField(plane_coding='wavelet')` stores every VM plane `[R, Na, Nb]` as packed multi-level
2D DWT coefficients (the layout of `jaxnerf360.geometry.wavelets.wavedec2`) and every line `[R, N]`
spatially, each with one trainable mask logit per entry. At every step a factor is decoded as

    stored --quantise (8-bit, STE)--> --mask (hard forward, sigmoid backward)-->
           --divide level l by divisors[l]--> --inverse DWT (planes only)--> spatial factor

and sampled as in a plain VM field. Quantising the *stored* values (before the per-level
division) gives every level the same 256-step grid relative to its trained range. The
functions here are pure: decoding, conversion to a spatial field, the codes a compressed file
stores, and resampling for the upsampling schedule.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360 import codec
from jaxnerf360.errors import UserError
from jaxnerf360.fields import vm
from jaxnerf360.fields.vm import resample_axis
from jaxnerf360.geometry import wavelets
from jaxnerf360.geometry.quantize import dequantize, quantize
from jaxnerf360.objective import LossTerm

# The compressed scene format of masked wavelet planes (compressed.py, codec/), and the gin
# bindings under which a decoded file renders: a plain spatial VM field, without masks.
FILE_FORMAT = "masked-wavelet-vm"
RENDER_BINDINGS = ("TensoRFField.plane_coding = 'spatial'", "TensoRFField.mask_loss_mult = 0.0")

# A mask logit's gradient is x * sigmoid'(m) * dL/dx, often far below 1e-8: with the usual
# epsilon Adam would scale it down (the masks would only drift). Tiny, it keeps Adam
# scale-free, so the masks settle where the data and the mask penalty balance.
MASK_ADAM_EPS = 1e-15


def binary_mask(logits):
    """1[sigmoid(m) >= 0.5] (that is, m >= 0) forward, d sigmoid(m)/dm backward, `[...]`."""
    soft = jax.nn.sigmoid(logits)
    hard = (logits >= 0).astype(soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))  # exactly `hard` forward


def apply_mask(x, logits):
    """x * 1[m >= 0] forward; gradients of x * sigmoid(m) backward (the published STE).

    Masked-out values keep learning (at sigmoid(m) of the rate), so a mask that turns back
    on finds an up-to-date coefficient; the logits get x * sigmoid'(m) times the upstream.
    """
    soft = x * jax.nn.sigmoid(logits)
    hard = jax.lax.stop_gradient(jnp.where(logits >= 0, x, jnp.zeros_like(x)))
    return hard + (soft - jax.lax.stop_gradient(soft))


def quantize_ste(x, bits: int = 8):
    """`x` rounded to 2^bits levels between its min and max; identity gradient (STE).

    The rounding is the codec's (`geometry.quantize.quantize`), so a compressed file stores
    exactly the grid the field trained on.
    """
    codes, scale, offset = quantize(jax.lax.stop_gradient(x), bits, xnp=jnp)
    return dequantize(codes, scale, offset, xnp=jnp) + (x - jax.lax.stop_gradient(x))


def kept_fraction(logits_list):
    """The fraction of coefficients the masks keep (logit >= 0), over every mask logit."""
    kept = sum(jnp.sum(m >= 0) for m in logits_list)
    return kept / sum(m.size for m in logits_list)


def mask_fraction(logits_list):
    """The expected fraction of kept coefficients, mean of sigmoid(m) over every mask logit.

    The mask penalty is `TensoRFField.mask_loss_mult` times this: a differentiable proxy of the kept
    fraction in [0, 1], so the weight w is the loss (mean squared error, for MSE runs) that
    keeping every coefficient is worth, whatever the grid size. At the optimum a mask stays on
    while dropping its coefficient would raise the loss by more than w / N (N logits in all).
    The published code instead puts ~1e-10 on the raw sum of logits inside Adam, where it only
    acts through Adam's epsilon (1e-8).
    """
    total = sum(jnp.sum(jax.nn.sigmoid(m)) for m in logits_list)
    count = sum(m.size for m in logits_list)
    return total / count


def level_divisors(levels: int, divisors: Sequence[float] | None = None) -> np.ndarray:
    """float32 `[levels + 1]`: the divisor of each level (0: coarsest LL, `levels`: finest).

    None gives 2^-depth (depth `levels` for the LL band and the coarsest details, 1 for the
    finest): an orthonormal basis function at depth d has amplitude 2^-d, so after the division
    a stored unit changes the plane by about one unit at every level, and Adam's per-parameter
    steps move a wavelet plane about as fast as a spatial one. (The published code divides by
    1, 2, ..., levels + 1; on lego at 200x200 that reached 18.5 dB after 450 steps where this
    reaches 22.2 dB and the spatial VM field 22.6 dB.)
    """
    if divisors is None:
        depth = np.concatenate([[levels], levels - np.arange(levels)])
        return (2.0 ** -depth).astype(np.float32)
    out = np.asarray(divisors, np.float64)
    if out.shape != (levels + 1,) or not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise UserError(f"TensoRFField.level_divisors={tuple(divisors)} needs wavelet_levels + 1 "
                        f"= {levels + 1} positive numbers (coarsest LL first), or None for "
                        "1, 2, ..., levels + 1")
    return out.astype(np.float32)


def divisor_map(shape_hw, settings: dict) -> np.ndarray:
    """float32 `[H, W]`: the divisor of each packed coefficient of a plane."""
    table = level_divisors(settings["levels"], settings["divisors"])
    return table[wavelets.level_of(shape_hw, settings["levels"])]


def is_plane(name: str) -> bool:
    """Whether a VM factor name (density_plane_0, appearance_line_2, ...) is a plane."""
    return "_plane_" in name


def decode_factor(name: str, stored, logits, settings: dict, quantize: bool = True):
    """The spatial plane or line that stored values and mask logits represent.

    `stored` and `logits` share a shape (`[R, Na, Nb]` packed coefficients or `[R, N]`).
    With `quantize=False` the stored values are taken as already quantised (a decoded file).
    """
    x = stored
    if quantize and settings["bits"] > 0:
        x = quantize_ste(x, settings["bits"])
    x = apply_mask(x, logits)
    if is_plane(name):
        x = x / jnp.asarray(divisor_map(stored.shape[-2:], settings), x.dtype)
        x = wavelets.waverec2(x, settings["wavelet"], settings["levels"])
    return x


def mask_name(factor_name: str) -> str:
    """The parameter holding the mask logits of a factor: density_plane_0 -> density_planemask_0."""
    return factor_name.replace("_plane_", "_planemask_").replace("_line_", "_linemask_")


def is_mask(name: str) -> bool:
    """Whether a parameter name holds mask logits."""
    return "mask_" in name


def to_spatial(params: dict, settings: dict, quantize: bool = True) -> dict:
    """A wavelet field's parameters converted once into a spatial VM field's (same renders).

    Applies quantisation, the masks and the inverse DWT; the result renders with
    `field.clone(plane_coding='spatial')` at plain VM speed. Factors without mask logits
    (decoded files, whose masked coefficients are already zero) are taken as all kept.
    """
    out = {}
    for name, value in params.items():
        if is_mask(name):
            continue
        if vm.is_factor(name):
            logits = params.get(mask_name(name))
            logits = jnp.ones_like(value) if logits is None else logits
            value = decode_factor(name, value, logits, settings, quantize)
        out[name] = value
    return out


def mask_terms(mask_loss_mult: float) -> list:
    """The logged kept fraction and, with a weight, the mask penalty (objective terms)."""
    def logits(inputs):
        return [v for k, v in inputs.field_params.items() if is_mask(k)]

    terms = [LossTerm("mask_kept", lambda i: kept_fraction(logits(i)), None)]
    if mask_loss_mult > 0:
        terms.append(LossTerm("mask_fraction", lambda i: mask_fraction(logits(i)),
                              mask_loss_mult))
    return terms


def file_tensors(params: dict, settings: dict, network_dtype: str) -> dict:
    """What a compressed file stores of a wavelet field's flat `params` (`codec` records).

    Factors become `codec.Masked` records (planes split by wavelet level) with their mask
    logits folded in; the networks are cast to `network_dtype`.
    """
    if settings["bits"] not in (0, 8):
        raise UserError(f"TensoRFField.quantize_bits={settings['bits']}: compressed files store "
                        "8-bit codes; train with 8 (or 0)")
    out = {}
    for name, value in params.items():
        value = np.asarray(value)
        if is_mask(name):
            continue
        if vm.is_factor(name):
            mask = np.asarray(params[mask_name(name)]) >= 0
            levels = settings["levels"] if is_plane(name) else 0
            out[name] = codec.Masked(value.astype(np.float32), mask, levels)
        else:
            out[name] = value.astype(network_dtype)
    return out


def spatial_params(tensors: dict, settings: dict) -> dict:
    """Spatial VM field parameters (float32, flat names) of a decoded file's arrays."""
    # Compiled as one program: op by op, the inverse transforms took ~10 s on a tiny field.
    decode = jax.jit(functools.partial(to_spatial, settings=settings, quantize=False))
    return decode({k: jnp.asarray(v, jnp.float32) for k, v in tensors.items()})


def _band_slices(n: int, levels: int) -> list:
    """Index ranges along one axis of a packed plane: the LL block, then each level's band."""
    edges = [0] + [n >> (levels - k) for k in range(levels + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@functools.partial(jax.jit, static_argnums=(1, 2))
def resample_bands(x, hw_new, levels: int):
    """Packed `[..., H, W]` resampled band by band to `[..., H', W']` (both / 2^levels).

    The layout's row and column band edges cut it into (L + 1)^2 blocks; each is resampled on
    its own, so a coefficient's mask or optimiser moment stays with its level, band and place,
    and linear weights are non-negative, so second moments stay non-negative.
    """
    h_new, w_new = (int(n) for n in hw_new)
    rows_old, cols_old = (_band_slices(n, levels) for n in x.shape[-2:])
    rows_new, cols_new = _band_slices(h_new, levels), _band_slices(w_new, levels)
    out_rows = []
    for ro, rn in zip(rows_old, rows_new, strict=True):
        row = []
        for co, cn in zip(cols_old, cols_new, strict=True):
            block = resample_axis(x[..., ro, co], x.ndim - 2, rn.stop - rn.start)
            row.append(resample_axis(block, x.ndim - 1, cn.stop - cn.start))
        out_rows.append(jnp.concatenate(row, -1))
    return jnp.concatenate(out_rows, -2)


def encode_plane(plane, settings: dict):
    """Stored coefficients `[..., H, W]` of a spatial plane: forward DWT, times the divisors."""
    coeffs = wavelets.wavedec2(plane, settings["wavelet"], settings["levels"])
    return coeffs * divisor_map(plane.shape[-2:], settings)


def resample_coefficients(stored, hw_new, settings: dict):
    """Stored packed coefficients of a plane, resampled as the spatial plane they represent.

    Inverse DWT (with the level divisors undone), corner-aligned linear resampling to
    `hw_new`, forward DWT, divisors applied again (TensoRF's upsampling for wavelet planes).
    """
    levels, name = settings["levels"], settings["wavelet"]
    spatial = wavelets.waverec2(stored / divisor_map(stored.shape[-2:], settings), name, levels)
    spatial = resample_axis(resample_axis(spatial, spatial.ndim - 2, hw_new[0]), spatial.ndim - 1,
                        hw_new[1])
    return encode_plane(spatial, settings)
