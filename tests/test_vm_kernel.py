"""The VM field's compiled CPU kernel against the pure-JAX interpolation and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.fields import vm, vm_kernel

needs_kernel = pytest.mark.skipif(not vm_kernel.loaded(), reason="no C++ compiler here")


def _reference(plane, line, u, v, w):
    return vm.interp_plane(plane, u, v) * vm.interp_line(line, w)


def _inputs(points: int, seed: int = 0, shape=(5, 7, 9), line_len: int = 6):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    r, na, nb = shape
    plane = jax.random.normal(keys[0], shape)
    line = jax.random.normal(keys[1], (r, line_len))
    u = jax.random.uniform(keys[2], (points,), maxval=na - 1)
    v = jax.random.uniform(keys[3], (points,), maxval=nb - 1)
    w = jax.random.uniform(keys[4], (points,), maxval=line_len - 1)
    # The grid's edges and corners, where the last cell's index is clamped.
    edges = jnp.array([[0.0, 0.0, 0.0], [na - 1, nb - 1, line_len - 1], [na - 1, 0.0, 2.0],
                       [1.0, nb - 1, 0.0]])
    return (plane, line, jnp.concatenate([u, edges[:, 0]]), jnp.concatenate([v, edges[:, 1]]),
            jnp.concatenate([w, edges[:, 2]]))


@needs_kernel
@pytest.mark.parametrize("points", [37, 6000])  # one chunk, and several over the thread pool
def test_kernel_matches_the_gathers_and_their_gradients(points):
    args = _inputs(points)
    weights = jax.random.normal(jax.random.PRNGKey(9), (points + 4, args[0].shape[0]))
    np.testing.assert_allclose(jax.jit(vm_kernel.mode_product)(*args), _reference(*args),
                               rtol=1e-5, atol=1e-5)
    for argnums in ((0, 1), (0, 1, 2, 3, 4)):  # the coordinates' gradient only when wanted
        grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * weights), argnums))(*args)
                 for f in (vm_kernel.mode_product, _reference)]
        for ours, theirs in zip(*grads, strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@needs_kernel
def test_kernel_coordinate_gradient_matches_finite_differences():
    plane, line, u, v, w = _inputs(20, seed=3)
    u, v, w = u[:20], v[:20], w[:20]  # inside cells: the interpolant is smooth there
    weights = jax.random.normal(jax.random.PRNGKey(4), (20, plane.shape[0]))

    def total(u, v, w):
        return jnp.sum(vm_kernel.mode_product(plane, line, u, v, w) * weights)

    grads = jax.grad(total, (0, 1, 2))(u, v, w)
    eps = 1e-3
    for k, grad in enumerate(grads):
        for i in range(0, 20, 5):
            up = [u, v, w]
            down = [u, v, w]
            up[k] = up[k].at[i].add(eps)
            down[k] = down[k].at[i].add(-eps)
            numeric = (total(*up) - total(*down)) / (2 * eps)
            np.testing.assert_allclose(grad[i], numeric, rtol=2e-2, atol=2e-2)


@needs_kernel
def test_vm_components_give_the_same_numbers_with_and_without_the_kernel():
    keys = jax.random.split(jax.random.PRNGKey(1), 7)
    res = (6, 8, 5)  # x, y, z grid points
    planes = [jax.random.normal(keys[m], (3, res[a], res[b]))
              for m, ((a, b), _) in enumerate(vm.MODES)]
    lines = [jax.random.normal(keys[3 + m], (3, res[c])) for m, (_, c) in enumerate(vm.MODES)]
    points = jax.random.uniform(keys[6], (50, 3), minval=-1.2, maxval=1.2)  # some outside
    lo, hi = jnp.full(3, -1.0), jnp.full(3, 1.0)
    for with_kernel, without in zip(vm.vm_components(planes, lines, points, lo, hi, True),
                                    vm.vm_components(planes, lines, points, lo, hi, False),
                                    strict=True):
        np.testing.assert_allclose(with_kernel, without, rtol=1e-5, atol=1e-5)


def test_without_a_compiler_the_gathers_serve(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(vm_kernel, "_STATE", {})
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("JAXNERF360_KERNEL_CACHE", str(tmp_path / "cache"))
    assert not vm_kernel.usable(jnp.zeros(3))
    assert "CPU kernel of the VM field is off" in caplog.text
    plane, line, u, v, w = _inputs(10)
    points = jnp.stack([u, v, w], -1) / 4.0 - 1.0
    out = vm.vm_components([plane] * 3, [line] * 3, points, jnp.full(3, -1.0),
                           jnp.full(3, 1.0), kernel=True)
    assert all(np.isfinite(o).all() for o in out)


@needs_kernel
def test_kernel_reads_inside_the_plane_for_any_coordinate():
    plane, line, _, _, _ = _inputs(4)
    wild = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 1e30, -1e30, 2.0])
    # As the field calls it: world positions through grid_coords, which clips but keeps NaN.
    u, v, w = (vm.grid_coords(x, -1.0, 1.0, n) for x, n in
               ((wild, plane.shape[1]), (wild[::-1], plane.shape[2]), (wild * 0 + 0.5, 6)))
    ours = jax.jit(vm_kernel.mode_product)(plane, line, u, v, w)
    theirs = _reference(plane, line, u, v, w)
    assert np.isnan(ours[0]).all() and np.isnan(ours[-1]).all()  # NaN in, NaN out
    np.testing.assert_allclose(ours[1:-1], theirs[1:-1], rtol=1e-5, atol=1e-5)
