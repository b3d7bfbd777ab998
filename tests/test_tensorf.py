"""The TensoRF VM field against an explicit numpy sum of plane x line products."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.fields.tensorf import TensoRFField
from jaxnerf360.fields.vm import interp_line, interp_plane


def bilinear_np(grid, x, y):
    """Bilinear value of grid[i, j] (i along x, j along y) at continuous grid coords (x, y)."""
    i0, j0 = min(int(np.floor(x)), grid.shape[0] - 2), min(int(np.floor(y)), grid.shape[1] - 2)
    fx, fy = x - i0, y - j0
    return ((1 - fx) * (1 - fy) * grid[i0, j0] + (1 - fx) * fy * grid[i0, j0 + 1]
            + fx * (1 - fy) * grid[i0 + 1, j0] + fx * fy * grid[i0 + 1, j0 + 1])


def linear_np(line, x):
    i0 = min(int(np.floor(x)), line.shape[0] - 2)
    f = x - i0
    return (1 - f) * line[i0] + f * line[i0 + 1]


def test_interpolation_reproduces_linear_functions():
    na, nb = 5, 7
    ii, jj = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    plane = jnp.asarray((2 * ii - 3 * jj + 1.0)[None])
    u, v = jnp.array([0.0, 1.3, 3.99, 4.0]), jnp.array([6.0, 2.5, 0.1, 3.3])
    np.testing.assert_allclose(interp_plane(plane, u, v)[:, 0], 2 * u - 3 * v + 1, rtol=1e-5)
    line = jnp.asarray((0.5 * np.arange(9) - 1)[None])
    w = jnp.array([0.0, 2.25, 8.0])
    np.testing.assert_allclose(interp_line(line, w)[:, 0], 0.5 * w - 1, rtol=1e-5)


def test_vm_density_equals_explicit_sum_with_axis_order():
    # Different resolutions per axis, so any swap of plane axes or line/plane pairing fails.
    res = (6, 9, 11)
    box_min, box_max = (-1.0, -2.0, -0.5), (1.0, 1.0, 1.5)
    field = TensoRFField(density_ranks=(2, 3, 4), appearance_ranks=(2, 2, 2), resolution=res,
                         box_min=box_min, box_max=box_max, density_activation="relu",
                         density_scale=1.0)
    rng = np.random.default_rng(0)
    pts = rng.uniform(box_min, box_max, size=(20, 3)).astype(np.float32)
    params = field.init(jax.random.PRNGKey(0), jnp.asarray(pts)[None], None)["params"]
    out = field.apply({"params": params}, jnp.asarray(pts)[None], None)["density"][0]

    lo, hi = np.array(box_min), np.array(box_max)
    g = (pts - lo) / (hi - lo) * (np.array(res) - 1)  # continuous grid coords per axis
    pairs = [((0, 1), 2), ((0, 2), 1), ((1, 2), 0)]  # (XY, Z), (XZ, Y), (YZ, X)
    want = np.zeros(len(pts))
    for m, ((a, b), c) in enumerate(pairs):
        plane = np.asarray(params[f"density_plane_{m}"])
        line = np.asarray(params[f"density_line_{m}"])
        assert plane.shape[1:] == (res[a], res[b]) and line.shape[1] == res[c]
        for p in range(len(pts)):
            for r in range(plane.shape[0]):
                want[p] += bilinear_np(plane[r], g[p, a], g[p, b]) * linear_np(line[r], g[p, c])
    np.testing.assert_allclose(out, np.maximum(want, 0), rtol=1e-4, atol=1e-5)


def test_rgb_shape_range_and_outside_box_is_empty():
    field = TensoRFField(density_ranks=(2, 2, 2), appearance_ranks=(3, 3, 3),
                         resolution=(8, 8, 8), app_dim=5, mlp_width=16)
    pts = jnp.array([[[0.0, 0.0, 0.0], [0.5, -0.2, 1.0], [3.0, 0.0, 0.0]]])
    dirs = jnp.array([[0.0, 0.0, 1.0]])
    params = field.init(jax.random.PRNGKey(1), pts, None, dirs)["params"]
    out = field.apply({"params": params}, pts, None, dirs)
    assert out["rgb"].shape == (1, 3, 3) and out["density"].shape == (1, 3)
    assert np.all((out["rgb"] >= 0) & (out["rgb"] <= 1))
    assert float(out["density"][0, 2]) == 0.0
    assert params["basis"]["kernel"].shape == (3 * 3, 5) and "bias" not in params["basis"]


def test_vm_field_trains_with_the_proposal_sampler(synthetic_dir):
    """The VM field plugs into the model through gin alone and fits a fixed batch."""
    import gin

    from jaxnerf360 import configs, parallel, training
    from jaxnerf360.data import load_split
    from jaxnerf360.data.batching import RayBatcher
    from jaxnerf360.train_step import batch_dict

    gin.clear_config()
    configs.parse_gin([], [
        "Config.dataset_loader = 'synthetic'", f"Config.data_dir = '{synthetic_dir}'",
        "Config.near = 2.0", "Config.far = 6.0", "Config.data_loss_type = 'mse'",
        "Config.lr_init = 2e-2", "Config.lr_final = 2e-2", "Config.lr_delay_steps = 0",
        "Config.grad_max_norm = 0.0", "Config.max_steps = 100",
        "Model.field = @TensoRFField", "TensoRFField.resolution = (24, 24, 24)",
        "TensoRFField.density_ranks = (4, 4, 4)", "TensoRFField.appearance_ranks = (8, 8, 8)",
        "TensoRFField.mlp_width = 32", "TensoRFField.density_shift = -2.0",
        "ProposalSampler.raydist_fn = 'linear'", "ProposalSampler.num_prop_samples = (16,)",
        "ProposalSampler.num_final_samples = 16", "PropMLPField.net_depth = 2",
        "PropMLPField.net_width = 16",
    ])
    config = configs.Config()
    scene = load_split(config, "train")
    mesh = parallel.make_mesh()
    run = training.setup(config, scene, mesh)
    state, step = run.state, run.step
    assert "density_plane_0" in state.params["field"]
    batch = parallel.to_global(
        batch_dict(*RayBatcher(scene, 256, seed=0).next_with_alpha()), mesh)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    losses = []
    for _ in range(30):
        state, stats = step(state, batch, key)
        losses.append(float(stats["data"]))
    gin.clear_config()
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_resampling_preserves_the_field_at_new_grid_points():
    from jaxnerf360.fields.vm import resample_factors

    kw = dict(density_ranks=(2, 2, 3), appearance_ranks=(2, 2, 2), box_min=(-1, -1, -1),
              box_max=(1, 1, 1), density_activation="relu", density_scale=1.0)
    small = TensoRFField(resolution=(5, 6, 7), **kw)
    big_res = (9, 11, 13)  # 2n - 1: the old grid points are among the new ones
    big = TensoRFField(resolution=big_res, **kw)
    pts = jnp.zeros((1, 1, 3))
    params = small.init(jax.random.PRNGKey(3), pts, None)["params"]
    resampled = resample_factors(params, big_res)
    assert resampled["density_plane_0"].shape == (2, 9, 11)
    assert resampled["density_line_1"].shape == (2, 11)
    axes = [np.linspace(-1, 1, n) for n in big_res]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(1, -1, 3)
    rng = np.random.default_rng(0)
    grid = jnp.asarray(grid[:, rng.choice(grid.shape[1], 300, replace=False)], jnp.float32)
    before = small.apply({"params": params}, grid, None)["density"]
    after = big.apply({"params": resampled}, grid, None)["density"]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_bad_settings_fail_at_construction():
    import pytest

    from jaxnerf360.errors import UserError

    with pytest.raises(UserError, match="density_ranks"):
        TensoRFField(density_ranks=(16, 16))
    with pytest.raises(UserError, match="non-positive size"):
        TensoRFField(box_min=(0, 0, 0), box_max=(1, 0, 1))
    with pytest.raises(UserError, match="resolution"):
        TensoRFField(resolution=(1, 8, 8))


def test_regularisers_against_numpy():
    from jaxnerf360.fields.vm import l1_density, tv_planes

    rng = np.random.default_rng(2)
    params = {}
    for m, (na, nb, nc) in enumerate([(4, 5, 6), (4, 6, 5), (5, 6, 4)]):
        params[f"density_plane_{m}"] = rng.normal(size=(2, na, nb))
        params[f"density_line_{m}"] = rng.normal(size=(2, nc))
    want_l1 = sum(np.abs(params[f"density_plane_{m}"]).mean()
                  + np.abs(params[f"density_line_{m}"]).mean() for m in range(3))
    want_tv = 0.0
    for m in range(3):
        p = params[f"density_plane_{m}"]
        want_tv += np.mean([(p[r, i + 1, j] - p[r, i, j]) ** 2 for r in range(2)
                            for i in range(p.shape[1] - 1) for j in range(p.shape[2])])
        want_tv += np.mean([(p[r, i, j + 1] - p[r, i, j]) ** 2 for r in range(2)
                            for i in range(p.shape[1]) for j in range(p.shape[2] - 1)])
    np.testing.assert_allclose(l1_density(params), want_l1, rtol=1e-6)
    np.testing.assert_allclose(tv_planes(params), want_tv, rtol=1e-6)
