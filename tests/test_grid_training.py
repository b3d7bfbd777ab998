"""Training a grid field: samplers x fields, upsampling, learning-rate groups, regularisers."""

import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import configs, parallel, rendering, training
from jaxnerf360.data import load_split
from jaxnerf360.data.batching import RayBatcher
from jaxnerf360.errors import UserError
from jaxnerf360.fields.tensorf import TensoRFField
from jaxnerf360.fields.tensorf_settings import resolution_schedule
from jaxnerf360.fields.vm import resample_factors
from jaxnerf360.objective import LossInputs
from jaxnerf360.train_step import batch_dict, resized

TINY_TENSORF = [
    "TensoRFField.resolution = (16, 16, 16)", "TensoRFField.density_ranks = (4, 4, 4)",
    "TensoRFField.appearance_ranks = (6, 6, 6)", "TensoRFField.mlp_width = 32",
    "TensoRFField.density_shift = -2.0", "TensoRFField.upsample_steps = ()",
]
TINY_SAMPLERS = {
    "proposal": ["Model.sampler = @ProposalSampler", "ProposalSampler.raydist_fn = 'linear'",
                 "ProposalSampler.num_prop_samples = (16,)",
                 "ProposalSampler.num_final_samples = 16", "PropMLPField.net_depth = 2",
                 "PropMLPField.net_width = 16"],
    "occupancy": ["Model.sampler = @OccupancySampler", "OccupancySampler.grid_resolution = 16",
                  "OccupancySampler.box_min = (-1.5, -1.5, -1.5)",
                  "OccupancySampler.box_max = (1.5, 1.5, 1.5)",
                  "OccupancySampler.max_samples = 48"],
}
TINY_FIELDS = {
    "mlp": ["Model.field = @MLPField", "MLPField.net_depth = 2", "MLPField.net_width = 32",
            "MLPField.skip_layer = 1", "MLPField.bottleneck_width = 16",
            "MLPField.net_width_viewdirs = 16", "MLPField.max_deg = 4"],
    "tensorf": ["Model.field = @TensoRFField"] + TINY_TENSORF,
    "wavelet": ["Model.field = @TensoRFField"] + TINY_TENSORF + [
        "TensoRFField.plane_coding = 'wavelet'", "TensoRFField.wavelet_levels = 2"],
}


def _config(synthetic_dir, *bindings):
    gin.clear_config()
    configs.parse_gin([], [
        "Config.dataset_loader = 'synthetic'", f"Config.data_dir = '{synthetic_dir}'",
        "Config.near = 2.0", "Config.far = 6.0", "Config.data_loss_type = 'mse'",
        "Config.lr_init = 1e-2", "Config.lr_final = 1e-2", "TensoRFField.grid_lr_init = 0.02",
        "TensoRFField.grid_lr_final = 0.02", "Config.lr_delay_steps = 0",
        "Config.grad_max_norm = 0.0", "Config.max_steps = 100", *bindings,
    ])
    return configs.Config()


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def setup_run(config, scene=None):
    """(the started run, its training scene, the mesh) of `config`."""
    scene = load_split(config, "train") if scene is None else scene
    mesh = parallel.make_mesh()
    run = training.setup(config, scene, mesh)
    return run, scene, mesh


def global_batch(scene, mesh, size, seed=0):
    """One global batch of `size` random rays of `scene`."""
    return parallel.to_global(batch_dict(*RayBatcher(scene, size, seed=seed).next_with_alpha()),
                              mesh)


@pytest.mark.parametrize("field", sorted(TINY_FIELDS))
@pytest.mark.parametrize("sampler", sorted(TINY_SAMPLERS))
def test_thirty_steps_reduce_the_loss(synthetic_dir, field, sampler):
    """Each field x sampler pair, chosen by gin alone, fits a fixed batch."""
    config = _config(synthetic_dir, *TINY_FIELDS[field], *TINY_SAMPLERS[sampler])
    state = fits_a_fixed_batch(config)
    assert (state.sampler_state is not None) == (sampler == "occupancy")


def fits_a_fixed_batch(config):
    """Trains `config` 30 steps on one batch of 256 rays, checks that the data loss fell by
    more than 30 %, and returns the state."""
    run, scene, mesh = setup_run(config)
    state, step = run.state, run.step
    batch = global_batch(scene, mesh, 256)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    data = []
    for _ in range(30):
        state, stats = step(state, batch, key)
        data.append(float(stats["data"]))
    assert np.all(np.isfinite(data))
    assert np.mean(data[-5:]) < 0.7 * np.mean(data[:5]), data
    return state


