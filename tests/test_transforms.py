"""The instant-ngp / nerfstudio transforms.json loader against the Blender-format copy of the
same synthetic scene: identical rays, distortion undone against an independent root finder,
every key it reads, the bounded/unbounded choice, and malformed files."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import optimize

from jaxnerf360.data import loaders, synthetic
from jaxnerf360.data.cameras import pixels_to_rays, scene_rays
from jaxnerf360.data.scene import BOUNDED, UNBOUNDED
from jaxnerf360.errors import UserError

SIZE = 24


@pytest.fixture(scope="module")
def blender_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("blender")
    return synthetic.generate(out, size=SIZE, n_train=6, n_test=2)


def _frames(blender_dir, split):
    with open(blender_dir / f"transforms_{split}.json", encoding="utf-8") as f:
        return json.load(f)["frames"]


def _write(folder, meta):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "transforms.json", "w", encoding="utf-8") as f:
        json.dump(meta, f)
    return folder


def _copy(blender_dir, folder, **keys):
    """A transforms.json scene of the Blender copy's frames (PNG with alpha) and its split
    lists, plus `keys`."""
    frames = []
    for split in ("train", "test"):
        for frame in _frames(blender_dir, split):
            frames.append({"file_path": frame["file_path"][2:] + ".png",
                           "transform_matrix": frame["transform_matrix"]})
            target = folder / frames[-1]["file_path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(blender_dir / frames[-1]["file_path"], target)
    meta = {"camera_angle_x": synthetic.CAMERA_ANGLE_X, "frames": frames,
            "train_filenames": [f["file_path"] for f in frames if "train" in f["file_path"]],
            "test_filenames": [f["file_path"] for f in frames if "test" in f["file_path"]],
            **keys}
    return _write(folder, meta)


def _rays_of(scene):
    n, h, w = scene.images.shape[:3]
    idx, rows, cols = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    return scene_rays(scene, idx, cols, rows)


def test_a_copy_of_the_blender_scene_gives_the_same_rays_and_colours(blender_dir, tmp_path):
    folder = _copy(blender_dir, tmp_path / "copy")
    for split in ("train", "test"):
        want = loaders.load_scene("blender", blender_dir, split)
        got = loaders.load_scene("transforms", folder, split)
        assert got.kind == BOUNDED and (got.near, got.far) == (2.0, 6.0)
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.alphas, want.alphas)
        a, b = _rays_of(got), _rays_of(want)
        for name in ("origins", "directions", "radii"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-6)


def test_explicit_intrinsics_and_every_eighth_frame_held_out(blender_dir, tmp_path):
    focal = 0.5 * SIZE / np.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    folder = _copy(blender_dir, tmp_path / "explicit", fl_x=focal, fl_y=focal, cx=SIZE / 2,
                   cy=SIZE / 2, w=SIZE, h=SIZE, camera_model="OPENCV", k3=0.0)
    meta = json.loads((folder / "transforms.json").read_text())
    del meta["camera_angle_x"], meta["train_filenames"], meta["test_filenames"]
    meta["frames"][3]["fl_x"] = 2 * focal  # per-frame keys win over global ones
    _write(folder, meta)
    test = loaders.load_scene("transforms", folder, "test")
    train = loaders.load_scene("transforms", folder, "train")
    assert test.names == [meta["frames"][0]["file_path"]]  # index % 8 == 0
    assert train.num_images == 7
    np.testing.assert_allclose(train.intrinsics[2], [2 * focal, focal, SIZE / 2, SIZE / 2])
    np.testing.assert_allclose(train.intrinsics[0], [focal, focal, SIZE / 2, SIZE / 2])
    angle_y = dict(meta, camera_angle_y=2 * np.arctan(SIZE / (2 * 0.5 * focal)))
    for key in ("fl_x", "fl_y", "cx", "cy"):
        del angle_y[key]
    angle_y["camera_angle_x"] = synthetic.CAMERA_ANGLE_X
    angle_y["frames"][3].pop("fl_x")
    _write(folder, angle_y)
    np.testing.assert_allclose(loaders.load_scene("transforms", folder, "test").intrinsics[0],
                               [focal, 0.5 * focal, SIZE / 2, SIZE / 2], rtol=1e-5)


def _forward_opencv(x, y, k1, k2, p1, p2):
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def test_distorted_frames_are_undistorted_into_the_pinhole_rays(blender_dir, tmp_path):
    """Frames rendered through an OpenCV lens (undistorted by scipy's root finder, not ours)
    load with rays equal to the Blender copy's pinhole rays through the undistorted points,
    and show the scene the analytic tracer sees along them."""
    dist = (-0.12, 0.03, 0.004, -0.003)
    focal = 0.5 * SIZE / np.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    folder = tmp_path / "distorted"
    frames = _frames(blender_dir, "train")[:2]
    centres = np.arange(SIZE) + 0.5
    u, v = (a.reshape(-1) for a in np.meshgrid(centres, centres, indexing="xy"))
    xd, yd = (u - SIZE / 2) / focal, (v - SIZE / 2) / focal

    def solve(i):
        fn = lambda p: np.subtract(_forward_opencv(*p, *dist), (xd[i], yd[i]))  # noqa: E731
        return optimize.root(fn, (xd[i], yd[i]), tol=1e-12).x

    undistorted = np.array([solve(i) for i in range(len(u))])
    (folder / "images").mkdir(parents=True)
    out = []
    for j, frame in enumerate(frames):
        pose = np.asarray(frame["transform_matrix"])
        cam = np.stack([undistorted[:, 0], -undistorted[:, 1], -np.ones(len(u))], -1)
        rgb, _ = synthetic.trace(np.repeat(pose[None, :3, 3], len(u), 0), cam @ pose[:3, :3].T)
        Image.fromarray(np.round(rgb.reshape(SIZE, SIZE, 3) * 255).astype(np.uint8)).save(
            folder / "images" / f"{j}.png")
        out.append({"file_path": f"images/{j}.png", "transform_matrix": frame["transform_matrix"]})
    _write(folder, {"fl_x": focal, "fl_y": focal, "cx": SIZE / 2, "cy": SIZE / 2,
                    "k1": dist[0], "k2": dist[1], "p1": dist[2], "p2": dist[3],
                    "frames": out, "train_filenames": ["images/0.png", "images/1.png"],
                    "test_filenames": ["images/0.png"]})
    scene = loaders.load_scene("transforms", folder, "train", transforms_scene="bounded")
    np.testing.assert_allclose(scene.distortion[0], dist, rtol=1e-6)
    blender = loaders.load_scene("blender", blender_dir, "train")
    got = _rays_of(scene)
    for j in range(2):
        want = pixels_to_rays(undistorted[:, 0] * focal + SIZE / 2,
                              undistorted[:, 1] * focal + SIZE / 2, blender.camtoworlds[j],
                              blender.intrinsics[j], None, 2.0, 6.0, j)
        np.testing.assert_allclose(got.directions[j].reshape(-1, 3), want.directions, atol=2e-5)
        np.testing.assert_allclose(got.origins[j].reshape(-1, 3), want.origins, atol=1e-6)
        # The loader's rays see in the analytic scene what the frame shows (8-bit PNG; a ray
        # grazing a silhouette may flip in float32).
        seen, _ = synthetic.trace(got.origins[j].reshape(-1, 3),
                                  got.directions[j].reshape(-1, 3))
        error = np.abs(seen - scene.images[j].reshape(-1, 3)).max(-1)
        assert np.mean(error > 0.01) < 0.01, np.mean(error > 0.01)


def test_opaque_frames_make_an_unbounded_scene_normalised_like_a_360_capture(blender_dir,
                                                                             tmp_path, caplog):
    folder = _copy(blender_dir, tmp_path / "opaque",
                   applied_transform=[[0, 1, 0, 0.5], [1, 0, 0, 0], [0, 0, -1, 2]])
    meta = json.loads((folder / "transforms.json").read_text())
    for frame in meta["frames"]:  # JPEGs, no alpha: a capture with its real background
        png = folder / frame["file_path"]
        frame["file_path"] = frame["file_path"].replace(".png", ".jpg")
        Image.open(png).convert("RGB").save(folder / frame["file_path"])
    meta["train_filenames"] = [f.replace(".png", ".jpg") for f in meta["train_filenames"]]
    meta["test_filenames"] = [f.replace(".png", ".jpg") for f in meta["test_filenames"]]
    _write(folder, meta)
    with caplog.at_level("INFO"):
        scene = loaders.load_scene("transforms", folder, "train")
    assert scene.kind == UNBOUNDED and scene.alphas is None
    assert "unbounded scene (opaque frames)" in caplog.text
    assert np.linalg.norm(scene.camtoworlds[:, :3, 3], axis=-1).max() < 1.0
    # Scene.transform maps the original (pre-applied_transform) world into ours.
    original_centre = np.linalg.solve(np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]]),
                                      np.asarray(meta["frames"][0]["transform_matrix"])[:3, 3]
                                      - [0.5, 0, 2])
    mapped = scene.transform[:3, :3] @ original_centre + scene.transform[:3, 3]
    np.testing.assert_allclose(mapped, scene.camtoworlds[0, :3, 3], atol=1e-5)
    assert loaders.load_scene("transforms", folder, "train",
                              transforms_scene="bounded").kind == BOUNDED


def test_instant_ngp_scale_offset_and_aabb_scale(blender_dir, tmp_path):
    folder = _copy(blender_dir, tmp_path / "ngp", scale=0.5, offset=[0.5, 0.7, 0.5],
                   aabb_scale=2)
    scene = loaders.load_scene("transforms", folder, "train")
    blender = loaders.load_scene("blender", blender_dir, "train")
    np.testing.assert_allclose(scene.camtoworlds[:, :3, 3],
                               0.5 * blender.camtoworlds[:, :3, 3] + [0, 0.2, 0], atol=1e-5)
    np.testing.assert_allclose(scene.camtoworlds[:, :3, :3], blender.camtoworlds[:, :3, :3],
                               atol=1e-6)
    distance = np.linalg.norm(scene.camtoworlds[:, :3, 3], axis=-1)
    np.testing.assert_allclose([scene.near, scene.far],
                               [distance.min() - np.sqrt(3), distance.max() + np.sqrt(3)],
                               rtol=1e-5)


@pytest.mark.parametrize("change, match", [
    (lambda m: m.pop("frames"), "missing or empty 'frames'"),
    (lambda m: m["frames"][1].pop("transform_matrix"), "transform_matrix"),
    (lambda m: m.update(camera_model="OPENCV_FISHEYE"), "camera_model 'OPENCV_FISHEYE'"),
    (lambda m: m.update(k3=0.1), "'k3' = 0.1 is not supported"),
    (lambda m: m.pop("camera_angle_x"), "no 'camera_angle_x' or 'fl_x'"),
    (lambda m: m.update(w=99, h=99), "says 99x99"),
    (lambda m: m.update(test_filenames=["nope.png"]), "no frame's file_path"),
    (lambda m: m.update(scale="big"), "'scale' must be a number"),
    (lambda m: m.update(applied_transform=[[1, 0]]), "'applied_transform' must be a finite"),
])
def test_malformed_files_are_one_clear_line(blender_dir, tmp_path, change, match):
    folder = _copy(blender_dir, tmp_path / "bad")
    meta = json.loads((folder / "transforms.json").read_text())
    change(meta)
    _write(folder, meta)
    with pytest.raises(UserError) as err:
        for split in ("train", "test"):
            loaders.load_scene("transforms", folder, split)
    assert match in str(err.value) and "\n" not in str(err.value)


def test_a_folder_without_the_file_and_a_broken_file(tmp_path):
    with pytest.raises(UserError, match="transforms.json: not found"):
        loaders.load_scene("transforms", tmp_path, "train")
    (tmp_path / "transforms.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot parse the JSON"):
        loaders.load_scene("transforms", tmp_path, "train")
