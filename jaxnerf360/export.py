"""Exports a trained scene's geometry: `python -m jaxnerf360.export pointcloud|mesh`.

    python -m jaxnerf360.export pointcloud --checkpoint_dir=RUN [--out=RUN/export/points.ply]
    python -m jaxnerf360.export mesh --checkpoint_dir=RUN [--out=RUN/export/mesh.ply|.obj]

`pointcloud` renders the training views (`--views` of them, evenly spread) and lifts every
pixel whose accumulated opacity reaches `--min_opacity` to its median depth, with its rendered
colour; a statistical outlier filter (`--outlier_neighbors`, `--outlier_std`) and a budget of
`--max_points` follow. `mesh` samples the field's density on a `--resolution`^3 grid and runs
marching cubes at `--level`: inside the box `--box_min`..`--box_max` for bounded scenes
(Blender's [-1.5, 1.5]^3 by default), inside the unit ball's cube before contraction for
unbounded ones; each vertex takes the field's colour seen from outside along its normal.
Both are written in the scene's original world (the frame of its files, as camera paths).
Forward-facing (NDC) scenes are not supported.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from jaxnerf360 import cli, outputs, parallel
from jaxnerf360.cameras import Cameras
from jaxnerf360.data import load_split
from jaxnerf360.data.cameras import scene_view
from jaxnerf360.data.scene import BOUNDED, FORWARD, UNBOUNDED
from jaxnerf360.errors import UserError
from jaxnerf360.geometry import surfaces
from jaxnerf360.model import FIELD
from jaxnerf360.rendering import Renderer
from jaxnerf360.samplers import field_warp
from jaxnerf360.trained import load_trained
from jaxnerf360.training import Training

flags.DEFINE_string("out", None, "Output file (.ply; .obj also for meshes); default "
                    "RUN/export/points.ply or RUN/export/mesh.ply.")
flags.DEFINE_integer("views", 20, "pointcloud: training views to lift (evenly spread).")
flags.DEFINE_float("min_opacity", 0.5, "pointcloud: least accumulated opacity of a pixel.")
flags.DEFINE_integer("max_points", 1_000_000, "pointcloud: most points written.")
flags.DEFINE_integer("outlier_neighbors", 16, "pointcloud: neighbours of the outlier filter "
                     "(0: no filter).")
flags.DEFINE_float("outlier_std", 2.0, "pointcloud: standard deviations the filter allows.")
flags.DEFINE_integer("resolution", 192, "mesh: density samples along each axis.")
flags.DEFINE_float("level", 2.5, "mesh: the density of the surface (per world unit; 2.5 as "
                   "instant-ngp's marching cubes).")
flags.DEFINE_list("box_min", None, "mesh: the box's lower corner (bounded scenes).")
flags.DEFINE_list("box_max", None, "mesh: the box's upper corner (bounded scenes).")
FLAGS = flags.FLAGS

DEFAULT_BOX = (-1.5, 1.5)  # Blender's / TensoRF's object box
_CHUNK = 65536  # grid points per density query


def _to_original(scene, points):
    """Points of our world `[N, 3]` in the scene's original world."""
    inverse = np.linalg.inv(np.asarray(scene.transform, np.float64))
    return np.asarray(points, np.float64) @ inverse[:3, :3].T + inverse[:3, 3]


def _check_kind(scene, what: str) -> None:
    if scene.kind == FORWARD:
        raise UserError(f"export {what}: forward-facing (NDC) scenes are not supported; "
                        "export a bounded (Blender, synthetic) or unbounded (COLMAP, 360) scene")


def point_cloud(model, state, scene, mesh, chunk: int, views: int, min_opacity: float,
                neighbors: int, std_ratio: float, max_points: int) -> tuple:
    """(points `[N, 3]` in the original world, colours `[N, 3]`, stats) of the lifted depth."""
    _check_kind(scene, "pointcloud")
    renderer = Renderer(model, mesh, "white", chunk)
    picks = np.unique(np.linspace(0, scene.num_images - 1, min(views, scene.num_images))
                      .round().astype(int))
    points, colours = [], []
    for i in picks:
        view = scene_view(scene, int(i))
        k = renderer.upsample
        rays = view.coarse(k).rays() if k > 1 else view.rays()
        out = renderer.image(state, view)
        rgb = out["rgb"] if k == 1 else out["rgb"][k // 2::k, k // 2::k]  # a latent pixel's
        keep = out["acc"] >= min_opacity
        points.append(surfaces.backproject(rays.origins, rays.directions,
                                           out["distance_median"], keep))
        colours.append(np.asarray(rgb)[keep])
    points, colours = np.concatenate(points), np.concatenate(colours)
    lifted = len(points)
    kept = surfaces.remove_outliers(points, neighbors, std_ratio)
    points, colours = points[kept], colours[kept]
    chosen = surfaces.subsample(len(points), max_points)
    stats = {"views": len(picks), "lifted": lifted, "outliers": int((~kept).sum()),
             "points": len(chosen)}
    return _to_original(scene, points[chosen]), colours[chosen], stats


def _box(scene, box_min, box_max) -> tuple:
    if scene.kind == UNBOUNDED:
        return np.full(3, -1.0), np.full(3, 1.0)  # the unit ball, where contraction is identity
    lo = np.full(3, DEFAULT_BOX[0]) if box_min is None else np.asarray(box_min, np.float64)
    hi = np.full(3, DEFAULT_BOX[1]) if box_max is None else np.asarray(box_max, np.float64)
    if lo.shape != (3,) or hi.shape != (3,) or not np.all(hi > lo):
        raise UserError(f"--box_min={list(lo)} and --box_max={list(hi)} must be 3 numbers each, "
                        "the maximum above the minimum on every axis")
    return lo, hi


def field_at(model, params, scene_kind: str, points, radius: float, viewdirs=None) -> dict:
    """The field's outputs at world `points [N, 3]`, each an isotropic Gaussian of standard
    deviation `radius` (the footprint an integrated encoding needs), warped to field space;
    with `viewdirs [N, 3]` colours too."""
    covs = jnp.broadcast_to(radius**2 * jnp.eye(3), points.shape + (3,))
    means, covs = field_warp(scene_kind)(points[:, None], covs[:, None])
    if viewdirs is None:  # density does not depend on them, but some fields need some
        viewdirs = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), points.shape)
    out = model.parts()[FIELD].apply({"params": params[FIELD]}, means, covs, viewdirs)
    return {name: value[:, 0] for name, value in out.items()}


