"""Straight-through mask and quantisation of the masked wavelet planes."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.fields.wavelet import binary_mask, mask_fraction, quantize_ste


def test_binary_mask_forward_is_hard_and_gradient_is_the_sigmoids():
    m = jnp.array([-3.0, -1e-3, 0.0, 1e-3, 2.5])
    np.testing.assert_array_equal(binary_mask(m), [0, 0, 1, 1, 1])
    w = jnp.array([0.5, -1.0, 2.0, 0.3, -0.7])
    grad = jax.grad(lambda m: jnp.sum(w * binary_mask(m)))(m)
    s = 1 / (1 + np.exp(-np.asarray(m)))
    np.testing.assert_allclose(grad, np.asarray(w) * s * (1 - s), rtol=1e-6)


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


def _wavelet_field(**kw):
    from jaxnerf360.fields.tensorf import TensoRFField

    args = dict(density_ranks=(2, 2, 2), appearance_ranks=(3, 3, 3), resolution=(16, 24, 8),
                app_dim=5, mlp_width=16, upsample_steps=(), plane_coding="wavelet",
                wavelet="bior4.4", wavelet_levels=2, density_activation="relu",
                density_scale=1.0)
    args.update(kw)
    return TensoRFField(**args)


def test_converted_wavelet_field_renders_like_the_spatial_field():
    from jaxnerf360.fields.tensorf import mask_name, to_spatial

    field = _wavelet_field()
    rng = np.random.default_rng(0)
    pts = jnp.asarray(rng.uniform(-1.4, 1.4, (1, 200, 3)), jnp.float32)
    dirs = jnp.asarray([[0.0, 0.6, 0.8]])
    params = field.init(jax.random.PRNGKey(0), pts, None, dirs)["params"]
    # Random mask logits, so some coefficients are dropped.
    params = dict(params)
    for name in list(params):
        if "mask_" in name:
            params[name] = jnp.asarray(rng.normal(size=params[name].shape), jnp.float32)
    assert params[mask_name("density_plane_1")].shape == params["density_plane_1"].shape
    out = field.apply({"params": params}, pts, None, dirs)
    spatial = to_spatial(field, params)
    assert not any("mask_" in k for k in spatial)
    ref = field.clone(plane_coding="spatial").apply({"params": spatial}, pts, None, dirs)
    np.testing.assert_allclose(out["density"], ref["density"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rgb"], ref["rgb"], rtol=1e-5, atol=1e-6)


def test_unmasked_unquantised_planes_are_the_inverse_dwt_of_the_coefficients():
    from jaxnerf360 import wavelets
    from jaxnerf360.fields.tensorf import decode_factor

    field = _wavelet_field(quantize_bits=0, level_divisor=1.0)
    coeffs = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 24))
    plane = decode_factor("appearance_plane_0", coeffs, jnp.ones_like(coeffs),
                          field.wavelet_settings())
    np.testing.assert_allclose(plane, wavelets.waverec2(coeffs, "bior4.4", 2), atol=1e-6)
    zero = decode_factor("appearance_plane_0", coeffs, -jnp.ones_like(coeffs),
                         field.wavelet_settings())
    np.testing.assert_array_equal(zero, 0.0)


def test_wavelet_settings_are_checked_at_start_up():
    import pytest

    from jaxnerf360.errors import UserError

    with pytest.raises(UserError, match="upsampling"):
        _wavelet_field(upsample_steps=(10,), final_resolution=(32, 32, 32))
    with pytest.raises(UserError):
        _wavelet_field(wavelet="nonsense")
    with pytest.raises(UserError, match="wavelet_levels"):
        _wavelet_field(wavelet_levels=5)
    assert _wavelet_field(resolution=(15, 17, 8)).resolution == (16, 16, 8)


def test_mask_penalty_enters_the_loss_with_its_weight():
    from types import SimpleNamespace

    from jaxnerf360 import losses

    config = SimpleNamespace(l1_density_mult=0.0, l1_density_mult_rest=None,
                             l1_density_switch_step=0, tv_density_mult=0.0,
                             tv_appearance_mult=0.0, mask_loss_mult=0.5)
    params = {"density_plane_0": jnp.ones((2, 4, 4)), "density_planemask_0": jnp.zeros((2, 4, 4)),
              "density_linemask_0": jnp.full((2, 4), 100.0)}
    total, parts = losses.grid_regularizers(params, config, 0, 1.0)
    np.testing.assert_allclose(parts["mask_fraction"], (32 * 0.5 + 8) / 40, rtol=1e-6)
    np.testing.assert_allclose(total, 0.5 * parts["mask_fraction"], rtol=1e-6)
