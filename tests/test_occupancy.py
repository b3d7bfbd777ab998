"""The occupancy grid (jaxnerf360.geometry.occupancy) and TensoRF's OccupancySampler.

Truths: brute-force ray marching for the slab method, a per-voxel numpy membership test
for lookup, numpy for compact/scatter, a known density field for the grid, and the closed
form chord of a ray through a box (acc = 1 - exp(-sigma chord)) for the sampler.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.data.scene import BOUNDED, UNBOUNDED, Rays
from jaxnerf360.errors import UserError
from jaxnerf360.geometry import coord, occupancy, render
from jaxnerf360.samplers import OccupancySampler, ProposalSampler, SamplingContext, field_warp

LO = np.array([-1.0, -0.6, -0.8], np.float32)
HI = np.array([1.0, 0.6, 0.8], np.float32)


def make_rays(origins, directions, near, far):
    """Rays `[n]` with constant near/far and a small cone radius."""
    origins = np.asarray(origins, np.float32)
    directions = np.asarray(directions, np.float32)
    norm = np.maximum(np.linalg.norm(directions, axis=-1, keepdims=True), 1e-12)
    ones = np.ones(origins.shape[:-1] + (1,), np.float32)
    return Rays(origins=origins, directions=directions, viewdirs=directions / norm,
                radii=0.001 * ones, near=near * ones, far=far * ones,
                cam_idx=np.zeros(origins.shape[:-1] + (1,), np.int32))


def unit_vectors(rng, n):
    """Random unit vectors `[n, 3]`."""
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=-1, keepdims=True)


def brute_lookup(grid, lo, hi, points):
    """numpy truth: test each point against every voxel's half-open box."""
    grid = np.asarray(grid)
    res = np.array(grid.shape)
    size = (hi - lo) / res
    ijk = np.stack(np.meshgrid(*[np.arange(r) for r in res], indexing="ij"), -1).reshape(-1, 3)
    v_lo = lo + ijk * size
    v_hi = lo + (ijk + 1) * size
    inside = np.all((points[:, None] >= v_lo) & (points[:, None] < v_hi), axis=-1)  # [P, V]
    return np.any(inside & grid.reshape(-1)[None], axis=-1)


def run_sampler(sampler, rays, rng=None, occupancy=None, step_size=None, scene_kind=BOUNDED):
    """Applies a parameterless sampler under jit. A `step_size` (field-space units) is the
    step the sampler takes from a field grid with one voxel across the box."""
    resolution = None
    if step_size is not None:
        lo, hi = sampler.field_box(scene_kind)
        sampler = sampler.clone(step_ratio=step_size / float(np.mean(np.subtract(hi, lo))))
        resolution = (2, 2, 2)
    context = SamplingContext(field_warp(scene_kind), scene_kind, None, resolution)
    fn = jax.jit(lambda key, r, occ: sampler.apply({}, key, r, 0.5, context._replace(state=occ)))
    return fn(rng, rays, occupancy)


# --- ray/box intersection ----------------------------------------------------------------


def test_ray_box_intersect_matches_brute_force_marching():
    rng = np.random.default_rng(0)
    n = 96
    origins = rng.uniform(-2.5, 2.5, size=(n, 3))
    dirs = unit_vectors(rng, n)
    # Zero components: parallel to one axis plane (some in the slab, some not), or to an axis.
    dirs[:16, 0] = 0.0
    dirs[16:24, 1:] = 0.0
    origins[:8, 0] = rng.uniform(-0.9, 0.9, 8)
    origins[16:20, 1:] = rng.uniform(-0.5, 0.5, (4, 2))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    dirs *= rng.uniform(0.5, 2.0, size=(n, 1))  # not normalised
    t_enter, t_exit = occupancy.ray_box_intersect(jnp.asarray(origins, jnp.float32),
                                                  jnp.asarray(dirs, jnp.float32), LO, HI)
    t_enter, t_exit = np.asarray(t_enter), np.asarray(t_exit)
    assert not np.any(np.isnan(t_enter)) and not np.any(np.isnan(t_exit))
    ts = np.linspace(-15.0, 15.0, 30001)
    dt = ts[1] - ts[0]
    pts = origins[:, None] + ts[None, :, None] * dirs[:, None]
    inside = np.all((pts >= LO) & (pts <= HI), axis=-1)
    hits = np.any(inside, axis=-1)
    assert hits.sum() > 20 and (~hits).sum() > 20
    for i in range(n):
        if hits[i]:
            t_in = ts[inside[i]]
            assert t_enter[i] <= t_exit[i]
            assert abs(t_enter[i] - t_in[0]) <= dt + 1e-5
            assert abs(t_exit[i] - t_in[-1]) <= dt + 1e-5
        else:
            # A miss, or a chord too short for the march to see.
            assert t_enter[i] > t_exit[i] or t_exit[i] - t_enter[i] < dt


