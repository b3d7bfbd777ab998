"""Between-step events from the parts' declarations, applied at their steps; the step cache."""

import gin
import jax
import pytest

from jaxnerf360 import events, parallel, training
from jaxnerf360.data import load_split
from tests.test_grid_training import TINY_FIELDS, TINY_SAMPLERS, _config, setup_run

SCHEDULED = [*TINY_FIELDS["tensorf"], *TINY_SAMPLERS["occupancy"], "Config.batch_size = 128",
             "OccupancySampler.update_steps = (2, 4)", "OccupancySampler.threshold = 1e-3",
             "TensoRFField.upsample_steps = (3,)", "TensoRFField.final_resolution = (20, 20, 20)",
             "TensoRFField.density_blur = ((0.0, 0.1), (0.05, 0.0))"]


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def test_events_come_from_the_declarations_in_order(synthetic_dir):
    config = _config(synthetic_dir, *SCHEDULED)
    run = training.Training(config, load_split(config, "train"), parallel.make_mesh())
    kinds = [(type(e).__name__, e.steps) for e in run.events]
    assert kinds == [("SamplerUpdate", (2, 4)), ("RayFilter", (4,)), ("GridResize", (3,)),
                     ("SpectralEnd", (5,))]
    plain = _config(synthetic_dir, *TINY_FIELDS["mlp"], *TINY_SAMPLERS["proposal"])
    assert training.Training(plain, load_split(plain, "train"), parallel.make_mesh()).events == []


def test_events_apply_before_their_steps(synthetic_dir):
    config = _config(synthetic_dir, *SCHEDULED)
    run, _, mesh = setup_run(config)
    applied = []
    for event in run.events:
        def record(run, state, event=event, apply=event.apply):
            applied.append((type(event).__name__, int(state.step)))
            return apply(run, state)
        event.apply = record
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    seen = []
    for _ in range(6):
        run.before_step()
        step = int(run.state.step)
        seen.append((run.state.params["field"]["density_line_0"].shape[1], run.kept is not None,
                     run._spectral(step)))
        run.state, _ = run.step(run.state, run.next_batch(), key)
    assert applied == [("SamplerUpdate", 2), ("GridResize", 3), ("SamplerUpdate", 4),
                       ("RayFilter", 4), ("SpectralEnd", 5)]
    # (grid points along z, rays filtered, spectral control) before each step 0..5
    assert seen == [(16, False, True), (16, False, True), (16, False, True), (20, False, True),
                    (20, True, True), (20, True, False)]
    assert run.state.sampler_state.dtype == bool


def test_step_cache_builds_each_setting_once():
    built = []
    cache = events.StepCache(lambda **kw: built.append(kw) or len(built))
    a = cache.get(capacity=None, spectral=True)
    assert cache.get(spectral=True, capacity=None) == a
    assert cache.get(capacity=64, spectral=True) != a
    assert len(cache) == 2 and built == [{"capacity": None, "spectral": True},
                                         {"capacity": 64, "spectral": True}]


def test_buffer_sizes_pad_at_most_a_sixteenth_with_sixteen_sizes_per_doubling():
    for n in range(1, 5000):
        assert n <= events.round_capacity(n, 10**6) <= n * 17 / 16
    assert len({events.round_capacity(n, 10**6) for n in range(2049, 4097)}) == 16
    assert events.round_capacity(999_999, 10**6) is None  # no smaller than all samples


def test_a_rebuilt_occupancy_grid_does_not_compile_the_step_twice(synthetic_dir):
    # The rebuilt grid comes out of a function of its own; laid out as the step lays out its
    # output, the steps after the rebuild reuse one compilation.
    config = _config(synthetic_dir, *TINY_FIELDS["tensorf"], *TINY_SAMPLERS["occupancy"],
                     "Config.batch_size = 128", "OccupancySampler.update_steps = (2,)",
                     "OccupancySampler.threshold = 1e-3")
    run, _, mesh = setup_run(config)
    key = parallel.replicate(jax.random.PRNGKey(0), mesh)
    for _ in range(5):
        run.before_step()
        run.state, _ = run.step(run.state, run.next_batch(), key)
    assert int(run.state.step) == 5
    assert run.step._jitted._cache_size() == 1
