"""Tests for the scene loaders, pose normalisation and their error messages."""

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import optimize
from scipy.spatial.transform import Rotation

from jaxnerf360.data import images as image_lib
from jaxnerf360.data import normalize
from jaxnerf360.data.loaders import load_scene
from jaxnerf360.data.scene import BOUNDED, FORWARD, UNBOUNDED
from jaxnerf360.errors import UserError
from tests.conftest import SYNTHETIC_SIZE, SYNTHETIC_TEST, SYNTHETIC_TRAIN

N_ALL = SYNTHETIC_TRAIN  # the derived LLFF/COLMAP scenes reuse the synthetic train views


def _raises(fn, *parts):
    """Asserts fn() raises a one-line UserError containing every part."""
    with pytest.raises(UserError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def _rigid(camtoworlds, atol=1e-4):
    rot = np.asarray(camtoworlds, np.float64)[:, :3, :3]
    np.testing.assert_allclose(
        rot @ np.swapaxes(rot, 1, 2), np.broadcast_to(np.eye(3), rot.shape), atol=atol
    )
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=atol)


def _look_at(positions, target, up=(0.0, 0.0, 1.0)):
    """OpenGL camera-to-worlds `[n, 3, 4]` looking from positions at target."""
    poses = []
    for p in positions:
        back = (p - target) / np.linalg.norm(p - target)
        right = np.cross(up, back)
        right /= np.linalg.norm(right)
        poses.append(np.stack([right, np.cross(back, right), back, p], axis=1))
    return np.stack(poses)


def _project(points, camtoworld, intrinsics):
    """Pinhole projection (pixel coordinates, centres at +0.5) with an OpenGL camera."""
    local = (points - camtoworld[:, 3]) @ camtoworld[:, :3]
    fx, fy, cx, cy = intrinsics
    return np.stack(
        [fx * local[:, 0] / -local[:, 2] + cx, -fy * local[:, 1] / -local[:, 2] + cy], -1
    )


# ----------------------------------------------------------------------------- normalize


def test_check_poses_accepts_rigid_and_names_bad_ones():
    poses = _look_at(np.random.default_rng(0).normal(size=(3, 3)) * 4, np.zeros(3))
    normalize.check_poses(poses, ["a", "b", "c"])
    bad = poses.copy()
    bad[1, 0, 3] = np.nan
    _raises(lambda: normalize.check_poses(bad, ["a", "b.png", "c"]), "b.png", "NaN")
    for broken in (poses[2, :, :3] * 1.01, poses[2, :, :3] * [1, 1, -1]):  # scaled; mirrored
        bad = poses.copy()
        bad[2, :, :3] = broken
        _raises(lambda bad=bad: normalize.check_poses(bad, ["a", "b", "c.png"]), "c.png", "rigid")


def test_focus_point_exact_when_axes_meet():
    target = np.array([0.3, -1.2, 0.5])
    positions = np.random.default_rng(1).normal(size=(10, 3)) * 3 + target
    np.testing.assert_allclose(
        normalize.focus_point(_look_at(positions, target)), target, atol=1e-9
    )


