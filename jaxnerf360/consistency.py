"""Reprojective colour consistency (RCC, ReLS-NeRF): how much a rendered video flickers.

Per-image metrics cannot see a decoder (or anything else) that paints each frame a little
differently. RCC takes consecutive frames of a camera path with their rendered depth,
lifts every pixel of frame t to its 3D point, projects it into frame t+1, and keeps it when
it lands inside that frame and frame t+1 sees the same surface there: the point's depth in
camera t+1 agrees with frame t+1's own depth at the landing pixel within a relative
`depth_tolerance` (the occlusion test). The colour difference at the kept pixels, as an MSE
over the whole path, is reported as a PSNR (higher: more consistent) with the fraction of
pixels kept. The landing pixel is the nearest one, so independent noise of variance s^2 in
every frame raises the MSE by exactly 2 s^2.
"""

import dataclasses

import gin
import numpy as np
from absl import logging

from jaxnerf360.data.cameras import View, distort_points
from jaxnerf360.errors import UserError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Consistency:
    """RCC settings: the occlusion test's tolerance, and the frames eval renders for it."""

    depth_tolerance: float = 0.05  # relative depth difference that still counts as one surface
    eval_frames: int = 8  # eval: the first N frames of the render path (0: no RCC in eval)
    min_acc: float = 0.5  # pixels with less opacity than this are not lifted (background)

    def __post_init__(self):
        tol, frames = self.depth_tolerance, self.eval_frames
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0:
            raise UserError(f"Consistency.depth_tolerance={tol!r} must be a positive number")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
            raise UserError(f"Consistency.eval_frames={frames!r} must be a non-negative integer")
        if not 0 <= self.min_acc <= 1:
            raise UserError(f"Consistency.min_acc={self.min_acc!r} must lie in [0, 1]")


def _ndc_to_world(points, ndc):
    """Inverts NeRF's NDC warp (`data.cameras._to_ndc`) for points `[..., 3]`."""
    near = float(ndc.get("near", 1.0))
    ax = -2.0 * float(ndc["fx"]) / float(ndc["width"])
    ay = -2.0 * float(ndc["fy"]) / float(ndc["height"])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = 2.0 * near / (points[..., 2] - 1.0)
    return np.stack([points[..., 0] * z / ax, points[..., 1] * z / ay, z], -1)


def lift(view: View, distance) -> np.ndarray:
    """World points `[H, W, 3]` of every pixel at its rendered `distance [H, W]`.

    The distance is along the ray's direction as the renderer casts it (camera z = -1, so it
    is the depth for a pinhole camera; NDC distances are mapped back to the world).
    """
    rays = view.rays()
    points = rays.origins + np.asarray(distance, np.float64)[..., None] * rays.directions
    return points if view.ndc is None else _ndc_to_world(points, view.ndc)


def project(view: View, points) -> tuple:
    """`points [..., 3]` world -> (cols, rows, depth), each `[...]`, in `view`'s pixels.

    Pixel centres are at index + 0.5; the depth is along the camera's viewing axis (positive
    in front). Points behind the camera get depth <= 0.
    """
    c2w = np.asarray(view.camtoworld, np.float64)
    rel = np.asarray(points, np.float64) - c2w[:3, 3]
    cam = rel @ c2w[:3, :3]  # world -> camera: R^T (p - c)
    depth = -cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = cam[..., 0] / depth, -cam[..., 1] / depth
    if view.distortion is not None and np.any(np.asarray(view.distortion) != 0):
        x, y = distort_points(x, y, np.asarray(view.distortion, np.float64))
    fx, fy, cx, cy = np.asarray(view.intrinsics, np.float64)
    return x * fx + cx, y * fy + cy, depth


def pair(rgb0, distance0, view0: View, rgb1, distance1, view1: View, depth_tolerance: float,
         valid0=None, valid1=None) -> dict:
    """Frame 0 reprojected into frame 1: the kept pixels `mask [H, W]` of frame 0, and the
    squared colour differences `sq [H, W]` (0 where not kept).

    `rgb* [H, W, 3]`, `distance* [H, W]`, `valid* [H, W]` bool (None: every pixel).
    """
    # A miss (inf or nan distance) is never kept; a stand-in distance keeps the maths finite.
    finite0, finite1 = np.isfinite(distance0), np.isfinite(distance1)
    points = lift(view0, np.where(finite0, distance0, 1.0))
    cols, rows, depth = project(view1, points)
    h, w = np.shape(distance1)
    inside = np.isfinite(cols) & np.isfinite(rows) & (depth > 0)
    c = np.floor(np.where(inside, cols, -1.0)).astype(np.int64)
    r = np.floor(np.where(inside, rows, -1.0)).astype(np.int64)
    inside &= (c >= 0) & (c < w) & (r >= 0) & (r < h)
    c, r = np.where(inside, c, 0), np.where(inside, r, 0)
    # Frame 1's own surface at the landing pixel, as a depth along camera 1's axis.
    seen = project(view1, lift(view1, np.where(finite1, distance1, 1.0)))[2][r, c]
    same = np.abs(depth - seen) <= depth_tolerance * np.abs(seen)
    mask = inside & same & finite0 & finite1[r, c]
    if valid0 is not None:
        mask &= np.asarray(valid0, bool)
    if valid1 is not None:
        mask &= np.asarray(valid1, bool)[r, c]
    diff = np.asarray(rgb0, np.float64) - np.asarray(rgb1, np.float64)[r, c]
    sq = np.where(mask[..., None], diff**2, 0.0).mean(-1)
    return {"mask": mask, "sq": sq}


def reprojective_consistency(rgbs, distances, views, accs=None,
                             settings: Consistency | None = None) -> dict:
    """RCC of a rendered path: `rgbs [T, H, W, 3]`, `distances [T, H, W]`, `views` [T]
    (and `accs [T, H, W]`, optional). Returns `rcc` (dB), `mse` and `covisible` (the mean
    fraction of frame t's pixels kept in frame t+1), over the T - 1 consecutive pairs.
    """
    settings = settings or Consistency()
    if len(views) < 2:
        raise UserError(f"RCC needs at least 2 frames of a path, got {len(views)}")
    valid = [None] * len(views) if accs is None else \
        [np.asarray(a) >= settings.min_acc for a in accs]
    total, kept, pixels = 0.0, 0, 0
    for t in range(len(views) - 1):
        out = pair(rgbs[t], distances[t], views[t], rgbs[t + 1], distances[t + 1], views[t + 1],
                   settings.depth_tolerance, valid[t], valid[t + 1])
        total += float(out["sq"].sum())
        kept += int(out["mask"].sum())
        pixels += out["mask"].size
    mse = total / kept if kept else float("nan")
    rcc = float(-10.0 * np.log10(mse)) if kept and mse > 0 else \
        (float("inf") if kept else float("nan"))
    return {"rcc": rcc, "mse": mse, "covisible": kept / pixels}


def path_consistency(frames: dict, views) -> dict:
    """RCC of rendered frames (`rgb`, `depth`, `acc` as `rendering.render_views` gives them),
    logged; a value that is not finite (identical frames, or none co-visible) becomes None,
    so that metrics.json stays strict JSON."""
    out = reprojective_consistency(frames["rgb"], frames["depth"], views, frames["acc"],
                                   Consistency())
    logging.info("reprojective colour consistency over %d frames: %.2f dB, %.1f%% co-visible",
                 len(views), out["rcc"], 100 * out["covisible"])
    out = {k: (v if np.isfinite(v) else None) for k, v in out.items()}
    return {**out, "frames": len(views)}
