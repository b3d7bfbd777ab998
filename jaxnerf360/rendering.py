"""Rendering whole images with bounded memory: rays in fixed-size chunks, or tiles for a head.

Without a head every pixel is an independent ray, rendered in chunks of Config.render_chunk_size
rays. With a head (`heads.py`), the channels of overlapping tiles are rendered first, each
tile wide enough for the head's receptive field, then the head turns each into output pixels:
the tiles meet without seams, and the image equals the head applied to the whole image's
channels at once. With a masking sampler (occupancy grid) a cheap first pass counts the
counted samples of every chunk, and the field then runs on a buffer sized for the fullest one.
"""

import dataclasses
import math

import jax
import numpy as np

from jaxnerf360 import camera_paths, parallel
from jaxnerf360.cameras import Cameras
from jaxnerf360.data.cameras import View
from jaxnerf360.errors import UserError
from jaxnerf360.model import background_colors

_PER_SAMPLE = ("sdist", "weights", "prop_levels", "overflow", "appearance_overflow")


def split_rays(rays, chunk: int, multiple: int = 1) -> tuple:
    """([(part, pad), ...], leading shape): `rays` of any leading shape flattened into parts
    of `chunk` rays (a multiple of `multiple`), the last one padded by repeating its last ray."""
    shape = rays.origins.shape[:-1]
    flat = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[len(shape):]), rays)
    chunk = max(multiple, chunk - chunk % multiple)
    parts = []
    for start in range(0, flat.origins.shape[0], chunk):
        part = jax.tree.map(lambda x, s=start: x[s:s + chunk], flat)
        pad = chunk - part.origins.shape[0]
        if pad:
            part = jax.tree.map(lambda x, p=pad: np.concatenate([x, np.repeat(x[-1:], p, 0)]),
                                part)
        parts.append((part, pad))
    return parts, shape


def join_outputs(outputs: list, parts: list, shape):
    """The per-part outputs (pytrees of `[chunk, ...]` arrays) unpadded, concatenated and
    reshaped to the rays' leading `shape`."""
    trimmed = [jax.tree.map(lambda x, p=pad: np.asarray(x)[:x.shape[0] - p], out)
               for out, (_, pad) in zip(outputs, parts, strict=True)]
    return jax.tree.map(lambda *xs: np.concatenate(xs).reshape(tuple(shape) + xs[0].shape[1:]),
                        *trimmed)


def map_rays(fn, rays, chunk: int, multiple: int = 1):
    """`fn(part)` over fixed-size parts of `rays`, gathered on the host in their shape."""
    parts, shape = split_rays(rays, chunk, multiple)
    return join_outputs([jax.device_get(fn(part)) for part, _ in parts], parts, shape)