def test_ray_box_intersect_zero_direction_never_nan():
    origins = jnp.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [1.0, 0.6, 0.8]])
    t_enter, t_exit = occupancy.ray_box_intersect(origins, jnp.zeros((3, 3)), LO, HI)
    assert not np.any(np.isnan(t_enter)) and not np.any(np.isnan(t_exit))
    # Inside (faces included): every t; outside: a miss.
    assert t_enter[0] < -1e30 and t_exit[0] > 1e30
    assert t_enter[1] > t_exit[1]
    assert t_enter[2] < t_exit[2]


# --- lookup, compact, scatter -------------------------------------------------------------


def test_lookup_matches_per_voxel_brute_force():
    rng = np.random.default_rng(1)
    grid = rng.uniform(size=(5, 7, 4)) < 0.5
    points = rng.uniform(LO - 0.3, HI + 0.3, size=(3000, 3)).astype(np.float32)
    got = np.asarray(occupancy.lookup(jnp.asarray(grid), LO, HI, jnp.asarray(points)))
    np.testing.assert_array_equal(got, brute_lookup(grid, LO, HI, points))
    # Points exactly on voxel faces (a power-of-two box keeps them exact): lower face is in.
    lo, hi = np.full(3, -1.0, np.float32), np.full(3, 1.0, np.float32)
    grid = rng.uniform(size=(4, 8, 4)) < 0.5
    faces = np.stack(np.meshgrid(*[np.linspace(-1.0, 1.0, 9)] * 3, indexing="ij"), -1)
    faces = faces.reshape(-1, 3).astype(np.float32)
    got = np.asarray(occupancy.lookup(jnp.asarray(grid), lo, hi, jnp.asarray(faces)))
    np.testing.assert_array_equal(got, brute_lookup(grid, lo, hi, faces))
    # Batched leading shape.
    got = occupancy.lookup(jnp.asarray(grid), lo, hi, jnp.asarray(faces).reshape(9, 81, 3))
    assert got.shape == (9, 81)


@pytest.mark.parametrize("p_true,capacity", [(0.3, 20), (0.0, 20), (1.0, 20), (1.0, 50),
                                             (0.5, 60), (0.2, 1)])
def test_compact_scatter_round_trip(p_true, capacity):
    rng = np.random.default_rng(2)
    n = 50
    mask = rng.uniform(size=n) < p_true if 0 < p_true < 1 else np.full(n, p_true == 1.0)
    idx, valid, overflow = jax.jit(occupancy.compact, static_argnums=1)(mask, capacity)
    assert idx.shape == (capacity,) and idx.dtype == jnp.int32 and valid.shape == (capacity,)
    true_idx = np.flatnonzero(mask)
    kept = true_idx[:capacity]
    assert int(overflow) == max(len(true_idx) - capacity, 0)
    np.testing.assert_array_equal(np.asarray(valid), np.arange(capacity) < len(kept))
    np.testing.assert_array_equal(np.asarray(idx)[: len(kept)], kept)
    values = rng.normal(size=(n, 3)).astype(np.float32)
    out = occupancy.scatter(jnp.asarray(values)[idx] + 5.0 * ~valid[:, None], idx, valid, n)
    expected = np.zeros_like(values)
    expected[kept] = values[kept]
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_scatter_gradient():
    rng = np.random.default_rng(3)
    n, capacity = 30, 12
    mask = rng.uniform(size=n) < 0.3
    idx, valid, _ = occupancy.compact(mask, capacity)
    w = jnp.asarray(rng.normal(size=(n,)), jnp.float32)
    vals = jnp.asarray(rng.normal(size=(capacity,)), jnp.float32)
    grad = jax.grad(lambda v: jnp.sum(w * occupancy.scatter(v, idx, valid, n)))(vals)
    np.testing.assert_allclose(np.asarray(grad), np.where(valid, np.asarray(w)[idx], 0.0))
    # Finite differences on one valid slot agree.
    f = lambda v: float(jnp.sum(w * occupancy.scatter(v, idx, valid, n) ** 2))
    e = jnp.zeros(capacity).at[0].set(1e-2)
    fd = (f(vals + e) - f(vals - e)) / 2e-2
    g = jax.grad(lambda v: jnp.sum(w * occupancy.scatter(v, idx, valid, n) ** 2))(vals)[0]
    np.testing.assert_allclose(fd, float(g), rtol=1e-2)


