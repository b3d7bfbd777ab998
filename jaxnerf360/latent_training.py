"""ReLS-NeRF's three training phases for a latent decoder, in one run (`LatentTraining`).

1. **autoencoder** (from 0 to `autoencoder_end`): the encoder and the decoder learn to
   reconstruct random training crops (horizontally flipped at random): an L1 or L2 loss, the
   optional VGG block-1 loss (`perceptual`), and a small penalty on the mean square latent
   that keeps the latents well scaled. The field is not rendered.
2. **joint** (to `decoder_start`): the field learns to render the encoder's latents of the
   ground truth (the latent loss, the encoder frozen), the decoded image is compared with the
   ground truth (the run's data term, whose gradient reaches the field through the decoder),
   and the field's own colours, with `colour_weight`, with the ground truth averaged over each
   latent pixel (the colour branch), and with single pixels on `colour_rays` rays at full
   resolution. The decoder's rate is scaled by `joint_decoder_scale`
   (0 by default: frozen, as the field's early latents are far from the encoder's).
3. **decoder** (to the end): the decoder alone is fine-tuned on the data term, the field
   frozen (its parameter groups' rates are zero and no gradient reaches it), so it learns to
   correct the field's own rendering artefacts.

No pretrained autoencoder can be downloaded here, so phase 1 trains one from scratch on the
scene's training images.
"""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360 import metrics, perceptual
from jaxnerf360.errors import UserError
from jaxnerf360.objective import LossTerm
from jaxnerf360.parts import ParamGroup
from jaxnerf360.phases import Phase, PhasePlan, check_boundaries
from jaxnerf360.train_step import center_crop

DECODER, ENCODER_GROUP = "decoder", "encoder"  # the optimiser groups of the autoencoder
AUTOENCODER, JOINT, FINE_TUNE = "autoencoder", "joint", "decoder"  # the phases


def whole_blocks(images, k: int):
    """The central crop of `images [B, H, W, C]` to multiples of k along H and W."""
    h, w = images.shape[1] // k * k, images.shape[2] // k * k
    top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
    return images[:, top:top + h, left:left + w]


def block_mean(images, k: int):
    """`[B, H, W, C]` (multiples of k) averaged over k x k blocks: `[B, H / k, W / k, C]`."""
    b, h, w, c = images.shape
    return images.reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4))


