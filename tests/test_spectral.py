"""Spectral control: component-wise filtering of VM factors against a dense 3D convolution."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxnerf360 import schedules
from jaxnerf360.errors import UserError
from jaxnerf360.fields import spectral
from jaxnerf360.fields.vm import MODES
from jaxnerf360.geometry import filters


def _dense(planes, lines, res):
    """The dense field [X, Y, Z] of VM factors: sum over modes and ranks of plane x line."""
    out = np.zeros(res)
    letters = "xyz"
    for m, ((a, b), c) in enumerate(MODES):
        spec = f"r{letters[a]}{letters[b]},r{letters[c]}->xyz"
        out += np.einsum(spec, np.asarray(planes[m], np.float64), np.asarray(lines[m], np.float64))
    return out


def test_component_wise_filtering_is_the_3d_gaussian_of_the_dense_field():
    rng = np.random.default_rng(0)
    res = (26, 24, 22)
    planes = [rng.normal(size=(2, res[a], res[b])) for (a, b), _ in MODES]
    lines = [rng.normal(size=(2, res[c])) for _, c in MODES]
    sigma = np.array([1.3, 0.7, 2.0])
    radius = filters.kernel_radius(sigma.max())
    fp, fl = spectral.filter_vm([jnp.asarray(p, jnp.float32) for p in planes],
                                [jnp.asarray(v, jnp.float32) for v in lines],
                                jnp.asarray(sigma, jnp.float32), radius)
    got = _dense(fp, fl, res)
    want = ndimage.gaussian_filter(_dense(planes, lines, res), sigma, mode="nearest",
                                   truncate=filters.TRUNCATE)
    # Replicate padding of every factor is replicate padding of the dense field, so the two
    # agree at the borders too.
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_zero_width_filtering_is_the_identity():
    rng = np.random.default_rng(1)
    planes = [jnp.asarray(rng.normal(size=(3, 8, 9)), jnp.float32) for _ in range(3)]
    lines = [jnp.asarray(rng.normal(size=(3, 7)), jnp.float32) for _ in range(3)]
    fp, fl = spectral.filter_vm(planes, lines, jnp.zeros(3), 5)
    for a, b in zip(fp + fl, planes + lines, strict=True):
        np.testing.assert_array_equal(a, b)


def test_schedules_are_piecewise_linear_and_checked():
    knots = schedules.check_schedule([(0.0, 0.2), (0.1, 0.2), (0.4, 0.0)], "w")
    for frac, want in [(0.0, 0.2), (0.05, 0.2), (0.25, 0.1), (0.4, 0.0), (0.9, 0.0)]:
        assert float(schedules.schedule_value(knots, frac)) == pytest.approx(want, abs=1e-7)
    assert float(schedules.schedule_value((), 0.3)) == 0.0
    assert schedules.max_value(knots) == 0.2
    for bad, match in [([(0.0, -0.1)], "non-negative"), ([(0.0, 0.1), (0.5, 0.2)], "increase"),
                       ([(0.5, 0.1), (0.2, 0.0)], "fractions"), ([(0.0, 0.1), (1.5, 0.0)],
                                                                 "fractions"),
                       ([0.1, 0.2], "pairs")]:
        with pytest.raises(UserError, match=match):
            schedules.check_schedule(bad, "TensoRFField.density_blur")


def test_voxel_sizes():
    np.testing.assert_allclose(spectral.voxel_sizes((-1, -1, -2), (1, 1, 2), (11, 21, 5)),
                               [0.2, 0.1, 1.0])


def test_end_fraction_is_where_a_schedule_reaches_zero_for_good():
    assert schedules.end_fraction(()) == 0.0
    assert schedules.end_fraction(((0.0, 0.3), (0.1, 0.15), (0.3, 0.0))) == 0.3
    assert schedules.end_fraction(((0.0, 0.0),)) == 0.0
    assert schedules.end_fraction(((0.0, 0.3), (0.5, 0.1))) == float("inf")
    knots = ((0.0, 0.3), (0.2, 0.0), (0.6, 0.0))
    assert float(schedules.schedule_value(knots, schedules.end_fraction(knots))) == 0.0
    assert float(schedules.schedule_value(knots, schedules.end_fraction(knots) - 1e-3)) > 0.0
