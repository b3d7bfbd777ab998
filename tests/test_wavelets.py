"""JAX multi-level 2D DWTs against PyWavelets (periodization), level maps, gradients, errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnerf360.errors import UserError
from jaxnerf360.geometry import wavelets

pywt = pytest.importorskip("pywt")

WAVELETS = ("haar", "db2", "bior4.4")
ATOL = 2e-5  # float32 transforms of N(0, 1) data


def _pywt_packed(x, name, levels):
    """PyWavelets' packed multi-level coefficients and their slices."""
    with warnings.catch_warnings():
        # pywt warns when the filters are longer than the coarsest band; periodization is
        # still exact there, which is what these tests check.
        warnings.simplefilter("ignore")
        coeffs = pywt.wavedec2(x, name, mode="periodization", level=levels, axes=(-2, -1))
    return pywt.coeffs_to_array(coeffs, axes=(-2, -1))


def _pywt_waverec2(packed, slices, name):
    """PyWavelets' inverse of a packed coefficient array."""
    coeffs = pywt.array_to_coeffs(np.asarray(packed, np.float64), slices,
                                  output_format="wavedec2")
    return pywt.waverec2(coeffs, name, mode="periodization", axes=(-2, -1))


@pytest.mark.parametrize("name", WAVELETS)
@pytest.mark.parametrize("shape", [(8, 12), (2, 3, 4, 6), (2, 10)])
def test_dwt2_and_idwt2_match_pywt(name, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    ref_a, ref_d = pywt.dwt2(x, name, mode="periodization", axes=(-2, -1))
    ll, details = wavelets.dwt2(jnp.asarray(x, jnp.float32), name)
    assert ll.dtype == jnp.float32 and ll.shape == ref_a.shape
    np.testing.assert_allclose(ll, ref_a, atol=ATOL)
    for got, ref in zip(details, ref_d, strict=True):
        np.testing.assert_allclose(got, ref, atol=ATOL)
    bands = [rng.normal(size=ref_a.shape) for _ in range(4)]
    ref = pywt.idwt2((bands[0], tuple(bands[1:])), name, mode="periodization", axes=(-2, -1))
    got = wavelets.idwt2(bands[0], tuple(bands[1:]), name)
    np.testing.assert_allclose(got, ref, atol=ATOL)


def test_dwt2_band_meaning():
    # Rows that differ only along axis -2 excite cH only; columns along axis -1 excite cV only.
    r = np.arange(8.0)[:, None] * np.ones((1, 6))
    _, (ch, cv, cd) = wavelets.dwt2(r, "haar")
    assert np.abs(ch).max() > 0.5 and np.abs(cv).max() < 1e-6 and np.abs(cd).max() < 1e-6
    _, (ch, cv, cd) = wavelets.dwt2(r.T, "haar")
    assert np.abs(cv).max() > 0.5 and np.abs(ch).max() < 1e-6 and np.abs(cd).max() < 1e-6


@pytest.mark.parametrize("name", WAVELETS)
def test_matrices_are_perfect_reconstruction_filter_banks(name):
    for n in (2, 4, 6, 16):
        a = wavelets.analysis_matrix(name, n)
        s = wavelets.synthesis_matrix(name, n)
        np.testing.assert_allclose(s @ a, np.eye(n), atol=1e-9)
        if name != "bior4.4":  # orthogonal wavelets: the inverse is the transpose
            np.testing.assert_allclose(s, a.T, atol=1e-12)


@pytest.mark.parametrize("name", WAVELETS)
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("hw", [(48, 80), (64, 32)])
def test_wavedec2_packed_and_waverec2_match_pywt(name, levels, hw):
    rng = np.random.default_rng(levels)
    x = rng.normal(size=(3,) + hw)  # batched planes [R, H, W]
    ref, slices = _pywt_packed(x, name, levels)
    got = wavelets.wavedec2(jnp.asarray(x, jnp.float32), name, levels)
    assert got.shape == x.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, atol=ATOL)
    coeffs = rng.normal(size=x.shape)
    np.testing.assert_allclose(wavelets.waverec2(jnp.asarray(coeffs, jnp.float32), name, levels),
                               _pywt_waverec2(coeffs, slices, name), atol=ATOL)


@pytest.mark.parametrize("name", WAVELETS + ("sym3",))
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_waverec2_inverts_wavedec2(name, levels):
    rng = np.random.default_rng(7)
    for hw in ((16, 16), (32, 48)):
        x = jnp.asarray(rng.normal(size=(2,) + hw), jnp.float32)
        back = wavelets.waverec2(wavelets.wavedec2(x, name, levels), name, levels)
        np.testing.assert_allclose(back, x, atol=ATOL)


