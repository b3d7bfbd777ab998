"""Coordinate maths of mip-NeRF 360: contraction, Gaussian warping, encodings, ray warps.

Everything here is pure jax.numpy, batched over leading dimensions `[...]`, and safe to
jit, vmap and differentiate.
"""

import functools
import itertools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.errors import UserError
from jaxnerf360.geometry.safe_math import sin_cos


def contract(x):
    """mip-NeRF 360's contraction (eq. 10) `[..., 3] -> [..., 3]` of R^3 into the 2-ball.

    x stays put inside the unit ball and becomes (2 - 1/|x|) x/|x| outside. Both value and
    gradient are finite at x = 0 and for huge finite |x| (no |x|^2 overflow).
    """
    x = jnp.asarray(x)
    inside = jnp.sum(x**2, axis=-1, keepdims=True) <= 1.0
    # Evaluate the outer branch on a dummy point inside the ball so that its gradient,
    # which `where` multiplies by zero, is never NaN.
    x_out = jnp.where(inside, jnp.ones_like(x), x)
    # Dividing by the largest component first keeps the norm from overflowing; the cap
    # keeps 1/scale a normal float (XLA may flush subnormals to zero).
    scale = jnp.minimum(jnp.max(jnp.abs(x_out), axis=-1, keepdims=True), 2.0**100)
    y = x_out / scale
    y_norm = jnp.sqrt(jnp.sum(y**2, axis=-1, keepdims=True))  # in [1, sqrt(3)]
    norm = scale * y_norm
    z_out = (2.0 - 1.0 / norm) * (y / y_norm)
    return jnp.where(inside, x, z_out)


def inv_contract(z):
    """The inverse of `contract` `[..., 3] -> [..., 3]`, for |z| < 2."""
    z = jnp.asarray(z)
    eps = jnp.finfo(z.dtype if jnp.issubdtype(z.dtype, jnp.floating) else jnp.float32).eps
    inside = jnp.sum(z**2, axis=-1, keepdims=True) <= 1.0
    z_out = jnp.where(inside, jnp.ones_like(z), z)
    z_norm = jnp.sqrt(jnp.sum(z_out**2, axis=-1, keepdims=True))
    # |x| = 1 / (2 - |z|); the clamp keeps points at (or numerically past) the sphere of
    # radius 2 finite instead of infinite.
    x_out = z_out / (z_norm * jnp.maximum(2.0 - z_norm, eps))
    return jnp.where(inside, z, x_out)


def track_linearize(fn, mean, cov):
    """Pushes Gaussians through `fn` by linearisation: returns (fn(mean), J cov J^T).

    `mean [..., d]`, `cov [..., d, d]` (symmetric). `fn` maps `[..., d] -> [..., k]`
    point by point (each output depends only on its own point), so its Jacobian is one
    `[k, d]` block per point; it is applied with forward-mode JVPs, never materialised
    over the batch. Returns `(mean [..., k], cov [..., k, k])`.
    """
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov)
    cov = jnp.broadcast_to(cov, mean.shape + mean.shape[-1:])

    def jac_times(m):
        """J @ m for `m [..., d, c]`, one JVP per column."""
        return jax.vmap(lambda v: jax.jvp(fn, (mean,), (v,))[1], in_axes=-1, out_axes=-1)(m)

    fn_mean = fn(mean)
    j_cov = jac_times(cov)  # [..., k, d]
    fn_cov = jac_times(jnp.swapaxes(j_cov, -1, -2))  # J (J C)^T = J C J^T, [..., k, k]
    return fn_mean, fn_cov


def contract_gaussians(mean, cov):
    """Contracts Gaussians `mean [..., 3]`, `cov [..., 3, 3]` by linearising `contract`."""
    return track_linearize(contract, mean, cov)


def sines_and_cosines(angles):
    """`[sin(angles), cos(angles)]` `[..., 2d]` of `angles [..., d]`, to float32 rounding."""
    return jnp.concatenate(sin_cos(angles), axis=-1)