# --- the alpha mask -----------------------------------------------------------------------

# Assumption behind "never culls": every blob is an isotropic Gaussian whose region
# {alpha > threshold} is a ball of radius >= sqrt(3) voxel edges, and blobs are far apart.
# Then for any point p in that ball, one of the 27 centres around p's voxel is at least as
# close to the blob centre (per axis max(h/2, |p_i - c_i| - h/2)), so 3x3x3 max pooling of
# alpha at voxel centres keeps p's voxel. A blob thinner than a voxel could slip between
# the centres, which is why sizes here are >= 2 voxels (sigma) and the balls wider still.
BOX = (np.full(3, -1.0), np.full(3, 1.0))
RES = 32  # voxel edge h = 1/16
BLOBS = [  # (centre, sigma, peak density)
    ((-0.5, -0.45, -0.4), 0.13, 50.0),
    ((0.45, 0.4, -0.45), 0.2, 3.0),
    ((0.4, -0.35, 0.45), 0.15, 1.0),
    ((-0.45, 0.45, 0.5), 0.25, 0.6),
]
STEP, THRESHOLD = 1.0 / 32.0, 1e-2


def blob_density(points):
    """Sum of the Gaussian blobs at `points [..., 3]` (numpy or jax)."""
    xnp = jnp if isinstance(points, jax.Array) else np
    total = 0.0
    for c, s, a in BLOBS:
        d2 = xnp.sum((points - xnp.asarray(c, dtype=points.dtype)) ** 2, axis=-1)
        total = total + a * xnp.exp(-d2 / (2 * s * s))
    return total


def test_grid_never_culls_visible_density():
    grid = occupancy.build_grid(jax.jit(blob_density), *BOX, RES, STEP, THRESHOLD, chunk=5000)
    assert grid.shape == (RES,) * 3 and grid.dtype == jnp.bool_
    rng = np.random.default_rng(4)
    points = rng.uniform(-1.0, 1.0, size=(200_000, 3)).astype(np.float32)
    alpha = 1.0 - np.exp(-blob_density(points.astype(np.float64)) * STEP)
    visible = alpha > THRESHOLD
    assert visible.sum() > 1000
    kept = np.asarray(occupancy.lookup(grid, *BOX, jnp.asarray(points)))
    assert np.all(kept[visible])
    # Not trivially all True: most of space is culled.
    assert float(np.mean(grid)) < 0.3 and float(np.mean(kept)) < 0.3
    # The test has teeth: thresholding the centres without pooling would cull visible points.
    centres = np.asarray(occupancy.voxel_centres(*BOX, RES), np.float64)
    raw = (1.0 - np.exp(-blob_density(centres) * STEP)) > THRESHOLD
    raw_kept = np.asarray(occupancy.lookup(jnp.asarray(raw), *BOX, jnp.asarray(points)))
    assert np.any(visible & ~raw_kept)


def test_build_grid_chunks_and_errors():
    calls = []

    def density(p):
        calls.append(p.shape)
        return blob_density(p)

    full = occupancy.build_grid(blob_density, *BOX, (8, 6, 5), STEP, THRESHOLD)
    chunked = occupancy.build_grid(density, *BOX, (8, 6, 5), STEP, THRESHOLD, chunk=7)
    np.testing.assert_array_equal(np.asarray(full), np.asarray(chunked))
    assert set(calls) == {(7, 3)}  # the last chunk is padded: one shape, one compile
    with pytest.raises(UserError, match="density_fn"):
        occupancy.build_grid(lambda p: jnp.zeros(3), *BOX, 4, STEP, THRESHOLD)
    with pytest.raises(UserError, match="box_max must exceed"):
        occupancy.build_grid(blob_density, (0, 0, 0), (1, -1, 1), 4, STEP, THRESHOLD)
    with pytest.raises(UserError, match="resolution"):
        occupancy.build_grid(blob_density, *BOX, (4, 4), STEP, THRESHOLD)
    with pytest.raises(UserError, match="step_size"):
        occupancy.build_grid(blob_density, *BOX, 4, 0.0, THRESHOLD)


