"""nerfstudio's camera-path JSON: read it to render a video, write it from recorded cameras.

The file (what nerfstudio's viewer exports, `ns-render camera-path` reads):

    {"camera_type": "perspective", "render_width": 640, "render_height": 480, "fps": 24,
     "camera_path": [{"camera_to_world": [16 numbers, row-major 4x4], "fov": 50,
                      "aspect": 1.333}, ...], "keyframes": [...], ...}

`camera_to_world` is an OpenGL camera-to-world matrix (as Blender's and ours) and `fov` the
vertical field of view in degrees. Poses are in the scene's original world, the frame its
files use (Blender's frame, the COLMAP world, or for a transforms.json the frame before
nerfstudio's applied_transform), which `Scene.transform` maps into ours. Only the
interpolated `camera_path` list is rendered (keyframes are the editor's).
"""

import json
import math
import os

import numpy as np

from jaxnerf360.data import normalize
from jaxnerf360.data.cameras import View
from jaxnerf360.errors import UserError, check


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"--camera_path {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--camera_path {path}: cannot parse the JSON ({e})") from None
    check(isinstance(data, dict), f"--camera_path {path}: expected a JSON object with "
                                  "'camera_path'")
    return data


def _positive_int(data: dict, key: str, where: str):
    value = data.get(key)
    if value is None:
        return None
    check(isinstance(value, int | float) and not isinstance(value, bool) and value > 0
          and float(value).is_integer(), f"{where}: '{key}' must be a positive integer, not "
                                         f"{value!r}")
    return int(value)


def read(path: str, scene, render_factor: int = 1) -> tuple:
    """(views, fps or None) of a camera-path file for `scene` (its transform, near/far, NDC).

    The size is the file's render_width/height, else the scene's at 1/render_factor (the
    width from the frames' `aspect` when the file gives only a height).
    """
    data = _read(path)
    where = f"--camera_path {path}"
    kind = data.get("camera_type", "perspective")
    check(kind == "perspective", f"{where}: camera_type {kind!r} is not supported (only "
                                 "'perspective')")
    frames = data.get("camera_path")
    check(isinstance(frames, list) and frames, f"{where}: missing or empty 'camera_path' list")
    height = _positive_int(data, "render_height", where) or scene.height // render_factor
    width = _positive_int(data, "render_width", where)
    poses, fovs = [], []
    for i, frame in enumerate(frames):
        at = f"{where} (frame {i})"
        check(isinstance(frame, dict), f"{at}: not a JSON object")
        try:
            matrix = np.asarray(frame["camera_to_world"], np.float64).reshape(4, 4)
            fov = float(frame["fov"])
        except KeyError as e:
            raise UserError(f"{at}: missing {e.args[0]!r}") from None
        except (TypeError, ValueError):
            raise UserError(f"{at}: 'camera_to_world' must be 16 numbers and 'fov' a number "
                            "(degrees)") from None
        check(bool(np.all(np.isfinite(matrix))) and 0 < fov < 180,
              f"{at}: needs a finite camera_to_world and 0 < fov < 180 degrees, got {fov}")
        if width is None:
            aspect = float(frame.get("aspect", scene.width / scene.height))
            width = max(1, round(height * aspect))
        poses.append(matrix[:3, :4])
        fovs.append(fov)
    normalize.check_poses(np.stack(poses), [f"{where} (frame {i})" for i in range(len(poses))])
    ours = normalize.apply_transform(scene.transform, np.stack(poses))
    views = []
    for pose, fov in zip(ours, fovs, strict=True):
        focal = 0.5 * height / math.tan(0.5 * math.radians(fov))
        views.append(View(camtoworld=pose.astype(np.float32),
                          intrinsics=np.array([focal, focal, 0.5 * width, 0.5 * height],
                                              np.float32),
                          width=width, height=height, near=scene.near, far=scene.far,
                          ndc=scene.ndc))
    return views, _positive_int(data, "fps", where)


def write(path: str, camtoworlds, transform, width: int, height: int, fov_degrees: float,
          fps: int = 30) -> None:
    """Writes poses `[N, 3, 4]` of our world as a camera-path file in the original world
    (`transform` is `Scene.transform`, original -> ours)."""
    original = normalize.apply_transform(np.linalg.inv(np.asarray(transform, np.float64)),
                                         np.asarray(camtoworlds, np.float64))
    frames = []
    for pose in original:
        matrix = np.eye(4)
        matrix[:3, :4] = pose
        frames.append({"camera_to_world": matrix.reshape(-1).tolist(),
                       "fov": float(fov_degrees), "aspect": width / height})
    data = {"camera_type": "perspective", "render_width": int(width),
            "render_height": int(height), "fps": int(fps), "seconds": len(frames) / fps,
            "camera_path": frames}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
