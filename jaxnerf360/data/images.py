"""Image reading, area downsampling and alpha compositing (host-side numpy)."""

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from absl import logging
from PIL import Image, UnidentifiedImageError

from jaxnerf360.errors import UserError, check

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# (height, width, factor) combinations already reported as cropped, so a dataset of
# hundreds of same-sized images logs the crop once rather than once per image.
_reported_crops: set = set()


def list_images(folder: os.PathLike) -> list:
    """Sorted file names of the PNG/JPEG images directly inside `folder`."""
    names = [
        name
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    ]
    return sorted(names)


def parallel_map(fn: Callable, items: Iterable) -> list:
    """[fn(x) for x in items] on a few threads (PIL decoding releases the GIL); errors propagate."""
    items = list(items)
    workers = min(8, os.cpu_count() or 1, len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def load_image(path: os.PathLike) -> np.ndarray:
    """Reads a PNG/JPEG as float32 `[H, W, C]` in [0, 1]; C is 4 with alpha, else 3."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: image file not found; check the data directory and the split")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            has_alpha = mode in ("RGBA", "LA", "PA") or (
                mode == "P" and "transparency" in image.info
            )
            if mode in ("I", "I;16", "I;16B", "I;16L"):
                # 16-bit greyscale: PIL keeps it as integers, scale by the 16-bit range.
                data = np.asarray(image, dtype=np.float32) / 65535.0
                data = np.repeat(data[..., None], 3, axis=-1)
                return np.clip(data, 0.0, 1.0)
            image = image.convert("RGBA" if has_alpha else "RGB")
            data = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(
            f"{path}: cannot read image ({type(e).__name__}); the file is corrupt or not a "
            "PNG/JPEG, replace or remove it"
        ) from None
    return data.astype(np.float32) / 255.0


def _check_factor(factor) -> int:
    """Returns factor as an int, or raises UserError if it is not a positive integer."""
    ok = isinstance(factor, int | np.integer) and not isinstance(factor, bool) and factor >= 1
    check(ok, f"factor={factor!r} must be a positive integer (1, 2, 4, 8, ...); fix Config.factor")
    return int(factor)


def downsample(image: np.ndarray, factor: int, name: str = "image") -> np.ndarray:
    """Area-downsamples `[H, W, ...]` by an integer factor (mean over factor x factor blocks).

    When H or W is not divisible by the factor, the bottom/right remainder is cropped
    (so the top-left pixel grid, and hence cx/cy / factor, stays exact) and logged once.
    `name` (e.g. the file) prefixes error messages.
    """
    factor = _check_factor(factor)
    if factor == 1:
        return image
    height, width = image.shape[:2]
    check(
        height >= factor and width >= factor,
        f"{name}: image of {width}x{height} is smaller than factor={factor}; lower Config.factor",
    )
    new_h, new_w = height // factor, width // factor
    if (new_h * factor, new_w * factor) != (height, width):
        key = (height, width, factor)
        if key not in _reported_crops:
            _reported_crops.add(key)
            logging.warning(
                "Images of %dx%d are not divisible by factor %d: cropping the bottom %d rows "
                "and right %d columns before downsampling.",
                width,
                height,
                factor,
                height - new_h * factor,
                width - new_w * factor,
            )
        image = image[: new_h * factor, : new_w * factor]
    # Summing the factor**2 strided sub-grids is much faster than reducing a 5-D reshape.
    total = np.zeros((new_h, new_w) + image.shape[2:], np.float64)
    for dy in range(factor):
        for dx in range(factor):
            total += image[dy::factor, dx::factor]
    means = total / (factor * factor)
    out_dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32
    return means.astype(out_dtype)


def composite(rgba: np.ndarray, background: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Composites straight-alpha `[..., 4]` onto a constant background -> `[..., 3]`."""
    background = np.asarray(background, dtype=np.float32)
    check(
        background.shape == (3,),
        f"background={tuple(background.ravel())} must be 3 numbers (r, g, b) in [0, 1]",
    )
    if rgba.shape[-1] == 3:
        return rgba
    check(rgba.shape[-1] == 4, f"expected an RGB or RGBA image, got {rgba.shape[-1]} channels")
    alpha = rgba[..., 3:4]
    return (rgba[..., :3] * alpha + background * (1.0 - alpha)).astype(np.float32)
