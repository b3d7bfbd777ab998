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


# pi / 2 in five float32 terms of 6 bits (Cody and Waite's reduction): for a whole number k of at
# most 18 bits every product k * c_i is exact in float32, fused multiply-add or not, so
# x - k pi / 2 loses nothing but the rounding of the small final terms, up to |x| ~ 4e5 (2^18
# quarter turns; the encodings reach 1.3e5 at degree 16 of the contracted space).
_HALF_PI_PARTS = _split(0.5 * math.pi, 5, 6)
# Taylor coefficients of sin r / r and cos r in r^2: on |r| <= pi / 4 the first terms left out
# are below 2e-9 and 1.1e-10, far under float32's rounding.
_SIN_TERMS = tuple((-1.0) ** i / math.factorial(2 * i + 1) for i in range(5))
_COS_TERMS = tuple((-1.0) ** i / math.factorial(2 * i) for i in range(6))


def _polynomial(z, coefficients):
    """sum_i c_i z^i by Horner's rule."""
    out = jnp.full_like(z, coefficients[-1])
    for c in coefficients[-2::-1]:
        out = out * z + c
    return out


@jax.custom_jvp
def sin_cos(x):
    """(sin x, cos x) of float `x [...]`, each within ~1e-7 of float64 for |x| up to 4e5.

    Reduced by whole quarter turns exactly, then Taylor polynomials on [-pi/4, pi/4]: plain
    multiplies and adds that XLA:CPU vectorises, where its own sin and cos run 15x slower than
    its exp (the encodings spent 30 of a lego_cpu step's 297 ms in them; BENCHMARKS.md).
    """
    x = jnp.asarray(x)
    k = jnp.round(x * (2.0 / math.pi))
    r = x
    for part in _HALF_PI_PARTS:
        r = r - k * jnp.asarray(part, x.dtype)
    z = r * r
    s, c = r * _polynomial(z, _SIN_TERMS), _polynomial(z, _COS_TERMS)
    quarter = k.astype(jnp.int32) & 3  # two's complement: the right quadrant for k < 0 too
    odd = (quarter & 1) == 1
    sin = jnp.where(odd, c, s) * jnp.where(quarter >= 2, -1.0, 1.0).astype(x.dtype)
    cos = jnp.where(odd, s, c) * jnp.where((quarter == 1) | (quarter == 2), -1.0,
                                           1.0).astype(x.dtype)
    return sin, cos


@sin_cos.defjvp
def _sin_cos_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    sin, cos = sin_cos(x)
    return (sin, cos), (cos * x_dot, -sin * x_dot)


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
