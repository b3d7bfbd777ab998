"""Alignment-aware patch losses (AligNeRF): compare a rendered patch with a ground-truth window
around it, forgiving a small misalignment of the two.

The ground truth of a `[B, P, P, 3]` rendered patch is a window `[B, P + 2m, P + 2m, 3]` with a
margin of m pixels on every side; the offsets o = (dy, dx) in [-m, m]^2 index the `P x P`
crops of that window (o = 0 is the centred crop, the plain per-pixel target). Two matchings:

- `per_pixel` (contextual-bilateral style): every rendered pixel takes the offset that
  minimises its matching cost (colour distance, summed over a small neighbourhood so that a
  flat region does not match at random) plus `spatial_weight * |o|^2`;
- `global_shift`: the whole patch takes one shift, the integer offset of least mean cost
  refined to sub-pixel precision by a parabola through its neighbours, and the window
  resampled bilinearly there.

Per-pixel matching is a minimum over many candidates for every pixel, so one way it favours
renders of the window's common colours: on the misaligned lego benchmark it erased small
details (BENCHMARKS.md). `bidirectional` adds the reverse direction, and `global_shift`, rigid
within a patch, is the default.

The search runs under a stop-gradient: it picks the target, and only the rendered side is
pulled towards it. The loss itself is the run's data loss against that aligned target, so a
pair that matches at the chosen offset costs what the plain loss of the aligned pair costs.
"""

import dataclasses

import gin
import jax
import jax.numpy as jnp

from jaxnerf360 import losses, objective
from jaxnerf360.errors import UserError
from jaxnerf360.objective import LossTerm, stage_gate
from jaxnerf360.train_step import center_crop

METHODS = ("per_pixel", "global_shift")


def offsets(margin: int) -> jnp.ndarray:
    """`[(2m + 1)^2, 2]` integer offsets (dy, dx), row-major over [-m, m]^2."""
    r = jnp.arange(-margin, margin + 1)
    dy, dx = jnp.meshgrid(r, r, indexing="ij")
    return jnp.stack([dy.reshape(-1), dx.reshape(-1)], -1)


def shifted_crops(window, margin: int):
    """`[O, B, P, P, C]`: the `P x P` crops of `window [B, P + 2m, P + 2m, C]` at every offset
    (`offsets(margin)` order); a static, unrolled set of slices."""
    size = window.shape[-2] - 2 * margin
    crops = []
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            top, left = margin + dy, margin + dx
            crops.append(window[..., top:top + size, left:left + size, :])
    return jnp.stack(crops)


def _box_sum(cost, radius: int):
    """`cost [..., P, P]` summed over `(2r + 1)^2` neighbourhoods (edges replicated)."""
    if radius == 0:
        return cost
    pad = [(0, 0)] * (cost.ndim - 2) + [(radius, radius)] * 2
    padded = jnp.pad(cost, pad, mode="edge")
    size = cost.shape[-1]
    total = 0.0
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            total = total + padded[..., dy:dy + cost.shape[-2], dx:dx + size]
    return total


def _best_candidates(candidates, fixed, reference, margin: int, spatial_weight: float,
                     context: int):
    """(the candidate `[B, ...]` of least cost at every pixel, its index `[B, ...]`): the cost
    of `fixed [O, B, ...]` (the candidates under a stop-gradient) against `reference` is the
    squared colour distance over a `(2 context + 1)^2` neighbourhood plus `spatial_weight *
    |o|^2`."""
    cost = _box_sum(jnp.sum(jnp.square(fixed - reference[None]), -1), context)
    penalty = spatial_weight * jnp.sum(jnp.square(offsets(margin)), -1).astype(cost.dtype)
    best = jnp.argmin(cost + penalty[:, None, None, None], axis=0)
    return jnp.take_along_axis(candidates, best[None, ..., None], axis=0)[0], best


def per_pixel_match(rendered, window, margin: int, spatial_weight: float = 0.0,
                    context: int = 1):
    """(aligned target `[B, P, P, C]`, offsets `[B, P, P, 2]`): each rendered pixel's best
    match in the window, by the squared colour distance summed over a `(2 context + 1)^2`
    neighbourhood plus `spatial_weight * |o|^2` (stop-gradient)."""
    rendered, window = jax.lax.stop_gradient(rendered), jax.lax.stop_gradient(window)
    crops = shifted_crops(window, margin)  # [O, B, P, P, C]
    target, best = _best_candidates(crops, crops, rendered, margin, spatial_weight, context)
    return target, offsets(margin)[best]


def reverse_match(rendered, window, margin: int, spatial_weight: float = 0.0,
                  context: int = 1):
    """(matched rendered pixels, ground truth), each `[B, P - 2m, P - 2m, C]`: for every
    ground-truth pixel at least m from the patch edge (so that every candidate lies in the
    patch), the rendered pixel within m of it that matches best, as `per_pixel_match` scores
    them. The search is under a stop-gradient; the matched pixels keep their gradients."""
    size = rendered.shape[-2] - 2 * margin
    truth = jax.lax.stop_gradient(window[..., 2 * margin:2 * margin + size,
                                         2 * margin:2 * margin + size, :])
    crops = shifted_crops(rendered, margin)  # [O, B, P - 2m, P - 2m, C], with gradients
    matched, _ = _best_candidates(crops, jax.lax.stop_gradient(crops), truth, margin,
                                  spatial_weight, context)
    return matched, truth


