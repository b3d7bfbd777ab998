"""Environment for the tests' subprocesses: CPU JAX and a shared compilation cache.

The CLI tests start many short processes that compile the same small programs; JAX's
persistent cache lets the later ones skip most of the compile time.
"""

import os
import tempfile

CACHE_DIR = os.path.join(tempfile.gettempdir(), f"jaxnerf360-test-jax-cache-{os.getuid()}")


def cli_env(**extra) -> dict:
    """os.environ plus CPU-only JAX with a persistent compilation cache, plus `extra`."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
        **extra,
    }
