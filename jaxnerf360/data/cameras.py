"""Pixels to rays: pinhole cameras with OpenCV radial-tangential distortion, and NDC.

Conventions (see `jaxnerf360.data.scene`): camera-to-world matrices in OpenGL
convention (camera looks down -z, +y up, +x right); pixel (col, row) has its centre
at (col + 0.5, row + 0.5); intrinsics are (fx, fy, cx, cy) in pixels. Normalised
image coordinates (x, y) follow OpenCV (y grows downwards), so the camera-space
direction of an undistorted point is (x, -y, -1): t along it is depth along the
optical axis.

Every function takes `xnp` (numpy or jax.numpy) so the same code runs on the host
and under jit.
"""

import dataclasses

import jax
import numpy as np

from jaxnerf360.data.scene import Rays, Scene
from jaxnerf360.errors import UserError

# mip-NeRF: a pixel footprint of width w is modelled as a cone of radius w * 2/sqrt(12),
# which matches the variance of a uniform distribution over the pixel.
_RADIUS_SCALE = 2.0 / np.sqrt(12.0)


def distort_points(x, y, distortion, xnp=np):
    """OpenCV radial-tangential model on normalised coords: `x, y [...]`, `distortion [..., 4]`.

    Returns the distorted `(xd, yd)`, each `[...]`; distortion is (k1, k2, p1, p2).
    """
    k1, k2, p1, p2 = (distortion[..., i] for i in range(4))
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + k2 * r2)
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def undistort_points(x, y, distortion, xnp=np, iters=10):
    """Inverts `distort_points` by Newton's method: `x, y [...]` distorted -> undistorted.

    `distortion [..., 4]` (k1, k2, p1, p2) broadcasts with x; all zeros is the identity.
    """
    k1, k2, p1, p2 = (distortion[..., i] for i in range(4))
    xd, yd = x, y

    def newton_step(xu, yu):
        r2 = xu * xu + yu * yu
        radial = 1.0 + r2 * (k1 + k2 * r2)
        # d(radial)/dx = 2x (k1 + 2 k2 r2), likewise for y.
        dradial = 2.0 * (k1 + 2.0 * k2 * r2)
        fx = xu * radial + 2.0 * p1 * xu * yu + p2 * (r2 + 2.0 * xu * xu) - xd
        fy = yu * radial + p1 * (r2 + 2.0 * yu * yu) + 2.0 * p2 * xu * yu - yd
        fx_x = radial + xu * xu * dradial + 2.0 * p1 * yu + 6.0 * p2 * xu
        fx_y = xu * yu * dradial + 2.0 * p1 * xu + 2.0 * p2 * yu
        fy_x = fx_y  # the Jacobian of this model is symmetric
        fy_y = radial + yu * yu * dradial + 6.0 * p1 * yu + 2.0 * p2 * xu
        det = fx_x * fy_y - fx_y * fy_x
        # A singular Jacobian only happens far outside any sane field of view; stop there.
        ok = xnp.abs(det) > 1e-12
        safe_det = xnp.where(ok, det, 1.0)
        step_x = xnp.where(ok, (fx * fy_y - fy * fx_y) / safe_det, 0.0)
        step_y = xnp.where(ok, (fy * fx_x - fx * fy_x) / safe_det, 0.0)
        return xu - step_x, yu - step_y

    if xnp is np:
        xu, yu = x, y
        for _ in range(iters):
            xu, yu = newton_step(xu, yu)
        return xu, yu
    # Unrolled under jit, XLA's fusion duplicates the shared subexpressions of every
    # step and compile time explodes (minutes and GBs at 7 steps), so loop instead.
    dtype = xnp.result_type(x, y, distortion)
    x, y = (v.astype(dtype) for v in xnp.broadcast_arrays(x, y, k1)[:2])
    return jax.lax.fori_loop(0, iters, lambda _, c: newton_step(*c), (x, y))


def _camera_dirs(cols, rows, intrinsics, distortion, xnp, undistort):
    """Camera-space (OpenGL) directions `[..., 3]` with z = -1 for pixel coords `[...]`."""
    fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
    x = (cols - cx) / fx
    y = (rows - cy) / fy
    if undistort:
        x, y = undistort_points(x, y, distortion, xnp=xnp)
    return xnp.stack([x, -y, -xnp.ones_like(x)], axis=-1)


