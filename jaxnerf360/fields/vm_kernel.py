"""The VM product (bilinear plane x linear line) as a compiled CPU kernel, with its gradient.

XLA:CPU runs `vm.interp_plane`'s gathers and their scatter-add gradients at a few GB/s, and in
a TensoRF step they cost as much as the colour MLP's matrix products. `kernels/vm_cpu.cc`
does the same maths in one pass per point through the XLA FFI. It is compiled with the
machine's C++ compiler (`$CXX`, else g++ or c++) on first use into a cache
(`$JAXNERF360_KERNEL_CACHE`, else `~/.cache/jaxnerf360`); without a compiler, or off a single
CPU device, `vm.vm_components` keeps the pure-JAX path, which gives the same numbers.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp
from absl import logging
from jax.custom_derivatives import SymbolicZero

_SOURCE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "kernels", "vm_cpu.cc")
_FORWARD, _BACKWARD = "jaxnerf360_vm_forward", "jaxnerf360_vm_backward"
_LOCK = threading.Lock()
_STATE = {}  # "loaded": bool once tried


def _cache_dir() -> str:
    return os.environ.get("JAXNERF360_KERNEL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxnerf360")


def _build() -> str:
    """The path of the compiled kernel library (compiled now if not cached)."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++)")
    with open(_SOURCE, "rb") as f:
        source = f.read()
    include = jax.ffi.include_dir()
    key = hashlib.sha256(source + jax.__version__.encode() + include.encode()).hexdigest()[:16]
    folder = _cache_dir()
    path = os.path.join(folder, f"vm_cpu-{key}.so")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        # Portable flags (no -march=native): a cache folder may be shared across a cluster.
        cmd = [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{include}",
               _SOURCE, "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, path)  # atomic: other processes see the whole library or none
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def loaded() -> bool:
    """Whether the kernel library is compiled, loaded and registered (tried once)."""
    with _LOCK:
        if "loaded" not in _STATE:
            try:
                library = ctypes.cdll.LoadLibrary(_build())
                jax.ffi.register_ffi_target(
                    _FORWARD, jax.ffi.pycapsule(library.JaxNerf360VmForward), platform="cpu")
                jax.ffi.register_ffi_target(
                    _BACKWARD, jax.ffi.pycapsule(library.JaxNerf360VmBackward), platform="cpu")
                _STATE["loaded"] = True
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
                logging.warning("the CPU kernel of the VM field is off (%s); using XLA's "
                                "gathers, which are slower", e)
                _STATE["loaded"] = False
        return _STATE["loaded"]


def usable(*arrays) -> bool:
    """Whether the kernel serves these float32 arrays here: one CPU device, library loaded."""
    return (jax.default_backend() == "cpu" and jax.device_count() == 1
            and all(a.dtype == jnp.float32 for a in arrays) and loaded())


def mode_product(plane, line, u, v, w):
    """`interp_plane(plane, u, v) * interp_line(line, w)`: `[P, R]` from `plane [R, Na, Nb]`,
    `line [R, Nc]` and grid coordinates `u, v, w [P]` (as `vm.grid_coords` gives them)."""
    return _product(jnp.moveaxis(plane, 0, -1), line.T, jnp.stack([u, v, w], -1))


@jax.custom_vjp
def _product(plane, line, coords):
    """`[P, R]` from a channels-last `plane [Na, Nb, R]`, `line [Nc, R]`, `coords [P, 3]`."""
    out = jax.ShapeDtypeStruct((coords.shape[0], plane.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call(_FORWARD, out, vmap_method="sequential")(plane, line, coords)


def _product_fwd(plane, line, coords):
    # Only the perturbed inputs' gradients are computed: the coordinates' take a third of
    # the backward, and they are wanted only when rays move (pose optimisation).
    value = _product(plane.value, line.value, coords.value)
    return value, (plane.value, line.value, coords.value, coords.perturbed)


def _product_bwd(res, ct):
    plane, line, coords, with_coords = res
    if isinstance(ct, SymbolicZero):
        ct = jnp.zeros((coords.shape[0], plane.shape[-1]), jnp.float32)
    shapes = (jax.ShapeDtypeStruct(plane.shape, jnp.float32),
              jax.ShapeDtypeStruct(line.shape, jnp.float32),
              jax.ShapeDtypeStruct(coords.shape, jnp.float32))
    g_plane, g_line, g_coords = jax.ffi.ffi_call(_BACKWARD, shapes, vmap_method="sequential")(
        plane, line, coords, ct, with_coords=bool(with_coords))
    return g_plane, g_line, (g_coords if with_coords else None)


_product.defvjp(_product_fwd, _product_bwd, symbolic_zeros=True)
