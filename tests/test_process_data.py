"""process_data against an independent truth: the analytic scene (textured for SIFT) filmed on
a known orbit, written as an MP4 with blurred frames mixed in; structure from motion must pick
the sharp frames, recover the cameras up to a similarity, and train as well as the true poses."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from jaxnerf360 import outputs, process_data
from jaxnerf360.data import colmap, frames, loaders, synthetic
from jaxnerf360.errors import UserError
from tests.cli_env import cli_env

ROOT = Path(__file__).resolve().parents[1]
VIEWS, SIZE = 32, 384


def orbit(n: int) -> np.ndarray:
    """`[n, 4, 4]` OpenGL cameras around the origin, alternating between two elevations."""
    poses = []
    for i in range(n):
        azimuth, elevation = 2 * math.pi * i / n, math.radians(25 if i % 2 == 0 else 45)
        direction = np.array([math.cos(elevation) * math.cos(azimuth),
                              math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
        poses.append(synthetic.look_at_origin(synthetic.CAMERA_RADIUS * direction))
    return np.stack(poses)


def umeyama(p: np.ndarray, q: np.ndarray) -> tuple:
    """(scale, `[3, 3]` rotation, `[3]` shift) of the similarity that best maps points `[n, 3]`
    `p` onto `q` in least squares (Umeyama 1991)."""
    x, y = p - p.mean(0), q - q.mean(0)
    u, s, vt = np.linalg.svd(y.T @ x)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (x ** 2).sum()
    return scale, rotation, q.mean(0) - scale * p.mean(0) @ rotation.T


def similarity_errors(estimated: np.ndarray, truth: np.ndarray) -> tuple:
    """(rotation errors in degrees `[n]`, centre errors `[n]`) of `[n, 3, 4]` camera-to-world
    poses after the best similarity: the centres by `umeyama`, the orientations by the
    rotation nearest (chordally) to every true-from-estimated rotation."""
    scale, rotation, shift = umeyama(estimated[:, :3, 3], truth[:, :3, 3])
    centres = scale * estimated[:, :3, 3] @ rotation.T + shift
    u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", truth[:, :3, :3], estimated[:, :3, :3]))
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    relative = np.einsum("nji,jk,nkl->nil", truth[:, :3, :3], rotation, estimated[:, :3, :3])
    cosines = np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return np.degrees(np.arccos(cosines)), np.linalg.norm(centres - truth[:, :3, 3], axis=1)


@pytest.fixture(scope="module")
def filmed(tmp_path_factory):
    """(scene folder written by process_data from an MP4, its summary, the true poses, which
    video frames were sharp)."""
    root = tmp_path_factory.mktemp("filmed")
    poses = orbit(VIEWS)
    rgba = synthetic.render_many(poses, SIZE, textured=True)
    sharp = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    blurred = ndimage.gaussian_filter(sharp, sigma=(0, 2.0, 2.0, 0))
    # Two frames per view, the blurred one first or second at random.
    first_sharp = np.random.default_rng(0).random(VIEWS) < 0.5
    video = np.stack([frame for i in range(VIEWS) for frame in (
        (sharp[i], blurred[i]) if first_sharp[i] else (blurred[i], sharp[i]))])
    outputs.write_video(str(root / "orbit.mp4"), video, fps=10)
    summary = process_data.process(root / "orbit.mp4", root / "scene", num_frames=VIEWS,
                                   log=lambda _: None)
    sharp_frames = {2 * i + (0 if first_sharp[i] else 1) for i in range(VIEWS)}
    return root / "scene", summary, poses, sharp_frames


def _views(names: list) -> list:
    return [int(name[len("frame_"):-len(".png")]) // 2 for name in names]


def test_the_sharpest_frame_of_each_window_is_kept(filmed):
    scene, _, _, sharp_frames = filmed
    kept = frames.image_names(scene / "images") + (
        frames.image_names(scene / "unregistered") if (scene / "unregistered").exists() else [])
    assert len(kept) == VIEWS
    assert {int(n[6:11]) for n in kept} == sharp_frames


def test_structure_from_motion_recovers_the_cameras_up_to_a_similarity(filmed):
    scene, summary, poses, _ = filmed
    assert summary["registered"] == VIEWS and summary["reprojection_error"] < 1.0
    assert not summary["forward_facing"]
    for kind in ("colmap", "llff"):
        # llff_hold beyond the count: only the first image is held out.
        loaded = loaders.load_scene(kind, scene, "train", factor=8, llff_hold=1000)
        names = frames.image_names(scene / "images")[1:]
        rotation, centre = similarity_errors(np.asarray(loaded.camtoworlds, np.float64),
                                             poses[_views(names)])
        print(kind, "rotation max/mean", rotation.max(), rotation.mean(), "centre max",
              centre.max())  # for BENCHMARKS.md (pytest -s)
        assert rotation.max() < 1.0, (kind, rotation)
        assert centre.max() < 0.02 * synthetic.CAMERA_RADIUS, (kind, centre)
        assert loaded.images.shape[1:3] == (SIZE // 8, SIZE // 8)


def test_training_on_the_recovered_cameras_matches_the_true_ones(filmed, tmp_path):
    """The same short run on the recovered cameras (brought into the true frame by the
    similarity that best maps their centres, a choice of gauge) and on the true cameras reaches
    nearly the same test PSNR."""
    scene, _, poses, _ = filmed
    names = frames.image_names(scene / "images")
    rec = colmap.read_model(scene)
    by_name = {im.name: colmap.cam_from_world(im) for im in rec.images.values()}
    recovered = colmap.opencv_w2c_to_opengl_c2w(np.stack([by_name[n] for n in names]))
    truth = poses[_views(names)]
    scale, rotation, shift = umeyama(recovered[:, :3, 3], truth[:, :3, 3])
    aligned = np.concatenate([np.einsum("ij,njk->nik", rotation, recovered[:, :3, :3]),
                              (scale * recovered[:, :3, 3] @ rotation.T + shift)[..., None]], -1)
    focal = 0.5 * SIZE / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    psnr = {}
    for which, c2w in (("recovered", aligned), ("true", truth[:, :3])):
        data, run = tmp_path / which, tmp_path / f"{which}_run"
        data.mkdir()
        (data / "images").symlink_to(scene / "images")
        (data / "transforms.json").write_text(json.dumps({
            "fl_x": focal, "fl_y": focal, "cx": SIZE / 2, "cy": SIZE / 2, "w": SIZE, "h": SIZE,
            "frames": [{"file_path": f"images/{n}",
                        "transform_matrix": np.vstack([m, [0, 0, 0, 1]]).tolist()}
                       for n, m in zip(names, c2w, strict=True)]}))
        bindings = [f"Config.data_dir='{data}'", f"Config.checkpoint_dir='{run}'",
                    "Config.dataset_loader='transforms'", "Config.transforms_scene='bounded'",
                    "Config.factor=4", "Config.max_steps=300", "Config.batch_size=512",
                    "Config.lr_delay_steps=0", "Config.checkpoint_every=300"]
        flags = [f"--gin_configs={ROOT}/configs/debug.gin"] + [f"--gin_bindings={b}"
                                                               for b in bindings]
        for module in ("train", "eval"):
            proc = subprocess.run([sys.executable, "-m", f"jaxnerf360.{module}", *flags],
                                  capture_output=True, text=True, cwd=ROOT, env=cli_env(),
                                  timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
        psnr[which] = json.loads((run / "eval" / "metrics.json").read_text())["psnr"]
    print("test PSNR", psnr)  # for BENCHMARKS.md (pytest -s)
    assert psnr["true"] > 16.0, psnr
    assert psnr["recovered"] > psnr["true"] - 1.0, psnr


def test_the_command_line_prints_how_to_train(filmed, tmp_path):
    """A folder of photos through the command line, undistorted to PINHOLE cameras; the summary
    line names the train command."""
    scene, _, _, _ = filmed
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in frames.image_names(scene / "images")[:12]:
        (photos / name).write_bytes((scene / "images" / name).read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "jaxnerf360.process_data", f"--input={photos}",
         f"--output={tmp_path / 'out'}", "--undistort"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images registered" in proc.stdout and "configs/360.gin" in proc.stdout
    assert "undistorted the images to PINHOLE" in proc.stderr
    assert (tmp_path / "out" / "images_8").is_dir()
    model = loaders.load_scene("colmap", tmp_path / "out", "train", factor=2, llff_hold=1000)
    assert np.all(np.asarray(model.distortion) == 0)


def test_bad_inputs_are_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .png/.jpg images inside"):
        process_data.process(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError, match="cannot read this video"):
        process_data.process(tmp_path / "broken.mp4", tmp_path / "out")
    with pytest.raises(UserError, match="not found, or neither"):
        process_data.process(tmp_path / "missing", tmp_path / "out")
    # Flat grey photos: nothing to match.
    (tmp_path / "flat").mkdir()
    for i in range(3):
        frames.Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(
            tmp_path / "flat" / f"{i}.png")
    with pytest.raises(UserError, match="found no model|registered only"):
        process_data.process(tmp_path / "flat", tmp_path / "out2", log=lambda _: None)
