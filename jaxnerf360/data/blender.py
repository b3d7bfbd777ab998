"""Blender / NeRF-synthetic scenes: `transforms_{split}.json` and RGBA PNGs."""

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxnerf360.data import images as image_lib
from jaxnerf360.data import normalize
from jaxnerf360.data.scene import BOUNDED, Scene
from jaxnerf360.errors import UserError, check

DEFAULT_NEAR = 2.0
DEFAULT_FAR = 6.0


def _resolve_image(data_dir: Path, file_path: str) -> Path:
    """Frame `file_path` (relative to data_dir, maybe without extension) -> image path."""
    path = data_dir / file_path
    if path.suffix.lower() in image_lib.IMAGE_EXTENSIONS:
        return path
    # NeRF-synthetic frames omit the extension ("./train/r_0"); try the usual ones.
    for ext in (".png", ".PNG", ".jpg", ".jpeg", ".JPG"):
        candidate = path.with_name(path.name + ext)
        if candidate.is_file():
            return candidate
    return path.with_name(path.name + ".png")


def _read_json(path: Path, split: str, data_dir: Path) -> dict:
    """Parses the transforms file, turning every failure into a one-line UserError."""
    if not data_dir.is_dir():
        raise UserError(
            f"{data_dir}: data directory not found (expected {path.name} inside); "
            "check the data directory"
        )
    if not path.is_file():
        raise UserError(
            f"{path}: not found; a Blender scene needs transforms_train.json and "
            f"transforms_test.json in {data_dir}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot parse the JSON ({e}); fix the file") from None
    check(isinstance(meta, dict), f"{path}: expected a JSON object with 'frames'")
    frames = meta.get("frames")
    check(isinstance(frames, list), f"{path}: missing the 'frames' list")
    check(len(frames) > 0, f"{path}: the '{split}' split has no frames; add frames or images")
    return meta


def _intrinsics(meta: dict, frame: dict, width: int, height: int, where: str) -> np.ndarray:
    """(fx, fy, cx, cy) at the file's resolution from camera_angle_x or fl_x/fl_y/cx/cy."""

    def get(key):
        return frame.get(key, meta.get(key))

    try:
        if get("fl_x") is not None:
            fx = float(get("fl_x"))
            fy = float(get("fl_y")) if get("fl_y") is not None else fx
        elif get("camera_angle_x") is not None:
            fx = 0.5 * width / math.tan(0.5 * float(get("camera_angle_x")))
            angle_y = get("camera_angle_y")
            fy = 0.5 * height / math.tan(0.5 * float(angle_y)) if angle_y is not None else fx
        else:
            raise UserError(f"{where}: no 'camera_angle_x' or 'fl_x'; add the camera intrinsics")
        cx = float(get("cx")) if get("cx") is not None else 0.5 * width
        cy = float(get("cy")) if get("cy") is not None else 0.5 * height
    except (TypeError, ValueError):
        raise UserError(f"{where}: camera intrinsics must be numbers") from None
    values = np.array([fx, fy, cx, cy])
    check(
        bool(np.all(np.isfinite(values))) and fx > 0 and fy > 0,
        f"{where}: invalid camera intrinsics (fx, fy, cx, cy) = {tuple(values)}",
    )
    return values


def _pose(frame: dict, where: str) -> np.ndarray:
    """The frame's `transform_matrix` as a float64 `[3, 4]` (already OpenGL)."""
    try:
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{where}: missing or malformed 'transform_matrix'") from None
    check(
        matrix.shape in ((4, 4), (3, 4)),
        f"{where}: 'transform_matrix' has shape {matrix.shape}; expected 4x4",
    )
    return matrix[:3, :4]


def load(
    data_dir: os.PathLike,
    split: str,
    *,
    factor: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    near: float | None = None,
    far: float | None = None,
) -> Scene:
    """Loads one split of a Blender scene, composited on `background`, downsampled by factor."""
    factor = image_lib._check_factor(factor)
    data_dir = Path(data_dir)
    json_path = data_dir / f"transforms_{split}.json"
    meta = _read_json(json_path, split, data_dir)

    paths, poses, names, wheres = [], [], [], []
    for i, frame in enumerate(meta["frames"]):
        check(isinstance(frame, dict), f"{json_path}: frame {i} is not a JSON object")
        file_path = frame.get("file_path")
        check(isinstance(file_path, str), f"{json_path}: frame {i} has no 'file_path'")
        paths.append(_resolve_image(data_dir, file_path))
        wheres.append(f"{json_path} (frame {i}, {file_path})")
        poses.append(_pose(frame, wheres[-1]))
        names.append(os.path.relpath(paths[-1], data_dir))
        # Check poses before decoding any image, so that a bad pose fails fast.
        normalize.check_poses(poses[-1][None], [f"{json_path} ({names[-1]})"])
    poses = np.stack(poses)

    def read(path):
        image = image_lib.load_image(path)
        size = image.shape[1], image.shape[0]
        if image.shape[-1] == 4:
            rgb, alpha = image_lib.composite(image, background), image[..., 3]
        else:
            rgb, alpha = image, None
        # Composite before filtering: averaging straight-alpha colours would bleed the
        # (arbitrary) colour of transparent pixels into object edges.
        rgb = image_lib.downsample(rgb, factor, str(path))
        alpha = None if alpha is None else image_lib.downsample(alpha, factor, str(path))
        return rgb, alpha, size

    images, alphas, intrinsics = [], [], []
    full_size = None
    loaded = image_lib.parallel_map(read, paths)
    for (rgb, alpha, (width, height)), frame, path, where in zip(
        loaded, meta["frames"], paths, wheres, strict=True
    ):
        want_w, want_h = frame.get("w", meta.get("w")), frame.get("h", meta.get("h"))
        if want_w is not None and want_h is not None:
            try:
                want_w, want_h = int(want_w), int(want_h)
            except (TypeError, ValueError):
                raise UserError(f"{where}: 'w' and 'h' must be integers") from None
            if (want_w, want_h) != (width, height):
                raise UserError(
                    f"{path}: image is {width}x{height} but its camera expects "
                    f"{want_w}x{want_h}; use the original images and set Config.factor "
                    "to downsample"
                )
        if full_size is None:
            full_size = (width, height)
        elif (width, height) != full_size:
            raise UserError(
                f"{path}: image is {width}x{height} but the other images of the split are "
                f"{full_size[0]}x{full_size[1]}; all images must share one size"
            )
        intrinsics.append(_intrinsics(meta, frame, width, height, where))
        images.append(rgb)
        alphas.append(alpha)

    # Downsampling crops any remainder at the bottom/right, so the pixel grid scales by
    # exactly 1/factor from the top-left corner.
    intrinsics = np.stack(intrinsics) / factor
    has_alpha = all(a is not None for a in alphas)
    return Scene(
        images=np.stack(images).astype(np.float32),
        camtoworlds=poses.astype(np.float32),
        intrinsics=intrinsics.astype(np.float32),
        distortion=np.zeros((len(images), 4), np.float32),
        near=DEFAULT_NEAR if near is None else float(near),
        far=DEFAULT_FAR if far is None else float(far),
        kind=BOUNDED,
        names=names,
        alphas=np.stack(alphas).astype(np.float32) if has_alpha else None,
    )
