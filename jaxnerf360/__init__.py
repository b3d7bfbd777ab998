"""jaxnerf360: mip-NeRF 360 and friends in JAX/Flax."""

from jaxnerf360 import host_memory as _host_memory

__version__ = "0.1.0"

if _host_memory.started_as_command():
    # Before the command imports JAX: glibc reads its tunables only at start (host_memory).
    _host_memory.restart_with_huge_pages()
