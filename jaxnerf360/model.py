"""The model: sampler -> field -> composite -> (head), one Flax module chosen by gin.

`Model.sampler` picks intervals along each ray, `Model.field` gives density and named
channels at them, every channel is composited with the volume-rendering weights, and an
optional image-space `Model.head` turns composited patches into colours. The model's own
parameters are `{'sampler': ..., 'field': ..., 'head': ...}` (the submodules' names); the
methods below answer, on the host, what the other stages ask of the parts.
"""

from collections.abc import Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from jaxnerf360.data.scene import BOUNDED
from jaxnerf360.errors import UserError
from jaxnerf360.fields.base import Field
from jaxnerf360.fields.mlp import MLPField
from jaxnerf360.geometry import render
from jaxnerf360.geometry.occupancy import compact, scatter
from jaxnerf360.heads import Head
from jaxnerf360.parts import Part
from jaxnerf360.samplers import ProposalSampler, Sampler, SamplingContext, field_warp
from jaxnerf360.samplers.base import rays_to_gaussians

# The parameter subtrees of the parts; a head may bring an encoder (an autoencoder's other
# half, used by its training phases only).
SAMPLER, FIELD, HEAD, ENCODER = "sampler", "field", "head", "encoder"


@gin.configurable
class Model(nn.Module):
    """Renders rays: the sampler picks intervals, the field fills them, alpha compositing."""

    scene_kind: str = BOUNDED  # set from the data, not from gin
    sampler: Callable = ProposalSampler
    field: Callable = MLPField
    head: Callable | None = None  # an image-space head (heads.py); None: per-pixel colours
    opaque_background: bool = False
    # TensoRF's rayMarch_weight_thres: with a sample buffer and a field that computes its
    # channels apart from its density, the channels are computed only where the compositing
    # weight exceeds this (0: everywhere), gathered into a second buffer.
    appearance_weight_threshold: float = 0.0
    # Training computes the second buffer in this many parts while its size is not yet known
    # from the field (before the sampler's first update, the buffer holds every sample): a
    # part no shown sample reaches is skipped, so the cost follows the shown count.
    appearance_chunks: int = 1

    @nn.compact
    def __call__(self, rng, rays, train_frac, bg_rgbs, compute_extras: bool = False,
                 sampler_state=None, capacity: int | None = None, spectral_control: bool = True,
                 apply_head: bool = True, appearance_capacity: int | None = None,
                 appearance_chunks: int = 1):
        """Renders `rays` ([...] leading shape) on background `bg_rgbs [..., 3]`.

        `sampler_state` is the sampler's state (an occupancy grid); when the sampler masks its
        samples, the field runs only on the counted ones, gathered into a buffer of static
        size `capacity` (None: every sample); with `appearance_capacity` as well, the channels
        other than density are computed only for the buffered samples whose weight exceeds
        `appearance_weight_threshold`, at most that many (the rest get zero channels), in
        `appearance_chunks` parts (those past the shown count skipped at run time).
        Returns a dict: every channel of the field composited (`rgb [..., 3]` on the
        background, any others `[..., C]`), `acc [...]`, `sdist`/`weights` of the final level,
        `prop_levels` (for the interlevel loss), `overflow` (counted samples that did not fit
        the buffer), `appearance_overflow` (those over the threshold that did not fit the
        second buffer) and, with compute_extras,
        `distance_mean` and `distance_median` `[...]`. With a head (and `apply_head`), rays
        are `[B, H, W]` patches and `rgb` is the head's output.
        """
        sampler = self.sampler(name=SAMPLER)
        field = self.field(name=FIELD)
        context = _context(self.scene_kind, field,
                           self.variables.get("params", {}).get(FIELD), sampler_state)
        samples = sampler(rng, rays, train_frac, context)
        # Training progress for the fields' schedules (spectral control, coarse-to-fine);
        # rendering (no rng) sees the finished field.
        progress = None if rng is None else {"train_frac": train_frac, "spectral":
                                             spectral_control, "rng": jax.random.fold_in(rng, 7)}
        app_overflow = jnp.zeros((), jnp.int32)
        if samples.mask is None:
            means, covs = rays_to_gaussians(rays, samples.tdist, sampler.ray_shape, context.warp)
            out = field(means, covs, rays.viewdirs, progress=progress)
            overflow = jnp.zeros((), jnp.int32)
        elif (self.culls_appearance() and appearance_capacity is not None
              and capacity is not None and capacity < samples.mask.size):
            out, overflow, app_overflow = _weighted_field(
                field, rays, samples.tdist, samples.mask, (capacity, appearance_capacity),
                sampler.ray_shape, context.warp, progress,
                (self.appearance_weight_threshold, self.opaque_background),
                appearance_chunks)
        else:
            out, overflow = _masked_field(field, rays, samples.tdist, samples.mask, capacity,
                                          sampler.ray_shape, context.warp, progress)
        weights = render.compute_alpha_weights(
            out["density"], samples.tdist, rays.directions,
            opaque_background=self.opaque_background)[0]
        rendered = render.composite({k: v for k, v in out.items() if k != "density"}, weights)
        acc = jnp.sum(weights, axis=-1)
        rendered["rgb"] = rendered["rgb"] + jnp.maximum(0.0, 1.0 - acc)[..., None] * bg_rgbs
        rendered["acc"] = acc
        if compute_extras:
            rendered.update(render.ray_distances(weights, samples.tdist, rays.far, acc))
        if self.head is not None and apply_head:
            head = self.head(name=HEAD)
            rendered.update(head(rendered))
            encoder = head.encoder(name=ENCODER) if self.is_initializing() else None
            if encoder is not None:
                k = head.upsample()
                encoder(jnp.zeros((1, k, k, 3)))
        rendered.update(sdist=samples.sdist, weights=weights, prop_levels=samples.levels,
                        overflow=overflow, appearance_overflow=app_overflow)
        return rendered

    @nn.nowrap
    def culls_appearance(self) -> bool:
        """Whether buffered samples get their channels only where their weight shows."""
        return self.appearance_weight_threshold > 0 and self.field().separable_appearance

    # --- host-side questions about the parts (valid on an unbound Model; `nowrap` keeps
    # Flax from binding the parts they construct to the model) ---

    @nn.nowrap
    def parts(self) -> dict:
        """{SAMPLER, FIELD[, HEAD[, ENCODER]]: the gin-configured part} (a start-up error if
        one is not a Sampler, Field, Head or Part)."""
        out = {SAMPLER: self.sampler(), FIELD: self.field()}
        if self.head is not None:
            out[HEAD] = self.head()
            encoder = out[HEAD].encoder()
            if encoder is not None:
                out[ENCODER] = encoder
        for key, base in ((SAMPLER, Sampler), (FIELD, Field), (HEAD, Head), (ENCODER, Part)):
            if key in out and not isinstance(out[key], base):
                raise UserError(f"Model.{key} = {type(out[key]).__name__} is not a "
                                f"{base.__module__}.{base.__name__}; derive it from that class")
        return out

    @nn.nowrap
    def param_labels(self, params):
        """Optimiser group labels of the model's `params`, as each part declares them."""
        parts = self.parts()
        return {key: parts[key].param_labels(value) for key, value in params.items()}

    @nn.nowrap
    def param_groups(self) -> dict:
        """{label: ParamGroup} that the parts declare."""
        groups = {}
        for part in self.parts().values():
            for label, group in part.param_groups().items():
                if groups.get(label, group) != group:
                    raise UserError(f"two parts of the model declare the parameter group "
                                    f"{label!r} with different learning rates")
                groups[label] = group
        return groups

    @nn.nowrap
    def sampling_context(self, field_params, sampler_state) -> SamplingContext:
        """What the sampler is told besides the rays (field grid read off `field_params`)."""
        return _context(self.scene_kind, self.field(), field_params, sampler_state)

    @nn.nowrap
    def sample_mask(self, params, rays, sampler_state):
        """`[..., n]` bool: the deterministic samples of `rays` that the sampler counts (None
        for a sampler that counts all)."""
        context = self.sampling_context(params.get(FIELD), sampler_state)
        return self.sampler().apply({"params": params.get(SAMPLER, {})}, None, rays, 1.0,
                                    context).mask

    @nn.nowrap
    def shown_samples(self, params, rays, sampler_state, capacity: int | None):
        """(counted samples of `rays` whose weight exceeds the appearance threshold, all
        samples) when rendered deterministically: the field's density only, on a buffer of
        `capacity` counted samples (None: all of them)."""
        context = self.sampling_context(params.get(FIELD), sampler_state)
        sampler, field = self.sampler(), self.field()
        samples = sampler.apply({"params": params.get(SAMPLER, {})}, None, rays, 1.0, context)
        mask = samples.mask
        _, _, weights = _buffered_weights(
            lambda means, covs: field.apply({"params": params[FIELD]}, means, covs, None),
            rays, samples.tdist, mask, capacity or mask.size, sampler.ray_shape, context.warp,
            self.opaque_background)
        shown = mask & (weights > self.appearance_weight_threshold)
        return jnp.sum(shown), jnp.asarray(mask.size)

    @nn.nowrap
    def density(self, params, points):
        """The field's density `[P]` at field-space `points [P, 3]` (no view directions)."""
        return self.field().apply({"params": params[FIELD]}, points[None], None, None)[
            "density"][0]

    @nn.nowrap
    def apply_head(self, params, rendered: dict) -> dict:
        """The head's output for composited channels `rendered` (`{name: [B, H, W, C]}`)."""
        return self.head().apply({"params": params.get(HEAD, {})}, rendered)

    @nn.nowrap
    def encode(self, params, images):
        """The head's encoder applied to `images [B, H, W, 3]` (its input, e.g. latents)."""
        return self.parts()[ENCODER].apply({"params": params[ENCODER]}, images)

    @nn.nowrap
    def head_background(self, params):
        """The head's background latent (a latent decoder's), from the model's `params`."""
        head = self.parts()[HEAD]
        return head.apply({"params": params[HEAD]}, method=type(head).background_latent)

    @nn.nowrap
    def phases(self):
        """The head's training phases (`phases.PhasePlan`), or None."""
        return None if self.head is None else self.parts()[HEAD].phases()

    @nn.nowrap
    def head_geometry(self) -> tuple:
        """(receptive radius, upsampling factor) of the head; (0, 1) without one."""
        if self.head is None:
            return 0, 1
        head = self.parts()[HEAD]
        return int(head.receptive_radius()), int(head.upsample())


