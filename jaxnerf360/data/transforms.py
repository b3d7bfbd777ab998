"""instant-ngp / nerfstudio scenes: one `transforms.json` beside (or above) its frames.

What is read, globally or per frame where the format allows it:
- intrinsics: `fl_x`, `fl_y`, `cx`, `cy` (`w`, `h` checked against the images), or
  `camera_angle_x` / `camera_angle_y`;
- `camera_model`: PINHOLE, SIMPLE_PINHOLE or OPENCV with `k1 k2 p1 p2` (undistorted when
  rays are cast); a non-zero `k3` or `k4`, OPENCV_FISHEYE and other models are refused with
  a message (undistort the images first);
- `frames`: `file_path` (relative to the file; PNG or JPEG, with or without alpha) and
  `transform_matrix` (camera-to-world, OpenGL convention, as Blender's);
- splits: nerfstudio's `train_filenames` / `test_filenames` (`val_filenames` if there is no
  test list) when present, else every `llff_hold`-th frame is a test frame;
- the scene's extent: a bounded object scene (frames with transparent backgrounds, as
  Blender's) keeps the file's frame, with instant-ngp's `scale` and `offset` applied as
  p' = scale p + offset - 0.5 (its unit cube's centre at the origin) and near/far from its
  `aabb_scale` cube (else Blender's 2 and 6); any other scene (a phone capture: an object with
  real background) is unbounded and normalised as a 360 capture (cameras in the unit ball).
  `kind` ('auto', 'bounded', 'unbounded'; Config.transforms_scene) overrides the choice.
- nerfstudio's `applied_transform` (3x4, the transform it applied to the COLMAP poses) goes
  into `Scene.transform`, which then maps the original world to ours.
"""

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import logging

from jaxnerf360.data import blender, normalize
from jaxnerf360.data import images as image_lib
from jaxnerf360.data.llff import UNBOUNDED_FAR, UNBOUNDED_NEAR, holdout_indices
from jaxnerf360.data.scene import BOUNDED, UNBOUNDED, Scene
from jaxnerf360.errors import UserError, check

FILE_NAME = "transforms.json"
KINDS = ("auto", "bounded", "unbounded")
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")


def read_meta(data_dir: os.PathLike) -> tuple:
    """(path, parsed JSON object with a non-empty 'frames' list), or one clear line."""
    data_dir = Path(data_dir)
    path = data_dir / FILE_NAME
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data directory not found (expected {FILE_NAME} inside)")
    if not path.is_file():
        raise UserError(f"{path}: not found; a transforms scene is a folder with a "
                        f"{FILE_NAME} (instant-ngp / nerfstudio format) and its images")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot parse the JSON ({e}); fix the file") from None
    check(isinstance(meta, dict), f"{path}: expected a JSON object with 'frames'")
    frames = meta.get("frames")
    check(isinstance(frames, list) and frames, f"{path}: missing or empty 'frames' list")
    return path, meta


def _number(value, where: str, key: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: '{key}' must be a number, not {value!r}") from None
    check(math.isfinite(out), f"{where}: '{key}' must be finite, not {value!r}")
    return out


def distortion(meta: dict, frame: dict, where: str) -> np.ndarray:
    """(k1, k2, p1, p2) of a frame, after checking its camera model."""
    def get(key):
        return frame.get(key, meta.get(key))

    model = get("camera_model")
    if model is not None and model not in PINHOLE_MODELS:
        raise UserError(f"{where}: camera_model {model!r} is not supported (only "
                        f"{', '.join(PINHOLE_MODELS)}); undistort the images first (e.g. "
                        "colmap image_undistorter) and write a PINHOLE transforms.json")
    for key in ("k3", "k4"):
        if get(key) is not None and _number(get(key), where, key) != 0:
            raise UserError(f"{where}: '{key}' = {get(key)} is not supported (the OpenCV model "
                            "here has k1, k2, p1, p2); undistort the images first")
    return np.array([_number(get(k), where, k) if get(k) is not None else 0.0
                     for k in ("k1", "k2", "p1", "p2")])


def _split_frames(meta: dict, split: str, llff_hold: int, where: str) -> list:
    """Indices of the split's frames: nerfstudio's file lists, or every llff_hold-th."""
    frames = meta["frames"]
    lists = {"train": meta.get("train_filenames"),
             "test": meta.get("test_filenames", meta.get("val_filenames"))}
    if lists["train"] is None and lists["test"] is None:
        return list(holdout_indices(len(frames), split, llff_hold, where))
    wanted = lists[split]
    check(isinstance(wanted, list), f"{where}: has split lists but no '{split}_filenames' list")
    clean = lambda p: os.path.normpath(str(p))  # noqa: E731
    wanted = {clean(p) for p in wanted}
    chosen = [i for i, frame in enumerate(frames)
              if isinstance(frame, dict) and clean(frame.get("file_path", "")) in wanted]
    check(chosen, f"{where}: no frame's file_path is in '{split}_filenames'")
    return chosen


def _has_transparency(path: Path) -> bool:
    image = image_lib.load_image(path)
    return image.shape[-1] == 4 and float(image[..., 3].min()) < 1.0


def resolve_kind(data_dir: os.PathLike, kind: str = "auto") -> str:
    """BOUNDED or UNBOUNDED: `kind`, or for 'auto' whether the first frame is transparent."""
    check(kind in KINDS, f"Config.transforms_scene={kind!r} must be one of {list(KINDS)}")
    if kind != "auto":
        return BOUNDED if kind == "bounded" else UNBOUNDED
    path, meta = read_meta(data_dir)
    first = meta["frames"][0]
    check(isinstance(first, dict) and isinstance(first.get("file_path"), str),
          f"{path}: frame 0 has no 'file_path'")
    return BOUNDED if _has_transparency(blender._resolve_image(path.parent,
                                                               first["file_path"])) \
        else UNBOUNDED


def _matrix(value, shape: tuple, where: str, key: str) -> np.ndarray:
    what = "x".join(map(str, shape)) + (" matrix" if len(shape) > 1 else " vector")
    try:
        out = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where}: '{key}' must be a {what} of numbers") from None
    check(out.shape == shape and bool(np.all(np.isfinite(out))),
          f"{where}: '{key}' must be a finite {what}, not {value!r}")
    return out


