"""A step's rays in parts (`Config.step_chunks`): the same gradient, and what cannot be split."""

import gin
import jax
import numpy as np
import pytest

from jaxnerf360 import metrics
from jaxnerf360.errors import UserError
from jaxnerf360.train_step import chunked_value_and_grad, make_loss_fn
from tests.test_grid_training import (
    TINY_FIELDS,
    TINY_SAMPLERS,
    _config,
    fits_a_fixed_batch,
    global_batch,
    setup_run,
)

MLP_RUN = (*TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"])


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def test_parts_give_the_whole_batch_gradient_loss_and_psnr(synthetic_dir):
    """Four parts of 16 rays against one batch of 64, on the deterministic loss (no jitter, so
    both see the same samples): the averaged gradient is the batch's to float rounding."""
    config = _config(synthetic_dir, *MLP_RUN)
    run, scene, mesh = setup_run(config)
    loss_fn = make_loss_fn(run.model, run.cameras, run.supervision, run.objective, config,
                           run.groups, deterministic=True)
    batch = global_batch(scene, mesh, 64)
    args = (run.state.params, run.state, batch, jax.random.PRNGKey(3), run.views)
    (whole, whole_stats), whole_grads = jax.jit(
        jax.value_and_grad(loss_fn, has_aux=True))(*args)
    (parts, part_stats), part_grads = jax.jit(chunked_value_and_grad(loss_fn, 4))(*args)
    np.testing.assert_allclose(parts, whole, rtol=1e-5)
    np.testing.assert_allclose(part_stats["psnr"], whole_stats["psnr"], rtol=1e-5)
    flat_whole, flat_parts = jax.tree.leaves(whole_grads), jax.tree.leaves(part_grads)
    assert len(flat_whole) == len(flat_parts) > 0
    scale = max(float(np.max(np.abs(g))) for g in flat_whole)
    assert scale > 0
    for a, b in zip(flat_whole, flat_parts, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5 * scale)
    # A wrong split (the first part four times) would not pass: the parts differ.
    first = jax.tree.map(lambda x: x[:16], batch)
    (_, _), one_part = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        run.state.params, run.state, first, jax.random.PRNGKey(3), run.views)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(
        flat_whole, jax.tree.leaves(one_part), strict=True)) > 1e-3 * scale
    assert metrics.psnr_to_mse(float(part_stats["psnr"])) > 0


def test_a_run_in_parts_fits_a_fixed_batch(synthetic_dir):
    """The train step with `Config.step_chunks = 4` trains (the data loss falls)."""
    fits_a_fixed_batch(_config(synthetic_dir, *MLP_RUN, "Config.step_chunks = 4"))


@pytest.mark.parametrize("bindings, message", [
    (["Config.step_chunks = 0"], "must be a positive integer"),
    ([*MLP_RUN, "Config.step_chunks = 3", "Config.batch_size = 64"], "multiple of step_chunks"),
    ([*TINY_FIELDS["mlp"], *TINY_SAMPLERS["occupancy"], "Config.step_chunks = 2",
      "Config.batch_size = 64"], "sample buffer"),
    ([*MLP_RUN, "Config.step_chunks = 2", "Config.batch_size = 64", "EdgeWeights.until = 0.5"],
     "EdgeWeights"),
])
def test_parts_that_cannot_be_made_are_one_clear_line(synthetic_dir, bindings, message):
    with pytest.raises(UserError, match=message) as error:
        config = _config(synthetic_dir, *bindings)
        from jaxnerf360 import configs

        configs.validate(config, check_dirs=False)
        setup_run(config)
    assert "\n" not in str(error.value)
