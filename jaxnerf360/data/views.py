"""Device copies of a training split, for work the train step does per pixel.

With pose optimisation the rays are cast inside the train step from pixel coordinates and
the current poses; blurred 2D supervision and edge-guided weights gather from the images and
edge maps there too. `Views` holds what that needs, replicated on every device.
"""

from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.data.scene import Scene


@flax.struct.dataclass
class Views:
    """Cameras (and optionally images and edge maps) of the N training images."""

    camtoworlds: Any  # [N, 3, 4] initial camera-to-world poses
    intrinsics: Any  # [N, 4] (fx, fy, cx, cy)
    distortion: Any  # [N, 4]
    images: Any = None  # [N, H, W, 3] float32, for blurred supervision
    edges: Any = None  # [N, H, W] bool, for the edge-guided loss
    phase_data: Any = None  # what a training phase precomputed (`phases.PhasePlan.phase_data`)
    near: float = flax.struct.field(pytree_node=False, default=0.0)
    far: float = flax.struct.field(pytree_node=False, default=1.0)
    ndc: Any = flax.struct.field(pytree_node=False, default=None)  # the scene's NDC dict


def from_scene(scene: Scene, images: bool = False, edges=None) -> Views:
    """The Views of a split; `images` copies the pixels, `edges` is a bool `[N, H, W]` map."""
    ndc = None if scene.ndc is None else tuple(sorted(scene.ndc.items()))
    return Views(camtoworlds=jnp.asarray(scene.camtoworlds, jnp.float32),
                 intrinsics=jnp.asarray(scene.intrinsics, jnp.float32),
                 distortion=jnp.asarray(np.zeros_like(scene.intrinsics) if scene.distortion
                                        is None else scene.distortion, jnp.float32),
                 images=jnp.asarray(scene.images[..., :3], jnp.float32) if images else None,
                 edges=None if edges is None else jnp.asarray(edges, bool),
                 near=float(scene.near), far=float(scene.far), ndc=ndc)
