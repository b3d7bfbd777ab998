"""jaxnerf360: mip-NeRF 360 and friends in JAX/Flax."""

__version__ = "0.1.0"
