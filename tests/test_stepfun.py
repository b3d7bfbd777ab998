"""Tests of jaxnerf360.geometry.stepfun against brute-force numpy constructions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxnerf360.errors import UserError
from jaxnerf360.geometry import stepfun


def _random_steps(rng, batch, n, lo=0.0, hi=1.0):
    """Random sorted endpoints `[batch, n+1]` spanning [lo, hi] and weights `[batch, n]`."""
    inner = np.sort(rng.uniform(lo, hi, size=(batch, n - 1)), axis=-1)
    t = np.concatenate([np.full((batch, 1), lo), inner, np.full((batch, 1), hi)], axis=-1)
    w = rng.uniform(size=(batch, n))
    return t, w / w.sum(-1, keepdims=True)


@pytest.mark.parametrize("method", ["compare", "scan"])
def test_searchsorted_brackets_queries(method):
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(size=(2, 3, 9)), axis=-1).astype(np.float32)
    v = rng.uniform(-0.2, 1.2, size=(2, 3, 15)).astype(np.float32)
    v[0, 0, :3] = a[0, 0, [0, 4, 8]]  # exactly on endpoints
    lo, hi = (np.asarray(i) for i in stepfun.searchsorted(a, v, method=method))
    for b in np.ndindex(2, 3):
        count = np.searchsorted(a[b], v[b], side="right")
        np.testing.assert_array_equal(lo[b], np.clip(count - 1, 0, 8))
        np.testing.assert_array_equal(hi[b], np.clip(count, 0, 8))
    inside = (v >= a[..., :1]) & (v < a[..., -1:])
    assert np.all(np.take_along_axis(a, lo, -1)[inside] <= v[inside])
    assert np.all(np.take_along_axis(a, hi, -1)[inside] > v[inside])
    with pytest.raises(UserError):
        stepfun.searchsorted(a, v, method="bisect")


def test_query_matches_loop():
    rng = np.random.default_rng(1)
    t, y = _random_steps(rng, 3, 6)
    tq = rng.uniform(-0.3, 1.3, size=(3, 40))
    tq[:, 0] = t[:, 2]  # an endpoint belongs to the interval on its right
    tq[:, 1] = t[:, -1]  # the last endpoint is outside
    out = np.asarray(stepfun.query(tq, t, y, outside_value=-1.0))
    for b in range(3):
        for k, x in enumerate(tq[b]):
            expected = -1.0
            for i in range(6):
                if t[b, i] <= x < t[b, i + 1]:
                    expected = y[b, i]
            assert out[b, k] == pytest.approx(expected, rel=1e-6)


def _brute_inner_outer(t0, t1, y1):
    """Interval-overlap loops: outer sums every t1 bin that overlaps, inner those inside."""
    m, n = len(t0) - 1, len(t1) - 1
    inner, outer = np.zeros(m), np.zeros(m)
    for i in range(m):
        for j in range(n):
            if t1[j] < t0[i + 1] and t1[j + 1] > t0[i]:
                outer[i] += y1[j]
            if t1[j] >= t0[i] and t1[j + 1] <= t0[i + 1]:
                inner[i] += y1[j]
    return inner, outer


def test_inner_outer_matches_brute_force():
    rng = np.random.default_rng(2)
    batch = 6
    t0 = np.sort(rng.uniform(-0.2, 1.2, size=(batch, 8)), axis=-1)
    t1, y1 = _random_steps(rng, batch, 12)
    t0[1] = np.linspace(-1.0, -0.5, 8)  # entirely before the histogram
    t0[2] = np.linspace(1.5, 2.0, 8)  # entirely after it
    t0[3] = np.linspace(-1.0, 2.0, 8)  # coarser than it
    inner, outer = (np.asarray(x) for x in stepfun.inner_outer(t0, t1, y1))
    assert inner.shape == outer.shape == (batch, 7)
    for b in range(batch):
        ref_inner, ref_outer = _brute_inner_outer(t0[b], t1[b], y1[b])
        np.testing.assert_allclose(inner[b], ref_inner, atol=1e-6)
        np.testing.assert_allclose(outer[b], ref_outer, atol=1e-6)
    assert np.all(inner <= outer + 1e-7)


def test_lossfun_outer_matches_brute_force():
    rng = np.random.default_rng(3)
    t, w = _random_steps(rng, 4, 10)
    t_env, w_env = _random_steps(rng, 4, 5)
    loss = np.asarray(stepfun.lossfun_outer(t, w, t_env, w_env))
    assert loss.shape == (4, 10)
    for b in range(4):
        _, outer = _brute_inner_outer(t[b], t_env[b], w_env[b])
        expected = np.maximum(0.0, w[b] - outer) ** 2 / (w[b] + stepfun.eps)
        np.testing.assert_allclose(loss[b], expected, rtol=1e-5, atol=1e-9)


def test_outer_measure_bounds_histograms_of_the_same_function():
    """Binning one density two ways: the coarse outer measure bounds every fine weight."""
    rng = np.random.default_rng(4)
    centres, scales = np.array([0.3, 0.55, 0.8]), np.array([0.05, 0.02, 0.1])

    def mass(t):  # mass of the underlying mixture density in each interval of t
        cdf = np.mean(stats.norm.cdf((t[..., None] - centres) / scales), axis=-1)
        return np.diff(cdf, axis=-1)

    t_fine = np.sort(rng.uniform(0.0, 1.0, size=(5, 64)), axis=-1)
    t_coarse = np.sort(rng.uniform(0.0, 1.0, size=(5, 9)), axis=-1)
    # Any binning whose range covers the fine one.
    t_coarse[:, 0], t_coarse[:, -1] = 0.0, 1.0
    w_fine, w_coarse = mass(t_fine), mass(t_coarse)
    _, outer = stepfun.inner_outer(t_fine, t_coarse, w_coarse)
    assert np.all(np.asarray(outer) >= w_fine - 1e-7)
    loss = stepfun.lossfun_outer(t_fine, w_fine, t_coarse, w_coarse)
    np.testing.assert_allclose(np.asarray(loss), 0.0, atol=1e-10)
    # A coarse histogram that under-counts somewhere is penalised there.
    w_bad = w_coarse.copy()
    w_bad[:, 4] *= 0.1
    assert np.all(
        np.sum(np.asarray(stepfun.lossfun_outer(t_fine, w_fine, t_coarse, w_bad)), -1) > 0
    )


def test_pdf_weight_round_trip():
    rng = np.random.default_rng(5)
    t, w = (x.astype(np.float32) for x in _random_steps(rng, 3, 7))
    t[0, 3] = t[0, 2]  # an empty interval has pdf 0
    w[0, 2] = 0.0
    p = np.asarray(stepfun.weight_to_pdf(t, w))
    assert np.all(np.isfinite(p)) and p[0, 2] == 0.0
    np.testing.assert_allclose(p[1], w[1] / np.diff(t[1]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(stepfun.pdf_to_weight(t, p)), w, rtol=1e-5, atol=1e-7)


def _brute_dilate(x, t, p, d):
    """max of the step function (t, p) over [x - d, x + d], by dense sampling."""
    y = x[:, None] + np.linspace(-d, d, 2001)[None]
    return np.max(np.asarray(stepfun.query(y[None], t[None], p[None]))[0], axis=-1)


def test_max_dilate_upper_bounds_and_max_pools():
    rng = np.random.default_rng(6)
    t, w = _random_steps(rng, 3, 8)
    p = np.asarray(stepfun.weight_to_pdf(t, w))
    d = 0.04
    t_d, p_d = (np.asarray(x) for x in stepfun.max_dilate(t, p, d))
    assert t_d.shape == (3, 3 * 8 + 1) and p_d.shape == (3, 3 * 8)
    assert np.all(np.diff(t_d, axis=-1) >= 0)
    x = np.linspace(-0.1, 1.1, 3001)
    for b in range(3):
        orig = np.asarray(stepfun.query(x[None], t[b : b + 1], p[b : b + 1]))[0]
        dil = np.asarray(stepfun.query(x[None], t_d[b : b + 1], p_d[b : b + 1]))[0]
        assert np.all(dil >= orig)
        # Away from the dilated intervals' edges it is exactly the sliding-window max.
        away = np.min(np.abs(x[:, None] - t_d[b][None]), axis=-1) > 1e-4
        np.testing.assert_allclose(dil[away], _brute_dilate(x[away], t[b], p[b], d), rtol=1e-6)
    # Zero dilation gives the same function back.
    t_0, p_0 = stepfun.max_dilate(t, p, 0.0)
    mid = 0.5 * (t[:, 1:] + t[:, :-1])
    np.testing.assert_allclose(np.asarray(stepfun.query(mid, t_0, p_0)), p, rtol=1e-6)


def test_max_dilate_weights_on_a_domain():
    rng = np.random.default_rng(7)
    t, w = _random_steps(rng, 4, 6)
    t_d, w_d = stepfun.max_dilate_weights(t, w, 0.05, domain=(0.0, 1.0), renormalize=True)
    t_d, w_d = np.asarray(t_d), np.asarray(w_d)
    assert t_d.min() >= 0.0 and t_d.max() <= 1.0
    np.testing.assert_allclose(w_d.sum(-1), 1.0, rtol=1e-5)
    # When t spans the domain the first and last new intervals are empty (callers drop them).
    np.testing.assert_allclose(w_d[:, [0, -1]], 0.0, atol=1e-7)
    # The dilated pdf (before renormalising) bounds the original one.
    _, w_raw = stepfun.max_dilate_weights(t, w, 0.05, domain=(0.0, 1.0))
    p_raw = np.asarray(stepfun.weight_to_pdf(t_d, w_raw))
    x = np.linspace(0.0, 0.999, 1000)[None].repeat(4, 0)
    p = np.asarray(stepfun.weight_to_pdf(t, w))
    dilated, original = np.asarray(stepfun.query(x, t_d, p_raw)), np.asarray(stepfun.query(x, t, p))
    assert np.all(dilated >= original * (1 - 1e-5))  # pdf -> weight -> pdf rounds in float32


def test_integrate_weights():
    w = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 2.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    cw = np.asarray(stepfun.integrate_weights(w))
    assert cw.shape == (3, 5)
    assert np.all(cw[:, 0] == 0.0) and np.all(cw[:, -1] == 1.0)
    assert np.all(np.diff(cw, axis=-1) >= 0)
    np.testing.assert_allclose(cw[0], [0.0, 0.1, 0.3, 0.6, 1.0], atol=1e-6)
    np.testing.assert_allclose(cw[1], [0.0, 0.0, 0.5, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(cw[2], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)  # all zero


def test_invert_cdf_returns_quantiles():
    t = np.array([[0.0, 1.0, 3.0, 4.0]])
    w = np.array([[0.25, 0.5, 0.25]])
    u = np.array([[0.0, 0.125, 0.25, 0.5, 0.75, 1.0]])
    out = np.asarray(stepfun.invert_cdf(u, t, np.log(w)))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0, 2.0, 3.0, 4.0]], atol=1e-6)
    # An empty (-inf) bin gets no samples; all-empty rows fall back to uniform, not NaN.
    logits = np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]])
    out = np.asarray(stepfun.invert_cdf(np.linspace(0, 1, 9)[None].repeat(2, 0), t, logits))
    assert np.all(np.isfinite(out))
    assert not np.any((out[0] > 1.0) & (out[0] < 3.0))
    np.testing.assert_allclose(
        out[1], np.interp(np.linspace(0, 1, 9), [0, 1 / 3, 2 / 3, 1], t[0]), atol=1e-6
    )


@pytest.mark.parametrize("single_jitter", [False, True])
def test_sample_matches_pdf(single_jitter):
    rng = np.random.default_rng(8)
    n_rays, n_bins, n_samples = 256, 5, 64
    t = np.sort(rng.uniform(0.0, 2.0, size=(n_bins + 1,)))
    w = rng.uniform(size=(n_bins,))
    w[2] = 0.0
    w /= w.sum()
    logits = np.where(w > 0, np.log(np.maximum(w, 1e-30)), -np.inf)
    t_b = np.broadcast_to(t, (n_rays, n_bins + 1))
    s = np.asarray(
        stepfun.sample(jax.random.PRNGKey(0), t_b, logits, n_samples, single_jitter=single_jitter)
    )
    assert s.shape == (n_rays, n_samples)
    assert np.all(np.diff(s, axis=-1) >= 0)
    assert np.all((s >= t[0]) & (s <= t[-1]))
    counts = np.histogram(s.ravel(), bins=t)[0] / s.size
    assert counts[2] == 0
    # Stratification makes the error far smaller than plain Monte Carlo's; use MC's anyway.
    np.testing.assert_allclose(counts, w, atol=4 * np.sqrt(0.25 / s.size) + 1e-3)
    # Within a bin the samples are uniform: compare the in-bin positions with U(0, 1).
    k = int(np.argmax(w))
    inside = s[(s >= t[k]) & (s < t[k + 1])]
    frac = (inside - t[k]) / (t[k + 1] - t[k])
    assert stats.kstest(frac, "uniform").pvalue > 1e-3
    if single_jitter:
        # One offset per ray: the quantiles are evenly spaced, so in a single bin the
        # samples are too.
        s_uniform = np.asarray(
            stepfun.sample(
                jax.random.PRNGKey(1), t_b[:4, [0, -1]], np.zeros((4, 1)), 8, single_jitter=True
            )
        )
        np.testing.assert_allclose(np.diff(s_uniform, axis=-1), (t[-1] - t[0]) / 8, rtol=1e-4)


def test_sample_deterministic():
    t = np.array([[0.0, 1.0, 3.0]])
    logits = np.log(np.array([[0.5, 0.5]]))
    a = np.asarray(stepfun.sample(None, t, logits, 5))
    b = np.asarray(stepfun.sample(None, t, logits, 5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, [[0.0, 0.5, 1.0, 2.0, 3.0]], atol=1e-6)
    c = np.asarray(stepfun.sample(None, t, logits, 4, deterministic_center=True))
    np.testing.assert_allclose(c, [[0.25, 0.75, 1.5, 2.5]], atol=1e-6)


def test_sample_intervals():
    rng = np.random.default_rng(9)
    t, w = _random_steps(rng, 8, 6)
    logits = np.log(w)
    for key in (jax.random.PRNGKey(3), None):
        s = np.asarray(stepfun.sample_intervals(key, t, logits, 16, domain=(0.0, 1.0)))
        assert s.shape == (8, 17)
        assert np.all(np.diff(s, axis=-1) >= 0)
        assert np.all((s >= 0.0) & (s <= 1.0))
    s2 = np.asarray(stepfun.sample_intervals(None, t, logits, 16, domain=(0.0, 1.0)))
    np.testing.assert_array_equal(s, s2)
    # A uniform pdf resampled deterministically gives evenly spaced endpoints.
    flat = np.asarray(stepfun.sample_intervals(None, np.array([[0.0, 1.0]]), np.zeros((1, 1)), 4))
    np.testing.assert_allclose(flat, [[0.0, 0.25, 0.5, 0.75, 1.0]], atol=1e-6)
    # Unclipped, the outer endpoints extend half a spacing beyond the outermost samples.
    wide = np.asarray(stepfun.sample_intervals(jax.random.PRNGKey(4), t, logits, 16))
    centres = np.asarray(
        stepfun.sample(jax.random.PRNGKey(4), t, logits, 16, deterministic_center=True)
    )
    np.testing.assert_allclose(wide[:, 1:-1], 0.5 * (centres[:, 1:] + centres[:, :-1]), atol=1e-6)
    np.testing.assert_allclose(
        wide[:, 0], centres[:, 0] - 0.5 * (centres[:, 1] - centres[:, 0]), atol=1e-6
    )
    with pytest.raises(UserError, match="num_samples"):
        stepfun.sample_intervals(None, t, logits, 1)


def _brute_distortion(t, w, cells_per_bin=400):
    """The double integral of p(x) p(y) |x - y| by the midpoint rule (p = w / width).

    The grid splits every bin into equal cells so that no cell straddles a jump of p.
    """
    frac = (np.arange(cells_per_bin) + 0.5) / cells_per_bin
    xm = (t[:-1, None] + np.diff(t)[:, None] * frac).ravel()
    mass = np.repeat(w / cells_per_bin, cells_per_bin)
    return np.sum(mass[:, None] * mass[None, :] * np.abs(xm[:, None] - xm[None, :]))


def test_distortion_matches_double_integral():
    rng = np.random.default_rng(10)
    t, w = _random_steps(rng, 3, 6)
    w[1] = 0.0
    w[1, 2] = 1.0  # a single box: loss = width / 3
    with jax.enable_x64(True):
        loss = np.asarray(stepfun.lossfun_distortion(jnp.asarray(t), jnp.asarray(w)))
    assert loss.shape == (3,)
    for b in range(3):
        np.testing.assert_allclose(loss[b], _brute_distortion(t[b], w[b]), rtol=5e-3)
    np.testing.assert_allclose(loss[1], (t[1, 3] - t[1, 2]) / 3, rtol=1e-12)
    # The O(n) sum equals the O(n^2) closed form term by term, in float32 too.
    m = 0.5 * (t[:, 1:] + t[:, :-1])
    closed = (
        np.sum(w[:, :, None] * w[:, None, :] * np.abs(m[:, :, None] - m[:, None, :]), axis=(-1, -2))
        + np.sum(w**2 * np.diff(t), -1) / 3
    )
    f32 = stepfun.lossfun_distortion(t.astype(np.float32), w.astype(np.float32))
    np.testing.assert_allclose(np.asarray(f32), closed, rtol=1e-5)


def test_distortion_gradients():
    rng = np.random.default_rng(11)
    t, w = _random_steps(rng, 2, 5)
    with jax.enable_x64(True):
        fn = lambda tt, ww: jnp.sum(stepfun.lossfun_distortion(tt, ww))
        g_t, g_w = (
            np.asarray(g) for g in jax.grad(fn, argnums=(0, 1))(jnp.asarray(t), jnp.asarray(w))
        )
        h = 1e-6
        for arr, grad in ((t, g_t), (w, g_w)):
            for idx in np.ndindex(arr.shape):
                plus, minus = arr.copy(), arr.copy()
                plus[idx] += h
                minus[idx] -= h
                args_p = (plus, w) if arr is t else (t, plus)
                args_m = (minus, w) if arr is t else (t, minus)
                fd = (float(fn(*args_p)) - float(fn(*args_m))) / (2 * h)
                assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    assert np.all(np.isfinite(g_t)) and np.all(np.isfinite(g_w))


def test_weighted_percentile_matches_brute_force():
    rng = np.random.default_rng(12)
    t, w = _random_steps(rng, 4, 7)
    w[0, :3] = 0.0
    ps = [0.0, 10.0, 50.0, 90.0, 100.0]
    out = np.asarray(stepfun.weighted_percentile(t, 3.0 * w, ps))  # unnormalised on purpose
    assert out.shape == (4, 5)
    for b in range(4):
        # Dense samples of the step density, weighted, then the plain empirical quantile.
        x = np.linspace(t[b, 0], t[b, -1], 400_001)
        bins = np.clip(np.searchsorted(t[b], x, side="right") - 1, 0, 6)
        dens = (w[b] / np.diff(t[b]))[bins]
        cdf = np.cumsum(dens)
        cdf /= cdf[-1]
        for k, p in enumerate(ps[1:-1], start=1):
            assert out[b, k] == pytest.approx(x[np.searchsorted(cdf, p / 100)], abs=1e-4)
    first_nonempty = np.argmax(w > 0, axis=-1)
    np.testing.assert_allclose(out[:, 0], t[np.arange(4), first_nonempty], atol=1e-6)
    np.testing.assert_allclose(out[:, -1], t[:, -1], atol=1e-6)