def test_voxel_centres_and_step_size():
    c = np.asarray(occupancy.voxel_centres((0, 0, 0), (1, 2, 4), (2, 4, 8)))
    assert c.shape == (2, 4, 8, 3)
    np.testing.assert_allclose(c[0, 0, 0], [0.25, 0.25, 0.25])
    np.testing.assert_allclose(c[1, 3, 7], [0.75, 1.75, 3.75])
    assert occupancy.occupancy_step_size((-1.5,) * 3, (1.5,) * 3, 128, 0.5) == pytest.approx(
        0.5 * 3.0 / 127)
    assert occupancy.occupancy_step_size((0, 0, 0), (1, 2, 3), (3, 5, 7), 1.0) == pytest.approx(
        np.mean([1 / 2, 2 / 4, 3 / 6]))
    with pytest.raises(UserError, match="step_ratio"):
        occupancy.occupancy_step_size((0, 0, 0), (1, 1, 1), 8, -1.0)


# --- the sampler --------------------------------------------------------------------------


def box_rays(rng, n, from_centre):
    """Rays through the centre of [LO, HI] and their closed-form chords (metric length).

    From the centre (near 0) the chord runs to the exit face: min_i h_i / |u_i| for unit
    direction u and half-sizes h; rays from outside through the centre get twice that.
    """
    u = unit_vectors(rng, n)
    half = (HI - LO) / 2.0
    exit_dist = np.min(half / np.maximum(np.abs(u), 1e-12), axis=-1)
    scale = rng.uniform(0.5, 2.0, size=(n, 1))
    if from_centre:
        return make_rays(np.zeros((n, 3)), u * scale, 0.0, 100.0), exit_dist
    return make_rays(-5.0 * u, u * scale, 0.0, 100.0), 2.0 * exit_dist


def test_sampler_acc_matches_closed_form_chord():
    rng = np.random.default_rng(5)
    sampler = OccupancySampler(box_min=tuple(LO), box_max=tuple(HI), max_samples=1024)
    sigma, step = 3.0, 0.02
    all_true = jnp.ones((8, 8, 8), bool)
    for from_centre in (True, False):
        rays, chord = box_rays(rng, 64, from_centre)
        sdist, tdist, levels, mask = run_sampler(sampler, rays, occupancy=all_true,
                                                 step_size=step)
        assert len(levels) == 0
        n = int(np.ceil(np.linalg.norm(HI - LO) / step))
        assert tdist.shape == (64, n + 1) and mask.shape == (64, n) and mask.dtype == jnp.bool_
        density = jnp.where(mask, sigma, 0.0)
        weights = render.compute_alpha_weights(density, tdist, rays.directions)[0]
        acc = np.asarray(jnp.sum(weights, -1))
        np.testing.assert_allclose(acc, 1.0 - np.exp(-sigma * chord), atol=1e-3)
        # sdist is the linear map of t from [near, far] to [0, 1].
        np.testing.assert_allclose(np.asarray(sdist), np.asarray(tdist) / 100.0, atol=1e-6)


