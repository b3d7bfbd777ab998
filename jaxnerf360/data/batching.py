"""Random training batches: independent pixels (`RayBatcher`), pixel patches (`PatchBatcher`),
or independent rays on a coarser grid (`CoarseRayBatcher`, beside a latent head's patches).

Batch k of process p is drawn by a numpy Generator seeded with `(seed, p, k)`: each process
draws its own slice of the global batch, and a run resumed at step k (`start_step=k`) sees
exactly the batches an uninterrupted run would have seen.
"""

import numpy as np

from jaxnerf360.data.cameras import pixels_to_rays, scene_rays
from jaxnerf360.data.patch_sampling import DetailSampler, PatchSampling
from jaxnerf360.data.scene import Batch, Scene
from jaxnerf360.errors import UserError


def check_batch_divisible(global_batch_size: int, num_devices: int) -> None:
    """Raises UserError unless the global batch splits evenly over the `num_devices` slices
    of the mesh's data axis."""
    if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0:
        raise UserError(f"Config.batch_size={global_batch_size!r} must be a positive integer")
    if global_batch_size % num_devices != 0:
        raise UserError(
            f"Config.batch_size={global_batch_size} is not divisible by the {num_devices} "
            f"devices of the mesh's data axis; use a multiple of {num_devices}"
        )


class _Batcher:
    """An infinite iterator of random batches: global batch k is drawn from the seed (seed, 0,
    k), whatever the number of processes, and each process keeps its own slice of it."""

    def __init__(self, scene: Scene, count: int, what: str, seed: int, process_index: int,
                 process_count: int, start_step: int):
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count <= 0:
            raise UserError(f"{what}={count!r} must be a positive integer")
        if process_count <= 0 or not 0 <= process_index < process_count:
            raise UserError(
                f"process_index={process_index} must lie in [0, process_count={process_count})"
            )
        if count % process_count != 0:
            raise UserError(f"{what}={count} is not divisible by the {process_count} processes; "
                            f"use a multiple of {process_count}")
        if scene.num_images == 0:
            raise UserError("the training split has no images; check the data directory")
        self.scene = scene
        self.count, self.local_count = count, count // process_count
        # The seed of the single-process runs before processes drew their own slices.
        self._seed = (seed, 0)
        self._part = slice(process_index * self.local_count,
                           (process_index + 1) * self.local_count)
        self.step = start_step

    def _next_rng(self) -> np.random.Generator:
        rng = np.random.default_rng([*self._seed, self.step])
        self.step += 1
        return rng

    def _local(self, *arrays):
        """This process's slice of each of `arrays` (drawn for the global batch)."""
        return tuple(a[self._part] for a in arrays)

    def __iter__(self):
        """The batcher is its own (infinite) iterator."""
        return self

    def __next__(self) -> Batch:
        """The next random batch (alpha, if any, is dropped; see `next_with_alpha`)."""
        return self.next_with_alpha()[0]

    def next_with_alpha(self):
        """The next random batch and its alpha (None without alphas)."""
        raise NotImplementedError


