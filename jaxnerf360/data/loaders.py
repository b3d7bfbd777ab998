"""One entry point for every scene format: `load_scene(loader, data_dir, split, ...)`.

Default near/far when `near`/`far` are None (ray distance along unnormalised directions):
- "blender", "synthetic": 2 and 6 (objects within radius ~1.5 seen from radius ~4).
- "colmap", "llff": 0.2 and 1e6 in units after `normalize_unbounded` (cameras inside the
  unit ball; the far plane is effectively infinity, left to the contraction).
- "llff" with `forward_facing=True`: 0 and 1 in NDC.
- "transforms": bounded scenes as instant-ngp's aabb_scale cube says (else 2 and 6),
  unbounded ones as "colmap" (see `transforms`).
"""

import numbers
import os
from collections.abc import Sequence

from jaxnerf360.data import blender, colmap, llff, synthetic, transforms
from jaxnerf360.data.images import _check_factor
from jaxnerf360.data.scene import BOUNDED, FORWARD, UNBOUNDED, Scene
from jaxnerf360.errors import UserError, check

LOADERS = ("blender", "llff", "colmap", "synthetic", "transforms")
SPLITS = ("train", "test")


def scene_kind(loader: str, forward_facing: bool = False, data_dir=None,
               transforms_scene: str = "auto") -> str:
    """The kind (BOUNDED, UNBOUNDED or FORWARD) of the scenes a loader produces (a
    transforms.json scene's depends on its frames, so it needs `data_dir`)."""
    if loader in ("blender", "synthetic"):
        return BOUNDED
    if loader == "transforms":
        return transforms.resolve_kind(data_dir, transforms_scene)
    return FORWARD if loader == "llff" and forward_facing else UNBOUNDED


def load_scene(
    loader: str,
    data_dir: os.PathLike,
    split: str,
    *,
    factor: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    llff_hold: int = 8,
    forward_facing: bool = False,
    near: float | None = None,
    far: float | None = None,
    transforms_scene: str = "auto",
) -> Scene:
    """Loads one split of a scene in OpenGL convention; see the module docstring for near/far."""
    check(
        loader in LOADERS,
        f"unknown loader {loader!r}; choose one of {', '.join(LOADERS)} (Config.dataset_loader)",
    )
    check(
        data_dir is not None and str(data_dir) != "",
        "no data directory given; set Config.data_dir to the scene folder",
    )
    check(split in SPLITS, f"unknown split {split!r}; choose 'train' or 'test'")
    factor = _check_factor(factor)
    try:
        background = tuple(float(c) for c in background)
    except (TypeError, ValueError):
        raise UserError(f"background={background!r} must be 3 numbers in [0, 1]") from None
    check(
        len(background) == 3 and all(0.0 <= c <= 1.0 for c in background),
        f"background={background!r} must be 3 numbers (r, g, b) in [0, 1]",
    )
    for name, value in (("near", near), ("far", far)):
        # In NDC (forward-facing LLFF) t < 0 is still a positive depth, 1 / (1 - t) for the
        # mean camera: in front of the near plane at depth 1.
        ndc_near = name == "near" and forward_facing
        check(
            value is None
            or isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and (value >= 0 or ndc_near),
            f"{name}={value!r} must be a non-negative number, or None for the loader's default "
            f"(Config.{name})",
        )
    check(
        near is None or far is None or near < far,
        f"near={near} must be smaller than far={far}",
    )
    if forward_facing and loader != "llff":
        raise UserError(f"forward_facing=True is only supported by the llff loader, not {loader!r}")
    if loader in ("blender", "synthetic"):
        module = blender if loader == "blender" else synthetic
        return module.load(
            data_dir, split, factor=factor, background=background, near=near, far=far
        )
    if loader == "transforms":
        return transforms.load(data_dir, split, factor=factor, background=background,
                               llff_hold=llff_hold, kind=transforms_scene, near=near, far=far)
    if loader == "llff":
        return llff.load(
            data_dir,
            split,
            factor=factor,
            llff_hold=llff_hold,
            forward_facing=forward_facing,
            near=near,
            far=far,
        )
    return colmap.load(data_dir, split, factor=factor, llff_hold=llff_hold, near=near, far=far)
