"""Alignment-aware training by registering each training image to the field's renders.

AligNeRF's global-shift matching (`alignment.global_shift_match`) finds, for one rendered
patch, the shift of the ground truth that matches it best. Misalignment from slightly wrong
SfM poses or a camera that moved is nearly one rigid motion per image, so every patch of an
image measures the same few numbers: a shift and a small turn. `ImageRegistration.at` names
fractions of training before which each training image is registered: K patches where it
has detail are rendered (forward only), matched within `margin` pixels of the original
image, and a map `g(p) = p + t + M (p - c)` (translation, rigid, similarity or affine) is
fitted to their shifts, robustly, and optionally shrunk towards the identity by its
significance (`shrink`); from then on the image is resampled at `g(p)` (bilinearly, from the
loaded image, once per event), and rays and patches train on it per pixel. The train step is
unchanged, so plain rays keep their many independent samples per step, which patch batches
give up (BENCHMARKS.md).

Each event measures against the loaded images afresh, with the field trained on the images
the last event registered. Once an event moves the maps less than `settle` pixels on average
(clean images, or maps that have converged), the later events keep them and render nothing.
The maps of each event are written to the run directory (`registration/STEP.npy`), so a
resumed run trains on the images it trained on.
"""

import dataclasses
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360 import events, schedules
from jaxnerf360.alignment import global_shift_match
from jaxnerf360.data.cameras import scene_rays
from jaxnerf360.data.misalign import bilinear
from jaxnerf360.data.patch_sampling import detail_map
from jaxnerf360.errors import UserError
from jaxnerf360.image_maps import displacement, map_distance

