"""Parameters and FLOPs per output pixel of the latent decoders (and encoders), per size and k.

    python scripts/latent_cost.py [--latent_dim=8]

FLOPs are XLA's cost analysis of the compiled decoder on a tile of 16 x 16 output latents
(tests/test_latent.py checks them against a hand count of the convolutions).
"""

import json

import jax
import jax.numpy as jnp
from absl import app, flags

from jaxnerf360.latent import (
    SIZES,
    LatentDecoder,
    LatentEncoder,
    flops_per_output_pixel,
)
from jaxnerf360.parts import parameter_count

flags.DEFINE_integer("latent_dim", 8, "Latent channels.")
FLAGS = flags.FLAGS


def main(argv):
    """Prints one JSON line per (size, factor)."""
    del argv
    for size in SIZES:
        for factor in (8, 4):
            dec = LatentDecoder(latent_dim=FLAGS.latent_dim, factor=factor, size=size)
            side = 2 * dec.receptive_radius() + 16
            params = dec.init(jax.random.PRNGKey(0),
                              {"features": jnp.zeros((1, side, side, FLAGS.latent_dim))})
            enc = LatentEncoder(latent_dim=FLAGS.latent_dim, factor=factor, size=size)
            enc_params = enc.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
            print(json.dumps({
                "size": size, "factor": factor, "latent_dim": FLAGS.latent_dim,
                "receptive_radius": dec.receptive_radius(),
                "decoder_params": parameter_count(params),
                "encoder_params": parameter_count(enc_params),
                "decoder_flops_per_output_pixel": round(flops_per_output_pixel(dec, params,
                                                                               side)),
            }), flush=True)


if __name__ == "__main__":
    app.run(main)
