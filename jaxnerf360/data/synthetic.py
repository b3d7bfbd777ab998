"""A procedural quickstart scene, ray-traced analytically in numpy, saved in Blender format.

A checker-textured sphere, a box and a capped cylinder stand on a checkered ground disk,
all within radius 1.3 of the origin (world +z up). Shading is Lambertian with one
directional light and hard shadows, so colours do not depend on the view direction.
Cameras sit on the upper hemisphere at radius 4 looking at the origin. Each pixel is
traced through its centre only, so alpha is exactly 0 or 1.

    python -m jaxnerf360.data.synthetic --out /tmp/synthetic --size 64
"""

import argparse
import json
import math
import os
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from jaxnerf360 import parallel
from jaxnerf360.data import blender
from jaxnerf360.data.scene import Scene
from jaxnerf360.errors import UserError

# Scene description (world units, +z up). Public so tests can intersect it themselves.
DISK_RADIUS = 1.2  # ground disk in the plane z = 0, centred on the origin
SPHERE_CENTER = np.array([0.45, -0.35, 0.45])
SPHERE_RADIUS = 0.45
BOX_MIN = np.array([-0.75, -0.45, 0.0])
BOX_MAX = np.array([-0.2, 0.05, 0.6])
CYLINDER_AXIS_XY = np.array([0.05, 0.6])  # vertical axis through this (x, y)
CYLINDER_RADIUS = 0.22
CYLINDER_HEIGHT = 0.9  # from z = 0 to this height
CAMERA_RADIUS = 4.0
CAMERA_ANGLE_X = 0.7  # horizontal field of view in radians
ELEVATION_RANGE = (math.radians(15.0), math.radians(70.0))

MARKER = "jaxnerf360_synthetic.json"  # marks a folder as a scene this module generated

_LIGHT = np.array([0.45, 0.3, 1.0]) / np.linalg.norm([0.45, 0.3, 1.0])
_AMBIENT = 0.3
_EPS = 1e-6


def _hit_disk(o, d):
    """Ray/disk (z = 0, |xy| <= DISK_RADIUS) -> (t [n], normal [n, 3]); t = inf on a miss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[:, 2] / d[:, 2]
    p = o + t[:, None] * d
    ok = (t > _EPS) & (np.sum(p[:, :2] ** 2, axis=-1) <= DISK_RADIUS**2) & (d[:, 2] != 0)
    normal = np.broadcast_to(np.array([0.0, 0.0, 1.0]), o.shape)
    return np.where(ok, t, np.inf), normal


def _hit_sphere(o, d):
    """Ray/sphere -> (t [n], outward normal [n, 3]) of the nearest hit in front."""
    oc = o - SPHERE_CENTER
    a = np.sum(d * d, axis=-1)
    b = np.sum(oc * d, axis=-1)
    c = np.sum(oc * oc, axis=-1) - SPHERE_RADIUS**2
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t0, t1 = (-b - sq) / a, (-b + sq) / a
    t = np.where(t0 > _EPS, t0, np.where(t1 > _EPS, t1, np.inf))
    t = np.where(disc >= 0, t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return t, (p - SPHERE_CENTER) / SPHERE_RADIUS


def _hit_box(o, d):
    """Ray/axis-aligned box by the slab method -> (t [n], outward normal [n, 3])."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        ta = (BOX_MIN - o) * inv
        tb = (BOX_MAX - o) * inv
    # A ray parallel to a slab gives 0 * inf = nan; treat it as -inf/+inf (or a miss).
    lo = np.where(np.isnan(ta), -np.inf, np.minimum(ta, tb))
    hi = np.where(np.isnan(ta), np.inf, np.maximum(ta, tb))
    t_enter, t_exit = lo.max(axis=-1), hi.min(axis=-1)
    axis = lo.argmax(axis=-1)
    ok = (t_enter <= t_exit) & (t_exit > _EPS)
    t = np.where(t_enter > _EPS, t_enter, t_exit)
    t = np.where(ok, t, np.inf)
    normal = np.zeros_like(o)
    rows = np.arange(len(o))
    normal[rows, axis] = -np.sign(d[rows, axis])
    return t, normal