def round_capacity(needed: int, total: int) -> int | None:
    """A buffer size >= needed (None: no smaller than `total`), rounded up to a sixteenth of
    the largest power of two not above it.

    Sixteen sizes per doubling: at most 1/16 of padding evaluated as work, and few distinct
    sizes, so few compiled steps. (Rounding to 1/32 of all samples left the trained TensoRF
    step's colour buffer 22% larger than its fullest batch; BENCHMARKS.md.)
    """
    needed = max(int(needed), 1)
    quantum = max(1, (1 << (needed.bit_length() - 1)) // 16)
    capacity = -(-needed // quantum) * quantum
    return None if capacity >= total else capacity


def counted_samples(model, state, rays):
    """(samples the sampler counts, all samples) of `rays` under the state's sampler state."""
    mask = model.sample_mask(Cameras.split(state.params)[0], rays, state.sampler_state)
    return jax.numpy.sum(mask), jax.numpy.asarray(mask.size)


def shown_samples(model, state, rays, capacity=None):
    """(samples whose compositing weight exceeds the model's appearance threshold, all
    samples) of `rays` under the state's sampler state (density on a buffer of `capacity`)."""
    return model.shown_samples(Cameras.split(state.params)[0], rays, state.sampler_state,
                               capacity)


class Renderer:
    """Deterministic rendering of rays and whole images (bounded memory), on the mesh."""

    def __init__(self, model, mesh, background: str, chunk: int):
        self.model, self.chunk = model, int(chunk)
        self.devices = parallel.data_size(mesh)  # rays split over the data axis
        self.buffered = model.sampler().uses_sample_buffer()
        self.radius, self.upsample = model.head_geometry()
        repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)
        self._data = data
        bg_kind = "black" if background == "black" else "white"

        def render(state, rays, capacities):
            bg = background_colors(bg_kind, rays.origins.shape[:-1])
            out = model.apply({"params": Cameras.split(state.params)[0]}, None, rays, 1.0, bg,
                              compute_extras=True, sampler_state=state.sampler_state,
                              capacity=capacities[0], appearance_capacity=capacities[1],
                              apply_head=False)
            return {k: v for k, v in out.items() if k not in _PER_SAMPLE}

        # The state keeps its own layout (parameters may be sharded over the model axis).
        self._render = jax.jit(render, in_shardings=(None, data), out_shardings=data,
                               static_argnums=(2,))
        self._count = jax.jit(lambda state, rays: counted_samples(model, state, rays),
                              in_shardings=(None, data), out_shardings=repl)
        self._shown = jax.jit(lambda state, rays, capacity: shown_samples(model, state, rays,
                                                                          capacity),
                              in_shardings=(None, data), out_shardings=repl, static_argnums=(2,))
        self._head = jax.jit(lambda state, images: model.apply_head(
            Cameras.split(state.params)[0], images))

    def _capacity(self, state, parts) -> tuple:
        """(sample buffer, appearance buffer) sizes for the fullest of `parts`; None: all."""
        if not self.buffered:
            return None, None
        counts = [jax.device_get(self._count(state, part)) for part, _ in parts]
        capacity = round_capacity(max(int(c[0]) for c in counts), int(counts[0][1]))
        if capacity is None or not self.model.culls_appearance():
            return capacity, None
        shown = [jax.device_get(self._shown(state, part, capacity)) for part, _ in parts]
        return capacity, round_capacity(max(int(c[0]) for c in shown), int(shown[0][1]))

    def _split(self, rays, chunk: int) -> tuple:
        """`split_rays` with each part already on the devices (a process's own ones, when
        several processes each render their share)."""
        parts, shape = split_rays(rays, chunk, self.devices)
        return [(jax.device_put(part, self._data), pad) for part, pad in parts], shape

    def rays(self, state, rays) -> dict:
        """Per-ray outputs (numpy, the rays' leading shape) of rays of any leading shape:
        every composited channel, `acc`, `distance_mean` and `distance_median`; no head."""
        parts, shape = self._split(rays, self.chunk)
        capacity = self._capacity(state, parts)
        outs = [jax.device_get(self._render(state, part, capacity)) for part, _ in parts]
        return join_outputs(outs, parts, shape)

    def image(self, state, view: View) -> dict:
        """The image of `view`: `rgb [H, W, 3]` and the per-ray outputs (`[H / k, W / k]` for a
        head that upsamples by k)."""
        if self.model.head is None:
            return self.rays(state, view.rays())
        return self._tiled(state, view.coarse(self.upsample))

    def _tiled(self, state, view: View) -> dict:
        """Tiles of at most `chunk` rays with a margin of the head's radius, as few as cover
        the image and of equal size (so little is rendered beyond its edges)."""
        r, k = self.radius, self.upsample
        most = max(1, math.isqrt(self.chunk) - 2 * r)
        tall = -(-view.height // -(-view.height // most))  # tile rows, cols
        wide = -(-view.width // -(-view.width // most))
        corners = [(top, left) for top in range(0, view.height, tall)
                   for left in range(0, view.width, wide)]
        windows = [self._split(view.window_rays(top - r, left - r, tall + 2 * r, wide + 2 * r),
                               (tall + 2 * r) * (wide + 2 * r))[0]
                   for top, left in corners]
        capacity = self._capacity(state, [p for parts in windows for p in parts])
        rows = -(-view.height // tall) * tall
        cols = -(-view.width // wide) * wide
        out, scales = {}, {}
        for (top, left), parts in zip(corners, windows, strict=True):
            flat = join_outputs([jax.device_get(self._render(state, part, capacity))
                                 for part, _ in parts], parts, (1, tall + 2 * r, wide + 2 * r))
            head = jax.device_get(self._head(state, flat))  # rgb [1, tall k, wide k, 3]
            tiles = {name: (np.asarray(v)[0, r:r + tall, r:r + wide], 1)
                     for name, v in {**flat, **head}.items() if name != "rgb"}
            tiles["rgb"] = (np.asarray(head["rgb"])[0], k)
            for name, (value, scale) in tiles.items():
                if name not in out:
                    out[name] = np.zeros((rows * scale, cols * scale) + value.shape[2:],
                                         value.dtype)
                    scales[name] = scale
                out[name][top * scale:(top + tall) * scale,
                          left * scale:(left + wide) * scale] = value
        return {name: value[:view.height * scales[name], :view.width * scales[name]]
                for name, value in out.items()}


def cut_to(view: View, multiple: int) -> View:
    """`view` cut down to a `multiple` of pixels (a head's upsampling factor) on the right and
    bottom (the principal point stays where it was), or one clear line if nothing is left."""
    width, height = view.width // multiple * multiple, view.height // multiple * multiple
    if not width or not height:
        raise UserError(f"frames of {view.width}x{view.height} pixels are smaller than the "
                        f"head's upsampling factor {multiple}; render larger frames")
    return dataclasses.replace(view, width=width, height=height)


def path_of(config, scene, n_frames: int, camtoworlds=None, multiple: int = 1) -> list:
    """The `View`s of the run's render path through the scene's cameras (or `camtoworlds`):
    `n_frames` poses at 1/render_factor resolution, the size cut down to a `multiple` (of a
    head's upsampling factor) on the right and bottom."""
    poses = camera_paths.make_path(config.render_path, scene.camtoworlds if camtoworlds is None
                                   else camtoworlds, n_frames, scene.kind)
    f = config.render_factor
    intrinsics = scene.intrinsics[0] / np.float32(f)
    width = scene.width // f // multiple * multiple
    height = scene.height // f // multiple * multiple
    if not width or not height:
        raise UserError(f"render frames of {scene.width // f}x{scene.height // f} pixels "
                        f"(Config.render_factor = {f}) are smaller than the head's upsampling "
                        f"factor {multiple}; lower Config.render_factor")
    return [View(camtoworld=np.asarray(pose)[:3, :4], intrinsics=intrinsics, width=width,
                 height=height, near=scene.near, far=scene.far, ndc=scene.ndc)
            for pose in poses]


def per_output_pixel(image: np.ndarray, k: int) -> np.ndarray:
    """`[h, w, ...]` values of a head's k-times coarser grid -> `[h k, w k, ...]`, each value
    repeated over the k x k output pixels it covers."""
    return np.repeat(np.repeat(image, k, 0), k, 1)


def render_views(renderer, state, views, on_frame=None) -> dict:
    """Renders `views`: `rgb [T, H, W, 3]` (clipped), `depth` and `acc` `[T, H, W]`.

    A head that upsamples by k renders depth and opacity per latent pixel; each is repeated
    over its k x k output pixels, so that every output pixel has one.
    """
    rgbs, depths, accs = [], [], []
    for i, view in enumerate(views):
        out = renderer.image(state, view)
        rgbs.append(np.clip(out["rgb"], 0, 1))
        depths.append(per_output_pixel(out["distance_median"], renderer.upsample))
        accs.append(per_output_pixel(out["acc"], renderer.upsample))
        if on_frame is not None:
            on_frame(i, rgbs[-1])
    return {"rgb": np.stack(rgbs), "depth": np.stack(depths), "acc": np.stack(accs)}