def test_sampler_step_spacing_and_box():
    rng = np.random.default_rng(6)
    rays, _ = box_rays(rng, 32, from_centre=False)
    step = 0.05
    sampler = OccupancySampler(box_min=tuple(LO), box_max=tuple(HI))
    _, tdist, _, mask = run_sampler(sampler, rays, step_size=step)
    tdist = np.asarray(tdist)
    d_norm = np.linalg.norm(rays.directions, axis=-1, keepdims=True)
    steps = np.diff(tdist, axis=-1) * d_norm  # metric lengths in field space
    for i in range(32):
        pos = np.flatnonzero(steps[i] > 1e-6)
        # Every positive interval but the last (cut at the exit) is exactly one step long.
        np.testing.assert_allclose(steps[i, pos[:-1]], step, rtol=1e-4)
        assert steps[i, pos[-1]] <= step * (1 + 1e-4)
        assert np.all(steps[i, pos[-1] + 1:] == 0.0)
        assert np.all(np.asarray(mask)[i, pos]) and not np.any(np.asarray(mask)[i, pos[-1] + 1:])
    # Every edge lies on the ray's segment inside the box.
    o, d = np.asarray(rays.origins), np.asarray(rays.directions)
    pts = o[:, None] + tdist[..., None] * d[:, None]
    assert np.all((pts >= LO - 1e-4) & (pts <= HI + 1e-4))
    # The default step is half an occupancy voxel.
    assert sampler.default_step_size() == pytest.approx(0.5 * np.mean((HI - LO) / 128))


def test_sampler_mask_respects_box_and_grid():
    rng = np.random.default_rng(7)
    grid = rng.uniform(size=(6, 5, 7)) < 0.5
    origins = rng.uniform(-3.0, 3.0, size=(48, 3))
    targets = rng.uniform(LO, HI, size=(48, 3))
    rays = make_rays(origins, (targets - origins) * rng.uniform(0.3, 2.0, (48, 1)), 0.0, 50.0)
    sampler = OccupancySampler(box_min=tuple(LO), box_max=tuple(HI))
    _, tdist, _, mask = run_sampler(sampler, rays, occupancy=jnp.asarray(grid), step_size=0.04)
    centres, _ = render.cast_rays(tdist, rays.origins, rays.directions, rays.radii, "cone")
    centres = np.asarray(centres).reshape(-1, 3)
    mask = np.asarray(mask).reshape(-1)
    positive = (np.diff(np.asarray(tdist), axis=-1) > 0).reshape(-1)
    in_box = np.all((centres >= LO) & (centres < HI), axis=-1)
    occupied = brute_lookup(grid, LO.astype(np.float64), HI.astype(np.float64), centres)
    assert mask.sum() > 100 and (positive & ~mask).sum() > 100
    assert np.all(in_box[mask]) and np.all(occupied[mask])
    np.testing.assert_array_equal(mask, positive & in_box & occupied)


