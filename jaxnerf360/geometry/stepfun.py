"""Step functions along rays: histograms, their resampling, and mip-NeRF 360's losses on them.

A step function is a pair `(t [..., n+1], y [..., n])`: sorted endpoints and the value (or
weight) of each of the n intervals [t_i, t_{i+1}). "Weights" are masses per interval, "pdf"
values are densities (weight / width). All functions are pure jax.numpy, batched over the
leading dimensions and free of Python loops over samples.
"""

import jax
import jax.numpy as jnp

from jaxnerf360.errors import UserError, check
from jaxnerf360.geometry.safe_math import safe_div

eps = float(jnp.finfo(jnp.float32).eps)


def _take(values, idx):
    """values[..., idx] along the last axis, broadcasting the batch dims of both."""
    batch = jnp.broadcast_shapes(values.shape[:-1], idx.shape[:-1])
    values = jnp.broadcast_to(values, batch + values.shape[-1:])
    idx = jnp.broadcast_to(idx, batch + idx.shape[-1:])
    return jnp.take_along_axis(values, idx, axis=-1)


def searchsorted(a, v, method="compare"):
    """Indices `(idx_lo, idx_hi)` `[..., m]` into sorted `a [..., n]` bracketing `v [..., m]`.

    a[idx_lo] <= v < a[idx_hi], with both clipped to [0, n-1]: queries below a[0] get
    (0, 0) and queries at or above a[-1] get (n-1, n-1). `method` "compare" compares every
    pair (fast for short rows on accelerators, O(n m) memory); "scan" bisects per row.
    """
    a = jnp.asarray(a)
    v = jnp.asarray(v)
    n = a.shape[-1]
    if method == "compare":
        count = jnp.sum(a[..., None, :] <= v[..., :, None], axis=-1)
    elif method == "scan":
        batch = jnp.broadcast_shapes(a.shape[:-1], v.shape[:-1])
        a_flat = jnp.broadcast_to(a, batch + a.shape[-1:]).reshape(-1, n)
        v_flat = jnp.broadcast_to(v, batch + v.shape[-1:]).reshape(-1, v.shape[-1])
        search = jax.vmap(lambda ai, vi: jnp.searchsorted(ai, vi, side="right"))
        count = search(a_flat, v_flat).reshape(batch + v.shape[-1:])
    else:
        raise UserError(f"unknown searchsorted method {method!r}; use 'compare' or 'scan'")
    # `count` is the number of endpoints <= v: the bracketing pair is (count-1, count).
    idx_lo = jnp.clip(count - 1, 0, n - 1)
    idx_hi = jnp.clip(count, 0, n - 1)
    return idx_lo, idx_hi


def query(tq, t, y, outside_value=0.0):
    """Values `[..., m]` of the step function (t `[..., n+1]`, y `[..., n]`) at `tq [..., m]`.

    Points outside [t_0, t_n) get `outside_value`.
    """
    t = jnp.asarray(t)
    y = jnp.asarray(y)
    idx_lo, idx_hi = searchsorted(t, tq)
    n = y.shape[-1]
    inside = idx_lo != idx_hi  # equal only below t_0 or at/after t_n
    yq = _take(y, jnp.minimum(idx_lo, n - 1))
    return jnp.where(inside, yq, outside_value)


def interp(x, xp, fp):
    """Piecewise-linear interpolation `[..., m]` of (xp, fp) `[..., n]` at x, batched.

    xp must be non-decreasing; x outside [xp_0, xp_-1] is clamped to the ends. Where xp has
    repeated values the rightmost one wins (used to skip empty histogram bins).
    """
    xp = jnp.asarray(xp)
    fp = jnp.asarray(fp)
    idx_lo, idx_hi = searchsorted(xp, x)
    x0, x1 = _take(xp, idx_lo), _take(xp, idx_hi)
    f0, f1 = _take(fp, idx_lo), _take(fp, idx_hi)
    frac = jnp.clip(safe_div(x - x0, x1 - x0), 0.0, 1.0)
    return f0 + frac * (f1 - f0)


