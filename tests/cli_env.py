"""Environment for the tests and their subprocesses: CPU JAX and one compilation cache.

The tests compile many small programs, most of them more than once (each test builds its
model afresh, each CLI test starts a process): JAX's persistent cache lets the later ones
skip the compile. (XLA's lowest backend optimisation level would make compiles a quarter
cheaper, but the bird test's losses are NaN under it, so the tests compile as users do.)
"""

import os
import tempfile

CACHE_DIR = os.path.join(tempfile.gettempdir(), f"jaxnerf360-test-jax-cache-{os.getuid()}")


def jax_env(**extra) -> dict:
    """The variables that set up JAX for the tests, plus `extra`."""
    return {
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": CACHE_DIR,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
        **extra,
    }


def cli_env(**extra) -> dict:
    """os.environ plus the tests' JAX set-up, plus `extra`."""
    return {**os.environ, **jax_env(**extra)}