def reconstruction_loss(pred, target, kind: str):
    """Mean L1 ('l1') or squared ('l2') error."""
    diff = pred - target
    return jnp.mean(jnp.abs(diff)) if kind == "l1" else jnp.mean(diff * diff)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LatentTraining(PhasePlan):
    """The phases, losses and learning rates of a latent decoder's training (see module)."""

    autoencoder_end: float = 0.2  # phase 1 ends (fraction of training); 0: no phase 1
    decoder_start: float = 0.9  # phase 3 starts; 1: no phase 3
    reconstruction: str = "l1"  # phase 1: 'l1' | 'l2'
    perceptual_weight: float = 0.0  # phase 1: VGG block-1 loss (perceptual.py)
    latent_penalty: float = 1e-3  # phase 1: weight of the mean square latent
    flips: bool = True  # phase 1: flip crops left-right at random
    latent_weight: float = 1.0  # phase 2: rendered latents against the encoder's
    encoder_margin: int = 2  # phase 2: latents of context the encoder sees beyond a patch
    # phase 2: independent rays on the latent grid per step besides the patches, supervised
    # by the latent (and colour) loss alone, against the encoder's latents of whole images
    joint_rays: int = 1024
    colour_weight: float = 0.0  # phase 2: the field's own colours (0: no colour branch loss)
    # phase 2: independent rays at the images' own resolution per step for the colour branch
    # alone (with colour_weight), so that the field learns its geometry from every pixel as a
    # colour NeRF does, not only from the coarse grid
    colour_rays: int = 0
    # phase 2: the decoder's rate there, as a factor of its schedule (0: frozen, so that the
    # field's early, poor latents do not undo what it learnt in phase 1)
    joint_decoder_scale: float = 0.0
    decoder_lr: tuple = (1e-3, 1e-4)  # (initial, final) over the whole run
    encoder_lr: tuple = (1e-3, 1e-4)  # (initial, final) over phase 1

    def __post_init__(self):
        check_boundaries("LatentTraining", ("autoencoder_end", "decoder_start"),
                         (self.autoencoder_end, self.decoder_start))
        if self.autoencoder_end == self.decoder_start:
            raise UserError(f"LatentTraining.autoencoder_end = decoder_start = "
                            f"{self.decoder_start} leaves no phase in which the field trains; "
                            "make autoencoder_end smaller")
        if self.reconstruction not in ("l1", "l2"):
            raise UserError(f"LatentTraining.reconstruction={self.reconstruction!r} is unknown; "
                            "choose 'l1' or 'l2'")
        for name in ("perceptual_weight", "latent_penalty", "latent_weight", "colour_weight",
                     "joint_decoder_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise UserError(f"LatentTraining.{name}={value!r} must be a number >= 0")
        for name in ("encoder_margin", "joint_rays", "colour_rays"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"LatentTraining.{name}={value!r} must be an integer >= 0")
        for name in ("decoder_lr", "encoder_lr"):
            rates = getattr(self, name)
            if len(rates) != 2 or not all(float(r) > 0 for r in rates):
                raise UserError(f"LatentTraining.{name}={rates!r} must be two positive rates "
                                "(initial, final)")

    # --- the plan ---

    def phases(self) -> tuple:
        """autoencoder (if it has a length), joint, decoder (if it has a length)."""
        from jaxnerf360.model import ENCODER, HEAD

        out = []
        if self.autoencoder_end > 0:
            out.append(Phase(AUTOENCODER, 0.0, renders=False, trains=(HEAD, ENCODER)))
        out.append(Phase(JOINT, self.autoencoder_end if out else 0.0,
                         coarse_rays=self.ray_batch() > 0 or self.colour_ray_batch() > 0))
        if self.decoder_start < 1:
            out.append(Phase(FINE_TUNE, self.decoder_start, trains=(HEAD,)))
        return tuple(out)

    def window_of(self, label: str) -> tuple:
        """The decoder trains throughout, the encoder in phase 1, everything else in phase 2."""
        if label == DECODER:
            return (0.0, 1.0)
        if label == ENCODER_GROUP:
            return (0.0, self.autoencoder_end)
        return (self.autoencoder_end, self.decoder_start)

    def scales_of(self, label: str) -> tuple:
        """The decoder's rate is scaled by joint_decoder_scale in phase 2."""
        if label == DECODER:
            return ((self.autoencoder_end, self.decoder_start, float(self.joint_decoder_scale)),)
        return ()

    def ray_batch(self) -> int:
        """LatentTraining.joint_rays."""
        return self.joint_rays

    def colour_ray_batch(self) -> int:
        """LatentTraining.colour_rays when the colour branch has a weight, else 0."""
        return self.colour_rays if self.colour_weight else 0

    def phase_data(self, phase: Phase, model, model_params: dict, scene):
        """Phase 2 with coarse rays: the encoder's latents of every training image,
        `{'latents': [N, H / k, W / k, latent_dim]}` (the encoder is frozen from then on)."""
        if phase.name != JOINT or not self.joint_rays:
            return None
        k = model.head_geometry()[1]
        encode = jax.jit(lambda p, x: model.encode(p, whole_blocks(x, k)))
        images = scene.images[..., :3]
        latents = [jax.device_get(encode(model_params, jnp.asarray(images[i:i + 1])))
                   for i in range(len(images))]
        return {"latents": jnp.asarray(np.concatenate(latents))}

    def decoder_group(self) -> ParamGroup:
        """The decoder's optimiser group."""
        return ParamGroup(*map(float, self.decoder_lr), window=self.window_of(DECODER),
                          scales=self.scales_of(DECODER))

    def encoder_group(self) -> ParamGroup:
        """The encoder's optimiser group."""
        return ParamGroup(*map(float, self.encoder_lr), window=self.window_of(ENCODER_GROUP))

    # --- losses ---

    def own_loss(self, phase: Phase, model, model_params: dict, batch: dict, rng, config):
        """Phase 1: the autoencoder on the batch's ground-truth crops, and the decoder's
        background latent pulled to the encoder's latent of the plain background."""
        radius, k = model.head_geometry()
        images = whole_blocks(batch["rgb"], k)
        if self.flips:
            flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
            images = jnp.where(flip, images[:, :, ::-1], images)
        latents = model.encode(model_params, images)
        decoded = model.apply_head(model_params, {"features": latents})["rgb"]
        target = center_crop(images, *decoded.shape[1:3])
        recon = reconstruction_loss(decoded, target, self.reconstruction)
        scale = jnp.mean(jnp.square(latents))
        # Empty space composites to the background latent (the decoder's), which must be what
        # the encoder makes of the background, or the field would fill space to match it.
        side = 2 * radius + 1
        plain = jnp.full((1, side * k, side * k, 3), 0.0 if config.background == "black" else 1.0)
        truth = jax.lax.stop_gradient(model.encode(model_params, plain)[0, radius, radius])
        empty = {"features": jnp.zeros((1, side, side, latents.shape[-1])),
                 "acc": jnp.zeros((1, side, side))}
        background = model.apply_head(model_params, empty)["latents"][0, radius, radius]
        background_error = jnp.mean(jnp.square(background - truth))
        total = recon + self.latent_penalty * scale + background_error
        stats = {"reconstruction": recon, "latent_scale": scale, "background": background_error}
        if self.perceptual_weight:
            stats["perceptual"] = perceptual.high_frequency_loss(decoded, target, "l1")
            total = total + self.perceptual_weight * stats["perceptual"]
        mse = jnp.mean(jnp.square(decoded - target))
        return total, {"loss": total, **stats, "psnr": metrics.mse_to_psnr(mse),
                       "overflow": jnp.zeros((), jnp.int32)}

    def terms(self, config, model) -> list:
        """The latent loss and, with a `colour_weight`, the colour branch's loss (phase 2)."""
        del config
        k = model.head_geometry()[1]

        def latent(inputs):
            if inputs.phase != JOINT:
                return jnp.zeros(())
            rendered = inputs.outputs["latents"]  # [B, S, S, D] with the background latent
            truth = model.encode(inputs.params, whole_blocks(inputs.target_patch, k))
            truth = jax.lax.stop_gradient(center_crop(truth, *rendered.shape[1:3]))
            errors = [jnp.square(rendered - truth).reshape(-1, rendered.shape[-1])]
            if inputs.extra_outputs is not None:
                out = inputs.extra_outputs
                background = model.head_background(inputs.params)
                rays = out["features"] + (1.0 - out["acc"])[..., None] * background
                img, row, col = (inputs.batch["extra_index"][..., i] for i in range(3))
                errors.append(jnp.square(rays - inputs.phase_data["latents"][img, row, col]))
            return jnp.mean(jnp.concatenate(errors))

        def colour(inputs):
            if inputs.phase != JOINT:
                return jnp.zeros(())
            rendered = inputs.outputs["field_rgb"]  # [B, S, S, 3] at the latent pixels
            side = rendered.shape[1] * k
            truth = block_mean(center_crop(inputs.target_patch, side, side), k)
            errors = [jnp.square(rendered - truth).reshape(-1, 3)]
            if inputs.extra_outputs is not None:
                errors.append(jnp.square(inputs.extra_outputs["rgb"] - inputs.batch["extra_rgb"]))
            if inputs.colour_outputs is not None:
                errors.append(jnp.square(inputs.colour_outputs["rgb"] - inputs.batch["colour_rgb"]))
            return jnp.mean(jnp.concatenate(errors))

        out = [LossTerm("latent", latent, self.latent_weight, margin=k * self.encoder_margin,
                        needs_patches=True)]
        if self.colour_weight:
            out.append(LossTerm("colour", colour, self.colour_weight, needs_patches=True))
        return out


def round_trip(model, model_params: dict, images) -> tuple:
    """(decoded, truth): `images [N, H, W, 3]` encoded and decoded by the run's autoencoder,
    and the central part of each image the decoder's valid convolutions leave (`[N, (H / k -
    2r) k, (W / k - 2r) k, 3]`): the quality ceiling of the latents, without the field."""
    k = model.head_geometry()[1]
    code = jax.jit(lambda p, x: model.apply_head(p, {"features": model.encode(p, x)})["rgb"])
    decoded = np.concatenate([np.asarray(jax.device_get(code(model_params, jnp.asarray(
        whole_blocks(images[i:i + 1, ..., :3], k))))) for i in range(len(images))])
    top = (images.shape[1] // k * k - decoded.shape[1]) // 2
    left = (images.shape[2] // k * k - decoded.shape[2]) // 2
    truth = whole_blocks(images[..., :3], k)[:, top:top + decoded.shape[1],
                                             left:left + decoded.shape[2]]
    return decoded, np.asarray(truth)