def test_sampler_misses_have_empty_masks():
    origins = np.array([[3.0, 3.0, 3.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-3.0, 0.0, 0.0],
                        [-3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    dirs = np.array([[1.0, 0.5, 0.2],  # away from the box
                     [1.0, 0.0, 0.0],  # away, axis-aligned
                     [1.0, 0.0, 0.0],  # parallel to x, outside the y slab
                     [1.0, 0.0, 0.0],  # hits, but the box lies beyond far
                     [-1.0, 0.0, 0.0],  # behind the origin
                     [0.0, 0.0, 0.0]])  # no direction at all
    near = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    far = np.array([50.0, 50.0, 50.0, 1.5, 50.0, 50.0])
    rays = make_rays(origins, dirs, 0.0, 1.0)
    rays = rays.replace(near=near[:, None].astype(np.float32), far=far[:, None].astype(np.float32))
    sampler = OccupancySampler(box_min=tuple(LO), box_max=tuple(HI))
    sdist, tdist, _, mask = run_sampler(sampler, rays, step_size=0.1)
    assert not np.any(np.asarray(mask))
    assert np.all(np.isfinite(np.asarray(tdist))) and np.all(np.isfinite(np.asarray(sdist)))


def test_sampler_jitter():
    rng = np.random.default_rng(8)
    rays, _ = box_rays(rng, 16, from_centre=False)
    step = 0.05
    sampler = OccupancySampler(box_min=tuple(LO), box_max=tuple(HI))
    _, t0, _, _ = run_sampler(sampler, rays, step_size=step)
    _, t0b, _, _ = run_sampler(sampler, rays, step_size=step)
    np.testing.assert_array_equal(np.asarray(t0), np.asarray(t0b))
    key = jax.random.PRNGKey(0)
    _, t1, _, _ = run_sampler(sampler, rays, rng=key, step_size=step)
    _, t1b, _, _ = run_sampler(sampler, rays, rng=key, step_size=step)
    _, t2, _, _ = run_sampler(sampler, rays, rng=jax.random.PRNGKey(1), step_size=step)
    np.testing.assert_array_equal(np.asarray(t1), np.asarray(t1b))
    assert not np.allclose(np.asarray(t1), np.asarray(t2))
    dt = step / np.linalg.norm(rays.directions, axis=-1, keepdims=True)
    shift = np.asarray(t1) - np.asarray(t0)
    assert np.all(np.abs(shift) < dt) and np.any(np.abs(shift) > 0.1 * dt)
    assert np.all(np.diff(np.asarray(t1), axis=-1) >= 0)
    # The covered range (first and last edges) is unchanged.
    np.testing.assert_allclose(np.asarray(t1)[:, [0, -1]], np.asarray(t0)[:, [0, -1]])


@pytest.mark.parametrize("jitter", [False, True])
def test_sampler_unbounded(jitter):
    rng = np.random.default_rng(9)
    near, far, step = 0.2, 1e3, 0.1
    rays = make_rays(rng.normal(size=(16, 3)) * 0.2, unit_vectors(rng, 16), near, far)
    with pytest.raises(UserError, match="contracted space"):
        run_sampler(OccupancySampler(), rays, step_size=step, scene_kind=UNBOUNDED)
    sampler = OccupancySampler(box_min=(-2.0,) * 3, box_max=(2.0,) * 3, raydist_fn="reciprocal")
    key = jax.random.PRNGKey(3) if jitter else None
    sdist, tdist, levels, mask = run_sampler(sampler, rays, rng=key, step_size=step,
                                             scene_kind=UNBOUNDED)
    n = int(np.ceil(4.0 * np.sqrt(3.0) / step))  # the contracted box [-2, 2]^3
    assert sdist.shape == (16, n + 1) and mask.shape == (16, n) and len(levels) == 0
    s = np.asarray(sdist)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s, axis=-1) > 0)
    np.testing.assert_allclose(s[:, [0, -1]], np.broadcast_to([0.0, 1.0], (16, 2)))
    base = np.linspace(0.0, 1.0, n + 1)
    assert np.all(np.abs(s - base) < 1.0 / n)
    if not jitter:
        np.testing.assert_allclose(s, np.broadcast_to(base, s.shape), atol=1e-6)
    _, s_to_t = coord.construct_ray_warps("reciprocal", near, far)
    np.testing.assert_allclose(np.asarray(tdist), np.asarray(s_to_t(sdist)), rtol=1e-5)
    # Contracted centres of finite intervals lie inside [-2, 2)^3: every sample counts.
    assert np.all(np.asarray(mask))
    full = jnp.zeros((4, 4, 4), bool).at[2:, 2:, 2:].set(True)  # only the +++ octant
    _, _, _, octant = run_sampler(sampler, rays, step_size=step, occupancy=full,
                                  scene_kind=UNBOUNDED)
    assert 0 < np.asarray(octant).sum() < octant.size


def test_default_step_and_sample_cap():
    rays, _ = box_rays(np.random.default_rng(10), 4, from_centre=False)
    sampler = OccupancySampler(box_min=tuple(LO), box_max=tuple(HI), grid_resolution=16,
                               max_samples=40)
    sdist, _, _, mask = run_sampler(sampler, rays)
    # Default step: half a voxel; the diagonal would need more than the cap.
    assert np.ceil(np.linalg.norm(HI - LO) / (0.5 * np.mean((HI - LO) / 16))) > 40
    assert sdist.shape == (4, 41) and mask.shape == (4, 40)
    with pytest.raises(UserError, match="step_ratio"):
        run_sampler(sampler, rays, step_size=-1.0)


def test_proposal_sampler_returns_four_tuple():
    sampler = ProposalSampler(num_prop_samples=(4,), num_final_samples=3)
    rays = make_rays(np.zeros((2, 3)), unit_vectors(np.random.default_rng(11), 2), 2.0, 6.0)
    context = SamplingContext(field_warp(BOUNDED), BOUNDED)
    variables = jax.jit(lambda r: sampler.init(jax.random.PRNGKey(0), None, r, 0.5,
                                               context))(rays)
    sdist, tdist, levels, mask = jax.jit(lambda v, r: sampler.apply(
        v, None, r, 0.5, context))(variables, rays)
    assert sdist.shape == (2, 4) and tdist.shape == (2, 4) and len(levels) == 1 and mask is None
