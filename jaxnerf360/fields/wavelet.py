"""Masked wavelet planes (Rho et al., "Masked Wavelet Representation for Compact NeRF").

This module holds the pieces applied to the stored coefficients at every step: the
trainable binary mask and 8-bit quantisation-aware rounding, both with straight-through
gradients, and the mask sparsity penalty. The transforms are in `jaxnerf360.wavelets`.
"""

import jax
import jax.numpy as jnp


def binary_mask(logits):
    """1[sigmoid(m) >= 0.5] forward, d sigmoid(m)/dm backward (straight-through), `[...]`."""
    soft = jax.nn.sigmoid(logits)
    hard = (soft >= 0.5).astype(soft.dtype)
    return soft + jax.lax.stop_gradient(hard - soft)


def quantize_ste(x, bits: int = 8):
    """`x` rounded to 2^bits levels between its min and max; identity gradient (STE).

    The range is a constant for the gradient, so this is exactly the value a codec storing
    `bits`-bit codes with a float scale and offset reproduces.
    """
    lo = jax.lax.stop_gradient(jnp.min(x))
    hi = jax.lax.stop_gradient(jnp.max(x))
    levels = 2**bits - 1
    scale = jnp.where(hi > lo, (hi - lo) / levels, 1.0)
    q = jnp.round((x - lo) / scale) * scale + lo
    return x + jax.lax.stop_gradient(q - x)


def mask_fraction(logits_list):
    """The expected fraction of kept coefficients, mean of sigmoid(m) over every mask logit.

    A differentiable proxy for the fraction of non-zero coefficients, in [0, 1]: a weight w on
    it trades w of loss for keeping every coefficient (the published code puts ~1e-10 on a
    raw sum of logits and leans on Adam's normalisation; this keeps the weight's meaning).
    """
    total = sum(jnp.sum(jax.nn.sigmoid(m)) for m in logits_list)
    count = sum(m.size for m in logits_list)
    return total / count
