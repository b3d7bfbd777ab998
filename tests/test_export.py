"""Point clouds and meshes out of a field, against the synthetic scene's known surfaces: a VM
field set by hand to the scene's box (exact truth, no training), and a short-trained field
through the command line; the surface helpers against brute force; bad inputs."""

import dataclasses
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from plyfile import PlyData

from jaxnerf360 import export, parallel, training
from jaxnerf360.data import load_split, synthetic
from jaxnerf360.data.scene import FORWARD
from jaxnerf360.errors import UserError
from jaxnerf360.geometry import surfaces
from tests.cli_env import cli_env
from tests.test_grid_training import _config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
RES = 64  # grid points over [-1.5, 1.5]: a spacing of 3 / 63
SPACING = 3.0 / (RES - 1)


@pytest.fixture(autouse=True)
def _clean_gin():
    yield
    gin.clear_config()


def surface_distance(points):
    """Unsigned distance `[N]` to the nearest surface of the synthetic scene (its primitives'
    distance functions, written from the scene's published constants)."""
    p = np.asarray(points, np.float64)
    s = synthetic
    sphere = np.abs(np.linalg.norm(p - s.SPHERE_CENTER, axis=-1) - s.SPHERE_RADIUS)
    centre, half = (s.BOX_MIN + s.BOX_MAX) / 2, (s.BOX_MAX - s.BOX_MIN) / 2
    q = np.abs(p - centre) - half
    box = np.abs(np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0))
    d = np.stack([np.linalg.norm(p[:, :2] - s.CYLINDER_AXIS_XY, axis=-1) - s.CYLINDER_RADIUS,
                  np.abs(p[:, 2] - s.CYLINDER_HEIGHT / 2) - s.CYLINDER_HEIGHT / 2], -1)
    cylinder = np.abs(np.minimum(d.max(-1), 0) + np.linalg.norm(np.maximum(d, 0), axis=-1))
    radial = np.maximum(np.linalg.norm(p[:, :2], axis=-1) - s.DISK_RADIUS, 0)
    disk = np.sqrt(radial**2 + p[:, 2] ** 2)
    return np.min([sphere, box, cylinder, disk], axis=0)


def box_distance(points):
    """Unsigned distance to the surface of the synthetic scene's box."""
    centre, half = (synthetic.BOX_MIN + synthetic.BOX_MAX) / 2, (
        synthetic.BOX_MAX - synthetic.BOX_MIN) / 2
    q = np.abs(np.asarray(points) - centre) - half
    return np.abs(np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0))


@pytest.fixture
def box_run(synthetic_dir):
    """(model, state, scene, mesh) of `box_field`."""
    return box_field(synthetic_dir)


def box_field(synthetic_dir, *bindings):
    """A VM field whose density is 200 inside the synthetic scene's box and 0 elsewhere (one
    rank: the xy plane's indicator times the z line's), with the occupancy sampler."""
    config = _config(synthetic_dir, *bindings, "Model.field = @TensoRFField",
                     "Model.sampler = @OccupancySampler",
                     f"TensoRFField.resolution = ({RES}, {RES}, {RES})",
                     "TensoRFField.density_ranks = (1, 1, 1)",
                     "TensoRFField.appearance_ranks = (2, 2, 2)", "TensoRFField.mlp_width = 16",
                     "TensoRFField.density_activation = 'relu'",
                     "TensoRFField.density_scale = 1.0", "TensoRFField.upsample_steps = ()",
                     "OccupancySampler.grid_resolution = 32", "OccupancySampler.step_ratio = 0.5",
                     "Config.batch_size = 64")
    scene = load_split(config, "train")
    mesh = parallel.make_mesh()
    run = training.Training(config, scene, mesh)
    grid = np.linspace(-1.5, 1.5, RES)
    inside = [(grid >= lo) & (grid <= hi) for lo, hi in zip(synthetic.BOX_MIN,
                                                            synthetic.BOX_MAX, strict=True)]
    params = jax.device_get(run.state.params)
    field = dict(params["field"])
    for m in range(3):
        field[f"density_plane_{m}"] = np.zeros_like(field[f"density_plane_{m}"])
        field[f"density_line_{m}"] = np.zeros_like(field[f"density_line_{m}"])
    field["density_plane_0"][0] = 200.0 * np.outer(inside[0], inside[1])  # over (x, y)
    field["density_line_0"][0] = inside[2].astype(np.float32)  # along z
    state = run.state.replace(params={**params, "field": jax.tree.map(jnp.asarray, field)})
    return run.model, parallel.replicate(state, mesh), scene, mesh


def test_a_mesh_of_the_box_field_lies_on_the_box_and_is_closed(box_run):
    model, state, scene, _ = box_run
    vertices, faces, colours, stats = export.extract_mesh(model, state, scene, RES, 100.0)
    # The level 100 lies where the interpolated indicator crosses 1/2: between grid points.
    assert box_distance(vertices).max() < SPACING
    assert stats["boundary_edges"] == 0 == surfaces.boundary_edges(faces)
    assert colours.shape == vertices.shape and 0 <= colours.min() and colours.max() <= 1
    # The mesh encloses the box's volume (divergence theorem over the closed surface).
    tri = vertices[faces]
    volume = np.sum(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))) / 6
    box_volume = np.prod(synthetic.BOX_MAX - synthetic.BOX_MIN)
    assert abs(abs(volume) - box_volume) < 0.15 * box_volume, (volume, box_volume)
    with pytest.raises(UserError, match="no density inside the box reaches --level=500"):
        export.extract_mesh(model, state, scene, RES, 500.0)