def test_focus_point_minimises_distance_to_axes():
    rng = np.random.default_rng(2)
    poses = _look_at(rng.normal(size=(8, 3)) * 3, np.zeros(3))
    poses[:, :3, :3] = (
        Rotation.from_rotvec(rng.normal(size=(8, 3)) * 0.2).as_matrix() @ poses[:, :3, :3]
    )

    def cost(p):
        d = poses[:, :, 2]
        v = p - poses[:, :, 3]
        return np.sum(np.sum(v * v, -1) - np.sum(v * d, -1) ** 2)

    truth = optimize.minimize(cost, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(normalize.focus_point(poses), truth, atol=1e-5)


def test_normalize_unbounded_properties():
    rng = np.random.default_rng(3)
    target = np.array([5.0, -2.0, 1.0])
    azimuth = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    ring = np.stack([np.cos(azimuth), np.sin(azimuth), 0.3 + 0.2 * rng.random(20)], -1) * 7
    tilt = Rotation.from_rotvec([0.4, -0.3, 0.2]).as_matrix()  # world up is not +z
    poses = _look_at(ring, np.zeros(3))
    poses = np.concatenate([tilt @ poses[:, :, :3], (tilt @ poses[:, :, 3:]) + target[:, None]], -1)
    out, transform = normalize.normalize_unbounded(poses)
    _rigid(out, atol=1e-9)
    radii = np.linalg.norm(out[:, :, 3], axis=-1)
    assert radii.max() == pytest.approx(1 - normalize.UNIT_BALL_MARGIN)
    up = out[:, :, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-9)
    # The transform maps original points (centres, the focus) to normalised ones.
    lin, shift = transform[:3, :3], transform[:3, 3]
    np.testing.assert_allclose(poses[:, :, 3] @ lin.T + shift, out[:, :, 3], atol=1e-9)
    np.testing.assert_allclose(lin @ target + shift, 0, atol=1e-9)
    scale = np.cbrt(np.linalg.det(lin))
    np.testing.assert_allclose(lin / scale @ poses[:, :, :3], out[:, :, :3], atol=1e-9)
    np.testing.assert_array_equal(transform[3], [0, 0, 0, 1])


def test_normalize_unbounded_parallel_axes_uses_mean_centre():
    positions = np.stack([np.linspace(-1, 1, 5), np.zeros(5), np.full(5, 3.0)], -1)
    poses = np.tile(np.eye(4)[:3], (5, 1, 1))
    poses[:, :, 3] = positions
    out, transform = normalize.normalize_unbounded(poses)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, :, 3].mean(0), 0, atol=1e-12)
    assert np.linalg.norm(out[:, :, 3], axis=-1).max() == pytest.approx(0.99)


def test_recenter_forward_properties():
    rng = np.random.default_rng(4)
    positions = np.concatenate([rng.normal(size=(6, 2)), np.zeros((6, 1))], -1) + [3, 1, 2]
    poses = _look_at(positions, np.array([3.0, 30.0, 2.0]))
    bounds = rng.uniform(2, 10, size=(6, 2))
    out, new_bounds, transform = normalize.recenter_forward(poses, bounds)
    _rigid(out, atol=1e-9)
    assert new_bounds.min() == pytest.approx(1 / 0.75)
    np.testing.assert_allclose(normalize.average_pose(out), np.eye(4)[:3], atol=1e-9)
    lin, shift = transform[:3, :3], transform[:3, 3]
    np.testing.assert_allclose(poses[:, :, 3] @ lin.T + shift, out[:, :, 3], atol=1e-9)
    assert np.cbrt(np.linalg.det(lin)) == pytest.approx(new_bounds.min() / bounds.min())


# ----------------------------------------------------------------------------- blender / synthetic


@pytest.fixture()
def scene_copy(synthetic_dir, tmp_path):
    """A writable copy of the synthetic scene."""
    return shutil.copytree(synthetic_dir, tmp_path / "scene")


