"""nerfstudio camera-path files: read against the cameras of the file's own frames (Blender
frame, so the poses and focal lengths are known), written and read back through a similarity
(a normalised 360 scene), and malformed files."""

import json
import math

import numpy as np
import pytest

from jaxnerf360 import camera_path_file
from jaxnerf360.data import loaders, normalize, synthetic
from jaxnerf360.errors import UserError


@pytest.fixture(scope="module")
def blender_dir(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("scene"), size=32, n_train=4, n_test=3)


def test_the_test_cameras_as_a_camera_path_are_the_test_views(blender_dir, tmp_path):
    frames = json.loads((blender_dir / "transforms_test.json").read_text())["frames"]
    fov = math.degrees(synthetic.CAMERA_ANGLE_X)  # square images: vertical = horizontal
    path = tmp_path / "path.json"
    path.write_text(json.dumps({
        "camera_type": "perspective", "render_height": 32, "fps": 12,
        "camera_path": [{"camera_to_world": np.asarray(f["transform_matrix"]).reshape(-1)
                         .tolist(), "fov": fov, "aspect": 1.0} for f in frames]}))
    scene = loaders.load_scene("blender", blender_dir, "test")
    views, fps = camera_path_file.read(str(path), scene)
    assert fps == 12 and len(views) == 3
    for view, pose, intrinsics in zip(views, scene.camtoworlds, scene.intrinsics, strict=True):
        assert (view.width, view.height) == (32, 32)
        np.testing.assert_allclose(view.camtoworld, pose, atol=1e-6)
        np.testing.assert_allclose(view.intrinsics, intrinsics, rtol=1e-5)
        assert (view.near, view.far) == (scene.near, scene.far)


def test_written_paths_are_in_the_original_world_and_read_back(blender_dir, tmp_path):
    scene = loaders.load_scene("blender", blender_dir, "train")
    # A 360-style normalisation: the file holds the original poses, ours are normalised.
    original = scene.camtoworlds.copy()
    scene.camtoworlds, transform = normalize.normalize_unbounded(original)
    scene.transform = transform.astype(np.float32)
    path = str(tmp_path / "written.json")
    camera_path_file.write(path, scene.camtoworlds, scene.transform, 40, 30, 45.0, fps=24)
    data = json.loads(open(path).read())
    assert data["render_width"] == 40 and data["fps"] == 24 and len(data["camera_path"]) == 4
    np.testing.assert_allclose(np.reshape(data["camera_path"][1]["camera_to_world"],
                                          (4, 4))[:3], original[1], atol=1e-5)
    views, fps = camera_path_file.read(path, scene)
    assert fps == 24 and (views[0].width, views[0].height) == (40, 30)
    focal = 15 / math.tan(math.radians(22.5))
    np.testing.assert_allclose(views[2].intrinsics, [focal, focal, 20, 15], rtol=1e-5)
    for view, pose in zip(views, scene.camtoworlds, strict=True):
        np.testing.assert_allclose(view.camtoworld, pose, atol=1e-5)


def test_the_size_defaults_to_the_scene_at_the_render_factor_and_the_aspect(blender_dir,
                                                                           tmp_path):
    scene = loaders.load_scene("blender", blender_dir, "test")
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"camera_path": [{"camera_to_world": np.eye(4).reshape(-1)
                                                .tolist(), "fov": 50, "aspect": 2.0}]}))
    views, fps = camera_path_file.read(str(path), scene, render_factor=2)
    assert fps is None and (views[0].width, views[0].height) == (32, 16)


@pytest.mark.parametrize("data, match", [
    ("[]", "expected a JSON object"),
    ('{"camera_path": []}', "missing or empty 'camera_path'"),
    ('{"camera_type": "fisheye", "camera_path": [{}]}', "camera_type 'fisheye'"),
    ('{"camera_path": [{"fov": 50}]}', "missing 'camera_to_world'"),
    ('{"camera_path": [{"camera_to_world": [1, 2], "fov": 50}]}', "must be 16 numbers"),
    (json.dumps({"camera_path": [{"camera_to_world": np.eye(4).reshape(-1).tolist(),
                                  "fov": 190}]}), "0 < fov < 180"),
    ('{"render_height": -3, "camera_path": [{}]}', "'render_height' must be a positive"),
    ("{bad", "cannot parse the JSON"),
])
def test_malformed_files_are_one_clear_line(blender_dir, tmp_path, data, match):
    scene = loaders.load_scene("blender", blender_dir, "test")
    path = tmp_path / "bad.json"
    path.write_text(data)
    with pytest.raises(UserError) as err:
        camera_path_file.read(str(path), scene)
    assert match in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="file not found"):
        camera_path_file.read(str(tmp_path / "missing.json"), scene)
