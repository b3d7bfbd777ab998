"""`Config.compute_dtype`: the dtype of the networks' matrix products and convolutions.

'float32' (the default) or 'bfloat16', what TPUs and recent GPUs multiply fastest. With
bfloat16, the inputs and weights of every dense layer and convolution of the fields, heads
and decoders are rounded to bfloat16 for the product, which accumulates and returns float32;
parameters, optimiser state, grids, encodings and volume rendering stay float32.
"""

import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp


def compute_dtype() -> str:
    """The bound `Config.compute_dtype` ('float32' when it is not bound)."""
    try:
        return str(gin.query_parameter("Config.compute_dtype"))
    except ValueError:
        return "float32"


def _low(product):
    """`product` (lax.dot_general or lax.conv_general_dilated) on bfloat16 operands,
    accumulated and returned in float32."""
    @functools.wraps(product)
    def wrapped(lhs, rhs, *args, preferred_element_type=None, **kwargs):
        del preferred_element_type
        return product(lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16), *args,
                       preferred_element_type=jnp.float32, **kwargs)

    return wrapped


def dense(features: int, **kwargs) -> nn.Dense:
    """nn.Dense whose product runs in the compute dtype (float32 parameters and output)."""
    if compute_dtype() == "bfloat16":
        kwargs["dot_general"] = _low(jax.lax.dot_general)
    return nn.Dense(features, **kwargs)


def conv(features: int, kernel_size, **kwargs) -> nn.Conv:
    """nn.Conv whose product runs in the compute dtype (float32 parameters and output)."""
    if compute_dtype() == "bfloat16":
        kwargs["conv_general_dilated"] = _low(jax.lax.conv_general_dilated)
    return nn.Conv(features, kernel_size, **kwargs)