def _partly_occupied(synthetic_dir, share: int):
    """(run, scene, mesh) of a VM/occupancy run whose grid occupies only the first 1/share of
    the z axis, so a sample buffer is much smaller than all samples."""
    config = _config(synthetic_dir, *TINY_FIELDS["tensorf"], *TINY_SAMPLERS["occupancy"])
    run, scene, mesh = setup_run(config)
    grid = np.zeros(run.state.sampler_state.shape, bool)
    grid[:, :, : grid.shape[2] // share] = True
    run.state = run.state.replace(sampler_state=jnp.asarray(grid))
    return run, scene, mesh


def test_occupied_sample_buffer_matches_dense_evaluation(synthetic_dir):
    """Gathering occupied samples into a buffer renders exactly what evaluating all does."""
    run, scene, _ = _partly_occupied(synthetic_dir, 2)
    model, state = run.model, run.state
    rays = next(RayBatcher(scene, 128, seed=1)).rays
    used, total = (int(v) for v in rendering.counted_samples(model, state, rays))
    assert 0 < used < total // 2
    bg = jnp.ones((128, 3))

    @functools.partial(jax.jit, static_argnums=0)
    def render(capacity):
        return model.apply({"params": state.params}, None, rays, 1.0, bg,
                           sampler_state=state.sampler_state, capacity=capacity)

    dense, packed, short = render(None), render(used), render(used - 10)
    np.testing.assert_allclose(packed["rgb"], dense["rgb"], atol=1e-5)
    assert int(packed["overflow"]) == 0 and int(short["overflow"]) == 10


def test_appearance_culling_drops_at_most_the_culled_weights(synthetic_dir):
    """With `appearance_weight_threshold`, colours are computed only for buffered samples
    whose weight exceeds it: each ray's colour then falls short of the full render by at
    most the culled weights (colours lie in [0, 1]), and by more than nothing somewhere;
    a second buffer too small for the shown samples reports exactly how many it dropped."""
    run, scene, _ = _partly_occupied(synthetic_dir, 2)
    state = run.state
    params = jax.tree.map(lambda x: x, state.params)
    for m in range(3):  # denser than at initialisation, so weights spread over decades
        params["field"][f"density_plane_{m}"] = 4.0 * params["field"][f"density_plane_{m}"]
    rays = next(RayBatcher(scene, 128, seed=1)).rays
    used, total = (int(v) for v in rendering.counted_samples(run.model, state, rays))
    black = jnp.zeros((128, 3))

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def render(model, shown=None):
        return model.apply({"params": params}, None, rays, 1.0, black,
                           sampler_state=state.sampler_state, capacity=used,
                           appearance_capacity=shown)

    full = render(run.model)
    weights = np.asarray(full["weights"])
    threshold = float(np.quantile(weights[weights > 0], 0.5))
    culling = run.model.clone(appearance_weight_threshold=threshold)
    shown = int(np.sum(weights > threshold))
    culled = render(culling, used)
    short = np.asarray(full["rgb"]) - np.asarray(culled["rgb"])
    below = np.sum(np.where(weights <= threshold, weights, 0.0), -1)
    assert np.all(short >= -1e-6) and np.all(short <= below[:, None] + 1e-6)
    assert short.max() > 1e-4 * below.max() > 0
    np.testing.assert_allclose(culled["acc"], full["acc"], atol=1e-6)
    assert int(culled["appearance_overflow"]) == 0 and 0 < shown < used
    assert int(render(culling, shown - 7)["appearance_overflow"]) == 7


def test_colour_buffer_in_parts_skips_empty_parts_exactly(synthetic_dir):
    """The colour buffer computed in parts (those past the shown count skipped at run time)
    renders, and differentiates, as the buffer computed whole: here the shown samples fill
    under half of it, so at least two of five parts are skipped."""
    run, scene, _ = _partly_occupied(synthetic_dir, 2)
    state = run.state
    params = jax.tree.map(lambda x: x, state.params)
    for m in range(3):
        params["field"][f"density_plane_{m}"] = 4.0 * params["field"][f"density_plane_{m}"]
    rays = next(RayBatcher(scene, 128, seed=1)).rays
    used = int(rendering.counted_samples(run.model, state, rays)[0])
    black = jnp.zeros((128, 3))
    weights = np.asarray(jax.jit(lambda p: run.model.apply(
        {"params": p}, None, rays, 1.0, black, sampler_state=state.sampler_state,
        capacity=used))(params)["weights"])
    model = run.model.clone(
        appearance_weight_threshold=float(np.quantile(weights[weights > 0], 0.7)))
    shown = int(jax.jit(lambda p: model.shown_samples(p, rays, state.sampler_state, None))(
        params)[0])
    assert 0 < shown < 0.6 * used

    def loss(p, chunks):
        out = model.apply({"params": p}, None, rays, 1.0, black,
                          sampler_state=state.sampler_state, capacity=used,
                          appearance_capacity=used, appearance_chunks=chunks)
        return jnp.sum(out["rgb"] * jnp.arange(1.0, 4.0)), out

    for_chunks = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (whole, out), grads = for_chunks(params, 1)
    (parts, out5), grads5 = for_chunks(params, 5)
    np.testing.assert_allclose(out5["rgb"], out["rgb"], atol=1e-6)
    np.testing.assert_allclose(parts, whole, rtol=1e-6)
    assert int(out5["appearance_overflow"]) == 0
    for a, b in zip(jax.tree.leaves(grads5), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["field"]))


