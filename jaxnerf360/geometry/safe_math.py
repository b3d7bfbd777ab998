"""Elementwise maths with finite values and gradients where the plain versions overflow."""

import jax
import jax.numpy as jnp

# sin/cos are periodic in 2*pi, so reducing by a multiple of it changes nothing but keeps
# float32 arguments small enough that XLA's range reduction stays accurate.
_SIN_PERIOD = 100.0 * jnp.pi


def _reduce(x):
    """x, or x modulo 100*pi where |x| is at least that (small x keep full precision)."""
    return jnp.where(jnp.abs(x) < _SIN_PERIOD, x, jnp.mod(x, _SIN_PERIOD))


def safe_sin(x):
    """sin(x) with huge arguments reduced modulo 100*pi first."""
    return jnp.sin(_reduce(x))


def safe_cos(x):
    """cos(x) with huge arguments reduced modulo 100*pi first."""
    return jnp.cos(_reduce(x))


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
