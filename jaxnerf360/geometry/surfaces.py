"""Surfaces out of a radiance field: back-projected depth, outlier removal, marching cubes.

Pure numpy (and scipy / scikit-image) on the host; `jaxnerf360.export` feeds them the
rendered depths and the densities sampled from a trained field.
"""

import numpy as np
from scipy import spatial
from skimage import measure


def backproject(origins, directions, distance, keep):
    """World points `[K, 3]` at ray distance `distance [...]` along rays `origins, directions
    [..., 3]` (t in units of the unnormalised directions), where `keep [...]` holds."""
    keep = np.asarray(keep, bool)
    return (np.asarray(origins)[keep] + np.asarray(distance)[keep][:, None]
            * np.asarray(directions)[keep])


def remove_outliers(points, neighbors: int = 16, std_ratio: float = 2.0):
    """bool `[N]`: the points whose mean distance to their `neighbors` nearest others is within
    `std_ratio` standard deviations of the mean over all points (Open3D's statistical
    filter); everything is kept when there are too few points or `neighbors` is 0."""
    points = np.asarray(points, np.float64)
    if neighbors <= 0 or len(points) <= neighbors:
        return np.ones(len(points), bool)
    distances, _ = spatial.cKDTree(points).query(points, k=neighbors + 1)
    mean = distances[:, 1:].mean(axis=1)  # the first neighbour is the point itself
    return mean <= mean.mean() + std_ratio * mean.std()


def subsample(count: int, budget: int, seed: int = 0):
    """Sorted indices of at most `budget` of `count` items, drawn without replacement."""
    if count <= budget:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, budget, replace=False))


def grid_points(box_min, box_max, resolution: int):
    """`[R, R, R, 3]` the sample points of a regular grid spanning the box, corners included."""
    axes = [np.linspace(lo, hi, resolution) for lo, hi in zip(box_min, box_max, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def marching_cubes(values, level: float, box_min, box_max):
    """(vertices `[V, 3]` in world units, faces `[F, 3]`, outward normals `[V, 3]`) of the
    `level` set of `values [R, R, R]` sampled on `grid_points(box_min, box_max, R)`, where the
    inside is `values > level`; the grid is closed by a border below the level, so the surface
    is closed. None when no value crosses the level."""
    values = np.asarray(values, np.float32)
    if not values.max() > level:
        return None
    padded = np.pad(values, 1, constant_values=min(float(values.min()), level) - 1.0)
    box_min, box_max = np.asarray(box_min, np.float64), np.asarray(box_max, np.float64)
    spacing = (box_max - box_min) / (np.asarray(values.shape) - 1)
    # marching_cubes orients faces towards lower values by default ('descent'): the normals
    # then point out of the dense inside.
    verts, faces, normals, _ = measure.marching_cubes(padded, level, spacing=tuple(spacing),
                                                      gradient_direction="descent")
    return verts + box_min - spacing, faces.astype(np.int64), normals


def boundary_edges(faces) -> int:
    """Number of mesh edges not shared by exactly two faces (0 for a closed, manifold mesh)."""
    faces = np.asarray(faces, np.int64)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.sort(edges, axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int(np.sum(counts != 2))
