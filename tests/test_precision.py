"""Config.compute_dtype = 'bfloat16': the networks multiply in bfloat16, everything else stays
float32, and training still fits the synthetic scene."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.fields.mlp import MLPField
from jaxnerf360.heads import ConvHead
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config, fits_a_fixed_batch


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _products(fn, *args) -> list:
    """(operand dtypes, result dtype) of every dot and convolution in `fn`'s jaxpr."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.append((tuple(str(v.aval.dtype) for v in eqn.invars),
                              str(eqn.outvars[0].aval.dtype)))
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_products_run_in_the_compute_dtype_and_return_float32(dtype):
    gin.clear_config()
    gin.bind_parameter("Config.compute_dtype", dtype)
    field = MLPField(net_depth=2, net_width=16, skip_layer=1, bottleneck_width=8,
                     net_width_viewdirs=8, max_deg=2)
    means, dirs = jnp.zeros((2, 4, 3)), jnp.ones((2, 3)) / np.sqrt(3)
    params = field.init(jax.random.PRNGKey(0), means, None, dirs)
    head = ConvHead(depth=2, width=8, feature_dim=4, use_rgb=False)
    feats = {"features": jnp.zeros((1, 9, 9, 4))}
    head_params = head.init(jax.random.PRNGKey(0), feats)
    products = (_products(lambda p: field.apply(p, means, None, dirs), params)
                + _products(lambda p: head.apply(p, feats), head_params))
    assert len(products) > 6
    assert {p for p in products} == {((dtype, dtype), "float32")}
    # Parameters stay float32 whatever the compute dtype.
    assert {str(x.dtype) for x in jax.tree.leaves((params, head_params))} == {"float32"}
    out = field.apply(params, means, None, dirs)
    assert out["density"].dtype == out["rgb"].dtype == jnp.float32


def test_bfloat16_training_fits_the_synthetic_scene(synthetic_dir):
    config = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"],
                     "Config.compute_dtype = 'bfloat16'")
    state = fits_a_fixed_batch(config)
    assert {str(x.dtype) for x in jax.tree.leaves(state.params)} == {"float32"}