def inner_outer(t0, t1, y1):
    """Inner and outer measures `[..., m]` of intervals t0 `[..., m+1]` under (t1, y1).

    (t1 `[..., n+1]`, y1 `[..., n]`) is a histogram of weights. For each interval of t0
    the outer measure sums y1 over every t1 interval that overlaps it, the inner measure only
    over the t1 intervals lying inside it (mip-NeRF 360 eq. 12). Returns `(inner, outer)`.
    """
    y1 = jnp.asarray(y1)
    cy1 = jnp.concatenate([jnp.zeros_like(y1[..., :1]), jnp.cumsum(y1, axis=-1)], axis=-1)
    idx_lo, idx_hi = searchsorted(t1, t0)
    cy1_lo = _take(cy1, idx_lo)
    cy1_hi = _take(cy1, idx_hi)
    # Overlapping: from the t1 interval holding the left end to the one holding the right.
    outer = cy1_hi[..., 1:] - cy1_lo[..., :-1]
    # Inside: from the first t1 endpoint after the left end to the last one before the right.
    inner = jnp.where(idx_hi[..., :-1] <= idx_lo[..., 1:], cy1_lo[..., 1:] - cy1_hi[..., :-1], 0.0)
    return inner, outer


def lossfun_outer(t, w, t_env, w_env, eps=eps):
    """mip-NeRF 360's proposal loss `[..., n]`: max(0, w - outer(t; t_env, w_env))^2 / (w+eps).

    (t, w) is the NeRF histogram that (t_env, w_env), the proposal, must upper-bound. The
    caller sums/averages and stops the gradient of (t, w).
    """
    _, w_outer = inner_outer(t, t_env, w_env)
    return jnp.maximum(0.0, w - w_outer) ** 2 / (w + eps)


def weight_to_pdf(t, w):
    """Densities `[..., n]` w / (t_{i+1} - t_i); 0 on empty intervals."""
    return safe_div(jnp.asarray(w), jnp.diff(jnp.asarray(t), axis=-1))


def pdf_to_weight(t, p):
    """Weights `[..., n]` p * (t_{i+1} - t_i)."""
    return jnp.asarray(p) * jnp.diff(jnp.asarray(t), axis=-1)


def max_dilate(t, w, dilation, domain=(-jnp.inf, jnp.inf)):
    """Max-pools the step function (t, w) over [x - dilation, x + dilation].

    Returns `(t_dilate [..., 3n+1], w_dilate [..., 3n])`: the endpoints are the original ones
    plus every t_i - dilation and t_{i+1} + dilation (sorted, clipped to `domain`), so the
    dilated function is exactly constant on each new interval. When t spans the whole
    domain the first and last new intervals are empty.
    """
    t = jnp.asarray(t)
    w = jnp.asarray(w)
    left = t[..., :-1] - dilation  # where interval i's influence starts
    right = t[..., 1:] + dilation  # and ends
    t_dilate = jnp.sort(jnp.concatenate([t, left, right], axis=-1), axis=-1)
    t_dilate = jnp.clip(t_dilate, *domain)
    # The value on [t_dilate_k, t_dilate_{k+1}) is the max over the intervals whose
    # influence covers its left end.
    x = t_dilate[..., :-1, None]
    covers = (left[..., None, :] <= x) & (x < right[..., None, :])
    w_dilate = jnp.max(jnp.where(covers, w[..., None, :], 0.0), axis=-1)
    return t_dilate, w_dilate


def max_dilate_weights(t, w, dilation, domain=(-jnp.inf, jnp.inf), renormalize=False, eps=eps):
    """Dilates a histogram of weights by max-pooling its pdf (see `max_dilate`).

    Returns `(t_dilate [..., 3n+1], w_dilate [..., 3n])`, renormalised to sum to 1 if asked.
    """
    t_dilate, p_dilate = max_dilate(t, weight_to_pdf(t, w), dilation, domain=domain)
    w_dilate = pdf_to_weight(t_dilate, p_dilate)
    if renormalize:
        w_dilate = w_dilate / jnp.maximum(eps, jnp.sum(w_dilate, axis=-1, keepdims=True))
    return t_dilate, w_dilate


def integrate_weights(w):
    """The CDF `[..., n+1]` of weights `[..., n]`: 0 first, exactly 1 last, normalised.

    Rows whose weights are all zero are treated as uniform.
    """
    w = jnp.asarray(w)
    total = jnp.sum(w, axis=-1, keepdims=True)
    w = jnp.where(total > 0, w, jnp.ones_like(w))
    cw = jnp.cumsum(w[..., :-1], axis=-1) / jnp.sum(w, axis=-1, keepdims=True)
    cw = jnp.clip(cw, 0.0, 1.0)
    zeros = jnp.zeros_like(w[..., :1])
    return jnp.concatenate([zeros, cw, zeros + 1.0], axis=-1)


def _logits_to_weights(w_logits):
    """softmax(w_logits) `[..., n]`, but all-zero (not NaN) where every logit is -inf."""
    w_logits = jnp.asarray(w_logits)
    top = jnp.max(w_logits, axis=-1, keepdims=True)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    w = jnp.exp(w_logits - top)
    return w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), jnp.finfo(w.dtype).tiny)


