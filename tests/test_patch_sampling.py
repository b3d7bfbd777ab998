"""Detail-weighted patch sampling: the detail map by brute force, the draw frequencies, and
that f = 0 leaves the uniform batches untouched."""

import numpy as np
import pytest
from scipy import stats

from jaxnerf360.data.batching import PatchBatcher
from jaxnerf360.data.patch_sampling import DetailSampler, PatchSampling, detail_map
from jaxnerf360.data.scene import BOUNDED, Scene
from jaxnerf360.errors import UserError


def _flat_scene_with_a_spot(n=2, h=12, w=14):
    """White images, except a checkered 2 x 2 spot at (row 7, col 9) of image 1."""
    c2w = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    scene = Scene(images=np.ones((n, h, w, 3), np.float32), camtoworlds=c2w,
                  intrinsics=np.tile([8.0, 8.0, w / 2, h / 2], (n, 1)).astype(np.float32),
                  distortion=np.zeros((n, 4), np.float32), near=2.0, far=6.0, kind=BOUNDED,
                  names=[f"{i}.png" for i in range(n)])
    scene.images[1, 7:9, 9:11] = [[[0, 0, 0], [1, 0, 0]], [[0, 1, 0], [0, 0, 1]]]
    return scene


def test_detail_map_matches_a_brute_force_window_sum():
    rng = np.random.default_rng(0)
    images = rng.random((2, 6, 7, 3))
    for extent in (1, 3, 4):
        got = detail_map(images, extent)
        for i in range(2):
            grad = np.zeros((6, 7))
            for r in range(6):
                for c in range(7):
                    if c + 1 < 7:
                        grad[r, c] += np.abs(images[i, r, c + 1] - images[i, r, c]).sum()
                    if r + 1 < 6:
                        grad[r, c] += np.abs(images[i, r + 1, c] - images[i, r, c]).sum()
            for r in range(6):
                for c in range(7):
                    r0, c0 = max(r - extent // 2, 0), max(c - extent // 2, 0)
                    want = grad[r0:r - extent // 2 + extent, c0:c - extent // 2 + extent].sum()
                    assert got[i, r, c] == pytest.approx(want, abs=1e-9), (extent, i, r, c)


def test_detail_draws_follow_the_detail_of_each_window():
    scene = _flat_scene_with_a_spot()
    extent = 4
    sampler = DetailSampler(scene.images, extent)
    img, top, left = sampler.draw(np.random.default_rng(1), 20000)
    assert np.all(img == 1)  # image 0 is flat: never drawn
    # Every drawn window holds part of the spot, with frequencies proportional to its detail.
    detail = detail_map(scene.images, extent)
    corners = [(t, left_) for t in range(12 - extent + 1) for left_ in range(14 - extent + 1)]
    weights = np.array([detail[1, t + extent // 2, c + extent // 2] for t, c in corners])
    counts = np.zeros(len(corners))
    index = {corner: k for k, corner in enumerate(corners)}
    for t, c in zip(top, left, strict=True):
        counts[index[(t, c)]] += 1
    assert counts[weights == 0].sum() == 0
    seen = weights > 0
    _, p = stats.chisquare(counts[seen], weights[seen] / weights[seen].sum() * counts.sum())
    assert p > 1e-3, p


def test_detail_fraction_mixes_with_uniform_draws():
    scene = _flat_scene_with_a_spot()
    batcher = PatchBatcher(scene, 400, 4, seed=3, sampling=PatchSampling(detail_fraction=0.5))
    batch = next(batcher)
    has_spot = (batch.rgb.min(axis=(1, 2, 3)) < 1)
    # Detail windows always hold the spot; uniform ones as often as the windows that do.
    uniform_rate = np.mean([
        np.any(scene.images[i, t:t + 4, c:c + 4] < 1)
        for i in range(2) for t in range(9) for c in range(11)])
    expected = 0.5 + 0.5 * uniform_rate
    assert abs(has_spot.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / 400)


def test_zero_fraction_is_the_uniform_batcher_and_keep_only_still_holds():
    scene = _flat_scene_with_a_spot()
    plain = next(PatchBatcher(scene, 8, 3, seed=4))
    zero = next(PatchBatcher(scene, 8, 3, seed=4, sampling=PatchSampling(0.0)))
    np.testing.assert_array_equal(plain.rgb, zero.rgb)
    np.testing.assert_array_equal(plain.rays.origins, zero.rays.origins)
    batcher = PatchBatcher(scene, 64, 3, seed=0, sampling=PatchSampling(1.0))
    mask = np.zeros((2, 12, 14), bool)
    mask[1, 8, 9] = True  # one centre, on the spot
    batcher.keep_only(mask)
    np.testing.assert_allclose(next(batcher).rgb[:, 1, 1], np.tile(scene.images[1, 8, 9],
                                                                   (64, 1)))
    mask[:] = False
    mask[0, 5, 5] = True  # only a flat window is allowed: detail draws fall back to uniform
    batcher.keep_only(mask)
    np.testing.assert_allclose(next(batcher).rgb, 1.0)


def test_bad_detail_fraction():
    with pytest.raises(UserError, match="detail_fraction"):
        PatchSampling(detail_fraction=1.5)
    with pytest.raises(UserError, match="detail_fraction"):
        PatchSampling(detail_fraction="half")
