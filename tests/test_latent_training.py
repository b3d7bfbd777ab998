"""ReLS-NeRF's three phases in one run: which parts train in each (bit-equal where frozen),
the autoencoder's round trip after phase 1, resume across a phase boundary, the phase plan's
windows and learning rates, and bad phase settings."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import metrics, optim, parallel, training
from jaxnerf360.data import load_split
from jaxnerf360.errors import UserError
from jaxnerf360.latent_training import LatentTraining, block_mean, whole_blocks
from jaxnerf360.parts import ParamGroup
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config

# k = 2 and the small decoder keep a patch and its radius inside the 32 x 32 synthetic images.
LATENT = [*TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"], "Model.head = @LatentDecoder",
          "LatentDecoder.latent_dim = 4", "LatentDecoder.factor = 2",
          "LatentDecoder.size = 'small'", "MLPField.feature_dim = 4", "Config.patch_size = 8",
          "Config.batch_size = 128", "LatentTraining.encoder_margin = 1",
          "LatentTraining.joint_rays = 64",
          "LatentTraining.colour_weight = 0.1"]


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                    strict=True))


def test_each_phase_trains_only_its_parts_and_frozen_parts_stay_bit_equal(synthetic_dir):
    # 12 steps: autoencoder 0-2, joint 3-8, decoder 9-11.
    config = _config(synthetic_dir, *LATENT, "Config.max_steps = 12",
                     "LatentTraining.autoencoder_end = 0.25",
                     "LatentTraining.decoder_start = 0.75")
    mesh = parallel.make_mesh()
    run = training.setup(config, load_split(config, "train"), mesh)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    params, stats = {}, {}
    for step in range(12):
        params[step] = _host(run.state.params)  # before the step (the state is donated)
        run.before_step()
        run.state, stats[step] = run.step(run.state, run.next_batch(), key)
        assert run.describe_phase(step) == ("phase 1/3 autoencoder" if step < 3 else
                                            "phase 2/3 joint" if step < 9 else
                                            "phase 3/3 decoder")
    params[12] = _host(run.state.params)
    nerf = lambda p: (p["field"], p["sampler"])  # noqa: E731
    # Phase 1 trains the autoencoder only, from its own loss.
    assert _equal(nerf(params[0]), nerf(params[3]))
    assert not _equal(params[0]["encoder"], params[3]["encoder"])
    assert not _equal(params[0]["head"], params[3]["head"])
    assert "reconstruction" in stats[0] and "data" not in stats[0]
    # Phase 2 fits the field, the encoder and (by default) the decoder frozen.
    assert not _equal(params[3]["field"], params[9]["field"])
    assert not _equal(params[3]["sampler"], params[9]["sampler"])
    assert _equal(params[3]["head"], params[9]["head"])
    assert _equal(params[3]["encoder"], params[12]["encoder"])
    assert float(stats[5]["latent"]) > 0 and float(stats[5]["colour"]) > 0
    # Phase 3 fine-tunes the decoder; the field and sampler do not move by a bit.
    assert _equal(nerf(params[9]), nerf(params[12]))
    assert not _equal(params[9]["head"], params[12]["head"])
    assert float(stats[10]["latent"]) == 0 and float(stats[10]["data"]) > 0
    assert len(run._steps) == 3  # one compiled step per phase


def test_the_autoencoder_round_trip_after_phase_1(synthetic_dir):
    """Phase 1 alone (400 steps) on the synthetic scene: a whole training image, encoded and
    decoded, comes back at 18 dB or better (about 11 dB before training; 19-21 dB measured)."""
    config = _config(synthetic_dir, *LATENT, "Config.max_steps = 1000",
                     "LatentTraining.autoencoder_end = 0.9", "LatentTraining.decoder_start = 1.0",
                     "LatentTraining.decoder_lr = (3e-3, 3e-3)",
                     "LatentTraining.encoder_lr = (3e-3, 3e-3)")
    mesh = parallel.make_mesh()
    scene = load_split(config, "train")
    run = training.setup(config, scene, mesh)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    images = jnp.asarray(scene.images[:4, ..., :3])

    @jax.jit
    def round_trip_psnr(params):
        decoded = run.model.apply_head(params, {"features": run.model.encode(params, images)})
        side = decoded["rgb"].shape[1]
        top = (images.shape[1] - side) // 2
        truth = images[:, top:top + side, top:top + side]
        return metrics.mse_to_psnr(jnp.mean(jnp.square(decoded["rgb"] - truth)))

    before = float(round_trip_psnr(run.model_params(run.state)))
    for _ in range(400):
        run.state, _ = run.step(run.state, run.next_batch(), key)
    after = float(round_trip_psnr(run.model_params(run.state)))
    assert run.phase_name(int(run.state.step)) == "autoencoder"
    assert before < 14 and after > 18, (before, after)


def test_a_run_stopped_in_the_joint_phase_resumes_exactly(synthetic_dir, tmp_path, monkeypatch,
                                                          caplog):
    from jaxnerf360 import train

    bindings = [*LATENT, "Config.max_steps = 8", "Config.checkpoint_every = 100",
                "LatentTraining.autoencoder_end = 0.25", "LatentTraining.decoder_start = 0.75"]
    with caplog.at_level("INFO"):
        straight = train.train(_config(synthetic_dir, *bindings, "Config.print_every = 1",
                                       f"Config.checkpoint_dir = '{tmp_path}/straight'"))
    log = caplog.text
    assert "phase 2/3 joint (begins)" in log and "phase 3/3 decoder (begins)" in log
    assert "step 1/8" in log and "phase 1/3 autoencoder" in log.split("step 2/8")[0]

    class StopAfterThree(train._StopFlag):
        """The stop request a signal would make, after the third step (in phase 2)."""

        checks = 0

        @property
        def requested(self):
            StopAfterThree.checks += 1
            return StopAfterThree.checks >= 3

        @requested.setter
        def requested(self, value):
            pass

    interrupted = _config(synthetic_dir, *bindings,
                          f"Config.checkpoint_dir = '{tmp_path}/interrupted'")
    with monkeypatch.context() as patch:
        patch.setattr(train, "_StopFlag", StopAfterThree)
        assert int(train.train(interrupted).step) == 3
    resumed = train.train(interrupted)
    assert int(resumed.step) == 8
    assert _equal(_host(straight.params), _host(resumed.params))


def test_group_windows_are_exact_zeros_outside_and_stretch_the_schedule_inside():
    gin.clear_config()
    gin.parse_config(["Config.max_steps = 100", "Config.lr_delay_steps = 0"])
    from jaxnerf360.configs import Config

    config = Config()
    group = ParamGroup(1e-2, 1e-4, window=(0.2, 0.7))
    lr = optim.group_schedule(group, config)
    steps = jnp.arange(100)
    values = np.asarray(jax.vmap(lr)(steps))
    assert np.all(values[:20] == 0) and np.all(values[70:] == 0)
    # Log-linear from lr_init at step 20 towards lr_final over the 50 steps of the window.
    np.testing.assert_allclose(values[20], 1e-2, rtol=1e-6)
    np.testing.assert_allclose(values[45], 1e-3, rtol=1e-5)
    # A scale within the window multiplies the rate there only.
    scaled = optim.group_schedule(ParamGroup(1e-2, 1e-4, window=(0.2, 0.7),
                                             scales=((0.3, 0.5, 0.25),)), config)
    ratio = np.asarray(jax.vmap(scaled)(steps))[20:70] / values[20:70]
    np.testing.assert_allclose(ratio, np.where((steps[20:70] >= 30) & (steps[20:70] < 50),
                                               0.25, 1.0), rtol=1e-6)
    # The whole-run window is the old schedule, unchanged.
    whole = optim.group_schedule(ParamGroup(1e-2, 1e-4), config)
    np.testing.assert_allclose(np.asarray(jax.vmap(whole)(steps))[50], 1e-3, rtol=1e-5)


def test_the_plan_gives_each_group_the_phases_of_its_owner():
    plan = LatentTraining(autoencoder_end=0.1, decoder_start=0.8)
    assert [(p.name, p.start) for p in plan.phases()] == [("autoencoder", 0.0),
                                                          ("joint", 0.1), ("decoder", 0.8)]
    groups = plan.restrict({"decoder": ParamGroup(1, 1), "encoder": ParamGroup(1, 1),
                            "net": ParamGroup(1, 1), "grid": ParamGroup(1, 1)})
    assert groups["decoder"].window == (0.0, 1.0)
    assert groups["encoder"].window == (0.0, 0.1)
    assert groups["net"].window == groups["grid"].window == (0.1, 0.8)
    assert groups["decoder"].scales == ((0.1, 0.8, 0.0),) and groups["net"].scales == ()
    assert [p.name for p in LatentTraining(autoencoder_end=0.0, decoder_start=1.0).phases()] \
        == ["joint"]
    assert [plan.phase_at(s, 100).name for s in (0, 9, 10, 79, 80, 99)] == [
        "autoencoder", "autoencoder", "joint", "joint", "decoder", "decoder"]


def test_block_helpers_against_loops():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 13, 3)).astype(np.float32)
    crop = np.asarray(whole_blocks(jnp.asarray(x), 4))
    assert crop.shape == (2, 8, 12, 3)
    np.testing.assert_array_equal(crop, x[:, 0:8, 0:12])
    mean = np.asarray(block_mean(jnp.asarray(crop), 4))
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(mean[:, i, j], crop[:, 4 * i:4 * i + 4,
                                                           4 * j:4 * j + 4].mean((1, 2)),
                                       rtol=1e-5)


@pytest.mark.parametrize("bindings, match", [
    (["LatentTraining.autoencoder_end = 0.6", "LatentTraining.decoder_start = 0.5"],
     "out of order"),
    (["LatentTraining.decoder_start = 1.5"], "fraction of training in [0, 1]"),
    (["LatentTraining.autoencoder_end = 0.5", "LatentTraining.decoder_start = 0.5"],
     "no phase in which the field trains"),
    (["LatentTraining.reconstruction = 'l3'"], "'l1' or 'l2'"),
    (["LatentTraining.decoder_lr = (1e-3,)"], "two positive rates"),
])
def test_bad_phase_settings_are_one_clear_line(synthetic_dir, bindings, match):
    config = _config(synthetic_dir, *LATENT, *bindings)
    with pytest.raises(UserError) as err:
        training.setup(config, load_split(config, "train"), parallel.make_mesh())
    assert match in str(err.value).splitlines()[0]