def invert_cdf(u, t, w_logits):
    """Inverse-transform sampling: the u-quantiles `[..., m]` of the pdf on t `[..., n+1]`.

    The pdf is piecewise constant with interval weights softmax(w_logits `[..., n]`); u is
    in [0, 1] `[..., m]`.
    """
    cw = integrate_weights(_logits_to_weights(w_logits))
    return interp(u, cw, t)


def sample(rng, t, w_logits, num_samples, single_jitter=False, deterministic_center=False):
    """`[..., num_samples]` sorted samples in [t_0, t_n] of the step pdf softmax(w_logits).

    With an rng the quantiles are stratified, (i + xi_i) / num_samples with xi uniform in
    [0, 1) (one xi per ray with single_jitter). With rng None they are evenly spaced:
    linspace(0, 1) or, with deterministic_center, the bin centres (i + 1/2) / num_samples.
    """
    t = jnp.asarray(t)
    batch = jnp.broadcast_shapes(t.shape[:-1], jnp.shape(w_logits)[:-1])
    dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32
    i = jnp.arange(num_samples, dtype=dtype)
    if rng is None:
        if deterministic_center:
            u = (i + 0.5) / num_samples
        else:
            u = jnp.linspace(0.0, 1.0, num_samples, dtype=dtype)
        u = jnp.broadcast_to(u, batch + (num_samples,))
    else:
        jitter_shape = batch + (1 if single_jitter else num_samples,)
        # maxval below 1 keeps consecutive strata from touching after rounding.
        xi = jax.random.uniform(rng, jitter_shape, dtype=dtype, maxval=1.0 - eps)
        u = (i + xi) / num_samples
    return invert_cdf(u, t, w_logits)


def sample_intervals(
    rng, t, w_logits, num_samples, single_jitter=False, domain=(-jnp.inf, jnp.inf)
):
    """`[..., num_samples+1]` sorted interval endpoints resampled from the pdf on t.

    Samples `num_samples` points (centred quantiles when rng is None), puts endpoints at
    the midpoints between neighbours, extends the outermost by half the neighbouring spacing
    and clips to `domain`.
    """
    check(num_samples >= 2, f"sample_intervals needs num_samples >= 2, got {num_samples}")
    centers = sample(
        rng, t, w_logits, num_samples, single_jitter=single_jitter, deterministic_center=True
    )
    mid = 0.5 * (centers[..., 1:] + centers[..., :-1])
    first = 2.0 * centers[..., :1] - mid[..., :1]
    last = 2.0 * centers[..., -1:] - mid[..., -1:]
    return jnp.clip(jnp.concatenate([first, mid, last], axis=-1), *domain)


def _exclusive_cumsum(x):
    """Sums of the elements strictly before each one along the last axis."""
    zeros = jnp.zeros_like(x[..., :1])
    return jnp.concatenate([zeros, jnp.cumsum(x[..., :-1], axis=-1)], axis=-1)


def lossfun_distortion(t, w):
    """mip-NeRF 360's distortion loss `[...]` of the step function (t `[..., n+1]`, w).

    sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (t_{i+1} - t_i) with m the midpoints,
    the closed form of the double integral of w(s) w(s') |s - s'|; O(n) via cumulative sums.
    """
    t = jnp.asarray(t)
    w = jnp.asarray(w)
    m = 0.5 * (t[..., 1:] + t[..., :-1])
    # As m is sorted, sum_{j<i} w_j |m_i - m_j| = m_i W_<i - (wm)_<i (exclusive prefix sums).
    w_before = _exclusive_cumsum(w)
    wm_before = _exclusive_cumsum(w * m)
    loss_inter = 2.0 * jnp.sum(w * (m * w_before - wm_before), axis=-1)
    loss_intra = jnp.sum(w**2 * jnp.diff(t, axis=-1), axis=-1) / 3.0
    return loss_inter + loss_intra


def weighted_percentile(t, w, ps):
    """Percentiles `[..., len(ps)]` (ps in [0, 100]) of the histogram (t `[..., n+1]`, w).

    The weights are normalised; the CDF is linear within each interval.
    """
    t = jnp.asarray(t)
    cw = integrate_weights(w)
    ps = jnp.asarray(ps, dtype=cw.dtype) / 100.0
    batch = jnp.broadcast_shapes(t.shape[:-1], cw.shape[:-1])
    return interp(jnp.broadcast_to(ps, batch + ps.shape[-1:]), cw, t)