def test_the_log_reports_the_most_any_step_dropped():
    """Between two prints, the step that overflowed most decides how the buffers grow, not
    the last step alone (buffers are sized with a 5% margin; any step may be the fullest)."""
    from jaxnerf360.train import most_dropped

    steps = [(jnp.asarray(0), jnp.asarray(3)), (jnp.asarray(5), 0), (jnp.asarray(1), 1)]
    assert most_dropped(steps) == (5, 3)
    assert most_dropped([(jnp.asarray(0), 0)]) == (0, 0)


def test_sample_buffer_grows_after_an_overflow(synthetic_dir):
    """A step that dropped samples re-sizes the buffer above what it held plus the overflow."""
    run, _, _ = _partly_occupied(synthetic_dir, 4)
    run.start()
    first = run.capacity
    assert first is not None
    run.grow_buffer(overflow=1)
    assert run.capacity == first  # re-sized before the next step
    run.before_step()
    assert run.capacity > first


def test_resize_grids_resamples_factors_and_their_adam_moments(synthetic_dir):
    config = _config(synthetic_dir, *TINY_FIELDS["tensorf"], *TINY_SAMPLERS["proposal"])
    run, scene, mesh = setup_run(config)
    step = run.step
    batch = global_batch(scene, mesh, 64)
    state, _ = step(run.state, batch, parallel.replicate(jax.random.PRNGKey(0), mesh))
    new_res = (31, 21, 26)
    grown = resized(state, run.field, new_res)
    np.testing.assert_allclose(grown.params["field"]["density_plane_1"],
                               resample_factors(state.params["field"], new_res)["density_plane_1"])
    assert grown.params["field"]["appearance_line_0"].shape == (6, 26)
    # The proposal MLP and the field's networks are untouched.
    for a, b in zip(jax.tree.leaves(state.params["sampler"]),
                    jax.tree.leaves(grown.params["sampler"]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(state.params["field"]["basis"]["kernel"],
                                  grown.params["field"]["basis"]["kernel"])
    # Adam's moments follow their parameters: every grid leaf of the optimiser state has
    # its parameter's new shape, and the first moment is the resampled old one.
    field_shapes = {k: v.shape for k, v in grown.params["field"].items() if hasattr(v, "shape")}
    seen = 0
    old_leaves = dict(jax.tree_util.tree_leaves_with_path(state.opt_state))
    for path, leaf in jax.tree_util.tree_leaves_with_path(grown.opt_state):
        if is_grid_moment(run, path, grown.params["field"]):
            name = path[-1].key
            assert leaf.shape == field_shapes[name], (path, leaf.shape)
            want = resample_factors({name: old_leaves[path]}, new_res)[name]
            np.testing.assert_allclose(leaf, want, rtol=1e-6)
            seen += 1
    assert seen == 2 * 12  # mu and nu of 12 factors
    # The grown state trains on (a new compile for the new shapes).
    grown, stats = step(grown, batch, parallel.replicate(jax.random.PRNGKey(0), mesh))
    assert np.isfinite(float(stats["loss"]))


def test_resize_grids_of_wavelet_planes_keeps_adam_moments_valid(synthetic_dir):
    config = _config(synthetic_dir, *TINY_FIELDS["wavelet"], *TINY_SAMPLERS["proposal"])
    run, scene, mesh = setup_run(config)
    state, step = run.state, run.step
    batch = global_batch(scene, mesh, 64)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    for _ in range(3):
        state, _ = step(state, batch, key)
    grown = resized(state, run.field, (24, 32, 20))
    field = grown.params["field"]
    assert field["density_plane_0"].shape == (4, 24, 32)
    assert field["density_planemask_0"].shape == (4, 24, 32)
    assert field["appearance_linemask_0"].shape == (6, 20)
    seen = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(grown.opt_state):
        if is_grid_moment(run, path, field):
            assert leaf.shape == field[path[-1].key].shape
            if "nu" in jax.tree_util.keystr(path):
                assert float(jnp.min(leaf)) >= 0.0  # a negative second moment would be NaN
            seen += 1
    assert seen == 2 * 24  # mu and nu of 12 factors and 12 masks
    grown, stats = step(grown, batch, key)
    assert np.isfinite(float(stats["loss"]))


def is_grid_moment(run, path, field_params) -> bool:
    """Whether an optimiser-state leaf is a moment of a field parameter that is not a network
    (a grid factor or a mask), by the field's own labels."""
    keys = [getattr(k, "key", None) for k in path]
    if "field" not in keys or keys[-1] is None:
        return False
    return run.field.param_labels(field_params).get(keys[-1]) in ("grid", "mask")


def test_resolution_schedule_is_log_linear_in_voxel_count():
    field = TensoRFField(resolution=(64, 64, 64), final_resolution=(128, 128, 128),
                         upsample_steps=(10, 20, 30))
    sched = resolution_schedule(field)
    assert [s for s, _ in sched] == [10, 20, 30]
    voxels = [64**3] + [np.prod(r) for _, r in sched]
    ratios = np.diff(np.log(voxels))
    np.testing.assert_allclose(ratios, np.log(8) / 3, rtol=0.02)  # equal steps in log V
    assert sched[-1][1] == (128, 128, 128)
    assert field.resolution_at(9) == (64, 64, 64) and field.resolution_at(25) == sched[1][1]
    # The aspect of a non-cubic initial grid is kept.
    aniso = resolution_schedule(TensoRFField(resolution=(40, 80, 20),
                                             final_resolution=(80, 160, 40),
                                             upsample_steps=(5, 6)))
    assert aniso[0][1] == (57, 113, 28)  # x 8^(1/6) per axis: half the log-volume step


@pytest.mark.parametrize("kwargs,needle", [
    (dict(upsample_steps=(10, 10, 20)), "strictly increasing"),
    (dict(upsample_steps=(30, 20)), "strictly increasing"),
    (dict(upsample_steps=(0, 10)), "strictly increasing"),
    (dict(final_resolution=(64, 64, 64)), "only grows"),
    (dict(final_resolution=(300, 300)), "final_resolution"),
    (dict(appearance_ranks=(48, 48, 48, 48)), "appearance_ranks"),
    (dict(box_min=(0, 0, 0), box_max=(1, 1, -1)), "non-positive"),
])
def test_bad_schedules_are_start_up_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        TensoRFField(**kwargs)


def test_grid_and_network_parameters_get_their_own_learning_rates(synthetic_dir):
    config = _config(synthetic_dir, *TINY_FIELDS["tensorf"], *TINY_SAMPLERS["proposal"],
                     "Config.lr_init = 1e-3", "Config.lr_final = 1e-3",
                     "Config.adam_eps = 1e-15")  # so a first Adam step is lr x sign(grad)
    run, scene, mesh = setup_run(config)
    state, step = run.state, run.step
    batch = global_batch(scene, mesh, 256)
    before = jax.device_get(state.params)  # the step donates (deletes) its input state
    new, _ = step(state, batch, parallel.replicate(jax.random.PRNGKey(0), mesh))
    # Adam's first step moves each parameter with a non-negligible gradient by ~lr.
    delta = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)),
                         new.params, before)
    assert np.isclose(delta["field"]["density_plane_0"].max(), 0.02, rtol=0.01)
    assert np.isclose(delta["field"]["appearance_line_2"].max(), 0.02, rtol=0.01)
    assert np.isclose(delta["field"]["basis"]["kernel"].max(), 1e-3, rtol=0.01)
    assert np.isclose(max(d.max() for d in jax.tree.leaves(delta["sampler"])), 1e-3, rtol=0.01)
    labels = run.model.param_labels(before)
    assert labels["field"]["density_line_0"] == "grid"
    assert labels["field"]["basis"]["kernel"] == "net"