def _sub_pixel(costs, best):
    """The sub-pixel step in [-0.5, 0.5] from integer index `best [B]` towards the vertex of
    the parabola through `costs [B, S]` at the three indices around it (moved inwards at the
    ends, where the step may only point inwards)."""
    side = costs.shape[-1]
    centre = jnp.clip(best, 1, side - 2)
    b = jnp.arange(costs.shape[0])
    left, mid, right = (costs[b, centre + k] for k in (-1, 0, 1))
    curvature = left - 2.0 * mid + right
    vertex = 0.5 * (left - right) / jnp.where(curvature > 0, curvature, 1.0)
    step = jnp.where(curvature > 0, jnp.clip(vertex + centre - best, -0.5, 0.5), 0.0)
    low = jnp.where(best == 0, 0.0, -0.5)
    high = jnp.where(best == side - 1, 0.0, 0.5)
    return jnp.clip(step, low, high)


def bilinear_crop(window, shift, size: int):
    """`[B, size, size, C]`: `window [B, H, W, C]` sampled on the centred `size x size` grid
    moved by `shift [B, 2]` (dy, dx) pixels, bilinearly (positions clamped to the window)."""
    h, w = window.shape[-3], window.shape[-2]
    base = jnp.arange(size, dtype=window.dtype)
    rows = base[None] + (h - size) / 2 + shift[:, :1]  # [B, size]
    cols = base[None] + (w - size) / 2 + shift[:, 1:]
    rows, cols = jnp.clip(rows, 0, h - 1), jnp.clip(cols, 0, w - 1)
    r0 = jnp.clip(jnp.floor(rows), 0, h - 2).astype(jnp.int32)
    c0 = jnp.clip(jnp.floor(cols), 0, w - 2).astype(jnp.int32)
    fr, fc = (rows - r0)[:, :, None, None], (cols - c0)[:, None, :, None]
    b = jnp.arange(window.shape[0])[:, None, None]

    def at(r, c):
        return window[b, r[:, :, None], c[:, None, :]]

    top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
    bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
    return top * (1 - fr) + bottom * fr


def global_shift_match(rendered, window, margin: int, spatial_weight: float = 0.0,
                       sub_pixel: bool = True):
    """(aligned target `[B, P, P, C]`, shifts `[B, 2]`): the one shift per patch of least
    mean squared distance plus `spatial_weight * |o|^2`, refined below a pixel by a parabola
    along each axis through the distances at the integer optimum and its neighbours
    (stop-gradient)."""
    rendered, window = jax.lax.stop_gradient(rendered), jax.lax.stop_gradient(window)
    crops = shifted_crops(window, margin)
    offs = offsets(margin)
    cost = jnp.mean(jnp.square(crops - rendered[None]), axis=(2, 3, 4))  # [O, B]
    penalty = spatial_weight * jnp.sum(jnp.square(offs), -1).astype(cost.dtype)[:, None]
    side = 2 * margin + 1
    # The penalty picks the integer offset; the sub-pixel step fits the data cost alone.
    grid = jnp.moveaxis(cost.reshape(side, side, -1), -1, 0)  # [B, dy, dx]
    best = jnp.argmin(cost + penalty, axis=0)
    iy, ix = best // side, best % side
    b = jnp.arange(grid.shape[0])
    if not sub_pixel:  # the crop itself: no resampling, which blurs the target a little
        target = jnp.take_along_axis(crops, best[:, None, None, None][None], axis=0)[0]
        return target, offs[best].astype(window.dtype)
    sub_y = _sub_pixel(grid[b, :, ix], iy)
    sub_x = _sub_pixel(grid[b, iy, :], ix)
    shift = jnp.stack([iy - margin + sub_y, ix - margin + sub_x], -1).astype(window.dtype)
    return bilinear_crop(window, shift, rendered.shape[-2]), shift


def aligned_target(rendered, window, margin: int, method: str, spatial_weight: float,
                   context: int = 1, sub_pixel: bool = True):
    """The target `[B, P, P, C]` that `method` aligns with `rendered` (stop-gradient)."""
    if method == "per_pixel":
        return per_pixel_match(rendered, window, margin, spatial_weight, context)[0]
    if method == "global_shift":
        return global_shift_match(rendered, window, margin, spatial_weight, sub_pixel)[0]
    raise UserError(f"PatchAlignment.method={method!r} is unknown; choose one of "
                    f"{', '.join(METHODS)}")


