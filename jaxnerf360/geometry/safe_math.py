"""Elementwise maths with finite values and gradients where the plain versions overflow."""

import math

import jax
import jax.numpy as jnp


def _split(value: float, parts: int, bits: int) -> tuple:
    """`value` as `parts` float32 terms of at most `bits` significant bits each (the rest last)."""
    out, rest = [], float(value)
    for _ in range(parts - 1):
        exponent = math.frexp(rest)[1]
        head = math.floor(rest * 2.0 ** (bits - exponent)) * 2.0 ** (exponent - bits)
        out.append(head)
        rest -= head
    return (*out, rest)


# 2 pi in four float32 terms of 8 bits (Cody and Waite's reduction): for a whole number k of at
# most 16 bits every product k * c_i is exact in float32, so x - k 2 pi loses nothing but the
# rounding of the small final terms, up to |x| ~ 4e5 (2^16 turns; the encodings reach 2^17 at
# degree 16 of the contracted space).
_TWO_PI_PARTS = _split(2.0 * math.pi, 4, 8)


def reduce_angle(x):
    """`x [...]` minus the nearest whole number of turns: a value in [-pi, pi] (beyond it only by
    the float32 rounding of x / 2 pi, 0.02 at |x| = 3e5), with the same sin and cos.

    Exact up to float32 rounding of the result (not of x's magnitude), unlike x mod float32(2 pi),
    whose period is itself off by ~1e-7 per turn.
    """
    x = jnp.asarray(x)
    k = jnp.round(x * (1.0 / (2.0 * math.pi)))
    for part in _TWO_PI_PARTS:
        x = x - k * jnp.asarray(part, x.dtype)
    return x


def _max_exp_arg(dtype):
    """The largest argument whose exp is finite in `dtype`, with a little margin."""
    return float(jnp.log(jnp.finfo(dtype).max)) - 1.0


@jax.custom_jvp
def safe_exp(x):
    """exp(x) with the argument clipped so that neither value nor gradient overflow."""
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    return jnp.exp(jnp.minimum(x, _max_exp_arg(dtype)))


@safe_exp.defjvp
def _safe_exp_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y = safe_exp(x)
    return y, y * x_dot


@jax.custom_jvp
def safe_sqrt(x):
    """sqrt(max(x, 0)) whose gradient at 0 is finite (clipped to that at the tiniest float)."""
    return jnp.sqrt(jnp.maximum(x, 0.0))


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y = safe_sqrt(x)
    tiny = jnp.finfo(jnp.result_type(y)).tiny
    return y, jnp.where(x > 0, x_dot * 0.5 / jnp.maximum(y, jnp.sqrt(tiny)), 0.0)


def safe_div(numerator, denominator, fallback=0.0):
    """numerator / denominator, or `fallback` where the denominator is 0 (no NaN gradients)."""
    ok = denominator != 0
    return jnp.where(ok, numerator / jnp.where(ok, denominator, 1.0), fallback)