def _context(scene_kind, field, field_params, sampler_state) -> SamplingContext:
    return SamplingContext(field_warp(scene_kind), scene_kind, sampler_state,
                           field.grid_resolution(field_params))


def _masked_field(field, rays, tdist, mask, capacity, ray_shape, warp, progress=None):
    """The field on intervals `tdist [..., n+1]` where `mask [..., n]` holds (else no density).

    With a `capacity` below the sample count, the counted intervals are gathered into a
    buffer of that static size first, so Gaussians and the field are computed for `capacity`
    samples only, and every channel is scattered back; counted samples beyond the buffer are
    dropped and counted in the overflow.
    """
    shape = mask.shape
    total = mask.size
    if capacity is None or capacity >= total:
        means, covs = rays_to_gaussians(rays, tdist, ray_shape, warp)
        out = field(means, covs, rays.viewdirs, progress=progress)
        out = {**out, "density": jnp.where(mask, out["density"], 0.0)}
        return out, jnp.zeros((), jnp.int32)
    idx, valid, overflow, one, means, covs = _buffered(rays, tdist, mask, capacity, ray_shape,
                                                        warp)
    sub = field(means, covs, one.viewdirs, progress=progress)  # each [capacity, 1, ...]
    out = {name: scatter(value[:, 0], idx, valid, total).reshape(shape + value.shape[2:])
           for name, value in sub.items()}
    return out, overflow