def _by_degrees(x, min_deg, max_deg, base):
    """`[base^l x_i for l, i]` `[..., d*L]` of `x [..., d]`, l in [min_deg, max_deg), L terms.

    Slices concatenated, not a broadcast reshaped: XLA:CPU fused that reshape's index
    arithmetic into the sines that follow and ran them at a fifth of the speed (BENCHMARKS.md).
    """
    return jnp.concatenate([x * float(base) ** deg for deg in range(min_deg, max_deg)]
                           or [x[..., :0]], axis=-1)


def pos_enc(x, min_deg, max_deg, append_identity=True):
    """Sinusoidal encoding `[..., d] -> [..., d*2*(max_deg-min_deg) (+ d)]` of 2^l x.

    Features are [sin(2^l x_i) for l, i] then [cos(2^l x_i) for l, i], l in
    [min_deg, max_deg); with append_identity, x itself comes first.
    """
    x = jnp.asarray(x)
    feats = sines_and_cosines(_by_degrees(x, min_deg, max_deg, 2.0))
    if append_identity:
        return jnp.concatenate([x, feats], axis=-1)
    return feats


def integrated_pos_enc(mean, var, min_deg, max_deg):
    """mip-NeRF's integrated positional encoding `[..., d] -> [..., d*2*(max_deg-min_deg)]`.

    For x ~ N(mean, diag(var)): E[sin(2^l x)] = sin(2^l mean) exp(-4^l var / 2) and the
    cosine likewise; same feature order as `pos_enc` without the identity.
    """
    mean = jnp.asarray(mean)
    var = jnp.asarray(var)
    batch = jnp.broadcast_shapes(mean.shape, var.shape)[:-1]
    scaled_mean = _by_degrees(mean, min_deg, max_deg, 2.0)
    scaled_var = _by_degrees(var, min_deg, max_deg, 4.0)
    scaled_mean = jnp.broadcast_to(scaled_mean, batch + scaled_mean.shape[-1:])
    scaled_var = jnp.broadcast_to(scaled_var, batch + scaled_var.shape[-1:])
    var2 = jnp.concatenate([scaled_var, scaled_var], axis=-1)
    # var >= 0 so the damping factor is at most 1 and never overflows.
    return jnp.exp(-0.5 * jnp.maximum(var2, 0.0)) * sines_and_cosines(scaled_mean)


def coarse_to_fine_weights(alpha, num_bands: int, dim: int):
    """BARF's frequency window for an encoding of `num_bands` bands of `dim` inputs each.

    Band l gets (1 - cos(pi clip(alpha - l, 0, 1))) / 2: alpha = 0 shuts every band, alpha =
    num_bands opens them all. Returns `[2 num_bands dim]` weights in the feature order of
    `pos_enc` / `integrated_pos_enc` (sines then cosines, band-major).
    """
    bands = jnp.arange(num_bands, dtype=jnp.float32)
    w = 0.5 * (1.0 - jnp.cos(jnp.pi * jnp.clip(alpha - bands, 0.0, 1.0)))
    return jnp.tile(jnp.repeat(w, dim), 2)


def _icosahedron():
    """The 12 vertices `[12, 3]` (unit) and 20 faces `[20, 3]` of a regular icosahedron."""
    phi = (1.0 + np.sqrt(5.0)) / 2.0
    verts = []
    for a, b in itertools.product((-1.0, 1.0), repeat=2):
        verts += [(0.0, a, b * phi), (a, b * phi, 0.0), (b * phi, 0.0, a)]
    verts = np.array(verts)
    # With these coordinates every edge has length 2: faces are the mutually adjacent triples.
    dist = np.linalg.norm(verts[:, None] - verts[None], axis=-1)
    adjacent = np.abs(dist - 2.0) < 1e-9
    faces = [
        f
        for f in itertools.combinations(range(12), 3)
        if adjacent[f[0], f[1]] and adjacent[f[1], f[2]] and adjacent[f[0], f[2]]
    ]
    return verts / np.linalg.norm(verts, axis=-1, keepdims=True), np.array(faces)


