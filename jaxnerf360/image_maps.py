"""Alignment-aware training by learning a map of each training image, by gradient.

Misalignment from slightly wrong SfM poses or a camera that moved is nearly one rigid motion
of each image: a shift and a small turn. `registration.py` measures it at a few events by
rendering patches; here it is learned with the field instead, at no rendering cost. Each
training image i gets a map g_i(p) = p + t_i + M_i (p - c) of its pixel coordinates (c the
image centre; translation, rigid or similarity), and the data term compares the ray through
pixel p with the image sampled at g_i(p) (Lanczos, from the device copy of the images).
The gradient reaches the map through the image's own gradient, which is sharp where the
image has detail, so nothing has to be rendered for it. The ray, and so the field's frame,
stays where the camera puts it.

Parameters are in pixels: (tx, ty) the shift, and the turn (and scale) as the displacement
they cause at half the image's larger side from the centre, so Adam moves every unknown in
like units.
"""

import jax
import jax.numpy as jnp
import numpy as np

MODELS = {"translation": 2, "rigid": 3, "similarity": 4}  # unknowns per image
_TAPS = 3  # Lanczos lobes: the target is read from 6 x 6 pixels


def init_params(num_images: int, model: str):
    """Identity maps `[N, k]` for `num_images` images (k the model's unknowns)."""
    return jnp.zeros((num_images, MODELS[model]), jnp.float32)


def _arm(height: int, width: int) -> float:
    """Pixels from the centre at which a turn's parameter is its displacement."""
    return 0.5 * max(height, width)


def linear_part(params, model: str, height: int, width: int, xnp=jnp):
    """`[..., 2, 2]` the map's M (g(p) = p + t + M (p - c)) of `params [..., k]`."""
    arm = _arm(height, width)
    zero = xnp.zeros_like(params[..., 0])
    if model == "translation":
        rows = [[zero, zero], [zero, zero]]
    elif model == "rigid":
        theta = params[..., 2] / arm
        cos, sin = xnp.cos(theta), xnp.sin(theta)
        rows = [[cos - 1, -sin], [sin, cos - 1]]
    else:
        a, b = params[..., 2] / arm, params[..., 3] / arm
        rows = [[a, -b], [b, a]]
    return xnp.stack([xnp.stack(r, -1) for r in rows], -2)


def mapped_pixels(params, pixels, model: str, height: int, width: int, xnp=jnp):
    """g(p) `[..., 2]` (x, y) of `pixels [..., 2]` (x, y; centres at +0.5) under the maps
    `params [..., k]` of their images."""
    centre = xnp.asarray([width / 2, height / 2], pixels.dtype)
    u = pixels - centre
    m = linear_part(params, model, height, width, xnp)
    return pixels + params[..., :2] + xnp.einsum("...ij,...j->...i", m, u)


def matrices(params, model: str, height: int, width: int) -> np.ndarray:
    """`[N, 3, 3]` the maps of absolute pixel coordinates (as `registration.warp` takes)."""
    params = np.asarray(params, np.float64)
    m = linear_part(params, model, height, width, np)
    centre = np.array([width / 2, height / 2])
    out = np.tile(np.eye(3), (len(params), 1, 1))
    out[:, :2, :2] += m
    out[:, :2, 2] = params[:, :2] - m @ centre
    return out


def lanczos_weights(frac, taps: int = _TAPS):
    """`[..., 2 taps]` Lanczos weights (normalised to sum 1) of the pixels at offsets
    -taps+1 .. taps from floor position, for fractional positions `frac [...]` in [0, 1)."""
    offsets = jnp.arange(-taps + 1, taps + 1, dtype=frac.dtype)
    d = frac[..., None] - offsets
    w = jnp.sinc(d) * jnp.sinc(d / taps)
    return w / jnp.sum(w, -1, keepdims=True)


def sample(images, cam_idx, xy, taps: int = _TAPS):
    """`images [N, H, W, C]` at `xy [..., 2]` (x, y; centres at +0.5) of images `cam_idx
    [...]`, by separable Lanczos interpolation with `taps` lobes (edges clamped).

    Bilinear interpolation blurs the image by how far a point lies between pixel centres
    (at half a pixel, frequencies of a quarter cycle per pixel lose 30%): a field still
    blurrier than the images then fits best where the maps read between pixels, and learned
    maps drift there (by about 0.6 px on clean lego). Lanczos-3 passes those frequencies at
    any offset to within a few percent.
    """
    h, w = images.shape[1], images.shape[2]
    fx, fy = xy[..., 0] - 0.5, xy[..., 1] - 0.5
    x0, y0 = jnp.floor(fx), jnp.floor(fy)
    wx, wy = lanczos_weights(fx - x0, taps), lanczos_weights(fy - y0, taps)
    offsets = jnp.arange(-taps + 1, taps + 1)
    cols = jnp.clip(x0.astype(jnp.int32)[..., None] + offsets, 0, w - 1)
    rows = jnp.clip(y0.astype(jnp.int32)[..., None] + offsets, 0, h - 1)
    patch = images[cam_idx[..., None, None], rows[..., :, None], cols[..., None, :]]
    return jnp.einsum("...k,...l,...klc->...c", wy, wx, patch)