def _edit_json(path, fn):
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def test_blender_loader_factor_and_background(synthetic_dir):
    full = load_scene("blender", synthetic_dir, "train")
    half = load_scene("synthetic", synthetic_dir, "train", factor=2)
    black = load_scene("blender", synthetic_dir, "test", background=(0, 0, 0))
    assert full.num_images == SYNTHETIC_TRAIN and black.num_images == SYNTHETIC_TEST
    s = SYNTHETIC_SIZE
    f = 0.5 * s / math.tan(0.5 * 0.7)
    np.testing.assert_allclose(
        full.intrinsics, np.tile([f, f, s / 2, s / 2], (SYNTHETIC_TRAIN, 1)), rtol=1e-6
    )
    np.testing.assert_allclose(half.intrinsics, full.intrinsics / 2, rtol=1e-6)
    blocks = full.images.reshape(SYNTHETIC_TRAIN, s // 2, 2, s // 2, 2, 3).mean((2, 4))
    np.testing.assert_allclose(half.images, blocks, atol=1e-6)
    np.testing.assert_allclose(
        half.alphas, full.alphas.reshape(-1, s // 2, 2, s // 2, 2).mean((2, 4)), atol=1e-6
    )
    rgba = image_lib.load_image(synthetic_dir / "test" / "r_001.png")
    np.testing.assert_allclose(black.images[1], rgba[..., :3] * rgba[..., 3:], atol=1e-6)
    assert black.names[1] == "test/r_001.png"
    np.testing.assert_array_equal(full.transform, np.eye(4))
    near_far = load_scene("blender", synthetic_dir, "test", near=1.0, far=9.0)
    assert (near_far.near, near_far.far) == (1.0, 9.0)


def test_blender_fl_x_and_principal_point(scene_copy):
    def edit(meta):
        del meta["camera_angle_x"]
        meta.update(fl_x=40.0, fl_y=41.0, cx=15.0, cy=17.0)

    _edit_json(scene_copy / "transforms_test.json", edit)
    scene = load_scene("blender", scene_copy, "test", factor=2)
    np.testing.assert_allclose(scene.intrinsics[0], [20.0, 20.5, 7.5, 8.5])


# ----------------------------------------------------------------------------- LLFF round trip


def _synthetic_poses(synthetic_dir):
    meta = json.loads((synthetic_dir / "transforms_train.json").read_text())
    return np.array([f["transform_matrix"] for f in meta["frames"]])[:, :3, :4]


def _write_llff(synthetic_dir, out, hwf_size=SYNTHETIC_SIZE):
    """An LLFF scene from the synthetic train views: LLFF stores [down, right, back, t]."""
    poses = _synthetic_poses(synthetic_dir)
    llff = np.concatenate([-poses[:, :, 1:2], poses[:, :, 0:1], poses[:, :, 2:4]], -1)
    focal = 0.5 * hwf_size / math.tan(0.5 * 0.7)
    hwf = np.broadcast_to(np.array([hwf_size, hwf_size, focal])[None, :, None], (len(poses), 3, 1))
    bounds = np.tile([2.0, 6.0], (len(poses), 1))
    rows = np.concatenate([np.concatenate([llff, hwf], -1).reshape(-1, 15), bounds], -1)
    (out / "images").mkdir(parents=True)
    np.save(out / "poses_bounds.npy", rows)
    for i in range(len(poses)):
        shutil.copy(synthetic_dir / "train" / f"r_{i:03d}.png", out / "images" / f"img_{i:03d}.png")
    return poses


def test_llff_round_trip_unbounded(synthetic_dir, tmp_path):
    poses = _write_llff(synthetic_dir, tmp_path)
    train = load_scene("llff", tmp_path, "train")
    test = load_scene("llff", tmp_path, "test", factor=2)
    assert train.num_images == N_ALL - 2 and test.num_images == 2  # indices 0 and 8 held out
    assert test.names == ["img_000.png", "img_008.png"]
    assert train.kind == test.kind == UNBOUNDED and (train.near, train.far) == (0.2, 1e6)
    np.testing.assert_array_equal(train.transform, test.transform)  # one world frame
    expected = normalize.apply_transform(train.transform.astype(np.float64), poses)
    np.testing.assert_allclose(test.camtoworlds, expected[[0, 8]], atol=1e-5)
    np.testing.assert_allclose(train.camtoworlds, np.delete(expected, [0, 8], 0), atol=1e-5)
    f = 0.5 * SYNTHETIC_SIZE / math.tan(0.35)
    np.testing.assert_allclose(test.intrinsics[0], np.array([f, f, 16, 16]) / 2, rtol=1e-6)
    assert test.images.shape == (2, 16, 16, 3)
    # The sphere centre projects to the same pixel as in the original (OpenGL) cameras.
    centre = np.array([[0.45, -0.35, 0.45]])
    moved = centre @ train.transform[:3, :3].T.astype(np.float64) + train.transform[:3, 3]
    for k, i in enumerate([0, 8]):
        np.testing.assert_allclose(
            _project(moved, test.camtoworlds[k].astype(np.float64), test.intrinsics[k]),
            _project(centre, poses[i], test.intrinsics[k]),
            atol=1e-3,
        )


def test_llff_forward_facing_and_images_factor_folder(synthetic_dir, tmp_path):
    _write_llff(synthetic_dir, tmp_path)
    (tmp_path / "images_2").mkdir()
    for name in image_lib.list_images(tmp_path / "images"):
        small = image_lib.downsample(image_lib.load_image(tmp_path / "images" / name), 2)
        Image.fromarray(np.round(small * 255).astype(np.uint8)).save(tmp_path / "images_2" / name)
    (tmp_path / "images" / "img_000.png").unlink()  # images_2/ must be used as-is
    scene = load_scene("llff", tmp_path, "train", factor=2, forward_facing=True, llff_hold=4)
    assert scene.num_images == N_ALL - 4 and scene.kind == FORWARD
    assert (scene.near, scene.far) == (0.0, 1.0)
    f = 0.5 * SYNTHETIC_SIZE / math.tan(0.35) / 2
    assert scene.ndc == pytest.approx({"fx": f, "fy": f, "width": 16, "height": 16, "near": 1.0})
    _rigid(scene.camtoworlds)
    # In NDC a negative near is a depth in front of the near plane; elsewhere it is an error.
    ahead = load_scene("llff", tmp_path, "train", factor=2, forward_facing=True, llff_hold=4,
                       near=-1.0)
    assert ahead.near == -1.0
    _raises(lambda: load_scene("llff", tmp_path, "train", factor=2, llff_hold=4, near=-1.0),
            "near=-1.0", "non-negative")


def test_llff_errors(synthetic_dir, tmp_path):
    _write_llff(synthetic_dir, tmp_path, hwf_size=64)
    _raises(lambda: load_scene("llff", tmp_path, "test"), "img_000.png", "32x32", "64x64", "factor")
    _raises(lambda: load_scene("llff", tmp_path, "train", llff_hold=1), "'train' split is empty")
    _raises(lambda: load_scene("llff", tmp_path, "train", llff_hold=0), "llff_hold=0")
    (tmp_path / "images" / "img_003.png").unlink()
    _raises(lambda: load_scene("llff", tmp_path, "test"), "15 images", "16 poses")
    shutil.rmtree(tmp_path / "images")
    (tmp_path / "images_4").mkdir()
    _raises(lambda: load_scene("llff", tmp_path, "train"), "no images/", "images_4")


# ----------------------------------------------------------------------------- COLMAP round trip


def _write_colmap(synthetic_dir, out, model="PINHOLE", extra=(), camera_size=SYNTHETIC_SIZE):
    """A COLMAP text model of the synthetic train views, one camera per image."""
    poses = _synthetic_poses(synthetic_dir)
    sparse = out / "sparse" / "0"
    sparse.mkdir(parents=True)
    (out / "images").mkdir()
    f = 0.5 * SYNTHETIC_SIZE / math.tan(0.35)
    cams, ims = [], []
    for i, c2w in enumerate(poses):
        # OpenGL camera-to-world -> OpenCV world-to-camera (camera axes right, down, forward).
        rot_cv = c2w[:, :3] * [1, -1, -1]
        w2c_rot = rot_cv.T
        t = -w2c_rot @ c2w[:, 3]
        x, y, z, w = Rotation.from_matrix(w2c_rot).as_quat()
        fx = f + 0.5 * i  # distinct per image: a shared camera would be wrong
        params = {
            "PINHOLE": [fx, fx, 16, 16],
            "OPENCV": [fx, fx, 16, 16, 0.1, -0.02, 0.001, 0.002],
            "OPENCV_FISHEYE": [fx, fx, 16, 16, 0.1, 0.0, 0.0, 0.0],
        }.get(model, [fx, 16, 16, *extra])
        size = camera_size
        cam_id = 100 + i
        cams.append(f"{cam_id} {model} {size} {size} " + " ".join(map(str, params)))
        image_id = len(poses) - i  # ids in reverse order: the loader must sort by name
        ims.append(f"{image_id} {w} {x} {y} {z} {t[0]} {t[1]} {t[2]} {cam_id} view_{i:03d}.png\n")
        shutil.copy(
            synthetic_dir / "train" / f"r_{i:03d}.png", out / "images" / f"view_{i:03d}.png"
        )
    (sparse / "cameras.txt").write_text("# synthetic\n" + "\n".join(cams) + "\n")
    (sparse / "images.txt").write_text("# synthetic\n" + "\n".join(ims) + "\n")
    (sparse / "points3D.txt").write_text("# none\n")
    return poses


def test_colmap_round_trip(synthetic_dir, tmp_path):
    poses = _write_colmap(synthetic_dir, tmp_path, model="OPENCV")
    train = load_scene("colmap", tmp_path, "train")
    test = load_scene("colmap", tmp_path, "test", factor=2)
    assert train.num_images == N_ALL - 2 and test.num_images == 2
    assert test.names == ["view_000.png", "view_008.png"]
    assert train.kind == UNBOUNDED
    expected = normalize.apply_transform(train.transform.astype(np.float64), poses)
    np.testing.assert_allclose(test.camtoworlds, expected[[0, 8]], atol=1e-5)
    np.testing.assert_allclose(train.camtoworlds, np.delete(expected, [0, 8], 0), atol=1e-5)
    f = 0.5 * SYNTHETIC_SIZE / math.tan(0.35)
    np.testing.assert_allclose(
        test.intrinsics, [[f / 2, f / 2, 8, 8], [(f + 4) / 2, (f + 4) / 2, 8, 8]], rtol=1e-6
    )
    np.testing.assert_allclose(
        test.distortion, np.tile([0.1, -0.02, 0.001, 0.002], (2, 1)), rtol=1e-6
    )
    # COLMAP images are taken as RGB (the synthetic PNGs' alpha is dropped, not composited).
    raw = image_lib.load_image(tmp_path / "images" / "view_001.png")
    np.testing.assert_array_equal(train.images[0], raw[..., :3])
    assert np.linalg.norm(train.camtoworlds[:, :, 3], axis=-1).max() <= 0.99 + 1e-6


@pytest.mark.parametrize(
    ("model", "extra", "dist"),
    [("SIMPLE_RADIAL", [0.05], [0.05, 0, 0, 0]), ("RADIAL", [0.05, -0.01], [0.05, -0.01, 0, 0])],
)
def test_colmap_radial_models(synthetic_dir, tmp_path, model, extra, dist):
    _write_colmap(synthetic_dir, tmp_path, model=model, extra=extra)
    scene = load_scene("colmap", tmp_path, "test")
    np.testing.assert_allclose(scene.distortion, np.tile(dist, (2, 1)), atol=1e-9)


def test_colmap_unsupported_model(synthetic_dir, tmp_path):
    _write_colmap(synthetic_dir, tmp_path, model="OPENCV_FISHEYE")
    _raises(
        lambda: load_scene("colmap", tmp_path, "train"),
        "OPENCV_FISHEYE",
        "colmap image_undistorter",
    )


def test_colmap_size_mismatch(synthetic_dir, tmp_path):
    _write_colmap(synthetic_dir, tmp_path, camera_size=64)
    _raises(
        lambda: load_scene("colmap", tmp_path, "test"),
        "view_000.png",
        "32x32",
        "64x64",
        "Config.factor",
    )


# ----------------------------------------------------------------------------- bad input


def test_missing_data_directory_names_expected_file(tmp_path):
    missing = tmp_path / "nowhere"
    _raises(lambda: load_scene("blender", missing, "train"), str(missing), "transforms_train.json")
    _raises(lambda: load_scene("llff", missing, "train"), str(missing), "poses_bounds.npy")
    _raises(lambda: load_scene("colmap", missing, "train"), str(missing), "sparse/0/cameras.bin")
    missing.mkdir()
    _raises(lambda: load_scene("blender", missing, "test"), "transforms_test.json")
    _raises(lambda: load_scene("colmap", missing, "test"), "sparse/0/cameras.bin")


def test_missing_and_unreadable_images(scene_copy):
    (scene_copy / "train" / "r_003.png").unlink()
    _raises(lambda: load_scene("blender", scene_copy, "train"), "r_003.png", "not found")
    (scene_copy / "test" / "r_002.png").write_bytes(b"\x89PNG garbage" * 20)
    _raises(lambda: load_scene("blender", scene_copy, "test"), "r_002.png", "cannot read")


def test_blender_size_mismatch(scene_copy):
    _edit_json(scene_copy / "transforms_test.json", lambda m: m.update(w=64, h=64))
    _raises(
        lambda: load_scene("blender", scene_copy, "test"),
        "r_000.png",
        "32x32",
        "64x64",
        "Config.factor",
    )


def test_nan_and_non_rigid_poses(scene_copy):
    path = scene_copy / "transforms_test.json"
    original = path.read_text()
    _edit_json(path, lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan")))
    _raises(lambda: load_scene("blender", scene_copy, "test"), "r_001", "NaN")
    path.write_text(original)

    def shear(meta):
        meta["frames"][2]["transform_matrix"][0][1] += 0.1

    _edit_json(path, shear)
    _raises(lambda: load_scene("blender", scene_copy, "test"), "r_002", "orthonormal")


def test_empty_split(scene_copy):
    _edit_json(scene_copy / "transforms_test.json", lambda m: m.update(frames=[]))
    _raises(lambda: load_scene("blender", scene_copy, "test"), "'test' split has no frames")


def test_bad_arguments(synthetic_dir):
    _raises(
        lambda: load_scene("nerfstudio", synthetic_dir, "train"),
        "nerfstudio",
        "blender, llff, colmap, synthetic",
    )
    _raises(lambda: load_scene("blender", synthetic_dir, "val"), "'val'")
    for factor in (0, 2.5, -1):
        _raises(
            lambda factor=factor: load_scene("blender", synthetic_dir, "train", factor=factor),
            f"factor={factor}",
        )
    _raises(lambda: load_scene("blender", synthetic_dir, "train", background=(1, 1)), "background")
    _raises(lambda: load_scene("blender", synthetic_dir, "train", near=3.0, far=2.0), "near=3.0")
    _raises(
        lambda: load_scene("blender", synthetic_dir, "train", forward_facing=True), "forward_facing"
    )
    _raises(lambda: load_scene("blender", None, "train"), "Config.data_dir")


# ----------------------------------------------------------------------------- real scenes


@pytest.fixture(scope="module")
def lego(lego_dir):
    return load_scene("blender", lego_dir, "train", factor=8), load_scene(
        "blender", lego_dir, "test", factor=8
    )


def test_lego(lego, lego_dir):
    train, test = lego
    assert (train.num_images, test.num_images) == (87, 13)
    angle = json.loads((lego_dir / "transforms_train.json").read_text())["camera_angle_x"]
    focal = 0.5 * 100 / math.tan(0.5 * angle)
    for scene in (train, test):
        assert scene.images.shape[1:] == (100, 100, 3) and scene.alphas.shape[1:] == (100, 100)
        np.testing.assert_allclose(
            scene.intrinsics, np.tile([focal, focal, 50, 50], (scene.num_images, 1)), rtol=1e-5
        )
        assert scene.kind == BOUNDED
        _rigid(scene.camtoworlds)
        # Lego cameras look at the origin: it lies on (and in front, -z, of) every optical axis.
        c2w = scene.camtoworlds.astype(np.float64)
        local = np.einsum("nij,ni->nj", c2w[:, :, :3], -c2w[:, :, 3])
        assert np.all(local[:, 2] < -3)
        assert np.all(np.linalg.norm(local[:, :2], axis=-1) < 0.05 * -local[:, 2])
    assert 0.05 < train.alphas.mean() < 0.6


@pytest.fixture(scope="module")
def fern(fern_dir):
    return (
        load_scene("llff", fern_dir, "train", factor=8, forward_facing=True),
        load_scene("llff", fern_dir, "test", factor=8, forward_facing=True),
    )


def test_fern(fern, fern_dir):
    train, test = fern
    assert (train.num_images, test.num_images) == (17, 3)
    assert test.names == ["image000.png", "image008.png", "image016.png"]
    for scene in (train, test):
        assert scene.images.shape[1:] == (378, 504, 3) and scene.kind == FORWARD
        assert scene.ndc["width"] == 504 and scene.ndc["height"] == 378 and scene.ndc["near"] == 1.0
        _rigid(scene.camtoworlds)
        # Right-handed: right x up = back.
        c2w = scene.camtoworlds.astype(np.float64)
        np.testing.assert_allclose(np.cross(c2w[:, :, 0], c2w[:, :, 1]), c2w[:, :, 2], atol=1e-4)
    poses = np.concatenate([train.camtoworlds, test.camtoworlds]).astype(np.float64)
    # Forward-facing: every camera looks within 15 degrees of the average view (-z here),
    # i.e. its back axis is within 15 degrees of +z.
    assert np.all(poses[:, 2, 2] > math.cos(math.radians(15)))
    # The cameras spread sideways (in the image plane) far more than along the view.
    spread = poses[:, :, 3] - poses[:, :, 3].mean(0)
    assert np.abs(spread[:, 2]).max() < 0.3 * np.abs(spread[:, :2]).max()
    hwf = np.load(fern_dir / "poses_bounds.npy")[0, :15].reshape(3, 5)[:, 4]
    np.testing.assert_allclose(train.intrinsics[0, :2], hwf[2] * 504 / hwf[1], rtol=1e-5)
    unbounded = load_scene("llff", fern_dir, "test", factor=8)
    assert (
        unbounded.kind == UNBOUNDED
        and np.linalg.norm(unbounded.camtoworlds[:, :, 3], axis=-1).max() < 1
    )


@pytest.fixture(scope="module")
def bird_model(bird_dir):
    pycolmap = pytest.importorskip("pycolmap")
    return pycolmap.Reconstruction(bird_dir / "sparse" / "0")


def test_bird_split_and_per_image_cameras(bird_dir, bird_model):
    train = load_scene("colmap", bird_dir, "train", factor=4)
    assert train.num_images == 161 and train.images.shape[1:] == (240, 136, 3)
    focal = {
        im.name: bird_model.cameras[im.camera_id].params[0] for im in bird_model.images.values()
    }
    np.testing.assert_allclose(
        train.intrinsics[:, 0], [focal[n] / 4 for n in train.names], rtol=1e-5
    )
    assert train.intrinsics[:, 0].max() - train.intrinsics[:, 0].min() > 20
    assert np.linalg.norm(train.camtoworlds[:, :, 3], axis=-1).max() == pytest.approx(
        0.99, abs=1e-5
    )


@pytest.mark.parametrize("factor", [1, 2])
def test_bird_projection_matches_colmap(bird_dir, bird_model, factor):
    scene = load_scene("colmap", bird_dir, "test", factor=factor)
    assert scene.num_images == 23 and scene.images.shape[1:] == (960 // factor, 544 // factor, 3)
    by_name = {im.name: im for im in bird_model.images.values()}
    transform = scene.transform.astype(np.float64)
    for k in (0, 9, 17):
        image = by_name[scene.names[k]]
        observed = [p for p in image.points2D if p.has_point3D()]
        keypoints = np.array([p.xy for p in observed]) / factor
        points = np.array([bird_model.points3D[p.point3D_id].xyz for p in observed])
        colmap_uv = np.array([image.project_point(x) for x in points]) / factor
        ours = _project(
            points @ transform[:3, :3].T + transform[:3, 3],
            scene.camtoworlds[k].astype(np.float64),
            scene.intrinsics[k],
        )
        # Our conversion reproduces COLMAP's own projection (float32 storage aside) ...
        np.testing.assert_allclose(ours, colmap_uv, atol=0.01)
        # ... and lands on the detected keypoints: well-triangulated points within a pixel.
        errors = np.linalg.norm(ours - keypoints, axis=-1)
        good = np.array([bird_model.points3D[p.point3D_id].error for p in observed]) < 1.0
        assert good.sum() > 50
        assert np.median(errors[good]) < 0.6 / factor + 0.1
        assert np.median(errors) < 2.0 / factor