def _hit_cylinder(o, d):
    """Ray/vertical capped cylinder on the ground -> (t [n], outward normal [n, 3])."""
    oxy = o[:, :2] - CYLINDER_AXIS_XY
    dxy = d[:, :2]
    a = np.sum(dxy * dxy, axis=-1)
    b = np.sum(oxy * dxy, axis=-1)
    c = np.sum(oxy * oxy, axis=-1) - CYLINDER_RADIUS**2
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - sq) / a
    z = o[:, 2] + t_side * d[:, 2]
    side_ok = (disc >= 0) & (a > 0) & (t_side > _EPS) & (z >= 0) & (z <= CYLINDER_HEIGHT)
    t_side = np.where(side_ok, t_side, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_cap = (CYLINDER_HEIGHT - o[:, 2]) / d[:, 2]
    pc = oxy + np.where(np.isfinite(t_cap), t_cap, 0.0)[:, None] * dxy
    cap_ok = (t_cap > _EPS) & (np.sum(pc * pc, axis=-1) <= CYLINDER_RADIUS**2)
    t_cap = np.where(cap_ok, t_cap, np.inf)
    p = oxy + np.where(np.isfinite(t_side), t_side, 0.0)[:, None] * dxy
    side_normal = np.concatenate([p / CYLINDER_RADIUS, np.zeros_like(p[:, :1])], axis=-1)
    cap_normal = np.broadcast_to(np.array([0.0, 0.0, 1.0]), o.shape)
    use_cap = t_cap < t_side
    return np.minimum(t_side, t_cap), np.where(use_cap[:, None], cap_normal, side_normal)


_PRIMITIVES = (_hit_disk, _hit_sphere, _hit_box, _hit_cylinder)


def _checker(u, v):
    """Checkerboard parity (0 or 1) of real coordinates."""
    return (np.floor(u).astype(np.int64) + np.floor(v).astype(np.int64)) % 2


def _albedo(which, p):
    """Surface colour `[n, 3]` of primitive index `which [n]` at points `p [n, 3]`."""
    ground = np.where(
        _checker(p[:, 0] / 0.3, p[:, 1] / 0.3)[:, None] == 1,
        np.array([0.85, 0.82, 0.72]),
        np.array([0.3, 0.4, 0.55]),
    )
    q = p - SPHERE_CENTER
    lon = np.arctan2(q[:, 1], q[:, 0]) / (2 * np.pi) * 12
    lat = np.arccos(np.clip(q[:, 2] / SPHERE_RADIUS, -1, 1)) / np.pi * 6
    ball = np.where(
        _checker(lon, lat)[:, None] == 1, np.array([0.95, 0.55, 0.1]), np.array([0.95] * 3)
    )
    box = np.broadcast_to(np.array([0.8, 0.15, 0.15]), p.shape)
    stripe = _checker(p[:, 2] / 0.15, 0.0 * p[:, 2])[:, None] == 1
    cylinder = np.where(stripe, np.array([0.15, 0.65, 0.3]), np.array([0.1, 0.4, 0.2]))
    colours = np.stack([ground, ball, box, cylinder])
    return colours[which, np.arange(len(p))]


def speckle(points: np.ndarray) -> np.ndarray:
    """`[n]` in [0.55, 1]: a fixed, non-repeating texture of 3D points (hashed value noise at
    two scales), which structure from motion can match where the checkers repeat."""
    total = 0.0
    for cell, weight in ((0.05, 0.6), (0.017, 0.4)):
        q = np.floor(np.asarray(points, np.float64) / cell).astype(np.int64)
        h = (q[:, 0] * 73856093) ^ (q[:, 1] * 19349663) ^ (q[:, 2] * 83492791)
        total = total + weight * ((h * 2654435761) % 1000003) / 1000003.0
    return 0.55 + 0.45 * total


def trace(origins: np.ndarray, directions: np.ndarray, textured: bool = False) -> tuple:
    """Traces rays `[n, 3]` -> (rgb `[n, 3]` shaded colour, alpha `[n]` 1 where anything is hit);
    `textured` darkens every surface by `speckle`."""
    ts, normals = zip(*(hit(origins, directions) for hit in _PRIMITIVES), strict=True)
    ts = np.stack(ts)
    which = ts.argmin(axis=0)
    rows = np.arange(len(origins))
    t = ts[which, rows]
    hit = np.isfinite(t)
    normal = np.stack(normals)[which, rows]
    # Light the side facing the viewer (the ground disk is seen from above only anyway).
    flip = np.sum(normal * directions, axis=-1) > 0
    normal = np.where(flip[:, None], -normal, normal)
    points = origins + np.where(hit, t, 0.0)[:, None] * directions
    lit = np.maximum(normal @ _LIGHT, 0.0)
    shadow_o = points + 1e-4 * normal
    shadow_d = np.broadcast_to(_LIGHT, points.shape)
    shadow_t = np.min([h(shadow_o, shadow_d)[0] for h in _PRIMITIVES], axis=0)
    lit = np.where(np.isfinite(shadow_t), 0.0, lit)
    rgb = _albedo(which, points) * (_AMBIENT + (1 - _AMBIENT) * lit)[:, None]
    if textured:
        rgb = rgb * speckle(points)[:, None]
    return np.where(hit[:, None], rgb, 0.0), hit.astype(np.float32)


def distance(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Ray distance `[n]` (in units of `directions [n, 3]`) to the first surface; inf on a miss."""
    return np.min([hit(origins, directions)[0] for hit in _PRIMITIVES], axis=0)


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """`[3]` camera centre -> `[4, 4]` OpenGL camera-to-world looking at the origin, +z up."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, :4] = np.stack([right, up, back, position], axis=1)
    return pose


def hemisphere_cameras(n: int, phase: float, offset: float) -> np.ndarray:
    """`[n, 4, 4]` poses on a Fibonacci spiral over the elevation band at CAMERA_RADIUS."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    lo, hi = np.sin(ELEVATION_RANGE[0]), np.sin(ELEVATION_RANGE[1])
    k = np.arange(n) + offset
    z = lo + (hi - lo) * k / n  # uniform in z: uniform area on the spherical band
    azimuth = phase + golden * k
    ring = np.sqrt(1.0 - z**2)
    dirs = np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=-1)
    return np.stack([look_at_origin(CAMERA_RADIUS * v) for v in dirs])


def render(camtoworld: np.ndarray, size: int, textured: bool = False) -> np.ndarray:
    """Renders `[size, size, 4]` float RGBA for one `[4, 4]` pose (field of view CAMERA_ANGLE_X)."""
    return render_many(camtoworld[None], size, textured)[0]


def render_many(camtoworlds: np.ndarray, size: int, textured: bool = False) -> np.ndarray:
    """Renders `[n, size, size, 4]` float RGBA for `[n, 4, 4]` poses (`textured`: see trace)."""
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    centres = np.arange(size) + 0.5
    u, v = np.meshgrid(centres, centres, indexing="xy")
    cam = np.stack([(u - 0.5 * size) / focal, -(v - 0.5 * size) / focal, -np.ones_like(u)], -1)
    dirs = np.einsum("nij,hwj->nhwi", camtoworlds[:, :3, :3], cam).reshape(-1, 3)
    origins = np.repeat(camtoworlds[:, :3, 3], size * size, axis=0)
    rgb, alpha = trace(origins, dirs, textured)
    rgba = np.concatenate([rgb, alpha[:, None]], axis=-1)
    return rgba.reshape(len(camtoworlds), size, size, 4)


def _write_json(path: Path, frames: list) -> None:
    """Writes a transforms file atomically (readers never see a half-written file)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}, f, indent=1)
    os.replace(tmp, path)