def targets(images, params, cam_idx, pixels, model: str):
    """Colours `[..., C]` of `images [N, H, W, C]` at the mapped `pixels [..., 2]` of images
    `cam_idx [...]`, under the learned maps `params [N, k]` (differentiable in both)."""
    h, w = images.shape[1], images.shape[2]
    return sample(images, cam_idx, mapped_pixels(params[cam_idx], pixels, model, h, w))


def map_distance(a, b, height: int, width: int) -> np.ndarray:
    """`[N]` the mean distance |a(p) - b(p)| over each image's pixel centres between maps
    `a, b [N, 3, 3]` (or `[3, 3]`) of absolute pixel coordinates, in pixels."""
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    points = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3)
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return np.linalg.norm((points @ np.swapaxes(diff, -1, -2))[..., :2], axis=-1).mean(-1)


def displacement(maps, height: int, width: int) -> np.ndarray:
    """`[N]` the mean distance |g(p) - p| over each image's pixel centres, in pixels."""
    return map_distance(maps, np.eye(3), height, width)


# --- Gauss-Newton maps: each image's map solved from its accumulated normal equations ---
#
# A map has a few unknowns with a known Jacobian (the image's gradient at the mapped pixel),
# so each image's least-squares map is solved instead of trained: from the normal equations
# of all its rays over the last steps (recursive least squares with forgetting), relinearised
# at the current map every step, with a Gaussian prior that keeps images with little texture
# where they are. The solution follows where the field, still wrong in ways that differ
# between views, renders each image; the maps move toward it by a relaxation, which averages
# those errors (moving a map to its solution at once sent clean lego's maps 2 px astray).


def read_with_jacobian(images, params, cam_idx, pixels, model: str):
    """(targets `[..., C]`, their Jacobian `[..., C, k]` in the map of each ray's image) of
    `images [N, H, W, C]` at the mapped `pixels [..., 2]` (no gradient flows through)."""
    h, w = images.shape[1], images.shape[2]
    own = jax.lax.stop_gradient(params)[cam_idx]
    value, tangent = jax.linearize(
        lambda p: sample(images, cam_idx, mapped_pixels(p, pixels, model, h, w)), own)
    basis = jnp.eye(own.shape[-1], dtype=own.dtype)
    jac = jax.vmap(lambda e: tangent(jnp.broadcast_to(e, own.shape)), out_axes=-1)(basis)
    return value, jac


def normal_equations(jac, residual, params, cam_idx, num_images: int) -> dict:
    """Per-image sums of one batch: {'normal' `[N, k, k]`: sum J^T J, 'rhs' `[N, k]`: sum
    J^T (J theta - e), 'square' `[N]`: sum |e|^2, 'count' `[N]`: residuals summed}, from the
    Jacobians `jac [..., C, k]`, residuals e = target - rendered `residual [..., C]` and maps
    `params [N, k]` of images `cam_idx [...]`. theta = normal^-1 rhs minimises the batch's
    linearised squared error."""
    k, c = jac.shape[-1], jac.shape[-2]
    jac = jax.lax.stop_gradient(jac.reshape(-1, c, k))
    e = jax.lax.stop_gradient(residual.reshape(-1, c))
    idx = cam_idx.reshape(-1)
    theta = jax.lax.stop_gradient(params)[idx]
    z = jnp.einsum("rca,ra->rc", jac, theta) - e
    seg = lambda x: jax.ops.segment_sum(x, idx, num_images)  # noqa: E731
    return {"normal": seg(jnp.einsum("rca,rcb->rab", jac, jac)),
            "rhs": seg(jnp.einsum("rca,rc->ra", jac, z)),
            "square": seg(jnp.sum(e * e, -1)),
            "count": seg(jnp.full(idx.shape, float(c), jnp.float32))}


def init_normal_equations(num_images: int, model: str) -> dict:
    """Empty accumulated normal equations of `num_images` maps of `model`."""
    k = MODELS[model]
    return {"normal": jnp.zeros((num_images, k, k), jnp.float32),
            "rhs": jnp.zeros((num_images, k), jnp.float32),
            "square": jnp.zeros((num_images,), jnp.float32),
            "count": jnp.zeros((num_images,), jnp.float32)}


def solve(sums: dict, prior_px: float):
    """`[N, k]` each image's maximum a-posteriori map from its accumulated normal equations:
    residuals of their own mean variance, a zero-mean Gaussian prior of sd `prior_px` pixels
    on every unknown (an image with no rays stays at the identity)."""
    k = sums["rhs"].shape[-1]
    variance = sums["square"] / jnp.maximum(sums["count"], 1.0)
    damping = jnp.maximum(variance / prior_px**2, 1e-12)
    system = sums["normal"] + damping[:, None, None] * jnp.eye(k)
    return jnp.linalg.solve(system, sums["rhs"][..., None])[..., 0]