def _buffered(rays, tdist, mask, capacity, ray_shape, warp):
    """The counted intervals of `tdist [..., n+1]` gathered into a buffer of `capacity`:
    `(idx, valid, overflow, rays, means, covs)`, each buffered ray `[capacity, ...]` and its
    Gaussian `[capacity, 1, ...]`."""
    n = mask.shape[-1]
    idx, valid, overflow = compact(mask.reshape(-1), capacity)
    ray, k = idx // n, idx % n
    flat_t = tdist.reshape(-1, n + 1)
    ends = jnp.stack([flat_t[ray, k], flat_t[ray, k + 1]], -1)  # [capacity, 2]
    # (jnp.asarray: under jit, jnp.reshape keeps host rays as numpy, which a traced index fails)
    one = jax.tree.map(lambda x: jnp.asarray(x).reshape(-1, x.shape[-1])[ray], rays)
    means, covs = rays_to_gaussians(one, ends, ray_shape, warp)
    return idx, valid, overflow, one, means, covs


def _buffered_weights(density_fn, rays, tdist, mask, capacity, ray_shape, warp, opaque):
    """`(buffer, density, weights)`: the counted samples buffered (`_buffered`'s tuple), the
    density `density_fn(means, covs)['density']` on them scattered back to `[..., n]`, and the
    compositing weights `[..., n]` it gives (no gradient: they only select samples)."""
    buffer = _buffered(rays, tdist, mask, capacity, ray_shape, warp)
    idx, valid, _, _, means, covs = buffer
    density = scatter(density_fn(means, covs)["density"][:, 0], idx, valid,
                      mask.size).reshape(mask.shape)
    weights = render.compute_alpha_weights(jax.lax.stop_gradient(density), tdist,
                                           rays.directions, opaque_background=opaque)[0]
    return buffer, density, weights


