"""Masked wavelet planes: straight-through mask and quantisation, decoding, resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.errors import UserError
from jaxnerf360.fields import wavelet
from jaxnerf360.fields.vm import MODES, resample_factor
from jaxnerf360.fields.wavelet import (
    apply_mask,
    binary_mask,
    kept_fraction,
    mask_fraction,
    quantize_ste,
)
from jaxnerf360.geometry import wavelets


def test_binary_mask_forward_is_hard_and_gradient_is_the_sigmoids():
    m = jnp.array([-3.0, -1e-3, 0.0, 1e-3, 2.5])
    np.testing.assert_array_equal(binary_mask(m), [0, 0, 1, 1, 1])
    w = jnp.array([0.5, -1.0, 2.0, 0.3, -0.7])
    grad = jax.grad(lambda m: jnp.sum(w * binary_mask(m)))(m)
    s = 1 / (1 + np.exp(-np.asarray(m)))
    np.testing.assert_allclose(grad, np.asarray(w) * s * (1 - s), rtol=1e-6)


def test_apply_mask_is_hard_forward_with_the_published_soft_gradients():
    m = jnp.array([-2.0, -1e-9, 0.0, 0.7])
    x = jnp.array([1.5, -2.0, 3.0, -0.5])
    np.testing.assert_array_equal(apply_mask(x, m), [0.0, 0.0, 3.0, -0.5])
    w = jnp.array([0.3, -1.2, 0.8, 2.0])
    gx, gm = jax.grad(lambda x, m: jnp.sum(w * apply_mask(x, m)), argnums=(0, 1))(x, m)
    s = 1 / (1 + np.exp(-np.asarray(m, np.float64)))
    np.testing.assert_allclose(gx, np.asarray(w) * s, rtol=1e-6)  # masked values still learn
    np.testing.assert_allclose(gm, np.asarray(w * x) * s * (1 - s), rtol=1e-6)


def test_quantize_ste_rounds_to_the_codecs_grid():
    from jaxnerf360 import codec

    x = jax.random.normal(jax.random.PRNGKey(4), (7, 33)) * 0.3 + 0.1
    codes, scale, offset = codec.quantize(np.asarray(x))
    np.testing.assert_array_equal(quantize_ste(x, 8), codec.dequantize(codes, scale, offset))
    # Under jit XLA may fuse codes * scale + offset (one rounding instead of two).
    np.testing.assert_allclose(jax.jit(quantize_ste)(x), quantize_ste(x), rtol=0,
                               atol=2 * scale * 2**-23 * 255)


def test_quantize_ste_values_lie_on_the_grid_and_gradient_is_identity():
    x = jax.random.normal(jax.random.PRNGKey(0), (1000,)) * 3.0
    q = np.asarray(quantize_ste(x, 8), np.float64)
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 255
    assert np.max(np.abs(q - np.asarray(x))) <= scale / 2 + 1e-5
    codes = (q - lo) / scale
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert len(np.unique(np.round(codes))) <= 256
    g = jax.grad(lambda x: jnp.sum(jnp.sin(quantize_ste(x))))(x)
    np.testing.assert_allclose(g, np.cos(q), rtol=1e-4, atol=1e-5)
    const = quantize_ste(jnp.full((4,), 2.0))
    np.testing.assert_array_equal(const, 2.0)


def test_mask_fraction_is_the_mean_sigmoid():
    a, b = jnp.zeros((3, 4)), jnp.full((5,), 100.0)
    np.testing.assert_allclose(mask_fraction([a, b]), (12 * 0.5 + 5) / 17, rtol=1e-6)


def test_kept_fraction_counts_non_negative_logits():
    a, b = jnp.array([[-1.0, 0.0], [2.0, -1e-9]]), jnp.full((5,), -3.0)
    np.testing.assert_allclose(kept_fraction([a, b]), 2 / 9)


def _wavelet_field(**kw):
    from jaxnerf360.fields.tensorf import TensoRFField

    args = dict(density_ranks=(2, 2, 2), appearance_ranks=(3, 3, 3), resolution=(16, 24, 8),
                app_dim=5, mlp_width=16, upsample_steps=(), plane_coding="wavelet",
                wavelet="bior4.4", wavelet_levels=2, density_activation="relu",
                density_scale=1.0)
    args.update(kw)
    return TensoRFField(**args)


def _random_params(field, seed=0, logit_scale=1.0):
    rng = np.random.default_rng(seed)
    pts = jnp.asarray(rng.uniform(-1.4, 1.4, (1, 200, 3)), jnp.float32)
    dirs = jnp.asarray([[0.0, 0.6, 0.8]])
    params = dict(jax.jit(field.init)(jax.random.PRNGKey(seed), pts, None, dirs)["params"])
    for name in list(params):
        if wavelet.is_mask(name):  # random logits, so some coefficients are dropped
            params[name] = jnp.asarray(logit_scale * rng.normal(size=params[name].shape),
                                       jnp.float32)
    return params, pts, dirs


def _to_spatial(params, field):
    """`wavelet.to_spatial` compiled as one program (op by op it compiles hundreds)."""
    return jax.jit(lambda p: wavelet.to_spatial(p, field.wavelet_settings()))(params)


def test_converted_wavelet_field_renders_like_the_spatial_field():
    field = _wavelet_field()
    params, pts, dirs = _random_params(field)
    assert params["density_planemask_1"].shape == params["density_plane_1"].shape
    out = jax.jit(field.apply)({"params": params}, pts, None, dirs)
    spatial = _to_spatial(params, field)
    assert not any(wavelet.is_mask(k) for k in spatial)
    ref = jax.jit(field.clone(plane_coding="spatial").apply)({"params": spatial}, pts, None, dirs)
    np.testing.assert_allclose(out["density"], ref["density"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rgb"], ref["rgb"], rtol=1e-5, atol=1e-6)


def test_unquantised_planes_are_the_inverse_dwt_of_the_scaled_masked_coefficients():
    field = _wavelet_field(quantize_bits=0, level_divisors=(1.0, 2.0, 4.0))
    coeffs = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 24))
    logits = jax.random.normal(jax.random.PRNGKey(2), (3, 16, 24))
    plane = wavelet.decode_factor("appearance_plane_0", coeffs, logits, field.wavelet_settings())
    level = wavelets.level_of((16, 24), 2)
    scaled = np.where(np.asarray(logits) >= 0, np.asarray(coeffs), 0) / (2.0 ** level)
    np.testing.assert_allclose(plane, wavelets.waverec2(scaled, "bior4.4", 2), atol=1e-6)
    line = wavelet.decode_factor("density_line_2", coeffs[:, 0], logits[:, 0],
                                 field.wavelet_settings())  # lines stay spatial
    np.testing.assert_array_equal(line, np.where(logits[:, 0] >= 0, coeffs[:, 0], 0))


def test_default_level_divisors_give_every_stored_unit_unit_amplitude():
    np.testing.assert_array_equal(wavelet.level_divisors(4), [1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2])
    # Haar: a unit stored coefficient of any level and band decodes to a +-1 pattern.
    settings = {"wavelet": "haar", "levels": 3, "divisors": None, "bits": 0}
    for i, j in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 3), (5, 2), (7, 7), (3, 6)]:
        coeffs = np.zeros((1, 8, 8), np.float32)
        coeffs[0, i, j] = 1.0
        plane = wavelet.decode_factor("density_plane_0", jnp.asarray(coeffs),
                                      jnp.ones((1, 8, 8)), settings)
        values = np.unique(np.round(np.asarray(plane), 6))
        assert set(values) <= {-1.0, 0.0, 1.0} and np.abs(values).max() == 1.0, (i, j, values)
    np.testing.assert_array_equal(wavelet.level_divisors(2, (1, 2, 3)), [1, 2, 3])  # published
    with pytest.raises(UserError, match="level_divisors"):
        wavelet.level_divisors(2, (1.0, 2.0))
    with pytest.raises(UserError, match="level_divisors"):
        _wavelet_field(level_divisors=(1.0, 0.0, 2.0))


def test_resampled_bands_keep_every_coefficient_in_its_level_and_band():
    levels = 3
    level = wavelets.level_of((16, 24), levels).astype(np.float32)
    # A map that is constant on each layout block: its resampling must be the new layout's.
    band = np.zeros((16, 24), np.float32)
    band[8:, :12], band[:8, 12:], band[8:, 12:] = 1, 2, 3  # finest cH, cV, cD
    grown = wavelet.resample_bands(jnp.asarray(np.stack([level, band])), (40, 32), levels)
    np.testing.assert_array_equal(grown[0], wavelets.level_of((40, 32), levels))
    want = np.zeros((40, 32))
    want[20:, :16], want[:20, 16:], want[20:, 16:] = 1, 2, 3
    np.testing.assert_array_equal(grown[1], want)
    moments = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 16, 24)), jnp.float32)
    assert float(wavelet.resample_bands(moments, (32, 48), levels).min()) >= 0


@pytest.mark.parametrize("name", ["haar", "bior4.4"])
def test_resampled_coefficients_represent_the_resampled_spatial_plane(name):
    field = _wavelet_field(wavelet=name, quantize_bits=0)
    settings = field.wavelet_settings()
    coeffs = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 24))
    keep = jnp.ones_like(coeffs)
    grown = wavelet.resample_coefficients(coeffs, (28, 40), settings)
    assert grown.shape == (2, 28, 40)
    old = wavelet.decode_factor("density_plane_0", coeffs, keep, settings)
    new = wavelet.decode_factor("density_plane_0", grown, jnp.ones_like(grown), settings)
    want = resample_factor("density_plane_0", old, (28, 40, 99))
    np.testing.assert_allclose(new, want, atol=1e-5)


def test_upsampled_wavelet_field_keeps_its_spatial_field_at_the_new_grid_points():
    field = _wavelet_field(quantize_bits=0)
    params, pts, dirs = _random_params(field)
    params = {k: (jnp.abs(v) + 0.1 if wavelet.is_mask(k) else v) for k, v in params.items()}
    new_res = (32, 40, 16)
    grown = jax.jit(lambda p: {k: field.resize_factor(k, v, new_res) for k, v in p.items()})(
        params)
    assert grown["appearance_plane_0"].shape == (3, 32, 40)
    assert grown["appearance_planemask_2"].shape == (3, 40, 16)
    assert grown["density_linemask_0"].shape == (2, 16)
    old, new = _to_spatial(params, field), _to_spatial(grown, field)
    for m in range(len(MODES)):
        for kind in ("density", "appearance"):
            want = resample_factor(f"{kind}_plane_{m}", old[f"{kind}_plane_{m}"], new_res)
            np.testing.assert_allclose(new[f"{kind}_plane_{m}"], want, atol=1e-5)
            want = resample_factor(f"{kind}_line_{m}", old[f"{kind}_line_{m}"], new_res)
            np.testing.assert_allclose(new[f"{kind}_line_{m}"], want, atol=1e-6)
    # The grown parameters render (the field reads the stored shapes).
    out = jax.jit(field.apply)({"params": grown}, pts, None, dirs)
    assert np.all(np.isfinite(out["rgb"]))


def test_wavelet_settings_are_checked_at_start_up():
    with pytest.raises(UserError):
        _wavelet_field(wavelet="nonsense")
    with pytest.raises(UserError, match="wavelet_levels"):
        _wavelet_field(wavelet_levels=5)
    with pytest.raises(UserError, match="quantize_bits"):
        _wavelet_field(quantize_bits=12)
    assert _wavelet_field(resolution=(15, 17, 8)).resolution == (16, 16, 8)
    from jaxnerf360.fields.tensorf_settings import resolution_schedule

    grown = _wavelet_field(resolution=(16, 16, 16), upsample_steps=(10, 20),
                           final_resolution=(50, 50, 50))
    assert [r for _, r in resolution_schedule(grown)] == [(28, 28, 28), (52, 52, 52)]


def test_mask_penalty_enters_the_loss_with_its_weight():
    from jaxnerf360.objective import LossInputs, Objective

    field = _wavelet_field(mask_loss_mult=0.5)
    params = {"density_plane_0": jnp.ones((2, 4, 4)), "density_planemask_0": jnp.zeros((2, 4, 4)),
              "density_linemask_0": jnp.full((2, 4), -100.0)}
    inputs = LossInputs(outputs={}, batch={}, target=None, pixel_weights=None, params={},
                        field_params=params, step=0, train_frac=0.0, lr_ratio={"grid": 1.0})
    total, parts = Objective(field.regularizers())(inputs)
    np.testing.assert_allclose(parts["mask_fraction"], (32 * 0.5) / 40, rtol=1e-6)
    np.testing.assert_allclose(total, 0.5 * parts["mask_fraction"], rtol=1e-6)
    np.testing.assert_allclose(parts["mask_kept"], 32 / 40)


def test_mask_logits_are_their_own_adam_group_with_a_tiny_epsilon():
    """Gradients far below 1e-8 still move the logits by about one learning rate."""
    from types import SimpleNamespace

    from jaxnerf360 import optim

    config = SimpleNamespace(adam_beta1=0.9, adam_beta2=0.99, adam_eps=1e-8, grad_max_norm=0.0,
                             lr_init=1e-3, lr_final=1e-3, max_steps=10, lr_delay_steps=0,
                             lr_delay_mult=1.0)
    field = _wavelet_field(grid_lr_init=0.02, grid_lr_final=0.02)
    params = {"field": {"density_planemask_0": jnp.zeros(3), "density_plane_0": jnp.zeros(3),
                        "basis": jnp.zeros(3)}}
    labels = lambda p: {"field": field.param_labels(p["field"])}  # noqa: E731
    assert labels(params)["field"] == {"density_planemask_0": "mask",
                                       "density_plane_0": "grid", "basis": "net"}
    tx = optim.make_optimizer(config, field.param_groups(), labels)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-11), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["field"]["density_planemask_0"], -0.02, rtol=1e-3)
    # The factors keep the run's epsilon: a 1e-11 gradient barely moves them.
    assert abs(float(updates["field"]["density_plane_0"][0])) < 0.02 * 2e-3