def _chunked(fn, *arrays) -> np.ndarray:
    return np.concatenate([np.asarray(fn(*(jnp.asarray(a[i:i + _CHUNK], jnp.float32)
                                           for a in arrays)))
                           for i in range(0, len(arrays[0]), _CHUNK)])


def density_grid(model, params, scene_kind: str, box_min, box_max, resolution: int):
    """The field's density `[R, R, R]` on `surfaces.grid_points` of the box (world units),
    each sample a Gaussian of half the grid spacing."""
    points = surfaces.grid_points(box_min, box_max, resolution).reshape(-1, 3)
    radius = 0.5 * float(np.max((np.asarray(box_max) - box_min) / (resolution - 1)))
    query = jax.jit(lambda x: field_at(model, params, scene_kind, x, radius)["density"])
    return _chunked(query, points).reshape((resolution,) * 3)


def vertex_colours(model, params, scene_kind: str, vertices, normals, radius: float):
    """The field's colour `[V, 3]` at each vertex, seen from outside along its normal."""
    @jax.jit
    def colour(x, n):
        dirs = -n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
        return field_at(model, params, scene_kind, x, radius, dirs)["rgb"]

    return _chunked(colour, vertices, normals)


def extract_mesh(model, state, scene, resolution: int, level: float, box_min=None,
                 box_max=None) -> tuple:
    """(vertices `[V, 3]` in the original world, faces `[F, 3]`, colours `[V, 3]`, stats)."""
    _check_kind(scene, "mesh")
    lo, hi = _box(scene, box_min, box_max)
    params = Training.model_params(jax.device_get(state))
    values = density_grid(model, params, scene.kind, lo, hi, resolution)
    found = surfaces.marching_cubes(values, level, lo, hi)
    if found is None:
        raise UserError(f"export mesh: no density inside the box reaches --level={level} (the "
                        f"largest is {float(values.max()):.3g}); lower --level or train longer")
    vertices, faces, normals = found
    radius = 0.5 * float(np.max((hi - lo) / (resolution - 1)))
    colours = vertex_colours(model, params, scene.kind, vertices, normals, radius)
    stats = {"box_min": lo.tolist(), "box_max": hi.tolist(), "vertices": len(vertices),
             "faces": len(faces), "boundary_edges": surfaces.boundary_edges(faces)}
    return _to_original(scene, vertices), faces, colours, stats


def _floats(name: str, values):
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except ValueError:
        raise UserError(f"--{name}={','.join(values)} must be 3 numbers, e.g. -1.5,-1.5,-1.5"
                        ) from None


def main(argv):
    """Entry point."""
    what = argv[1]
    config = cli.load_run()
    out = FLAGS.out or os.path.join(config.checkpoint_dir, "export",
                                    "points.ply" if what == "pointcloud" else "mesh.ply")
    extension = os.path.splitext(out)[1].lower()
    if extension not in ((".ply",) if what == "pointcloud" else (".ply", ".obj")):
        raise UserError(f"--out={out}: write a {'.ply' if what == 'pointcloud' else '.ply or .obj'}"
                        " file")
    box_min, box_max = (_floats(name, getattr(FLAGS, name)) for name in ("box_min", "box_max"))
    mesh = parallel.make_mesh(config.mesh_shape, fallback=True)
    scene = load_split(config, "train")
    if scene.kind not in (BOUNDED, UNBOUNDED):
        _check_kind(scene, what)
    learned = Cameras().learned and not FLAGS.compressed
    model, state = load_trained(config, scene, mesh, FLAGS.compressed,
                                scene if learned else None)
    if learned:  # lift the views from the cameras the field was fitted with
        scene.camtoworlds = Cameras(scene, seed=config.seed).current(state.params)
    start = time.perf_counter()
    if what == "pointcloud":
        points, colours, stats = point_cloud(
            model, state, scene, mesh, config.render_chunk_size, FLAGS.views, FLAGS.min_opacity,
            FLAGS.outlier_neighbors, FLAGS.outlier_std, FLAGS.max_points)
        outputs.write_ply(out, points, colours)
    else:
        points, faces, colours, stats = extract_mesh(model, state, scene, FLAGS.resolution,
                                                     FLAGS.level, box_min, box_max)
        (outputs.write_obj if extension == ".obj" else outputs.write_ply)(out, points, colours,
                                                                         faces)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    logging.info("export %s: %s", what, stats)
    print(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in stats.items()))


if __name__ == "__main__":
    cli.run(main, commands=("pointcloud", "mesh"))