def _weighted_field(field, rays, tdist, mask, capacities, ray_shape, warp, progress,
                    weighting, chunks: int = 1):
    """`_masked_field` with the channels computed only where they show (TensoRF).

    The density runs on the buffer of `capacities[0]` counted samples; the compositing
    weights follow, and the channels other than density run only on the buffered samples
    whose weight exceeds `weighting[0]`, gathered into a second buffer of `capacities[1]`
    (computed in `chunks` parts, see `_chunked_channels`). A sample below the threshold adds
    less than that to any channel. Returns
    `(out, overflow, appearance_overflow)`.
    """
    threshold, opaque = weighting
    shape, total = mask.shape, mask.size
    buffer, density, weights = _buffered_weights(
        lambda means, covs: field(means, covs, None, progress=progress), rays, tdist, mask,
        capacities[0], ray_shape, warp, opaque)
    idx, valid, overflow, one, means, covs = buffer
    shows = valid & (weights.reshape(-1)[idx] > threshold)
    sub, sub_valid, app_overflow = compact(shows, capacities[1])
    pick = jax.tree.map(lambda x: x[sub], one)
    covs = None if covs is None else covs[sub]
    channels = _chunked_channels(field, means[sub], covs, pick.viewdirs, sub_valid, chunks,
                                 progress)
    out = {name: scatter(value[:, 0], idx[sub], sub_valid, total).reshape(
        shape + value.shape[2:]) for name, value in channels.items()}
    out["density"] = density
    return out, overflow, app_overflow


def _chunked_channels(field, means, covs, viewdirs, valid, chunks: int, progress):
    """The field's channels but density on buffered Gaussians `means [capacity, 1, 3]`, in
    `chunks` consecutive parts; a part with no `valid [capacity]` slot gives zeros unrun.

    The buffer is filled from the front, so the parts past the shown count are skipped at run
    time (`nn.cond`, which skips them in the backward pass too) and the cost follows the count
    without a new compilation.
    """
    def run(mdl, m, c, d):
        return mdl(m, c, d, progress=progress, with_density=False)

    capacity = means.shape[0]
    size = -(-capacity // chunks)
    count = jnp.sum(valid, dtype=jnp.int32)
    parts = []
    for start in range(0, capacity, size):
        part = slice(start, min(start + size, capacity))
        args = (means[part], None if covs is None else covs[part], viewdirs[part])
        if not parts:  # the first part always runs: it gives the channels' shapes
            parts.append(run(field, *args))
            continue
        length = part.stop - part.start
        shapes = jax.tree.map(
            lambda x, n=length: jax.ShapeDtypeStruct((n,) + x.shape[1:], x.dtype), parts[0])

        def skipped(mdl, m, c, d, shapes=shapes):
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        parts.append(nn.cond(start < count, run, skipped, field, *args))
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def background_colors(kind: str, shape, rng=None):
    """Background colours `[*shape, 3]`: 'white', 'black', or uniform 'random' (needs rng)."""
    if kind == "random" and rng is not None:
        return jax.random.uniform(rng, tuple(shape) + (3,))
    value = 0.0 if kind == "black" else 1.0
    return jnp.full(tuple(shape) + (3,), value)