def _to_ndc(origins, directions, ndc, xnp):
    """NeRF's NDC warp of world rays `[..., 3]` for a forward-facing camera."""
    near = float(ndc.get("near", 1.0))
    ax = -2.0 * float(ndc["fx"]) / float(ndc["width"])
    ay = -2.0 * float(ndc["fy"]) / float(ndc["height"])
    # Move each origin onto the near plane z = -near so that NDC t = 0 is that plane.
    t = -(near + origins[..., 2]) / directions[..., 2]
    origins = origins + t[..., None] * directions
    ox, oy, oz = origins[..., 0], origins[..., 1], origins[..., 2]
    dx, dy, dz = directions[..., 0], directions[..., 1], directions[..., 2]
    origins_ndc = xnp.stack([ax * ox / oz, ay * oy / oz, 1.0 + 2.0 * near / oz], axis=-1)
    dirs_ndc = xnp.stack(
        [ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), -2.0 * near / oz], axis=-1
    )
    return origins_ndc, dirs_ndc


def pixels_to_rays(
    cols, rows, camtoworlds, intrinsics, distortion, near, far, cam_idx, ndc=None, xnp=np
) -> Rays:
    """Rays through pixel coordinates `cols, rows [...]` (centres are index + 0.5).

    `camtoworlds [..., 3, 4]`, `intrinsics [..., 4]`, `distortion [..., 4]` (or None),
    `near/far` floats or `[...]`, `cam_idx [...]` all broadcast with `cols`. Returns
    `Rays` with fields `[..., 3]` / `[..., 1]`. With `ndc` (a dict with fx, fy, width,
    height and optional near=1) the rays are warped to NDC with near 0 and far 1;
    `viewdirs` stay the unit world directions either way.
    """
    cols = xnp.asarray(cols, dtype=xnp.float32)
    rows = xnp.asarray(rows, dtype=xnp.float32)
    camtoworlds = xnp.asarray(camtoworlds, dtype=xnp.float32)
    intrinsics = xnp.asarray(intrinsics, dtype=xnp.float32)
    if distortion is None:
        distortion = xnp.zeros(intrinsics.shape, dtype=xnp.float32)
    distortion = xnp.asarray(distortion, dtype=xnp.float32)
    shape = xnp.broadcast_shapes(
        cols.shape, rows.shape, camtoworlds.shape[:-2], intrinsics.shape[:-1],
        distortion.shape[:-1],
    )
    cols = xnp.broadcast_to(cols, shape)
    rows = xnp.broadcast_to(rows, shape)
    # Newton's method is skipped on the host when every camera is undistorted (the
    # common case); under jit the data is unknown, so it always runs (zeros are exact).
    undistort = xnp is not np or bool(np.any(distortion != 0))

    # The pixel and its right-hand neighbour in one pass: the neighbour gives radii.
    both_cols = xnp.stack([cols, cols + 1.0], axis=0)
    both_rows = xnp.stack([rows, rows], axis=0)
    dirs_cam = _camera_dirs(both_cols, both_rows, intrinsics, distortion, xnp, undistort)
    rot = camtoworlds[..., :3, :3]
    dirs = (rot @ dirs_cam[..., None])[..., 0]  # [2, ..., 3]
    origins = xnp.broadcast_to(camtoworlds[..., :3, 3], shape + (3,))
    directions = dirs[0]
    viewdirs = directions / xnp.linalg.norm(directions, axis=-1, keepdims=True)

    if ndc is None:
        dx = xnp.linalg.norm(dirs[1] - dirs[0], axis=-1)
        # Multiplying by ones (not broadcast_to) gives real, writable, contiguous arrays.
        near = xnp.asarray(near, dtype=xnp.float32) * xnp.ones(shape, dtype=xnp.float32)
        far = xnp.asarray(far, dtype=xnp.float32) * xnp.ones(shape, dtype=xnp.float32)
    else:
        origins_ndc, directions_ndc = _to_ndc(origins, directions, ndc, xnp)
        neighbour_ndc, _ = _to_ndc(origins, dirs[1], ndc, xnp)
        # NDC maps each pixel cone to a (nearly) parallel beam, so its footprint is the
        # spacing of neighbouring origins on the near plane, not of the NDC directions
        # (which all coincide for a camera at the NDC centre).
        dx = xnp.linalg.norm(neighbour_ndc - origins_ndc, axis=-1)
        origins, directions = origins_ndc, directions_ndc
        near = xnp.zeros(shape, dtype=xnp.float32)
        far = xnp.ones(shape, dtype=xnp.float32)

    cam_idx = xnp.asarray(cam_idx, dtype=xnp.int32) * xnp.ones(shape, dtype=xnp.int32)
    return Rays(
        origins=origins.astype(xnp.float32),
        directions=directions.astype(xnp.float32),
        viewdirs=viewdirs.astype(xnp.float32),
        radii=(dx * _RADIUS_SCALE)[..., None].astype(xnp.float32),
        near=near[..., None],
        far=far[..., None],
        cam_idx=cam_idx[..., None],
    )


