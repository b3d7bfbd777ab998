"""The host-side scene (posed images) and the ray pytree every stage shares."""

import dataclasses

import flax
import numpy as np


@flax.struct.dataclass
class Rays:
    """A batch of rays; every field has the same leading shape `[...]`.

    Directions are not normalised: `t` along `directions` is the ray distance used
    by near/far and the samplers (for a pinhole camera, t = depth along the optical
    axis at the image centre). `viewdirs` are the unit directions fed to the field.
    """

    origins: np.ndarray  # [..., 3]
    directions: np.ndarray  # [..., 3]
    viewdirs: np.ndarray  # [..., 3]
    radii: np.ndarray  # [..., 1] base radius of the cone at t=1 (pixel footprint)
    near: np.ndarray  # [..., 1]
    far: np.ndarray  # [..., 1]
    cam_idx: np.ndarray  # [..., 1] int32 index of the image the ray came from


@flax.struct.dataclass
class Batch:
    """Rays and their ground-truth colours."""

    rays: Rays
    rgb: np.ndarray  # [..., 3] in [0, 1]
    pixels: np.ndarray | None = None  # [..., 2] (col, row) + 0.5: where the rays were cast


# Scene kinds: how the sampler and field should treat space.
BOUNDED = "bounded"  # object inside a box (Blender, synthetic): near/far from config
UNBOUNDED = "unbounded"  # 360 capture: cameras in the unit ball, contraction outside
FORWARD = "forward"  # forward-facing (LLFF): NDC rays, t in [0, 1]


@dataclasses.dataclass
class Scene:
    """Posed images of one split, in OpenGL camera convention.

    Cameras look down -z with +y up and +x right (Blender/OpenGL, as multinerf).
    Pixel (col, row) has its centre at (col + 0.5, row + 0.5).
    """

    images: np.ndarray  # [N, H, W, 3] float32 in [0, 1], composited on the background
    camtoworlds: np.ndarray  # [N, 3, 4] float32 camera-to-world (after normalisation)
    intrinsics: np.ndarray  # [N, 4] float32 (fx, fy, cx, cy) in pixels at this resolution
    distortion: np.ndarray  # [N, 4] float32 (k1, k2, p1, p2), OpenCV radial-tangential
    near: float  # ray distance of the near plane (along unnormalised directions)
    far: float  # ray distance of the far plane
    kind: str  # BOUNDED, UNBOUNDED or FORWARD
    names: list  # [N] image file names, for error messages and eval outputs
    # World-from-original transform applied by pose normalisation (4x4): lets eval
    # and render map paths back and forth. Identity when nothing was applied.
    transform: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4, dtype=np.float32))
    # Forward-facing scenes: focal length and size used by the NDC warp (None otherwise).
    ndc: dict | None = None
    alphas: np.ndarray | None = None  # [N, H, W] in [0, 1] when the source has alpha

    @property
    def num_images(self) -> int:
        """Number of images in the split."""
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.images.shape[2])
