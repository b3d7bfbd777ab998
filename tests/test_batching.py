"""Random ray batches: shapes, determinism, per-process streams, colours and coverage."""

import time

import numpy as np
import pytest
from scipy import stats

from jaxnerf360.data.batching import RayBatcher, check_batch_divisible
from jaxnerf360.data.scene import BOUNDED, Scene
from jaxnerf360.errors import UserError

N, H, W = 3, 5, 7
FOCAL, CX, CY = 6.0, 3.5, 2.5


def make_scene(alphas=False, n=N, h=H, w=W):
    """A scene whose pixel colours encode (image, row, col), with distinct cameras."""
    idx, rows, cols = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    images = np.stack([idx / n, rows / h, cols / w], axis=-1).astype(np.float32)
    angles = np.linspace(0, 1, n)
    c2w = np.zeros((n, 3, 4), np.float32)
    for i, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        c2w[i, :, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        c2w[i, :, 3] = [i, 2 * i, -i]
    return Scene(
        images=images,
        camtoworlds=c2w,
        intrinsics=np.tile([FOCAL, FOCAL, CX, CY], (n, 1)).astype(np.float32),
        distortion=np.zeros((n, 4), np.float32),
        near=2.0,
        far=6.0,
        kind=BOUNDED,
        names=[f"{i}.png" for i in range(n)],
        alphas=(images[..., 1] if alphas else None),
    )


def test_shapes_and_dtypes():
    batcher = RayBatcher(make_scene(), 64)
    batch = next(batcher)
    rays = batch.rays
    assert batch.rgb.shape == (64, 3) and batch.rgb.dtype == np.float32
    for name in ("origins", "directions", "viewdirs"):
        assert getattr(rays, name).shape == (64, 3)
        assert getattr(rays, name).dtype == np.float32
    for name in ("radii", "near", "far"):
        assert getattr(rays, name).shape == (64, 1)
        assert getattr(rays, name).dtype == np.float32
    assert rays.cam_idx.shape == (64, 1) and rays.cam_idx.dtype == np.int32
    np.testing.assert_allclose(rays.near, 2.0)
    np.testing.assert_allclose(rays.far, 6.0)
    assert iter(batcher) is batcher


def test_rgb_matches_pixel_of_ray():
    scene = make_scene()
    batch = next(RayBatcher(scene, 256, seed=3))
    cam = batch.rays.cam_idx[:, 0]
    c2w = scene.camtoworlds[cam].astype(np.float64)
    np.testing.assert_allclose(batch.rays.origins, c2w[:, :, 3], atol=1e-6)
    # Rotate the direction into the camera and project it with the pinhole model.
    d_cam = np.einsum("nji,nj->ni", c2w[:, :, :3], batch.rays.directions)
    col = FOCAL * d_cam[:, 0] / -d_cam[:, 2] + CX
    row = FOCAL * -d_cam[:, 1] / -d_cam[:, 2] + CY
    # Rays go through pixel centres.
    np.testing.assert_allclose(col % 1, 0.5, atol=1e-4)
    np.testing.assert_allclose(row % 1, 0.5, atol=1e-4)
    want = scene.images[cam, np.floor(row).astype(int), np.floor(col).astype(int)]
    np.testing.assert_array_equal(batch.rgb, want)


def test_alpha_follows_the_same_pixels():
    scene = make_scene(alphas=True)
    batcher = RayBatcher(scene, 128, seed=1)
    batch, alpha = batcher.next_with_alpha()
    assert alpha.shape == (128, 1) and alpha.dtype == np.float32
    # The test scene's alpha equals its green channel.
    np.testing.assert_array_equal(alpha[:, 0], batch.rgb[:, 1])
    _, none = RayBatcher(make_scene(), 8).next_with_alpha()
    assert none is None


def test_deterministic_with_seed():
    scene = make_scene()
    a = [next(RayBatcher(scene, 32, seed=5)).rgb for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    b1, b2 = RayBatcher(scene, 32, seed=5), RayBatcher(scene, 32, seed=5)
    for _ in range(3):
        np.testing.assert_array_equal(next(b1).rays.directions, next(b2).rays.directions)
    other = next(RayBatcher(scene, 32, seed=6)).rgb
    assert not np.array_equal(a[0], other)
    # Consecutive draws differ.
    batcher = RayBatcher(scene, 32, seed=5)
    assert not np.array_equal(next(batcher).rgb, next(batcher).rgb)


def test_processes_draw_their_slices_of_one_global_batch():
    scene = make_scene()
    batches = [
        next(RayBatcher(scene, 64, seed=0, process_index=p, process_count=4)) for p in range(4)
    ]
    for b in batches:
        assert b.rgb.shape == (16, 3)
    for p in range(1, 4):
        assert not np.array_equal(batches[0].rgb, batches[p].rgb)
    # Together they are the batch of one process: any process count trains on the same data.
    whole = next(RayBatcher(scene, 64, seed=0))
    np.testing.assert_array_equal(np.concatenate([b.rgb for b in batches]), whole.rgb)
    np.testing.assert_array_equal(np.concatenate([b.rays.origins for b in batches]),
                                  whole.rays.origins)


def test_uniform_coverage():
    scene = make_scene()
    batcher = RayBatcher(scene, 4096, seed=11)
    counts = np.zeros(N * H * W)
    for _ in range(10):
        batch = next(batcher)
        # Recover the flat pixel index from the colour encoding.
        i = np.rint(batch.rgb[:, 0] * N).astype(int)
        r = np.rint(batch.rgb[:, 1] * H).astype(int)
        c = np.rint(batch.rgb[:, 2] * W).astype(int)
        np.testing.assert_array_equal(i, batch.rays.cam_idx[:, 0])
        counts += np.bincount((i * H + r) * W + c, minlength=N * H * W)
    assert counts.min() > 0
    assert stats.chisquare(counts).pvalue > 1e-3


def test_bad_batch_sizes():
    scene = make_scene()
    with pytest.raises(UserError, match=r"batch_size=1000 is not divisible by the 3 processes"):
        RayBatcher(scene, 1000, process_count=3)
    with pytest.raises(UserError, match="positive integer"):
        RayBatcher(scene, 0)
    with pytest.raises(UserError, match="process_index"):
        RayBatcher(scene, 8, process_index=2, process_count=2)
    with pytest.raises(UserError) as err:
        check_batch_divisible(1000, 3)
    assert str(err.value) == (
        "Config.batch_size=1000 is not divisible by the 3 devices of the mesh's data axis; "
        "use a multiple of 3"
    )
    check_batch_divisible(1024, 8)


def test_draws_are_fast():
    scene = make_scene(n=10, h=100, w=120)
    scene.distortion[:] = [0.05, 0.01, 0.001, -0.001]  # the slower (Newton) path
    batcher = RayBatcher(scene, 16384)
    next(batcher)
    start = time.perf_counter()
    for _ in range(5):
        next(batcher)
    per_draw = (time.perf_counter() - start) / 5
    # A few ms on one core; generous so that a loaded CI machine does not flake.
    assert per_draw < 0.2, per_draw


# --- patches ------------------------------------------------------------------------------


def test_patches_are_contiguous_windows_with_their_own_colours():
    from jaxnerf360.data.batching import PatchBatcher
    from jaxnerf360.data.cameras import scene_rays

    scene = make_scene(alphas=True, h=9, w=11)
    batch, alpha = PatchBatcher(scene, 6, 3, seed=2).next_with_alpha()
    assert batch.rays.origins.shape == (6, 3, 3, 3) and batch.rgb.shape == (6, 3, 3, 3)
    assert alpha.shape == (6, 3, 3, 1)
    # The colours encode (image, row, col): each patch is one image, rows and columns step by 1.
    img = np.round(batch.rgb[..., 0] * N).astype(int)
    rows = np.round(batch.rgb[..., 1] * 9).astype(int)
    cols = np.round(batch.rgb[..., 2] * 11).astype(int)
    assert np.all(img == img[:, :1, :1])
    np.testing.assert_array_equal(np.diff(rows, axis=1), 1)
    np.testing.assert_array_equal(np.diff(cols, axis=2), 1)
    np.testing.assert_allclose(alpha[..., 0], batch.rgb[..., 1])
    np.testing.assert_allclose(batch.pixels, np.stack([cols, rows], -1) + 0.5)
    # The rays are those of the same pixels drawn one by one.
    want = scene_rays(scene, img, cols, rows)
    for name in ("origins", "directions", "radii", "cam_idx"):
        np.testing.assert_allclose(getattr(batch.rays, name), getattr(want, name), atol=1e-6)


def test_patch_stride_and_margin():
    from jaxnerf360.data.batching import PatchBatcher
    from jaxnerf360.data.cameras import View

    scene = make_scene(h=12, w=12)
    batch = next(PatchBatcher(scene, 2, 3, stride=2, margin=1, seed=0))
    # Ground truth covers the rays' 6x6 pixels plus a 1-pixel margin, at full resolution.
    assert batch.rgb.shape == (2, 8, 8, 3) and batch.rays.origins.shape == (2, 3, 3, 3)
    img = int(round(batch.rgb[0, 0, 0, 0] * N))
    top, left = (int(round(batch.rgb[0, 0, 0, k] * 12)) for k in (1, 2))
    np.testing.assert_allclose(batch.rgb[0], scene.images[img, top:top + 8, left:left + 8])
    # The rays go through the centres of 2x2 pixel blocks inside the margin, with the footprint
    # of a camera whose pixels are twice as large.
    coarse = View(scene.camtoworlds[img], scene.intrinsics[img] / 2, 6, 6, scene.near,
                  scene.far, cam_idx=img)
    want = coarse.window_rays((top + 1) / 2, (left + 1) / 2, 3, 3)
    for name in ("origins", "directions", "radii"):
        np.testing.assert_allclose(getattr(batch.rays, name)[0], getattr(want, name),
                                   atol=1e-5, err_msg=name)
    np.testing.assert_allclose(batch.pixels[0, 0, 0], [left + 1 + 1, top + 1 + 1])


def test_coarse_rays_go_through_block_centres_with_the_blocks_mean_colour():
    from jaxnerf360.data.batching import CoarseRayBatcher
    from jaxnerf360.data.cameras import View

    scene = make_scene(h=12, w=14)  # 6 x 7 blocks of 2 x 2 pixels
    batcher = CoarseRayBatcher(scene, 64, stride=2, seed=3)
    out = batcher.next()
    assert out["rays"].origins.shape == (64, 3) and out["rgb"].shape == (64, 3)
    img, row, col = out["index"].T
    assert row.max() < 6 and col.max() < 7 and img.max() < N
    for i in range(64):
        block = scene.images[img[i], 2 * row[i]:2 * row[i] + 2, 2 * col[i]:2 * col[i] + 2]
        np.testing.assert_allclose(out["rgb"][i], block.reshape(-1, 3).mean(0), rtol=1e-6)
        # The ray of the block's pixel in a camera with pixels twice as large.
        coarse = View(scene.camtoworlds[img[i]], scene.intrinsics[img[i]] / 2, 7, 6,
                      scene.near, scene.far, cam_idx=img[i])
        want = coarse.window_rays(row[i], col[i], 1, 1)
        for name in ("origins", "directions", "radii"):
            np.testing.assert_allclose(getattr(out["rays"], name)[i], getattr(want, name)[0, 0],
                                       atol=1e-5, err_msg=name)
    # Batch k depends on (seed, k) only: a resumed batcher draws the same batch.
    next_one = batcher.next()["index"]
    np.testing.assert_array_equal(
        CoarseRayBatcher(scene, 64, stride=2, seed=3, start_step=1).next()["index"], next_one)


def test_patches_resume_exactly_and_split_over_processes():
    from jaxnerf360.data.batching import PatchBatcher

    scene = make_scene(h=9, w=11)
    straight = PatchBatcher(scene, 4, 3, seed=5)
    batches = [next(straight) for _ in range(3)]
    resumed = next(PatchBatcher(scene, 4, 3, seed=5, start_step=2))
    np.testing.assert_array_equal(resumed.rgb, batches[2].rgb)
    halves = [next(PatchBatcher(scene, 4, 3, seed=5, process_index=p, process_count=2))
              for p in range(2)]
    assert halves[0].rgb.shape[0] == 2
    assert not np.array_equal(halves[0].rgb, halves[1].rgb)
    np.testing.assert_array_equal(np.concatenate([h.rgb for h in halves]), batches[0].rgb)


def test_patches_keep_only_those_centred_on_kept_pixels():
    from jaxnerf360.data.batching import PatchBatcher

    scene = make_scene(h=9, w=11)
    mask = np.zeros((N, 9, 11), bool)
    mask[1, 4, 5] = True  # one pixel: only patches centred on it
    batcher = PatchBatcher(scene, 4, 3, seed=0)
    assert batcher.keep_only(mask) == 1
    batch = next(batcher)
    np.testing.assert_allclose(batch.rgb[:, 1, 1], np.tile(scene.images[1, 4, 5], (4, 1)))
    with pytest.raises(UserError, match="occupied space"):
        batcher.keep_only(np.zeros_like(mask))


def test_bad_patch_settings():
    from jaxnerf360.data.batching import PatchBatcher

    scene = make_scene()
    with pytest.raises(UserError, match="do not fit"):
        PatchBatcher(scene, 2, 4, stride=2)
    with pytest.raises(UserError, match="divisible by the 2 processes"):
        PatchBatcher(scene, 3, 2, process_index=0, process_count=2)
    with pytest.raises(UserError, match="patch size"):
        PatchBatcher(scene, 2, 0)
