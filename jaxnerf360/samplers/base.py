"""What every sampler offers the model: samples along rays, and a declared state.

A sampler is a Flax module called as `sampler(rng, rays, train_frac, context)` that returns
`Samples`: interval edges along each ray in normalised distance s and in t, the histograms of
any proposal levels (for the interlevel loss), and optionally a mask of the samples that
count. `context` carries what the model knows and the sampler may need: the warp to field
space, the scene kind, the sampler's own state (e.g. an occupancy grid) and the field's grid
resolution (a grid sampler steps by its voxels). The methods of `Sampler` declare the state
and how it changes between steps; the training schedule asks them.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn

from jaxnerf360.data.scene import BOUNDED, FORWARD, UNBOUNDED
from jaxnerf360.geometry import coord, render
from jaxnerf360.parts import Part


class SamplingContext(NamedTuple):
    """What the model passes to its sampler besides the rays."""

    warp: Callable  # world Gaussians -> field space (`field_warp`)
    scene_kind: str = BOUNDED
    state: Any = None  # the sampler's state (`Sampler.init_state`), e.g. an occupancy grid
    field_resolution: tuple | None = None  # the field's grid points (x, y, z); None: no grid


class Samples(NamedTuple):
    """A sampler's output for rays of leading shape `[...]`."""

    sdist: Any  # [..., n+1] interval edges in normalised ray distance s
    tdist: Any  # [..., n+1] the same edges in t
    levels: Any = ()  # proposal histograms [{'sdist' [..., k+1], 'weights' [..., k]}, ...]
    mask: Any = None  # [..., n] bool: the samples that count; None: all of them


class Sampler(Part):
    """Base of every sampler: the declarations below are those of a stateless sampler."""

    _DECLARATIONS = Part._DECLARATIONS + (
        "init_state", "state_update_steps", "update_state", "state_name", "describe_state",
        "ray_filter_step", "uses_sample_buffer")
    # Whether the samples follow the rays with gradients, so camera poses can be learned.
    supports_pose_optimization = False

    @nn.nowrap
    def init_state(self, scene_kind: str):
        """The sampler's state at the start of training (a pytree, or None for none)."""
        return None

    @nn.nowrap
    def state_update_steps(self) -> tuple:
        """Training steps before which `update_state` runs."""
        return ()

    @nn.nowrap
    def update_state(self, state, density_fn: Callable, field_resolution, scene_kind: str):
        """The state rebuilt from the field's density (`density_fn`: `[P, 3] -> [P]`)."""
        return state

    @nn.nowrap
    def state_name(self) -> str:
        """What the state is, for the log."""
        return "sampler state"

    @nn.nowrap
    def describe_state(self, state) -> str:
        """One phrase about a state, for the log."""
        return ""

    @nn.nowrap
    def ray_filter_step(self) -> int | None:
        """The step from which training rays that miss every counted sample are dropped."""
        return None

    @nn.nowrap
    def uses_sample_buffer(self) -> bool:
        """Whether its masks are sparse enough that the model should gather the counted
        samples into a buffer (of a static capacity) before running the field."""
        return False


def field_warp(scene_kind: str) -> Callable:
    """The map from world Gaussians to field space: contraction for unbounded scenes."""
    if scene_kind == UNBOUNDED:
        return coord.contract_gaussians
    if scene_kind in (BOUNDED, FORWARD):
        return lambda means, covs: (means, covs)
    raise ValueError(f"unknown scene kind {scene_kind!r}")


def rays_to_gaussians(rays, tdist, ray_shape: str, warp: Callable):
    """Gaussians of the frustums between `tdist [..., n+1]`, warped to field space."""
    means, covs = render.cast_rays(tdist, rays.origins, rays.directions, rays.radii, ray_shape)
    return warp(means, covs)
