"""COLMAP scenes: a sparse model (`sparse/0`, binary or text) plus `images/`."""

import os
from pathlib import Path

import numpy as np

from jaxnerf360.data import images as image_lib
from jaxnerf360.data import normalize
from jaxnerf360.data.llff import (
    UNBOUNDED_FAR,
    UNBOUNDED_NEAR,
    find_image_folder,
    holdout_indices,
)
from jaxnerf360.data.scene import UNBOUNDED, Scene
from jaxnerf360.errors import UserError, first_line

# Camera model -> function of its params giving ((fx, fy, cx, cy), (k1, k2, p1, p2)).
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": lambda p: ((p[0], p[0], p[1], p[2]), (0.0, 0.0, 0.0, 0.0)),
    "PINHOLE": lambda p: ((p[0], p[1], p[2], p[3]), (0.0, 0.0, 0.0, 0.0)),
    "SIMPLE_RADIAL": lambda p: ((p[0], p[0], p[1], p[2]), (p[3], 0.0, 0.0, 0.0)),
    "RADIAL": lambda p: ((p[0], p[0], p[1], p[2]), (p[3], p[4], 0.0, 0.0)),
    "OPENCV": lambda p: ((p[0], p[1], p[2], p[3]), (p[4], p[5], p[6], p[7])),
}


def find_sparse_model(data_dir: Path) -> Path:
    """The folder holding cameras/images/points3D (`sparse/0`, else `sparse`)."""
    if not data_dir.is_dir():
        raise UserError(
            f"{data_dir}: data directory not found (expected sparse/0/cameras.bin inside); "
            "check the data directory"
        )
    for candidate in (data_dir / "sparse" / "0", data_dir / "sparse"):
        if (candidate / "cameras.bin").is_file() or (candidate / "cameras.txt").is_file():
            return candidate
    raise UserError(
        f"{data_dir}: no COLMAP model found (expected sparse/0/cameras.bin or cameras.txt "
        "with images and points3D beside it); run COLMAP's mapper first"
    )


def read_model(data_dir: os.PathLike):
    """Reads the sparse model with pycolmap, turning failures into a one-line UserError."""
    import pycolmap  # Imported lazily: only COLMAP scenes need it.

    model_dir = find_sparse_model(Path(data_dir))
    try:
        return pycolmap.Reconstruction(model_dir)
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on bad files.
        raise UserError(f"{model_dir}: cannot read the COLMAP model ({first_line(e)})") from None


def cam_from_world(image) -> np.ndarray:
    """`[3, 4]` world-to-camera (OpenCV axes) of a pycolmap image (3.x property or 4.x method)."""
    pose = image.cam_from_world
    if callable(pose):
        pose = pose()
    return np.asarray(pose.matrix(), dtype=np.float64)


def opencv_w2c_to_opengl_c2w(w2c: np.ndarray) -> np.ndarray:
    """`[..., 3, 4]` world-to-camera with axes (right, down, forward) -> OpenGL camera-to-world."""
    rot = w2c[..., :3, :3]
    trans = w2c[..., :3, 3]
    rot_c2w = np.swapaxes(rot, -1, -2)
    center = -np.einsum("...ij,...j->...i", rot_c2w, trans)
    # Flip camera y (down -> up) and z (forward -> back).
    rot_c2w = rot_c2w * np.array([1.0, -1.0, -1.0])
    return np.concatenate([rot_c2w, center[..., None]], axis=-1)


def model_name(camera) -> str:
    """The COLMAP model name of a pycolmap camera ('SIMPLE_RADIAL', ...)."""
    return camera.model.name if hasattr(camera.model, "name") else str(camera.model)


def registered_images(rec) -> list:
    """The images of a pycolmap Reconstruction that have a pose, sorted by name."""
    images = [im for im in rec.images.values() if not hasattr(im, "has_pose") or im.has_pose]
    return sorted(images, key=lambda im: im.name)