class RayBatcher(_Batcher):
    """Iterator of `Batch`es of `global_batch_size // process_count` random rays.

    Pixels are drawn with replacement, uniformly over all pixels of all images. Global batch
    k is drawn by a numpy Generator seeded with `(seed, 0, k)` and each process keeps its own
    slice of it: any number of processes trains on the same batches, and a run resumed at
    step k (`start_step=k`) sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(
        self,
        scene: Scene,
        global_batch_size: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        start_step: int = 0,
    ):
        super().__init__(scene, global_batch_size, "Config.batch_size", seed, process_index,
                         process_count, start_step)
        self.local_batch_size = self.local_count
        self._num_pixels = scene.num_images * scene.height * scene.width
        # Flat views let one integer index array gather everything without copies.
        self._flat_rgb = scene.images.reshape(-1, scene.images.shape[-1])
        self._flat_alpha = None if scene.alphas is None else scene.alphas.reshape(-1)
        self._kept = None

    def keep_only(self, mask) -> int:
        """Draws from here on only the pixels where `mask [num_images, H, W]` holds.

        TensoRF drops training rays that miss occupied space; returns the number kept.
        """
        kept = np.flatnonzero(np.asarray(mask).reshape(-1))
        if kept.size == 0:
            raise UserError("no training ray reaches occupied space: the occupancy grid is empty; "
                            "lower OccupancySampler.threshold or update the grid later")
        self._kept = kept
        return int(kept.size)

    def next_with_alpha(self):
        """The next random batch and its alpha `[local_batch, 1]` (None without alphas)."""
        rng = self._next_rng()
        if self._kept is None:
            flat = rng.integers(0, self._num_pixels, size=self.count)
        else:
            flat = self._kept[rng.integers(0, self._kept.size, size=self.count)]
        flat, = self._local(flat)
        pixels_per_image = self.scene.height * self.scene.width
        indices, pixel = np.divmod(flat, pixels_per_image)
        rows, cols = np.divmod(pixel, self.scene.width)
        rays = scene_rays(self.scene, indices, cols, rows)
        rgb = np.asarray(self._flat_rgb[flat, :3], dtype=np.float32)
        alpha = None
        if self._flat_alpha is not None:
            alpha = np.asarray(self._flat_alpha[flat], dtype=np.float32)[:, None]
        pixels = np.stack([cols, rows], -1).astype(np.float32) + 0.5
        return Batch(rays=rays, rgb=rgb, pixels=pixels), alpha


class PatchBatcher(_Batcher):
    """Iterator of `Batch`es of `num_patches // process_count` random `P x P` ray patches.

    A patch is a window of P x P rays of one random training image, one every `stride`
    pixels (a stride s casts the rays of a grid s times coarser: through the centres of s x s
    pixel blocks, with s times their footprint); its ground truth `rgb` (and alpha) covers the
    same pixels at full resolution plus a `margin` of m pixels on every side: `[B, P s + 2m,
    P s + 2m, 3]` (just the rays' pixels when s = 1 and m = 0). `pixels` are the rays' (col,
    row) coordinates. Corners are uniform over the windows that fit the image, or a share of
    them drawn by image detail (`sampling`, see `data.patch_sampling`).
    """

    def __init__(self, scene: Scene, num_patches: int, patch_size: int, stride: int = 1,
                 margin: int = 0, seed: int = 0, process_index: int = 0, process_count: int = 1,
                 start_step: int = 0, sampling: PatchSampling | None = None):
        super().__init__(scene, num_patches, "patches per batch", seed, process_index,
                         process_count, start_step)
        for name, value, least in (("patch size", patch_size, 1), ("patch stride", stride, 1),
                                   ("patch margin", margin, 0)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
                raise UserError(f"{name}={value!r} must be an integer of at least {least}")
        self.extent = patch_size * stride + 2 * margin
        if self.extent > min(scene.height, scene.width):
            raise UserError(f"patches of {self.extent} pixels (size {patch_size} x stride "
                            f"{stride} + 2 x margin {margin}) do not fit the {scene.width}x"
                            f"{scene.height} training images; use smaller patches")
        self.size, self.stride, self.margin = patch_size, stride, margin
        self._corners = None  # [K, 3] (image, top, left) allowed by `keep_only`
        self._detail_fraction = 0.0 if sampling is None else sampling.detail_fraction
        self._detail = None
        if self._detail_fraction > 0:
            self._detail = DetailSampler(scene.images, self.extent)

    def keep_only(self, mask) -> int:
        """Draws from here on only patches whose centre pixel `mask [N, H, W]` keeps; returns
        the number of such patch corners."""
        n, h, w = np.shape(mask)
        tops = np.arange(h - self.extent + 1)
        lefts = np.arange(w - self.extent + 1)
        centre = self.extent // 2
        img, top, left = (a.reshape(-1) for a in np.meshgrid(np.arange(n), tops, lefts,
                                                             indexing="ij"))
        keep = np.asarray(mask)[img, top + centre, left + centre]
        if not keep.any():
            raise UserError("no training patch reaches occupied space: the occupancy grid is "
                            "empty; lower OccupancySampler.threshold or update the grid later")
        self._corners = np.stack([img, top, left], -1)[keep]
        if self._detail is not None:
            self._detail.restrict(mask)
        return int(keep.sum())

    def next_with_alpha(self):
        """The next batch of patches and its alpha `[B, P s + 2m, P s + 2m, 1]` (or None)."""
        rng = self._next_rng()
        scene, n = self.scene, self.count
        if self._corners is None:
            img = rng.integers(0, scene.num_images, n)
            top = rng.integers(0, scene.height - self.extent + 1, n)
            left = rng.integers(0, scene.width - self.extent + 1, n)
        else:
            img, top, left = self._corners[rng.integers(0, len(self._corners), n)].T
        if self._detail is not None and self._detail.usable:
            by_detail = rng.random(n) < self._detail_fraction
            d_img, d_top, d_left = self._detail.draw(rng, n)
            img = np.where(by_detail, d_img, img)
            top = np.where(by_detail, d_top, top)
            left = np.where(by_detail, d_left, left)
        img, top, left = self._local(img, top, left)
        s, m = self.stride, self.margin
        steps = s * np.arange(self.size) + 0.5 * s  # ray centres within the patch
        rows = (top[:, None] + m + steps)[:, :, None] * np.ones((1, 1, self.size))
        cols = (left[:, None] + m + steps)[:, None, :] * np.ones((1, self.size, 1))
        idx = np.broadcast_to(img[:, None, None], rows.shape)
        intrinsics = scene.intrinsics[idx] / np.array([s, s, s, s], np.float32)
        distortion = None if scene.distortion is None else scene.distortion[idx]
        rays = pixels_to_rays(cols / s, rows / s, scene.camtoworlds[idx], intrinsics, distortion,
                              scene.near, scene.far, idx, ndc=_coarse_ndc(scene.ndc, s))
        window = np.arange(self.extent)
        grid_r = top[:, None, None] + window[None, :, None]
        grid_c = left[:, None, None] + window[None, None, :]
        gt_img = img[:, None, None]
        if s == 1 and m == 0:
            grid_r, grid_c = rows.astype(np.int64), cols.astype(np.int64)
        rgb = np.asarray(scene.images[gt_img, grid_r, grid_c, :3], np.float32)
        alpha = None
        if scene.alphas is not None:
            alpha = np.asarray(scene.alphas[gt_img, grid_r, grid_c], np.float32)[..., None]
        pixels = np.stack([cols, rows], -1).astype(np.float32)
        return Batch(rays=rays, rgb=rgb, pixels=pixels), alpha


def _coarse_ndc(ndc, stride: int):
    """The NDC warp of a camera whose pixels are `stride` times larger (the same warp)."""
    if ndc is None or stride == 1:
        return ndc
    return {**ndc, "fx": ndc["fx"] / stride, "fy": ndc["fy"] / stride,
            "width": ndc["width"] / stride, "height": ndc["height"] / stride}



class CoarseRayBatcher(_Batcher):
    """Iterator of `global_count // process_count` independent random rays on a grid `stride`
    (k) times coarser than the images, each process's slice of a global draw like the others.

    Each ray goes through the centre of a k x k pixel block with k times the pixel's footprint
    (as `PatchBatcher` with stride k casts them) and comes with the block's mean colour and its
    (image, block row, block column): per-ray supervision of what a latent head's field renders.
    """

    def __init__(self, scene: Scene, global_count: int, stride: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1, start_step: int = 0):
        super().__init__(scene, global_count, "rays per batch", seed, process_index,
                         process_count, start_step)
        k = self.stride = int(stride)
        n, self.rows, self.cols = scene.num_images, scene.height // k, scene.width // k
        blocks = scene.images[:, :self.rows * k, :self.cols * k, :3]
        self._coarse = np.asarray(blocks.reshape(n, self.rows, k, self.cols, k, 3).mean((2, 4)),
                                  np.float32)

    def next(self) -> dict:
        """{'rays': Rays [n], 'rgb': [n, 3] block means, 'index': [n, 3] (image, row, col)}."""
        rng = self._next_rng()
        n, k, scene = self.count, self.stride, self.scene
        img, row, col = self._local(rng.integers(0, scene.num_images, n),
                                    rng.integers(0, self.rows, n), rng.integers(0, self.cols, n))
        distortion = None if scene.distortion is None else scene.distortion[img]
        rays = pixels_to_rays(col + 0.5, row + 0.5, scene.camtoworlds[img],
                              scene.intrinsics[img] / np.float32(k), distortion, scene.near,
                              scene.far, img, ndc=_coarse_ndc(scene.ndc, k))
        return {"rays": rays, "rgb": self._coarse[img, row, col],
                "index": np.stack([img, row, col], -1).astype(np.int32)}
