"""Structure from motion with pycolmap: features, matches, incremental mapping, the largest
model checked and written as `sparse/0/`, optional undistortion, and LLFF's poses_bounds.npy."""

import shutil
import time
from pathlib import Path

import numpy as np

from jaxnerf360.data import colmap
from jaxnerf360.errors import UserError, first_line

CAMERA_MODES = ("per_folder", "single", "per_image")
MATCHERS = ("auto", "exhaustive", "sequential")
EXHAUSTIVE_UP_TO = 100  # images: beyond this, auto matching pairs each image with its neighbours


def reconstruct(images: Path, work: Path, camera_model: str = "SIMPLE_RADIAL",
                camera_mode: str = "per_folder", matching: str = "auto", log=print):
    """The largest pycolmap Reconstruction of the photos in `images` (database and every
    model under `work`)."""
    import pycolmap

    if camera_mode not in CAMERA_MODES:
        raise UserError(f"--camera_mode={camera_mode}: choose one of {', '.join(CAMERA_MODES)}")
    if matching not in MATCHERS:
        raise UserError(f"--matching={matching}: choose one of {', '.join(MATCHERS)}")
    count = sum(1 for p in images.iterdir() if p.is_file())
    if matching == "auto":
        matching = "exhaustive" if count <= EXHAUSTIVE_UP_TO else "sequential"
    pycolmap.logging.minloglevel = 2  # COLMAP's own chatter: errors only; we print progress
    work.mkdir(parents=True, exist_ok=True)
    database = work / "database.db"
    database.unlink(missing_ok=True)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    mode = getattr(pycolmap.CameraMode, camera_mode.upper())
    start = time.time()
    try:
        pycolmap.extract_features(database, images, camera_mode=mode, reader_options=reader)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"{images}: feature extraction failed ({first_line(e)}); check "
                        f"--camera_model={camera_model} and the images") from None
    log(f"sfm 1/3: SIFT features of {count} images ({time.time() - start:.1f} s)")
    start = time.time()
    (pycolmap.match_exhaustive if matching == "exhaustive" else pycolmap.match_sequential)(
        database)
    log(f"sfm 2/3: {matching} matching ({time.time() - start:.1f} s)")
    start = time.time()
    models = work / "sparse"
    shutil.rmtree(models, ignore_errors=True)
    models.mkdir()
    found = pycolmap.incremental_mapping(database, images, models)
    log(f"sfm 3/3: incremental mapping, {len(found)} model(s) ({time.time() - start:.1f} s)")
    if not found:
        raise UserError(f"{images}: structure from motion found no model (too few matches "
                        "between the images); give more overlapping, textured, sharp photos")
    return max(found.values(), key=lambda rec: rec.num_reg_images())


def check_registered(rec, names: list, min_fraction: float, where: Path) -> list:
    """The names `rec` failed to register; a UserError naming them when fewer than
    `min_fraction` of `names` are registered."""
    done = {im.name for im in colmap.registered_images(rec)}
    failed = [n for n in names if n not in done]
    if len(names) - len(failed) < min_fraction * len(names):
        shown = ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
        raise UserError(f"{where}: structure from motion registered only "
                        f"{len(names) - len(failed)} of {len(names)} images (needs "
                        f"{min_fraction:.0%}, --min_registered); not registered: {shown}")
    return failed


def undistort(model: Path, images: Path, work: Path) -> tuple:
    """Undistorts `images` to PINHOLE cameras with COLMAP; (images folder, model folder)."""
    import pycolmap

    out = work / "undistorted"
    shutil.rmtree(out, ignore_errors=True)
    pycolmap.undistort_images(out, model, images)
    return out / "images", out / "sparse"


def poses_bounds(rec) -> np.ndarray:
    """`[N, 17]` LLFF poses_bounds (images sorted by name): each camera-to-world as
    [down, right, back | centre | height, width, focal] and the 0.1/99.9 percentile depths of
    the 3D points it sees, as LLFF's imgs2poses computes them."""
    images = colmap.registered_images(rec)
    w2c = np.stack([colmap.cam_from_world(im) for im in images])
    gl = colmap.opencv_w2c_to_opengl_c2w(w2c)
    llff = np.concatenate([-gl[:, :, 1:2], gl[:, :, 0:1], gl[:, :, 2:4]], axis=-1)
    index = {im.image_id: i for i, im in enumerate(images)}
    depths = [[] for _ in images]
    for point in rec.points3D.values():
        for element in point.track.elements:
            i = index.get(element.image_id)
            if i is not None:
                depths[i].append(w2c[i, 2, :3] @ point.xyz + w2c[i, 2, 3])
    every = np.concatenate([np.asarray(d) for d in depths if d] or [np.ones(1)])
    rows = []
    for i, im in enumerate(images):
        camera = rec.cameras[im.camera_id]
        (fx, _, _, _), _ = colmap.camera_parameters(camera, im.name)
        z = np.asarray(depths[i]) if len(depths[i]) >= 2 else every
        near, far = np.percentile(z, 0.1), np.percentile(z, 99.9)
        hwf = np.array([[camera.height], [camera.width], [fx]], np.float64)
        rows.append(np.concatenate([np.concatenate([llff[i], hwf], 1).ravel(),
                                    [max(near, 1e-3), max(far, near + 1e-3)]]))
    return np.stack(rows)


def looks_forward(rec) -> bool:
    """Whether the cameras all look one way (a forward-facing capture) rather than around."""
    w2c = np.stack([colmap.cam_from_world(im) for im in colmap.registered_images(rec)])
    forward = w2c[:, 2, :3]  # each camera's optical axis in world coordinates (row 3 of R)
    return bool(np.linalg.norm(forward.mean(axis=0)) > 0.9)