@functools.cache
def _generate_basis(tessellation):
    verts, faces = _icosahedron()
    points = []
    for face in faces:
        corners = verts[face]  # [3, 3]
        for i in range(tessellation + 1):
            for j in range(tessellation + 1 - i):
                k = tessellation - i - j
                points.append(np.array([i, j, k], dtype=np.float64) @ corners)
    points = np.array(points)
    points /= np.linalg.norm(points, axis=-1, keepdims=True)
    kept = []
    for p in points:
        # Skip repeats (shared edges and corners) and antipodes: +v and -v give the same
        # projected variance and only a phase-flipped mean, so they add nothing.
        if all(abs(abs(np.dot(p, q)) - 1.0) > 1e-9 for q in kept):
            kept.append(p)
    basis = np.array(kept, dtype=np.float32).T  # [3, k]
    basis.setflags(write=False)
    return basis


def generate_basis(tessellation=2):
    """Unit directions `[3, k]` of a tessellated icosahedron, antipodal duplicates removed.

    Tessellation 1 gives the 6 icosahedron axes, 2 gives the 21 of mip-NeRF 360; in general
    k = (10 t^2 + 2) / 2. Returns a read-only float32 numpy array.
    """
    if not isinstance(tessellation, numbers.Integral) or tessellation < 1:
        raise UserError(f"basis tessellation must be an integer >= 1, got {tessellation!r}")
    return _generate_basis(int(tessellation))


def lift_and_diagonalize(mean, cov, basis):
    """Projects Gaussians onto the directions `basis [d, k]`: returns (mean, var) `[..., k]`.

    `mean [..., d]`, `cov [..., d, d]`; var is the diagonal of basis^T cov basis.
    """
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov)
    basis = jnp.asarray(basis, dtype=mean.dtype)
    fn_mean = mean @ basis
    # sum_jl C_jl b_jk b_lk term by term over j <= l: elementwise products that XLA:CPU fuses,
    # where the batched product cov @ basis of 3x3 matrices ran a hundred times slower.
    d = basis.shape[0]
    fn_var = 0.0
    for j in range(d):
        fn_var = fn_var + cov[..., j, j, None] * (basis[j] * basis[j])
        for k in range(j + 1, d):
            fn_var = fn_var + (cov[..., j, k] + cov[..., k, j])[..., None] * (basis[j] * basis[k])
    return fn_mean, fn_var


_RAY_WARPS = {
    "reciprocal": (jnp.reciprocal, jnp.reciprocal),
    "linear": (lambda t: t, lambda s: s),
    "log": (jnp.log, jnp.exp),
}


def construct_ray_warps(fn_name, t_near, t_far):
    """Maps between metric ray distance t and normalised distance s in [0, 1].

    s = (g(t) - g(near)) / (g(far) - g(near)) with g = 1/t ("reciprocal"), t ("linear") or
    log t ("log"). `t_near`, `t_far` are floats or arrays (e.g. `[..., 1]`) broadcasting
    against t. Returns `(t_to_s, s_to_t)`.
    """
    if fn_name not in _RAY_WARPS:
        raise UserError(
            f"unknown ray distance warp {fn_name!r}; use one of {', '.join(_RAY_WARPS)}"
        )
    for name, value in (("near", t_near), ("far", t_far)):
        if isinstance(value, numbers.Real) and fn_name != "linear" and not value > 0:
            raise UserError(
                f"ray {name} distance is {value} but the {fn_name!r} ray warp needs near > 0;"
                " set a positive near (or use raydist_fn 'linear')"
            )
    if isinstance(t_near, numbers.Real) and isinstance(t_far, numbers.Real):
        if not t_far > t_near:
            raise UserError(
                f"ray far distance {t_far} must be larger than the near distance {t_near}"
            )
    fn, inv_fn = _RAY_WARPS[fn_name]
    s_near, s_far = fn(jnp.asarray(t_near)), fn(jnp.asarray(t_far))

    def t_to_s(t):
        """Metric ray distance -> normalised distance (0 at near, 1 at far)."""
        return (fn(t) - s_near) / (s_far - s_near)

    def s_to_t(s):
        """Normalised distance -> metric ray distance."""
        return inv_fn(s * s_far + (1.0 - s) * s_near)

    return t_to_s, s_to_t
