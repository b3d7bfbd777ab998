"""Where training patches are drawn: uniformly, or partly in proportion to image detail.

A patch batch holds few independent samples (neighbouring pixels carry nearly the same
gradient), and on a scene with a flat background (lego is mostly white) many uniform patches
hold no object at all. `PatchSampling.detail_fraction = f` draws a fraction f of the patches
with probability proportional to the image detail inside the patch (the summed absolute
colour differences between neighbouring pixels), the rest uniformly, so flat regions are
still seen. It changes only where patches fall, never their contents, and at f = 0 the
batches are exactly the uniform ones.
"""

import dataclasses

import gin
import numpy as np

from jaxnerf360.errors import UserError


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PatchSampling:
    """How patch batches choose their windows."""

    detail_fraction: float = 0.0  # share of patches drawn in proportion to the detail in them

    def __post_init__(self):
        f = self.detail_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 <= f <= 1:
            raise UserError(f"PatchSampling.detail_fraction={f!r} must be a number in [0, 1]")


def detail_map(images: np.ndarray, extent: int) -> np.ndarray:
    """The detail of the `extent x extent` window centred on each pixel, `[N, H, W]`.

    `images [N, H, W, C]`; a pixel's detail is `sum_c |I(x+1) - I(x)| + |I(y+1) - I(y)|`
    (0 past the last column and row), summed over the window (cut off at the borders).
    """
    n, h, w = images.shape[:3]
    out = np.empty((n, h, w), np.float64)
    lo, hi = extent // 2, extent - extent // 2
    for i in range(n):  # one image at a time keeps the float64 work small
        img = np.asarray(images[i, ..., :3], np.float64)
        grad = np.zeros((h, w))
        grad[:, :-1] += np.abs(np.diff(img, axis=1)).sum(-1)
        grad[:-1, :] += np.abs(np.diff(img, axis=0)).sum(-1)
        table = np.zeros((h + 1, w + 1))
        table[1:, 1:] = grad.cumsum(0).cumsum(1)
        r0 = np.clip(np.arange(h) - lo, 0, h)
        r1 = np.clip(np.arange(h) + hi, 0, h)
        c0 = np.clip(np.arange(w) - lo, 0, w)
        c1 = np.clip(np.arange(w) + hi, 0, w)
        out[i] = (table[r1][:, c1] - table[r0][:, c1] - table[r1][:, c0] + table[r0][:, c0])
    return out


class DetailSampler:
    """Draws patch corners `(image, top, left)` with probability proportional to detail."""

    def __init__(self, images: np.ndarray, extent: int):
        self.extent = extent
        self.shape = images.shape[:3]
        n, h, w = self.shape
        detail = detail_map(images, extent)
        # Only centres of windows that fit: no window is moved (and weighted twice) at a border.
        lo = extent // 2
        valid = np.zeros((h, w), bool)
        valid[lo:h - extent + lo + 1, lo:w - extent + lo + 1] = True
        self._detail = (detail * valid).reshape(-1)
        self.restrict(None)

    def restrict(self, mask) -> None:
        """Draws only windows centred on pixels where `mask [N, H, W]` holds (None: all)."""
        weights = self._detail if mask is None else self._detail * np.asarray(mask).reshape(-1)
        total = weights.sum()
        self._cdf = weights.cumsum() if total > 0 else None

    @property
    def usable(self) -> bool:
        """False when no allowed window has any detail (then draw uniformly)."""
        return self._cdf is not None

    def draw(self, rng: np.random.Generator, count: int):
        """`count` corners `(image, top, left)`, each `[count]` int."""
        flat = np.searchsorted(self._cdf, rng.random(count) * self._cdf[-1], side="right")
        flat = np.minimum(flat, self._cdf.size - 1)
        _, h, w = self.shape
        img, pixel = np.divmod(flat, h * w)
        row, col = np.divmod(pixel, w)
        return img, row - self.extent // 2, col - self.extent // 2