def test_regulariser_weights_follow_tensorf_schedule():
    from jaxnerf360.fields.vm import l1_density, tv_planes
    from jaxnerf360.objective import Objective

    field = TensoRFField(l1_density_mult=8e-5, l1_density_mult_rest=4e-5,
                         l1_density_switch_step=50, tv_density_mult=0.02,
                         tv_appearance_mult=0.01)
    rng = np.random.default_rng(0)
    params = {}
    for prefix in ("density", "appearance"):
        for m in range(3):
            params[f"{prefix}_plane_{m}"] = jnp.asarray(rng.normal(size=(2, 5, 6)))
            params[f"{prefix}_line_{m}"] = jnp.asarray(rng.normal(size=(2, 7)))
    l1, tvd = l1_density(params), tv_planes(params, "density")
    tva = tv_planes(params, "appearance")
    regularizers = Objective(field.regularizers())

    def inputs(step, grid_lr_ratio):
        return LossInputs(outputs={}, batch={}, target=None, pixel_weights=None, params={},
                          field_params=params, step=step, train_frac=0.0,
                          lr_ratio={"grid": grid_lr_ratio})

    early, parts = regularizers(inputs(10, 1.0))
    late, _ = regularizers(inputs(60, 0.5))
    np.testing.assert_allclose(early, 8e-5 * l1 + 0.02 * tvd + 0.01 * tva, rtol=1e-6)
    np.testing.assert_allclose(late, 4e-5 * l1 + 0.5 * (0.02 * tvd + 0.01 * tva), rtol=1e-6)
    assert set(parts) == {"l1_density", "tv_density", "tv_appearance"}