def test_transforms_jit_like_eager():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 32, 16)), jnp.float32)
    dec = jax.jit(wavelets.wavedec2, static_argnums=(1, 2))
    rec = jax.jit(wavelets.waverec2, static_argnums=(1, 2))
    c = dec(x, "bior4.4", 3)
    np.testing.assert_allclose(c, wavelets.wavedec2(x, "bior4.4", 3), atol=1e-6)
    np.testing.assert_allclose(rec(c, "bior4.4", 3), x, atol=ATOL)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("hw", [(48, 80), (64, 32)])
def test_level_of_matches_pywt_slices_and_band_sizes(levels, hw):
    level = wavelets.level_of(hw, levels)
    assert level.shape == hw and level.dtype == np.int32
    _, slices = _pywt_packed(np.zeros(hw), "haar", levels)
    truth = np.full(hw, -1)
    truth[slices[0]] = 0
    for i, bands in enumerate(slices[1:], start=1):  # coarse to fine, as in pywt
        for key in ("da", "ad", "dd"):
            truth[bands[key]] = i
    np.testing.assert_array_equal(level, truth)
    h, w = hw
    assert np.sum(level == 0) == (h >> levels) * (w >> levels)
    for i in range(1, levels + 1):
        sh, sw = h >> (levels - i + 1), w >> (levels - i + 1)
        assert np.sum(level == i) == 3 * sh * sw
    assert np.all(level[: h >> levels, : w >> levels] == 0)


def _pywt_synthesis_matrix(hw, name, levels):
    """`[H*W, H*W]` matrix of pywt's multi-level inverse, one packed unit coefficient per column."""
    _, slices = _pywt_packed(np.zeros(hw), name, levels)
    n = hw[0] * hw[1]
    cols = [_pywt_waverec2(e.reshape(hw), slices, name).ravel() for e in np.eye(n)]
    return np.stack(cols, 1)


@pytest.mark.parametrize("name,levels", [("bior4.4", 2), ("haar", 3), ("db2", 1)])
def test_gradients_through_waverec2_are_the_transposed_transform(name, levels):
    hw = (8, 16)
    m = _pywt_synthesis_matrix(hw, name, levels)
    rng = np.random.default_rng(1)
    c = jnp.asarray(rng.normal(size=hw), jnp.float32)
    ct = rng.normal(size=hw)
    out, vjp = jax.vjp(lambda c: wavelets.waverec2(c, name, levels), c)
    np.testing.assert_allclose(out.ravel(), m @ np.asarray(c, np.float64).ravel(), atol=ATOL)
    (g,) = vjp(jnp.asarray(ct, jnp.float32))
    np.testing.assert_allclose(g.ravel(), m.T @ ct.ravel(), atol=ATOL)
    # A nonlinear loss under jit: d/dc sum(sin(M c)) = M^T cos(M c).
    grad = jax.jit(jax.grad(lambda c: jnp.sum(jnp.sin(wavelets.waverec2(c, name, levels)))))(c)
    ref = m.T @ np.cos(m @ np.asarray(c, np.float64).ravel())
    np.testing.assert_allclose(grad.ravel(), ref, atol=1e-4)


def test_round_size():
    assert wavelets.round_size(24, 2) == 24
    assert wavelets.round_size(25, 2) == 24
    assert wavelets.round_size(26, 2) == 28  # ties round up
    assert wavelets.round_size(3, 4) == 16
    assert wavelets.round_size(300, 4) == 304
    for n in range(1, 70):
        r = wavelets.round_size(n, 3)
        assert r % 8 == 0 and r >= 8 and (abs(r - n) <= 4 or (n < 8 and r == 8))
        wavelets.check_size(r, 3, "n")


def test_errors_are_user_errors_naming_the_value():
    with pytest.raises(UserError, match=r"plane width=50 .*2\*\*2=4"):
        wavelets.check_size(50, 2, "plane width")
    with pytest.raises(UserError, match="waverec2 width W=20 "):
        wavelets.waverec2(jnp.zeros((16, 20)), "haar", 3)
    with pytest.raises(UserError, match="wavedec2 height H=12 "):
        wavelets.wavedec2(jnp.zeros((12, 16)), "haar", 4)
    with pytest.raises(UserError, match="dwt2 height H=7 "):
        wavelets.dwt2(jnp.zeros((7, 8)), "haar")
    with pytest.raises(UserError, match="'nope'"):
        wavelets.wavedec2(jnp.zeros((8, 8)), "nope", 1)
    with pytest.raises(UserError, match="'morl'"):  # continuous, not a discrete wavelet
        wavelets.filter_bank("morl")
    with pytest.raises(UserError, match="levels=0"):
        wavelets.level_of((8, 8), 0)
    with pytest.raises(UserError, match="share one shape"):
        wavelets.idwt2(jnp.zeros((4, 4)), (jnp.zeros((4, 4)),) * 2 + (jnp.zeros((4, 2)),), "haar")
