"""Writing what eval, render and export produce: images, depth maps, videos, point clouds and
meshes (PLY, OBJ)."""

import os

import numpy as np
from PIL import Image


def to_uint8(image) -> np.ndarray:
    """Float image in [0, 1] `[H, W, C]` to uint8."""
    return (np.clip(np.nan_to_num(np.asarray(image)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str, image) -> None:
    """Writes a float `[H, W]` or `[H, W, 3]` image in [0, 1] as an 8-bit PNG."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)


# Depth is shown only where the accumulated opacity reaches this: where a ray hits little or
# nothing its expected depth is noise (as nerfstudio's colormaps do).
MIN_DEPTH_OPACITY = 0.5


def depth_range(depth, acc=None) -> tuple:
    """(lo, hi): the 1st and 99th percentiles of inverse depth `[...]` over the pixels whose
    opacity `acc [...]` reaches MIN_DEPTH_OPACITY (over all pixels if none does, or no acc)."""
    inv = 1.0 / np.maximum(np.asarray(depth, np.float64), 1e-6)
    if acc is not None:
        opaque = np.asarray(acc) >= MIN_DEPTH_OPACITY
        if opaque.any():
            inv = inv[opaque]
    return float(np.percentile(inv, 1)), float(np.percentile(inv, 99))


def depth_to_image(depth, acc=None, lo=None, hi=None) -> np.ndarray:
    """Depth `[H, W]` to a grayscale image in [0, 1]: near is bright (disparity-like).

    With the opacity `acc [H, W]`, pixels below MIN_DEPTH_OPACITY are black and the rest
    shaded by their opacity; `lo`/`hi` (inverse depths) default to `depth_range`.
    """
    depth = np.asarray(depth, np.float64)
    inv = 1.0 / np.maximum(depth, 1e-6)
    if lo is None or hi is None:
        auto_lo, auto_hi = depth_range(depth, acc)
        lo = auto_lo if lo is None else lo
        hi = auto_hi if hi is None else hi
    out = np.clip((inv - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    if acc is not None:
        acc = np.clip(np.asarray(acc), 0.0, 1.0)
        out = np.where(acc >= MIN_DEPTH_OPACITY, out * acc, 0.0)
    return out.astype(np.float32)


def write_video(path: str, frames, fps: int) -> None:
    """Writes `[T, H, W, 3]` float frames (or `[T, H, W]` gray) as an H.264 MP4."""
    import imageio_ffmpeg
    import mediapy

    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    frames = np.asarray(frames, np.float32)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # H.264 wants even sizes: pad by edge replication rather than failing.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    mediapy.write_video(path, to_uint8(frames), fps=fps)


def write_ply(path: str, points, colours, faces=None) -> None:
    """Writes points `[N, 3]` with float colours `[N, 3]` in [0, 1] (and triangles `[F, 3]`)
    as a binary PLY."""
    from plyfile import PlyData, PlyElement

    points = np.asarray(points, np.float32)
    rgb = to_uint8(colours)
    vertex = np.empty(len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                                          ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = rgb[:, i]
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = np.asarray(faces, np.int32)
        elements.append(PlyElement.describe(face, "face"))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    PlyData(elements).write(path)


def write_obj(path: str, points, colours, faces) -> None:
    """Writes a triangle mesh as OBJ with per-vertex colours (`v x y z r g b`)."""
    points = np.asarray(points, np.float64)
    colours = np.clip(np.asarray(colours, np.float64), 0.0, 1.0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        np.savetxt(f, np.concatenate([points, colours], axis=1),
                   fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
        np.savetxt(f, np.asarray(faces, np.int64) + 1, fmt="f %d %d %d")
