"""Random ray batches drawn uniformly over every pixel of every training image."""

import numpy as np

from jaxnerf360.data.cameras import scene_rays
from jaxnerf360.data.scene import Batch, Scene
from jaxnerf360.errors import UserError


def check_batch_divisible(global_batch_size: int, num_devices: int) -> None:
    """Raises UserError unless the global batch splits evenly over `num_devices`."""
    if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0:
        raise UserError(f"Config.batch_size={global_batch_size!r} must be a positive integer")
    if global_batch_size % num_devices != 0:
        raise UserError(
            f"Config.batch_size={global_batch_size} is not divisible by the {num_devices} "
            f"devices; use a multiple of {num_devices}"
        )


class RayBatcher:
    """Iterator of `Batch`es of `global_batch_size // process_count` random rays.

    Pixels are drawn with replacement, uniformly over all pixels of all images. Batch k is
    drawn by a numpy Generator seeded with `(seed, process_index, k)`: each process draws
    its own slice of the global batch, and a run resumed at step k (`start_step=k`) sees
    exactly the batches an uninterrupted run would have seen.
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
        if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size <= 0:
            raise UserError(f"Config.batch_size={global_batch_size!r} must be a positive integer")
        if process_count <= 0 or not 0 <= process_index < process_count:
            raise UserError(
                f"process_index={process_index} must lie in [0, process_count={process_count})"
            )
        if global_batch_size % process_count != 0:
            raise UserError(
                f"Config.batch_size={global_batch_size} is not divisible by the "
                f"{process_count} processes; use a multiple of {process_count}"
            )
        if scene.num_images == 0:
            raise UserError("the training split has no images; check the data directory")
        self.scene = scene
        self.local_batch_size = global_batch_size // process_count
        self._seed = (seed, process_index)
        self.step = start_step
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

    def __iter__(self):
        """The batcher is its own (infinite) iterator."""
        return self

    def __next__(self) -> Batch:
        """The next random batch (alpha, if any, is dropped; see `next_with_alpha`)."""
        return self.next_with_alpha()[0]

    def next_with_alpha(self):
        """The next random batch and its alpha `[local_batch, 1]` (None without alphas)."""
        rng = np.random.default_rng([*self._seed, self.step])
        self.step += 1
        if self._kept is None:
            flat = rng.integers(0, self._num_pixels, size=self.local_batch_size)
        else:
            flat = self._kept[rng.integers(0, self._kept.size, size=self.local_batch_size)]
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
