"""LLFF scenes: `poses_bounds.npy` plus `images/` or `images_{factor}/`."""

import os
from pathlib import Path

import numpy as np

from jaxnerf360.data import images as image_lib
from jaxnerf360.data import normalize
from jaxnerf360.data.scene import FORWARD, UNBOUNDED, Scene
from jaxnerf360.errors import UserError, check

# Unbounded scenes, in units after normalize_unbounded (cameras inside the unit ball):
# start just in front of the camera and reach out to effectively infinity, where the
# contraction squashes everything to the radius-2 sphere (as multinerf's 360 configs).
UNBOUNDED_NEAR = 0.2
UNBOUNDED_FAR = 1e6
# Forward-facing scenes are rendered in NDC, where t in [0, 1] spans near plane to infinity.
NDC_NEAR = 0.0
NDC_FAR = 1.0


def holdout_indices(num_images: int, split: str, llff_hold: int, where: str) -> np.ndarray:
    """Indices of `split`: every llff_hold-th image (index % llff_hold == 0) is test."""
    ok = isinstance(llff_hold, int | np.integer) and not isinstance(llff_hold, bool)
    check(
        ok and llff_hold >= 1,
        f"llff_hold={llff_hold!r} must be a positive integer (8 is the LLFF convention)",
    )
    check(split in ("train", "test"), f"split={split!r} must be 'train' or 'test'")
    index = np.arange(num_images)
    is_test = index % llff_hold == 0
    chosen = index[is_test] if split == "test" else index[~is_test]
    check(
        chosen.size > 0,
        f"{where}: the '{split}' split is empty ({num_images} images, llff_hold={llff_hold}); "
        "add images or change Config.llff_hold",
    )
    return chosen


def find_image_folder(data_dir: Path, factor: int, expected: str) -> tuple:
    """-> (folder, downsample factor still to apply): `images_{factor}/` as-is, else `images/`."""
    if not data_dir.is_dir():
        raise UserError(
            f"{data_dir}: data directory not found (expected {expected} inside); "
            "check the data directory"
        )
    if factor > 1 and (data_dir / f"images_{factor}").is_dir():
        return data_dir / f"images_{factor}", 1
    if (data_dir / "images").is_dir():
        return data_dir / "images", factor
    others = sorted(p.name for p in data_dir.glob("images_*") if p.is_dir())
    hint = f" (found {', '.join(others)}/: set Config.factor to match)" if others else ""
    want = f"images_{factor}/ or images/" if factor > 1 else "images/"
    raise UserError(f"{data_dir}: no {want} folder{hint}")


def _check_size(path, actual: tuple, expected: tuple, tolerance: float) -> None:
    """UserError when a `(width, height)` differs from what the camera expects."""
    if abs(actual[0] - expected[0]) > tolerance or abs(actual[1] - expected[1]) > tolerance:
        raise UserError(
            f"{path}: image is {actual[0]}x{actual[1]} but its camera expects "
            f"{expected[0]:g}x{expected[1]:g}; check Config.factor and the image folder"
        )


def llff_to_opengl(poses: np.ndarray) -> np.ndarray:
    """`[N, 3, 4]` LLFF [down, right, back | t] -> OpenGL [right, up, back | t]."""
    return np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:4]], axis=-1)