def camera_parameters(camera, image_name: str) -> tuple:
    """pycolmap camera -> ((fx, fy, cx, cy), (k1, k2, p1, p2)) at the camera's resolution."""
    model = model_name(camera)
    if model not in CAMERA_MODELS:
        raise UserError(
            f"{image_name}: camera {camera.camera_id} uses the {model} model, which is not "
            f"supported ({', '.join(CAMERA_MODELS)}); undistort the images first with "
            "`colmap image_undistorter`"
        )
    intr, dist = CAMERA_MODELS[model](np.asarray(camera.params, dtype=np.float64))
    return np.array(intr, dtype=np.float64), np.array(dist, dtype=np.float64)


def load(
    data_dir: os.PathLike,
    split: str,
    *,
    factor: int = 1,
    llff_hold: int = 8,
    near: float | None = None,
    far: float | None = None,
) -> Scene:
    """Loads one split of a COLMAP capture as an unbounded scene, one camera per image."""
    factor = image_lib._check_factor(factor)
    data_dir = Path(data_dir)
    model_dir = find_sparse_model(data_dir)
    folder, ds = find_image_folder(data_dir, factor, "sparse/0/cameras.bin and images/")
    rec = read_model(data_dir)

    registered = registered_images(rec)
    if not registered:
        raise UserError(f"{model_dir}: the COLMAP model has no registered images")
    names = [im.name for im in registered]

    # Check every camera before the (slow) image decoding so that bad models fail fast.
    cameras = [rec.cameras[im.camera_id] for im in registered]
    params = [
        camera_parameters(camera, im.name) for camera, im in zip(cameras, registered, strict=True)
    ]
    # Plain Python values, so the image-reading threads never touch pycolmap objects.
    camera_sizes = [(int(camera.width), int(camera.height)) for camera in cameras]
    poses = opencv_w2c_to_opengl_c2w(np.stack([cam_from_world(im) for im in registered]))
    normalize.check_poses(poses, names)
    # Normalise all images together so that train and test share one world frame.
    poses, transform = normalize.normalize_unbounded(poses)

    chosen = holdout_indices(len(registered), split, llff_hold, str(data_dir))

    def read(i):
        path = folder / names[i]
        image = image_lib.load_image(path)[..., :3]
        height, width = image.shape[:2]
        cam_w, cam_h = camera_sizes[i]
        if ds == 1 and folder.name != "images":
            # A pre-resized images_{factor}/: sizes may be rounded, scale by the true ratio.
            expected, tolerance = (cam_w / factor, cam_h / factor), 1.0
        else:
            expected, tolerance = (cam_w, cam_h), 0.0
        if abs(width - expected[0]) > tolerance or abs(height - expected[1]) > tolerance:
            raise UserError(
                f"{path}: image is {width}x{height} but its camera expects "
                f"{expected[0]:g}x{expected[1]:g}; check Config.factor and the image folder"
            )
        intr, dist = params[i]
        scale = np.array([width / cam_w, height / cam_h, width / cam_w, height / cam_h])
        # Our downsampling crops any remainder, so the grid scales by exactly 1/ds; the
        # distortion acts on normalised coordinates and is unchanged by resizing.
        return image_lib.downsample(image, ds, str(path)), intr * scale / ds, dist, path

    images, intrinsics, distortion = [], [], []
    for image, intr, dist, path in image_lib.parallel_map(read, chosen):
        if images and image.shape != images[0].shape:
            raise UserError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} after downsampling, "
                "unlike the first image of the split; all images must share one size"
            )
        images.append(image)
        intrinsics.append(intr)
        distortion.append(dist)

    return Scene(
        images=np.stack(images).astype(np.float32),
        camtoworlds=poses[chosen].astype(np.float32),
        intrinsics=np.stack(intrinsics).astype(np.float32),
        distortion=np.stack(distortion).astype(np.float32),
        near=UNBOUNDED_NEAR if near is None else float(near),
        far=UNBOUNDED_FAR if far is None else float(far),
        kind=UNBOUNDED,
        names=[names[i] for i in chosen],
        transform=transform.astype(np.float32),
    )