def _bounded_frame(meta: dict, where: str) -> np.ndarray:
    """instant-ngp's `scale` and `offset` as the similarity p' = scale p + offset - 0.5."""
    scale = _number(meta.get("scale", 1.0), where, "scale")
    check(scale > 0, f"{where}: 'scale' must be positive, not {scale}")
    offset = _matrix(meta.get("offset", [0.5, 0.5, 0.5]), (3,), where, "offset")
    out = np.eye(4)
    out[:3, :3] *= scale
    out[:3, 3] = offset - 0.5
    return out


def _bounded_near_far(meta: dict, centres: np.ndarray, where: str) -> tuple:
    """Near/far around instant-ngp's `aabb_scale` cube (centred on the origin), or 2 and 6."""
    if meta.get("aabb_scale") is None:
        return blender.DEFAULT_NEAR, blender.DEFAULT_FAR
    aabb = _number(meta["aabb_scale"], where, "aabb_scale")
    check(aabb > 0, f"{where}: 'aabb_scale' must be positive, not {aabb}")
    radius = 0.5 * aabb * math.sqrt(3.0)
    distance = np.linalg.norm(centres, axis=-1)
    return max(1e-3, float(distance.min()) - radius), float(distance.max()) + radius


def load(data_dir: os.PathLike, split: str, *, factor: int = 1,
         background: Sequence[float] = (1.0, 1.0, 1.0), llff_hold: int = 8, kind: str = "auto",
         near: float | None = None, far: float | None = None) -> Scene:
    """Loads one split of a transforms.json scene (see the module docstring)."""
    factor = image_lib._check_factor(factor)
    path, meta = read_meta(data_dir)
    folder, where = path.parent, str(path)
    kind = resolve_kind(data_dir, kind)
    frames = meta["frames"]
    poses, names, dists = [], [], []
    for i, frame in enumerate(frames):
        at = f"{path} (frame {i})"
        check(isinstance(frame, dict), f"{at}: not a JSON object")
        check(isinstance(frame.get("file_path"), str), f"{at}: missing 'file_path'")
        poses.append(blender._pose(frame, at))
        names.append(frame["file_path"])
        dists.append(distortion(meta, frame, at))
    poses = np.stack(poses)
    normalize.check_poses(poses, [f"{path} ({n})" for n in names])
    original = np.eye(4)
    if meta.get("applied_transform") is not None:
        original[:3, :4] = _matrix(meta["applied_transform"], (3, 4), where,
                                   "applied_transform")
    if kind == BOUNDED:
        transform = _bounded_frame(meta, where)
        poses = normalize.apply_transform(transform, poses)
        default_near, default_far = _bounded_near_far(meta, poses[:, :3, 3], where)
    else:
        poses, transform = normalize.normalize_unbounded(poses)
        default_near, default_far = UNBOUNDED_NEAR, UNBOUNDED_FAR
    chosen = _split_frames(meta, split, llff_hold, where)
    if split == "train":
        logging.info("%s: %s scene (%s), %d frames, %d for %s", path, kind,
                     "transparent frames" if kind == BOUNDED else "opaque frames", len(frames),
                     len(chosen), split)

    def read(i):
        image_path = blender._resolve_image(folder, frames[i]["file_path"])
        image = image_lib.load_image(image_path)
        height, width = image.shape[:2]
        rgb = image_lib.composite(image, background) if image.shape[-1] == 4 else image
        alpha = image[..., 3] if image.shape[-1] == 4 else None
        rgb = image_lib.downsample(rgb, factor, str(image_path))
        alpha = None if alpha is None else image_lib.downsample(alpha, factor, str(image_path))
        at = f"{path} (frame {i}, {frames[i]['file_path']})"
        want = [frames[i].get(k, meta.get(k)) for k in ("w", "h")]
        if None not in want and (int(want[0]), int(want[1])) != (width, height):
            raise UserError(f"{image_path}: image is {width}x{height} but {path} says "
                            f"{int(want[0])}x{int(want[1])}; use the original images and set "
                            "Config.factor to downsample")
        intrinsics = blender._intrinsics(meta, frames[i], width, height, at)
        return rgb, alpha, intrinsics / factor, image_path

    images, alphas, intrinsics = [], [], []
    for rgb, alpha, intr, image_path in image_lib.parallel_map(read, chosen):
        if images and rgb.shape != images[0].shape:
            raise UserError(f"{image_path}: image is {rgb.shape[1]}x{rgb.shape[0]} after "
                            "downsampling, unlike the first image of the split; all images "
                            "must share one size")
        images.append(rgb)
        alphas.append(alpha)
        intrinsics.append(intr)
    has_alpha = kind == BOUNDED and all(a is not None for a in alphas)
    return Scene(
        images=np.stack(images).astype(np.float32),
        camtoworlds=poses[chosen].astype(np.float32),
        intrinsics=np.stack(intrinsics).astype(np.float32),
        distortion=np.stack([dists[i] for i in chosen]).astype(np.float32),
        near=default_near if near is None else float(near),
        far=default_far if far is None else float(far),
        kind=kind,
        names=[names[i] for i in chosen],
        alphas=np.stack(alphas).astype(np.float32) if has_alpha else None,
        transform=(transform @ original).astype(np.float32),
    )
