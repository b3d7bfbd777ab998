"""The images of a new scene: frames picked from a video by sharpness, photos gathered from a
folder, and the area-downsampled `images_{2,4,8}/` copies the loaders read."""

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from jaxnerf360.data import images as image_lib
from jaxnerf360.errors import UserError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def sharpness(rgb: np.ndarray) -> float:
    """The variance of the Laplacian of `[H, W, 3]` uint8 or float grey levels (larger is
    sharper: blur and motion blur remove the second derivatives it measures)."""
    grey = np.asarray(rgb, np.float32)[..., :3].mean(axis=-1)
    return float(ndimage.laplace(grey).var())


def image_names(folder: Path) -> list:
    """The image files (png/jpg) directly inside `folder`, sorted by name."""
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def gather_images(folder: Path, out: Path) -> list:
    """Copies the photos of `folder` into `out` (unless they are already there); their names."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of images or a video file; give --input")
    names = image_names(folder)
    if not names:
        raise UserError(f"{folder}: no .png/.jpg images inside; give a folder of photos or a "
                        "video file as --input")
    out.mkdir(parents=True, exist_ok=True)
    if folder.resolve() != out.resolve():
        for name in names:
            shutil.copy2(folder / name, out / name)
    return names


def sample_video(path: Path, count: int, out: Path, log=print) -> list:
    """Writes about `count` frames of the video `path` to `out` as PNGs: the video is cut into
    `count` equal windows and the sharpest frame of each is kept. Their names, in order."""
    import imageio_ffmpeg

    if count < 1:
        raise UserError(f"--num_frames={count}: give at least 1 frame to sample")
    try:
        total, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as e:
        raise UserError(f"{path}: cannot read this video ({first_line(e)}); give an MP4/MOV that "
                        "ffmpeg can decode, or a folder of images") from None
    if total < 1:
        raise UserError(f"{path}: the video has no frames")
    width, height = meta["size"]
    windows = min(count, total)
    best = {}  # window -> (sharpness, frame index, frame)
    for index, raw in enumerate(reader):
        frame = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        window = min(index * windows // total, windows - 1)
        score = sharpness(frame)
        if window not in best or score > best[window][0]:
            best[window] = (score, index, frame.copy())
    if not best:
        raise UserError(f"{path}: no frame of the video could be decoded")
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for window in sorted(best):
        _, index, frame = best[window]
        name = f"frame_{index:05d}.png"
        Image.fromarray(frame).save(out / name)
        names.append(name)
    log(f"frames: kept {len(names)} of {total} (the sharpest of each window)")
    return names


def write_downscaled(images: Path, factors=(2, 4, 8)) -> None:
    """Writes `images_{f}/` beside `images/`: each image area-averaged to 1/f of its size
    (rounded, as COLMAP's scripts do; the loaders allow the rounding)."""
    names = image_names(images)
    for factor in factors:
        folder = images.parent / f"images_{factor}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()

        def shrink(name, folder=folder, factor=factor):
            with Image.open(images / name) as image:
                image.load()
                size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
                image.resize(size, Image.Resampling.BOX).save(folder / name)

        list(image_lib.parallel_map(shrink, names))


def is_video(path: Path) -> bool:
    """Whether `path` names a video file (by its suffix)."""
    return os.path.isfile(path) and Path(path).suffix.lower() in VIDEO_SUFFIXES