def test_the_point_cloud_of_the_box_field_lies_on_the_box(box_run):
    model, state, scene, mesh = box_run
    points, colours, stats = export.point_cloud(model, state, scene, mesh, 4096, views=6,
                                                min_opacity=0.5, neighbors=8, std_ratio=2.0,
                                                max_points=200)
    assert stats["views"] == 6 and stats["lifted"] > 200 and len(points) == 200
    assert np.percentile(box_distance(points), 95) < 0.05
    assert colours.shape == (200, 3)


def test_surface_helpers_against_brute_force():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(300, 3))
    far = np.concatenate([cloud, [[40.0, 0, 0]]])
    kept = surfaces.remove_outliers(far, neighbors=5, std_ratio=2.0)
    assert not kept[-1] and kept[:-1].mean() > 0.9
    # Mean distance to the 5 nearest, by brute force, decides the same way.
    d = np.linalg.norm(far[:, None] - far[None], axis=-1)
    mean5 = np.sort(d, axis=1)[:, 1:6].mean(1)
    np.testing.assert_array_equal(kept, mean5 <= mean5.mean() + 2 * mean5.std())
    assert len(surfaces.subsample(10, 20)) == 10 and len(set(surfaces.subsample(50, 7))) == 7
    # A sphere's level set: vertices at the radius, closed.
    pts = surfaces.grid_points((-1, -1, -1), (1, 1, 1), 41)
    values = 1.0 - np.linalg.norm(pts, axis=-1)  # > 0.4 inside radius 0.6
    verts, faces, normals = surfaces.marching_cubes(values, 0.4, (-1, -1, -1), (1, 1, 1))
    np.testing.assert_allclose(np.linalg.norm(verts, axis=-1), 0.6, atol=0.01)
    assert surfaces.boundary_edges(faces) == 0
    assert np.mean(np.einsum("ij,ij->i", normals, verts) > 0) > 0.99  # outward
    open_mesh = faces[:-1]
    assert surfaces.boundary_edges(open_mesh) == 3


def test_forward_facing_scenes_are_refused_in_one_line(box_run):
    model, state, scene, mesh = box_run
    flat = dataclasses.replace(scene, kind=FORWARD)
    for call in (lambda: export.point_cloud(model, state, flat, mesh, 64, 1, 0.5, 0, 2.0, 10),
                 lambda: export.extract_mesh(model, state, flat, 8, 1.0)):
        with pytest.raises(UserError, match="forward-facing .NDC. scenes are not supported"):
            call()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxnerf360.export", *args],
                          capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=600)


def test_a_short_trained_field_exports_near_the_scene_surfaces(tmp_path):
    """The VM field trained briefly on the synthetic scene, through the command line: the
    points and the mesh vertices lie near the analytic surfaces; the mesh is closed."""
    run = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "jaxnerf360.train", f"--gin_configs={ROOT}/configs/debug.gin",
         f"--gin_bindings=Config.data_dir='{tmp_path / 'scene'}'",
         f"--gin_bindings=Config.checkpoint_dir='{run}'",
         "--gin_bindings=Config.max_steps=300", "--gin_bindings=Config.batch_size=256",
         "--gin_bindings=Config.lr_delay_steps=0",
         "--gin_bindings=Model.field=@TensoRFField", "--gin_bindings=Model.sampler="
         "@OccupancySampler", "--gin_bindings=TensoRFField.resolution=(48, 48, 48)",
         "--gin_bindings=TensoRFField.density_ranks=(8, 8, 8)",
         "--gin_bindings=TensoRFField.appearance_ranks=(8, 8, 8)",
         "--gin_bindings=TensoRFField.upsample_steps=()", "--gin_bindings=Config.lr_init=0.02",
         "--gin_bindings=OccupancySampler.grid_resolution=48",
         "--gin_bindings=OccupancySampler.update_steps=(150,)"],
        capture_output=True, text=True, cwd=ROOT, env=cli_env(), timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    for what in ("pointcloud", "mesh"):
        proc = _cli(what, f"--checkpoint_dir={run}", "--resolution=96", "--views=8")
        assert proc.returncode == 0, proc.stderr[-3000:]
        ply = PlyData.read(run / "export" / ("points.ply" if what == "pointcloud" else
                                              "mesh.ply"))
        points = np.stack([ply["vertex"][a] for a in "xyz"], -1)
        distance = surface_distance(points)
        assert np.median(distance) < 0.05 and np.percentile(distance, 90) < 0.15, (
            what, np.median(distance), np.percentile(distance, 90))
        if what == "mesh":
            faces = np.stack(ply["face"]["vertex_indices"])
            assert surfaces.boundary_edges(faces) == 0
            assert "boundary_edges 0" in proc.stdout
    obj = _cli("mesh", f"--checkpoint_dir={run}", "--resolution=32", f"--out={tmp_path}/m.obj")
    assert obj.returncode == 0 and (tmp_path / "m.obj").read_text().startswith("v ")
    for args, match in ((["mesh", "--out=x.xyz"], "write a .ply or .obj file"),
                        (["pointcloud", "--out=x.obj"], "write a .ply file"),
                        (["mesh", "--box_min=a,b,c"], "--box_min=a,b,c must be 3 numbers")):
        proc = _cli(*args, f"--checkpoint_dir={run}", "--resolution=16")
        assert proc.returncode == 2 and match in proc.stderr, proc.stderr[-2000:]
    proc = _cli(f"--checkpoint_dir={run}")
    assert proc.returncode != 0 and "give one of pointcloud, mesh first" in proc.stderr