def alignment_loss(rendered, window, margin: int, kind: str = "mse", eps: float = 1e-3,
                   method: str = "global_shift", spatial_weight: float = 0.0, context: int = 1,
                   bidirectional: bool = False, sub_pixel: bool = True):
    """Mean data loss (`kind`: 'mse' or 'charbonnier') of `rendered [B, P, P, 3]` against
    its aligned target in `window [B, P + 2m, P + 2m, 3]`.

    With `bidirectional` (per-pixel matching only), the mean with the reverse direction: every
    ground-truth pixel must find its match among the rendered ones too (`reverse_match`), so a
    render that drops a small detail is not a perfect match of a window that has it.
    """
    target = aligned_target(rendered, window, margin, method, spatial_weight, context,
                            sub_pixel)
    forward = losses.data_loss(rendered, target, kind, eps)
    if not (bidirectional and method == "per_pixel"):
        return forward
    matched, truth = reverse_match(rendered, window, margin, spatial_weight, context)
    return 0.5 * (forward + losses.data_loss(matched, truth, kind, eps))


@gin.configurable
class PatchAlignment:
    """The alignment-aware data term's settings; `start` is the fraction of training from
    which it replaces the per-pixel data term (AligNeRF's second stage); `bidirectional`
    adds the reverse direction to per-pixel matching; `sub_pixel` refines the global shift
    below a pixel (resampling the target bilinearly)."""

    def __init__(self, margin: int = 2, method: str = "global_shift", spatial_weight: float = 0.01,
                 context: int = 1, start: float = 0.0, bidirectional: bool = True,
                 sub_pixel: bool = True):
        for name, value, least in (("margin", margin, 1), ("context", context, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"PatchAlignment.{name}={value!r} must be an integer of at "
                                f"least {least}")
        if method not in METHODS:
            raise UserError(f"PatchAlignment.method={method!r} is unknown; choose one of "
                            f"{', '.join(METHODS)}")
        if not 0.0 <= start <= 1.0:
            raise UserError(f"PatchAlignment.start={start!r} must be a fraction of training "
                            "in [0, 1]")
        self.margin, self.method, self.context = margin, method, context
        self.bidirectional, self.sub_pixel = bool(bidirectional), bool(sub_pixel)
        self.spatial_weight, self.start = float(spatial_weight), float(start)

    def loss(self, rendered, window, kind: str, eps: float):
        """The alignment loss of `rendered` in `window` (see `alignment_loss`)."""
        return alignment_loss(rendered, window, self.margin, kind, eps, self.method,
                              self.spatial_weight, self.context, self.bidirectional,
                              self.sub_pixel)

    def target(self, rendered, window):
        """The aligned target of `rendered` in `window` (stop-gradient)."""
        return aligned_target(rendered, window, self.margin, self.method,
                              self.spatial_weight, self.context, self.sub_pixel)


def patch_window(target_patch, size: int, margin: int):
    """The centred `[B, size + 2 margin, ...]` window of a ground-truth patch."""
    extent = size + 2 * margin
    if target_patch.shape[-2] < extent:
        raise UserError(f"the ground-truth patches are {target_patch.shape[-2]} pixels wide, "
                        f"fewer than the {extent} that a margin of {margin} needs")
    return center_crop(target_patch, extent, extent)


@gin.configurable
def alignment_term(config, weight: float = 1.0) -> LossTerm:
    """The alignment-aware data term: `Objective.extra_terms = [@alignment_term]`; from
    `PatchAlignment.start` on it replaces the per-pixel data term."""
    align = PatchAlignment()
    if align.method == "per_pixel" and align.bidirectional and \
            0 < config.patch_size <= 2 * align.margin:
        raise UserError(f"two-way per-pixel alignment compares the pixels at least "
                        f"PatchAlignment.margin={align.margin} from the patch edge; use "
                        f"Config.patch_size > {2 * align.margin}")

    def aligned(inputs):
        rendered = inputs.outputs["rgb"]
        window = patch_window(inputs.target_patch, rendered.shape[-2], align.margin)
        return align.loss(rendered, window, config.data_loss_type, config.charb_padding)

    return LossTerm("alignment", aligned, weight, margin=align.margin,
                    active=stage_gate(align.start), replaces="data", needs_patches=True)


@gin.configurable
def ray_term(config, weight: float = 1.0, rays: int = 512) -> LossTerm:
    """Per-pixel data on `rays` independent rays drawn beside the patches:
    `Objective.extra_terms = [..., @ray_term]`.

    A batch of patches samples few places of the scene per step; the rays keep many, while
    the patches carry the alignment and perceptual terms. The rays carry the objective's own
    per-ray terms (data, interlevel, distortion, with Config's weights): without the last two
    the proposal networks would learn only where the patches fall.
    """
    if int(rays) < 1:
        raise UserError(f"ray_term.rays={rays} must be at least 1 (drop @ray_term for none)")

    per_ray = (objective.data_term(config), objective.interlevel_term(config),
               objective.distortion_term(config))

    def data(inputs):
        rays = dataclasses.replace(inputs, outputs=inputs.extra_outputs,
                                   target=inputs.batch["extra_rgb"], pixel_weights=None)
        return sum(term.weight * term.fn(rays) for term in per_ray)

    return LossTerm("rays", data, weight, rays=int(rays))
