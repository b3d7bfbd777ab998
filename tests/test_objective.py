"""The objective: named, weighted terms in order; logged-only terms; terms added by gin."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import configs, objective
from jaxnerf360.errors import UserError
from jaxnerf360.objective import LossInputs, LossTerm, Objective


def _inputs(x, step=0):
    return LossInputs(outputs={"x": x}, batch={}, target=None, pixel_weights=None, params={},
                      field_params={}, step=step, train_frac=0.0, lr_ratio={"grid": 0.5})


def test_total_is_the_weighted_sum_and_every_term_is_logged_by_name():
    terms = Objective([
        LossTerm("square", lambda i: jnp.sum(i.outputs["x"] ** 2), 2.0),
        LossTerm("scheduled", lambda i: jnp.sum(i.outputs["x"]),
                 lambda i: jnp.where(i.step >= 10, 3.0, 1.0)),
        LossTerm("decayed", lambda i: jnp.sum(jnp.abs(i.outputs["x"])),
                 lambda i: 4.0 * i.lr_ratio["grid"]),
        LossTerm("watched", lambda i: jnp.max(i.outputs["x"]), None),
    ])
    assert terms.names == ("square", "scheduled", "decayed", "watched")
    x = jnp.array([1.0, -2.0, 3.0])
    total, parts = terms(_inputs(x, step=12))
    np.testing.assert_allclose(total, 2 * 14 + 3 * 2 + 2.0 * 6)  # the max only is logged
    np.testing.assert_allclose([parts[n] for n in terms.names], [14.0, 2.0, 6.0, 3.0])
    early, _ = terms(_inputs(x, step=3))
    np.testing.assert_allclose(early, 2 * 14 + 1 * 2 + 2.0 * 6)
    # A logged-only term passes no gradient.
    grad = jax.grad(lambda x: terms(_inputs(x))[0])(x)
    np.testing.assert_allclose(grad, 2 * 2 * x + 1.0 + 2.0 * jnp.sign(x))


def test_names_are_unique():
    term = LossTerm("data", lambda i: 0.0)
    with pytest.raises(UserError, match="'data' appears twice"):
        Objective([term, term])


@gin.configurable
def doubled_data(config, weight=0.25):
    """A term registered by gin alone: the data loss again, with its own weight."""
    return LossTerm("doubled", lambda i: jnp.mean(jnp.square(i.outputs["rgb"] - i.target)),
                    weight)


def test_terms_join_the_objective_from_gin_without_touching_it():
    gin.clear_config()
    try:
        configs.parse_gin([], ["Config.data_loss_type = 'mse'", "Config.distortion_loss_mult = 0",
                               "Objective.extra_terms = [@doubled_data]",
                               "doubled_data.weight = 0.5"])
        config = configs.Config()
        field_term = LossTerm("field_reg", lambda i: jnp.asarray(1.0), 0.1)
        built = objective.build(config, [field_term])
    finally:
        gin.clear_config()
    assert built.names == ("data", "interlevel", "distortion", "field_reg", "doubled")
    rgb, target = jnp.full((4, 3), 0.5), jnp.zeros((4, 3))
    sdist = jnp.linspace(0.0, 1.0, 5)[None].repeat(4, 0)
    weights = jnp.full((4, 4), 0.25)
    inputs = LossInputs(outputs={"rgb": rgb, "sdist": sdist, "weights": weights,
                                 "prop_levels": ()}, batch={}, target=target,
                        pixel_weights=None, params={}, field_params={}, step=0,
                        train_frac=0.0, lr_ratio={})
    total, parts = built(inputs)
    np.testing.assert_allclose(parts["data"], 0.25)
    np.testing.assert_allclose(parts["doubled"], 0.25)
    np.testing.assert_allclose(total, 0.25 + 0.1 + 0.5 * 0.25, rtol=1e-6)


def test_a_staged_term_replaces_the_data_term_from_its_start():
    def inputs(frac):
        return LossInputs(outputs={"x": jnp.array(2.0)}, batch={}, target=None,
                          pixel_weights=None, params={}, field_params={}, step=0,
                          train_frac=jnp.asarray(frac), lr_ratio={})
    terms = Objective([
        LossTerm("data", lambda i: i.outputs["x"], 1.0),
        LossTerm("aligned", lambda i: 10 * i.outputs["x"], 0.5,
                 active=objective.stage_gate(0.25), replaces="data"),
    ])
    np.testing.assert_allclose(terms(inputs(0.1))[0], 2.0)  # the first stage: data only
    np.testing.assert_allclose(terms(inputs(0.25))[0], 0.5 * 20)  # then the staged term only
    # Both stay logged in both stages.
    assert set(terms(inputs(0.1))[1]) == {"data", "aligned"}
    assert objective.stage_gate(0.0) is None  # on from the start: no gate
    with pytest.raises(UserError, match="replaces 'rgb_loss'"):
        Objective([LossTerm("x", lambda i: 0.0, replaces="rgb_loss")])
