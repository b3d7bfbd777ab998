"""The alignment-aware patch losses against injected, known misalignments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360 import alignment, losses

P, M, A = 12, 2, 10  # patch side, margin, top-left of the patch in the big image


def _texture(seed=0, size=40):
    return np.random.default_rng(seed).uniform(0, 1, (1, size, size, 3)).astype(np.float32)


def _window(image, shift):
    """The ground-truth window around the patch at A whose content moved by `shift` (dy, dx):
    window(q) = image(q - shift)."""
    top, left = A - M - shift[0], A - M - shift[1]
    return image[:, top:top + P + 2 * M, left:left + P + 2 * M]


@pytest.mark.parametrize("shift", [(0, 0), (1, -2), (-2, 2), (2, 0)])
def test_both_matchings_recover_an_integer_shift(shift):
    image = _texture()
    rendered = image[:, A:A + P, A:A + P]
    window = _window(image, shift)
    target, offs = alignment.per_pixel_match(rendered, window, M, spatial_weight=0.01)
    np.testing.assert_array_equal(offs, np.broadcast_to(shift, offs.shape))
    np.testing.assert_allclose(target, rendered, atol=0)
    target, found = alignment.global_shift_match(rendered, window, M, spatial_weight=0.01)
    # On white noise the cost is no parabola near its minimum; the sub-pixel step stays tiny.
    np.testing.assert_array_equal(np.round(found[0]), shift)
    np.testing.assert_allclose(found[0], shift, atol=0.01)
    np.testing.assert_allclose(target, rendered, atol=0.01)
    target, found = alignment.global_shift_match(rendered, window, M, 0.01, sub_pixel=False)
    np.testing.assert_array_equal(found[0], shift)  # integers only: the exact crop
    np.testing.assert_array_equal(target, rendered)


@pytest.mark.parametrize("shift", [(0.3, -0.4), (-1.25, 0.5), (1.7, 1.45)])
def test_global_shift_recovers_a_sub_pixel_shift(shift):
    # Two linear ramps (one per axis): the matching cost is exactly a separable quadratic in
    # the offset, so the parabola through the integer optimum's neighbours has its vertex at
    # the true shift, and bilinear resampling of a linear image is exact.
    size = P + 2 * M
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    def ramp(dy, dx):
        return np.stack([0.03 * (ys - dy), 0.05 * (xs - dx), 0 * ys], -1)[None]
    rendered = ramp(0, 0)[:, M:M + P, M:M + P].astype(np.float32)
    window = ramp(*shift).astype(np.float32)  # window(q) = ramp(q - shift)
    target, found = alignment.global_shift_match(rendered, window, M)
    np.testing.assert_allclose(found[0], shift, atol=1e-4)
    np.testing.assert_allclose(target, rendered, atol=1e-5)


@pytest.mark.parametrize("method", alignment.METHODS)
def test_the_loss_is_the_plain_loss_within_the_window_and_not_beyond(method):
    image = _texture(1)
    truth = image[:, A:A + P, A:A + P]
    noise = np.random.default_rng(2).normal(0, 0.01, truth.shape).astype(np.float32)
    rendered = truth + noise
    plain = float(losses.data_loss(rendered, truth, "mse", 0.0))
    def plain_inner(dy, dx):  # the reverse direction: ground-truth pixels m from the edge,
        rows = slice(M - dy, P - M - dy)  # each matched by the rendered pixel they show
        cols = slice(M - dx, P - M - dx)
        return float(losses.data_loss(rendered[:, rows, cols], truth[:, rows, cols], "mse", 0))
    for dy in range(-M, M + 1):
        for dx in range(-M, M + 1):
            window = _window(image, (dy, dx))
            got = float(alignment.alignment_loss(rendered, window, M, method=method,
                                                 spatial_weight=0.01))
            # Per pixel the match is exact; one global shift is refined below a pixel by the
            # noise, which moves the loss by far less than the noise itself.
            np.testing.assert_allclose(got, plain, rtol=1e-6 if method == "per_pixel" else 0.05)
            if method == "per_pixel":
                both = float(alignment.alignment_loss(rendered, window, M, method=method,
                                                      spatial_weight=0.01, bidirectional=True))
                np.testing.assert_allclose(both, 0.5 * (plain + plain_inner(dy, dx)),
                                           rtol=1e-6)
    beyond = float(alignment.alignment_loss(rendered, _window(image, (M + 1, 0)), M,
                                            method=method))
    assert beyond > 5 * plain


@pytest.mark.parametrize("method", alignment.METHODS)
def test_only_the_rendered_side_gets_gradients(method):
    image = _texture(3)
    rendered = jnp.asarray(image[:, A:A + P, A:A + P] * 0.9)
    window = jnp.asarray(_window(image, (1, 1)))
    def loss(r, w):
        return alignment.alignment_loss(r, w, M, method=method)
    g_rendered, g_window = jax.grad(loss, argnums=(0, 1))(rendered, window)
    assert float(jnp.abs(g_window).max()) == 0.0
    # The gradient is the data loss's against the aligned target, held fixed.
    target = alignment.aligned_target(rendered, window, M, method, 0.0)
    if method == "per_pixel":  # the match is exact here
        np.testing.assert_array_equal(target, image[:, A:A + P, A:A + P])
    np.testing.assert_allclose(g_rendered, 2 * (rendered - target) / rendered.size, rtol=1e-5,
                               atol=1e-10)


def test_the_spatial_penalty_prefers_the_smaller_offset_among_equal_matches():
    flat = np.full((1, P + 2 * M, P + 2 * M, 3), 0.5, np.float32)
    rendered = flat[:, M:M + P, M:M + P]
    _, offs = alignment.per_pixel_match(rendered, flat, M, spatial_weight=0.1)
    assert np.all(offs == 0)
    _, shift = alignment.global_shift_match(rendered, flat, M, spatial_weight=0.1)
    np.testing.assert_allclose(shift, 0.0, atol=1e-6)


def test_offsets_and_crops_agree():
    window = _texture(4, P + 2 * M)
    crops = alignment.shifted_crops(jnp.asarray(window), M)
    for k, (dy, dx) in enumerate(np.asarray(alignment.offsets(M))):
        np.testing.assert_array_equal(crops[k], window[:, M + dy:M + dy + P, M + dx:M + dx + P])


def test_a_dropped_detail_costs_nothing_one_way_and_something_both_ways():
    # Ground truth: flat grey with one small dark dot; the render: flat grey, no dot. Each
    # rendered pixel finds grey within the window, so one-way per-pixel matching calls the
    # render perfect (the collapse measured on lego); the dot's pixels find no match back.
    window = np.full((1, P + 2 * M, P + 2 * M, 3), 0.6, np.float32)
    window[0, M + 5:M + 7, M + 5:M + 7] = 0.1
    rendered = np.full((1, P, P, 3), 0.6, np.float32)
    one_way = float(alignment.alignment_loss(rendered, window, M, method="per_pixel"))
    both = float(alignment.alignment_loss(rendered, window, M, method="per_pixel",
                                          bidirectional=True))
    plain = float(losses.data_loss(rendered, window[:, M:M + P, M:M + P], "mse", 0.0))
    assert one_way == 0.0
    assert both > 0.5 * plain  # the four dot pixels, among the 8 x 8 compared both ways
    # The reverse direction pulls the render's pixels at the dot towards it.
    grad = jax.grad(lambda r: alignment.alignment_loss(r, window, M, method="per_pixel",
                                                       bidirectional=True))(rendered)
    assert float(jnp.abs(grad).max()) > 0