MODELS = {"translation": 2, "rigid": 3, "similarity": 4, "affine": 6}  # unknowns of each map
_ROBUST_SCALE = 0.5  # pixels: shifts further than this from the fit count less (Cauchy)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ImageRegistration:
    """When and how the training images are registered to the field's renders."""

    at: tuple = ()  # fractions of training before which the images are registered
    patches: int = 16  # rendered patches per image
    patch_size: int = 12
    margin: int = 4  # the largest shift searched, in pixels
    model: str = "similarity"  # 'translation', 'rigid', 'similarity' or 'affine'
    shrink: float = 0.0  # maps shrunk towards the identity by significance (see `fit_map`)
    settle: float = 0.0  # px: later events are skipped once one moves the maps less than this

    def __post_init__(self):
        for name in ("patches", "patch_size", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"ImageRegistration.{name}={value!r} must be a positive integer")
        for name, off in (("shrink", "no shrinking"), ("settle", "every event registers")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise UserError(f"ImageRegistration.{name}={value!r} must be a non-negative "
                                f"number (0: {off})")
        if self.model not in MODELS:
            raise UserError(f"ImageRegistration.model={self.model!r} is unknown; choose one of "
                            f"{', '.join(MODELS)}")
        if any(not 0 < f < 1 for f in self.at) or list(self.at) != sorted(set(self.at)):
            raise UserError(f"ImageRegistration.at={self.at!r} must be increasing fractions of "
                            "training in (0, 1)")

    @property
    def extent(self) -> int:
        """The width of a ground-truth window: the patch and its margin on both sides."""
        return self.patch_size + 2 * self.margin


def windows(images, patches: int, extent: int) -> np.ndarray:
    """`[N, K, 2]` (top, left) of K windows of `extent` pixels per image of `images [N, H, W,
    C]`: the richest in detail of each cell of a grid of about 2K cells, the K richest cells
    (spread over the image, which a turn needs)."""
    n, h, w = images.shape[:3]
    detail = detail_map(images, extent)
    lo = extent // 2
    rows, cols = h - extent + 1, w - extent + 1  # window corners that fit
    cells = max(1, int(np.ceil(np.sqrt(2 * patches))))
    out = np.zeros((n, patches, 2), np.int64)
    for i in range(n):
        corner = detail[i, lo:lo + rows, lo:lo + cols]
        best = []
        for r in np.array_split(np.arange(rows), min(cells, rows)):
            for c in np.array_split(np.arange(cols), min(cells, cols)):
                block = corner[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
                k = np.unravel_index(np.argmax(block), block.shape)
                best.append((block[k], r[0] + k[0], c[0] + k[1]))
        best.sort(key=lambda b: -b[0])
        picked = (best * patches)[:patches]  # fewer cells than patches: cells repeat
        out[i] = [(top, left) for _, top, left in picked]
    return out


def fit_map(centres, shifts, model: str = "similarity", iterations: int = 5,
            shrink: float = 0.0) -> np.ndarray:
    """The `[3, 3]` map g(p) = p + t + M (p - c) (in pixel coordinates (x, y)) of least
    robust squared distance to the measured `shifts [K, 2]` (dx, dy) at `centres [K, 2]`
    (p - c: relative to the image centre). Cauchy weights at half a pixel, re-fitted
    `iterations` times, so a few patches the field renders wrongly do not move the map.

    With `shrink` = s > 0 the fitted parameters are scaled by max(0, 1 - s / z^2), z^2 their
    mean squared z-score: a map the shifts do not determine beyond their scatter moves
    towards the identity (on clean images the field's noisy early renders would otherwise
    move every image by a few tenths of a pixel), a clear one stays as it is."""
    u = np.asarray(centres, np.float64)
    s = np.asarray(shifts, np.float64)
    k = len(u)
    one, zero = np.ones(k), np.zeros(k)
    if model == "translation":
        rows_x = np.stack([one, zero], -1)
        rows_y = np.stack([zero, one], -1)
    elif model == "rigid":  # a turn by b (linearised for the fit)
        rows_x = np.stack([one, zero, -u[:, 1]], -1)
        rows_y = np.stack([zero, one, u[:, 0]], -1)
    elif model == "similarity":  # M = [[a, -b], [b, a]]
        rows_x = np.stack([one, zero, u[:, 0], -u[:, 1]], -1)
        rows_y = np.stack([zero, one, u[:, 1], u[:, 0]], -1)
    else:  # affine: M = [[a, b], [c, d]]
        rows_x = np.stack([one, zero, u[:, 0], u[:, 1], zero, zero], -1)
        rows_y = np.stack([zero, one, zero, zero, u[:, 0], u[:, 1]], -1)
    design = np.concatenate([rows_x, rows_y])
    target = np.concatenate([s[:, 0], s[:, 1]])
    weights = np.ones(k)
    for _ in range(iterations):
        used = np.concatenate([weights, weights])
        root = np.sqrt(used)
        coef = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)[0]
        residual = np.hypot(*(design @ coef - target).reshape(2, k))
        weights = 1.0 / (1.0 + np.square(residual / _ROBUST_SCALE))
    if shrink > 0:
        coef = coef * _shrink_factor(design, target, coef, used, shrink)
    t = coef[:2]
    if model == "translation":
        m = np.zeros((2, 2))
    elif model == "rigid":
        cos, sin = np.cos(coef[2]), np.sin(coef[2])
        m = np.array([[cos - 1, -sin], [sin, cos - 1]])
    elif model == "similarity":
        m = np.array([[coef[2], -coef[3]], [coef[3], coef[2]]])
    else:
        m = coef[2:].reshape(2, 2)
    out = np.eye(3)
    out[:2, :2] += m
    out[:2, 2] = t
    return out


def _shrink_factor(design, target, coef, weights, strength: float) -> float:
    """max(0, 1 - strength / z^2): z^2 = coef' C^-1 coef / p, C = sigma^2 (A' W A)^-1 the
    weighted fit's covariance, sigma^2 its residual variance."""
    normal = design.T @ (design * weights[:, None])
    dof = max(weights.sum() - len(coef), 1.0)
    sigma2 = np.sum(weights * np.square(design @ coef - target)) / dof
    z2 = coef @ normal @ coef / (max(sigma2, 1e-12) * len(coef))
    return max(0.0, 1.0 - strength / z2) if z2 > 0 else 0.0


def centred(matrix, height: int, width: int) -> np.ndarray:
    """`matrix` (acting on p - c) as a map of absolute pixel coordinates p."""
    c = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    return c @ matrix @ np.linalg.inv(c)


def warp(image, matrix) -> np.ndarray:
    """`image [H, W, ...]` resampled at g(p) for every pixel centre p, `matrix [3, 3]` the
    map g of absolute pixel coordinates (x, y) (bilinear, edges clamped)."""
    h, w = image.shape[:2]
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    sx = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    sy = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return bilinear(image, sx, sy)


def measure(render, images, corners, settings: ImageRegistration):
    """(centres `[N, K, 2]` relative to the image centre, shifts `[N, K, 2]` (dx, dy), usable
    `[N, K]`): each patch rendered by `render(indices, cols, rows) -> rgb [..., 3]` matched
    within the margin of its window of `images`; a patch whose best integer shift lies on the
    window's edge may lie beyond it, and is not usable."""
    n, k = corners.shape[:2]
    p, m, e = settings.patch_size, settings.margin, settings.extent
    span = np.arange(p)
    rows = (corners[..., 0, None, None] + m + span[:, None]) * np.ones((1, 1, 1, p), np.int64)
    cols = (corners[..., 1, None, None] + m + span[None, :]) * np.ones((1, 1, p, 1), np.int64)
    index = np.broadcast_to(np.arange(n)[:, None, None, None], rows.shape)
    rendered = render(index, cols, rows).reshape(n * k, p, p, 3)
    grid = np.arange(e)
    window = images[np.arange(n)[:, None, None, None],
                    corners[..., 0, None, None] + grid[:, None],
                    corners[..., 1, None, None] + grid[None, :], :3].reshape(n * k, e, e, 3)
    # A tiny penalty only breaks ties (flat patches) towards no shift.
    _, shift = global_shift_match(jnp.asarray(rendered, jnp.float32),
                                  jnp.asarray(window, jnp.float32), m, 1e-6, sub_pixel=True)
    shift = np.asarray(shift, np.float64).reshape(n, k, 2)[..., ::-1]  # (dy, dx) -> (dx, dy)
    usable = np.all(np.abs(np.round(shift)) < m, -1)
    h, w = images.shape[1:3]
    centres = np.stack([corners[..., 1] + m + p / 2 - w / 2,
                        corners[..., 0] + m + p / 2 - h / 2], -1).astype(np.float64)
    return centres, shift, usable


def estimate(render, images, corners, settings: ImageRegistration) -> np.ndarray:
    """`[N, 3, 3]` maps of absolute pixel coordinates registering each of `images` to
    `render` (see `measure`); the identity where fewer than 3 patches are usable."""
    centres, shift, usable = measure(render, images, corners, settings)
    h, w = images.shape[1:3]
    maps = np.tile(np.eye(3), (len(images), 1, 1))
    for i in range(len(images)):
        if usable[i].sum() >= 3:
            fitted = fit_map(centres[i][usable[i]], shift[i][usable[i]], settings.model,
                             shrink=settings.shrink)
            maps[i] = centred(fitted, h, w)
    return maps


class Registration(events.Event):
    """The training images registered to the field (`ImageRegistration.at`); the step stays
    the same (only the host's images change)."""

    recompile = False

    def __init__(self, settings: ImageRegistration, scene, max_steps: int, run_dir: str):
        super().__init__(sorted({schedules.fraction_step(f, max_steps) for f in settings.at}))
        if settings.extent > min(scene.height, scene.width):
            raise UserError(f"ImageRegistration: windows of {settings.extent} pixels "
                            f"(patch_size {settings.patch_size} + 2 x margin {settings.margin})"
                            f" do not fit the {scene.width}x{scene.height} training images; "
                            "use smaller patches")
        self.settings, self.scene = settings, scene
        self.loaded = scene.images.copy()  # what every event registers afresh
        self.loaded_alphas = None if scene.alphas is None else scene.alphas.copy()
        self.corners = windows(self.loaded, settings.patches, settings.extent)
        self.folder = os.path.join(run_dir, "registration")
        self.maps = None  # [N, 3, 3] the current maps
        self.change = None  # px: how far the last event moved the maps

    def apply(self, run, state):
        step, settled = int(state.step), self.settled()
        # When settled, the maps are saved again, so a resumed run finds every event's maps.
        maps = self.maps if settled else self.estimate(run, state)
        os.makedirs(self.folder, exist_ok=True)
        partial = os.path.join(self.folder, f"{step}.npy.partial")
        with open(partial, "wb") as f:
            np.save(f, maps)
        os.replace(partial, os.path.join(self.folder, f"{step}.npy"))
        if settled:
            events.log_change("training images kept", step, f"the last event moved them "
                              f"{self.change:.2f} px < ImageRegistration.settle")
            return state
        previous = self.maps
        self.use(maps)
        self.change = self._change(previous, maps)
        moved = displacement(maps, self.scene.height, self.scene.width)
        events.log_change("training images registered", step,
                          f"{self.settings.model}; mean correction {moved.mean():.2f} px, "
                          f"largest {moved.max():.2f} px; moved {self.change:.2f} px")
        return state

    def estimate(self, run, state) -> np.ndarray:
        """`[N, 3, 3]` maps registering the loaded images to `state`'s renders (`estimate`)."""
        renderer = run.renderer()

        def render(index, cols, rows):
            return renderer.rays(state, scene_rays(self.scene, index, cols, rows))["rgb"]

        return estimate(render, self.loaded, self.corners, self.settings)

    def settled(self) -> bool:
        """Whether the last event moved the maps less than `ImageRegistration.settle`."""
        return self.change is not None and self.change < self.settings.settle

    def _change(self, before, after) -> float:
        """The mean distance between two events' maps (`before` None: the identity), px."""
        before = np.eye(3) if before is None else before
        return float(map_distance(after, before, self.scene.height, self.scene.width).mean())

    def replay(self, run, state) -> None:
        maps = None
        for step in [s for s in self.steps if s <= int(state.step)]:
            path = os.path.join(self.folder, f"{step}.npy")
            if not os.path.exists(path):
                raise UserError(f"{path} is missing: the run was registered at step {step} "
                                "and cannot resume on the same images; restore the file or "
                                "train afresh")
            loaded = np.load(path)
            self.change = self._change(maps, loaded)
            maps = loaded
        if maps is not None:
            self.use(maps)

    def use(self, maps) -> None:
        """The training images (in place, so batchers see them) resampled at `maps`."""
        self.maps = np.asarray(maps)
        for i, matrix in enumerate(self.maps):
            self.scene.images[i] = warp(self.loaded[i], matrix)
            if self.loaded_alphas is not None:
                self.scene.alphas[i] = warp(self.loaded_alphas[i], matrix)


def registration_for(run) -> Registration | None:
    """The registration of `run`'s training images to its field, if `ImageRegistration.at`
    asks for it; the run then trains on a copy of its images, which it resamples in place."""
    settings = ImageRegistration()
    if not settings.at:
        return None
    if jax.process_count() > 1:
        raise UserError("ImageRegistration.at works in one process for now (each process "
                        "would render and resample its own copy of the images); drop it or "
                        "train in one process")
    if run.cameras.learned:
        raise UserError("ImageRegistration.at registers the images to the field from fixed "
                        "cameras; with Cameras.optimize_poses or Cameras.image_maps the "
                        "learned corrections correct the misalignment themselves: use one "
                        "of the two")
    if run.supervision.needs_images or "rgb" not in run.field.channels():
        raise UserError("ImageRegistration.at needs a field that renders rgb, and training "
                        "without spectral control's blurred images")
    alphas = run.scene.alphas
    run.scene = dataclasses.replace(
        run.scene, images=np.array(run.scene.images, np.float32),
        alphas=None if alphas is None else np.array(alphas, np.float32))
    return Registration(settings, run.scene, run.config.max_steps, run.config.checkpoint_dir)