def load(
    data_dir: os.PathLike,
    split: str,
    *,
    factor: int = 1,
    llff_hold: int = 8,
    forward_facing: bool = False,
    near: float | None = None,
    far: float | None = None,
) -> Scene:
    """Loads one split of an LLFF capture (forward-facing NDC or unbounded 360)."""
    factor = image_lib._check_factor(factor)
    data_dir = Path(data_dir)
    folder, ds = find_image_folder(data_dir, factor, "poses_bounds.npy")
    pb_path = data_dir / "poses_bounds.npy"
    if not pb_path.is_file():
        raise UserError(f"{pb_path}: not found; an LLFF scene needs poses_bounds.npy")
    try:
        poses_bounds = np.load(pb_path, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError, EOFError):
        # numpy's own message would suggest allow_pickle=True, which runs code from the file.
        raise UserError(f"{pb_path}: not a valid NumPy array file (.npy) of [N, 17] poses and "
                        "bounds; regenerate it (LLFF's imgs2poses.py writes it)") from None
    check(
        poses_bounds.ndim == 2 and poses_bounds.shape[1] == 17,
        f"{pb_path}: has shape {poses_bounds.shape}; expected [N, 17] (3x5 pose + 2 bounds)",
    )
    raw = poses_bounds[:, :15].reshape(-1, 3, 5)
    hwf = raw[:, :, 4]  # [N, 3]: height, width, focal at the resolution of images/
    bounds = poses_bounds[:, 15:17]

    names = image_lib.list_images(folder)
    check(
        len(names) == len(raw),
        f"{folder}: has {len(names)} images but {pb_path.name} has {len(raw)} poses; "
        "they must match one to one (sorted by file name)",
    )
    poses = llff_to_opengl(raw[:, :, :4])
    normalize.check_poses(poses, [str(folder / n) for n in names])
    check(
        bool(np.all(np.isfinite(bounds))) and bounds.min() > 0,
        f"{pb_path}: depth bounds must be finite and positive (min {bounds.min():g})",
    )
    check(
        bool(np.all(hwf > 0)),
        f"{pb_path}: the hwf column has non-positive entries; regenerate it",
    )

    # Normalise all images together so that train and test share one world frame.
    if forward_facing:
        poses, bounds, transform = normalize.recenter_forward(poses, bounds)
    else:
        poses, transform = normalize.normalize_unbounded(poses)

    chosen = holdout_indices(len(names), split, llff_hold, str(data_dir))
    # The camera of every row; the folder's images are at (hwf size) / (folder factor).
    folder_factor = factor if ds == 1 else 1

    def read(i):
        path = folder / names[i]
        image = image_lib.load_image(path)[..., :3]
        height, width = image.shape[:2]
        h_cam, w_cam, focal = hwf[i]
        _check_size(path, (width, height), (w_cam / folder_factor, h_cam / folder_factor), 1.0)
        # Scale by the actual ratio: images_{factor} may have been rounded when resized.
        sx, sy = width / w_cam, height / h_cam
        # Our own downsampling crops the remainder, so the grid scales by exactly 1/ds.
        intr = np.array([focal * sx, focal * sy, 0.5 * width, 0.5 * height]) / ds
        return image_lib.downsample(image, ds, str(path)), intr, path

    images, intrinsics = [], []
    for image, intr, path in image_lib.parallel_map(read, chosen):
        if images and image.shape != images[0].shape:
            raise UserError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} after downsampling, "
                f"unlike the first image of the split; all images must share one size"
            )
        images.append(image)
        intrinsics.append(intr)
    intrinsics = np.stack(intrinsics)
    images = np.stack(images).astype(np.float32)

    ndc = None
    if forward_facing:
        kind = FORWARD
        default_near, default_far = NDC_NEAR, NDC_FAR
        ndc = {
            "fx": float(intrinsics[0, 0]),
            "fy": float(intrinsics[0, 1]),
            "width": int(images.shape[2]),
            "height": int(images.shape[1]),
            "near": 1.0,
        }
    else:
        kind = UNBOUNDED
        default_near, default_far = UNBOUNDED_NEAR, UNBOUNDED_FAR
    return Scene(
        images=images,
        camtoworlds=poses[chosen].astype(np.float32),
        intrinsics=intrinsics.astype(np.float32),
        distortion=np.zeros((len(chosen), 4), np.float32),
        near=default_near if near is None else float(near),
        far=default_far if far is None else float(far),
        kind=kind,
        names=[names[i] for i in chosen],
        transform=transform.astype(np.float32),
        ndc=ndc,
    )