def scene_rays(scene: Scene, indices, cols, rows, pixel_offset=0.5) -> Rays:
    """Rays for integer pixel indices `cols, rows [...]` of images `indices [...]` of a scene.

    The ray goes through the pixel centre (index + `pixel_offset`); near/far and the
    NDC warp come from the scene.
    """
    indices = np.asarray(indices)
    return pixels_to_rays(
        np.asarray(cols, dtype=np.float32) + pixel_offset,
        np.asarray(rows, dtype=np.float32) + pixel_offset,
        scene.camtoworlds[indices],
        scene.intrinsics[indices],
        scene.distortion[indices] if scene.distortion is not None else None,
        scene.near,
        scene.far,
        indices,
        ndc=scene.ndc,
    )


def _pixel_grid(width, height):
    """Integer pixel indices `(cols, rows)`, each `[height, width]`."""
    return np.meshgrid(np.arange(width), np.arange(height), indexing="xy")


def image_rays(scene: Scene, index: int) -> Rays:
    """Every pixel of image `index` of the scene as `Rays` with fields `[H, W, ...]`."""
    if not 0 <= index < scene.num_images:
        raise UserError(
            f"image index {index} is out of range: the scene has {scene.num_images} images"
        )
    cols, rows = _pixel_grid(scene.width, scene.height)
    return scene_rays(scene, np.full(cols.shape, index), cols, rows)


def camera_rays(
    camtoworld, intrinsics, width, height, near, far, distortion=None, ndc=None, cam_idx=0
) -> Rays:
    """Rays `[height, width, ...]` of a novel camera (`camtoworld [3, 4]`, `intrinsics [4]`)."""
    cols, rows = _pixel_grid(int(width), int(height))
    camtoworld = np.asarray(camtoworld, dtype=np.float32)[:3, :4]
    return pixels_to_rays(
        cols + 0.5,
        rows + 0.5,
        camtoworld,
        np.asarray(intrinsics, dtype=np.float32),
        None if distortion is None else np.asarray(distortion, dtype=np.float32),
        near,
        far,
        cam_idx,
        ndc=ndc,
    )


@dataclasses.dataclass(frozen=True)
class View:
    """One camera to render: a pose, intrinsics, an image size, near/far, distortion, NDC."""

    camtoworld: np.ndarray  # [3, 4]
    intrinsics: np.ndarray  # [4] (fx, fy, cx, cy) in pixels
    width: int
    height: int
    near: float
    far: float
    distortion: np.ndarray | None = None  # [4]
    ndc: dict | None = None
    cam_idx: int = 0

    def window_rays(self, top: int, left: int, height: int, width: int) -> Rays:
        """Rays `[height, width, ...]` through pixel rows top.. and columns left..; the window
        may reach past the image (the pinhole extends there)."""
        rows, cols = np.meshgrid(np.arange(top, top + height), np.arange(left, left + width),
                                 indexing="ij")
        return pixels_to_rays(cols + 0.5, rows + 0.5, np.asarray(self.camtoworld, np.float32),
                              np.asarray(self.intrinsics, np.float32),
                              None if self.distortion is None else
                              np.asarray(self.distortion, np.float32),
                              self.near, self.far, self.cam_idx, ndc=self.ndc)

    def rays(self) -> Rays:
        """Every pixel of the image: `[height, width, ...]`."""
        return self.window_rays(0, 0, self.height, self.width)

    def coarse(self, factor: int) -> "View":
        """The same camera with pixels `factor` times larger (a grid `factor` times coarser)."""
        if factor == 1:
            return self
        if self.width % factor or self.height % factor:
            raise UserError(f"a {self.width}x{self.height} image cannot be rendered on a grid "
                            f"{factor} times coarser; use a size divisible by {factor}")
        return dataclasses.replace(self, intrinsics=np.asarray(self.intrinsics) / factor,
                                   width=self.width // factor, height=self.height // factor)


def scene_view(scene: Scene, index: int) -> View:
    """The View of image `index` of a scene."""
    if not 0 <= index < scene.num_images:
        raise UserError(
            f"image index {index} is out of range: the scene has {scene.num_images} images"
        )
    return View(camtoworld=scene.camtoworlds[index], intrinsics=scene.intrinsics[index],
                width=scene.width, height=scene.height, near=scene.near, far=scene.far,
                distortion=None if scene.distortion is None else scene.distortion[index],
                ndc=scene.ndc, cam_idx=index)