def test_grid_regularisers_live_with_the_grid_field(synthetic_dir):
    """A regulariser weight bound on Config (where it used to be) names its new binding."""
    with pytest.raises(UserError, match="TensoRFField.tv_density_mult"):
        _config(synthetic_dir, "Config.tv_density_mult = 0.02", *TINY_FIELDS["mlp"])


def test_training_applies_the_grid_schedule_and_resumes_exactly(synthetic_dir, tmp_path,
                                                                 monkeypatch):
    """Upsampling, occupancy updates and ray filtering in the real loop; a run stopped after
    them (as SIGTERM stops it) and resumed ends with exactly the state of an uninterrupted run."""
    from jaxnerf360 import train

    bindings = [*TINY_FIELDS["tensorf"], *TINY_SAMPLERS["occupancy"], "Config.batch_size = 128",
                "Config.checkpoint_every = 100", "OccupancySampler.update_steps = (3, 5)",
                "OccupancySampler.threshold = 1e-3", "TensoRFField.upsample_steps = (4,)",
                "TensoRFField.final_resolution = (24, 24, 24)", "Config.max_steps = 9"]
    straight = train.train(_config(synthetic_dir, *bindings,
                                   f"Config.checkpoint_dir = '{tmp_path}/straight'"))
    assert int(straight.step) == 9
    assert straight.params["field"]["density_plane_0"].shape == (4, 24, 24)
    assert straight.params["field"]["density_line_1"].shape == (4, 24)
    assert straight.sampler_state.dtype == bool

    class StopAfterSix(train._StopFlag):
        """The stop request a signal would make, after the sixth step."""

        checks = 0

        @property
        def requested(self):
            StopAfterSix.checks += 1
            return StopAfterSix.checks >= 6

        @requested.setter
        def requested(self, value):
            pass

    interrupted = _config(synthetic_dir, *bindings,
                          f"Config.checkpoint_dir = '{tmp_path}/interrupted'")
    with monkeypatch.context() as patch:
        patch.setattr(train, "_StopFlag", StopAfterSix)
        assert int(train.train(interrupted).step) == 6
    resumed = train.train(interrupted)
    assert int(resumed.step) == 9
    np.testing.assert_array_equal(resumed.sampler_state, straight.sampler_state)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