def generate(
    out_dir: os.PathLike, *, size: int = 64, n_train: int = 48, n_test: int = 8, seed: int = 0
) -> Path:
    """Renders the scene into `out_dir` in Blender format (train/test/val JSON, RGBA PNGs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Written first: the folder is this module's, even if generation stops half-way.
    with open(out_dir / MARKER, "w", encoding="utf-8") as f:
        json.dump({"generator": "jaxnerf360.data.synthetic", "size": size, "n_train": n_train,
                   "n_test": n_test, "seed": seed}, f)
    rng = np.random.default_rng(seed)
    phase = float(rng.uniform(0.0, 2.0 * np.pi))
    splits = {
        "train": hemisphere_cameras(n_train, phase, 0.5),
        # Test views interleave the train spiral: shifted in both height and azimuth.
        "test": hemisphere_cameras(n_test, phase + math.pi / max(n_test, 1), 0.25),
    }
    for split, poses in splits.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        rgba = render_many(poses, size) if len(poses) else np.zeros((0, size, size, 4))
        frames = []
        for i, (pose, image) in enumerate(zip(poses, rgba, strict=True)):
            name = f"r_{i:03d}"
            pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
            Image.fromarray(pixels).save(out_dir / split / f"{name}.png")
            frames.append({"file_path": f"./{split}/{name}", "transform_matrix": pose.tolist()})
        splits[split] = frames
    _write_json(out_dir / "transforms_val.json", splits["test"])
    _write_json(out_dir / "transforms_test.json", splits["test"])
    # Written last: its presence tells `load` the scene is complete.
    _write_json(out_dir / "transforms_train.json", splits["train"])
    return out_dir


def is_generated(data_dir: os.PathLike) -> bool:
    """Whether `data_dir` holds a scene this module wrote (its marker, or, for scenes written
    before the marker existed, transforms with this generator's field of view and names)."""
    data_dir = Path(data_dir)
    if (data_dir / MARKER).is_file():
        return True
    try:
        with open(data_dir / "transforms_train.json", encoding="utf-8") as f:
            meta = json.load(f)
        frames = meta["frames"]
        return meta["camera_angle_x"] == CAMERA_ANGLE_X and all(
            str(frame["file_path"]).startswith("./train/r_") for frame in frames)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _looks_like(data_dir: Path) -> str:
    """The loader a folder's files suggest, as a phrase for an error message."""
    if (data_dir / "sparse").is_dir():
        return "a COLMAP capture (use Config.dataset_loader = 'colmap')"
    if (data_dir / "poses_bounds.npy").is_file():
        return "an LLFF capture (use Config.dataset_loader = 'llff')"
    if (data_dir / "transforms_train.json").is_file():
        return "a Blender scene (use Config.dataset_loader = 'blender')"
    if (data_dir / "transforms.json").is_file():
        return "an instant-ngp / nerfstudio scene (use Config.dataset_loader = 'transforms')"
    return "no scene format this project reads"


def load(data_dir: os.PathLike, split: str, **opts) -> Scene:
    """Loads the synthetic scene from data_dir with the Blender loader, generating it first.

    It generates only into a missing or empty folder: a folder with other files is refused
    (it would otherwise write into, say, the user's own capture and train on the wrong scene).
    """
    data_dir = Path(data_dir)
    if jax.process_index() == 0:  # one writer; the other processes read once it has written
        if data_dir.is_dir() and any(data_dir.iterdir()) and not is_generated(data_dir):
            raise UserError(f"{data_dir}: holds files the synthetic loader did not write; it "
                            f"looks like {_looks_like(data_dir)}. The synthetic loader "
                            "generates its scene only into a new or empty folder")
        if not (data_dir / "transforms_train.json").is_file():
            generate(data_dir)
    parallel.barrier(f"synthetic scene {split}")
    return blender.load(data_dir, split, **opts)


def main(argv=None) -> None:
    """Command line: writes the synthetic scene to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--n-train", type=int, default=48)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size < 1 or args.n_train < 1 or args.n_test < 1:
        parser.error("--size, --n-train and --n-test must be positive")
    out = generate(
        args.out, size=args.size, n_train=args.n_train, n_test=args.n_test, seed=args.seed
    )
    print(
        f"wrote {args.n_train} train and {args.n_test} test views of {args.size}x{args.size} "
        f"to {out}"
    )


if __name__ == "__main__":
    main()
