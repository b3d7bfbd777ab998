"""Pose validation and normalisation (numpy, OpenGL camera-to-world `[N, 3, 4]`)."""

from collections.abc import Sequence

import numpy as np

from jaxnerf360.errors import UserError

# Rotations must be orthonormal with det +1 to this tolerance.
RIGID_TOLERANCE = 1e-3
# Camera centres end up inside the unit ball with this much room to spare.
UNIT_BALL_MARGIN = 0.01
# Above this condition number the optical axes are close to parallel (forward-facing
# capture) and their least-squares meeting point is meaningless.
MAX_FOCUS_CONDITION = 1e4


def check_poses(camtoworlds: np.ndarray, names: Sequence[str]) -> None:
    """Raises UserError naming the first image whose `[N, 3|4, 4]` pose is NaN or not rigid."""
    poses = np.asarray(camtoworlds, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
        raise UserError(f"camera poses have shape {poses.shape}; expected [N, 3, 4] or [N, 4, 4]")
    for pose, name in zip(poses, names, strict=True):
        if not np.all(np.isfinite(pose)):
            raise UserError(f"{name}: camera pose has NaN or infinite entries; fix or drop it")
        rot = pose[:3, :3]
        err = np.abs(rot.T @ rot - np.eye(3)).max()
        det = np.linalg.det(rot)
        if err > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
            raise UserError(
                f"{name}: camera pose is not rigid (rotation must be orthonormal with det +1; "
                f"max |R^T R - I| = {err:.2g}, det = {det:.4g}); fix the pose"
            )


def _axes_system(camtoworlds: np.ndarray) -> tuple:
    """(lhs [3, 3], rhs [3]) of the least-squares point nearest all optical axes (-z axes)."""
    poses = np.asarray(camtoworlds, dtype=np.float64)
    dirs = poses[:, :3, 2]
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    # Projector onto the plane orthogonal to each axis: distance(p, axis) = |P (p - o)|.
    proj = np.eye(3) - dirs[:, :, None] * dirs[:, None, :]
    return proj.sum(axis=0), np.einsum("nij,nj->i", proj, poses[:, :3, 3])


def focus_point(camtoworlds: np.ndarray) -> np.ndarray:
    """`[N, 3, 4]` -> `[3]`: the point with least summed squared distance to all optical axes.

    When the axes are (nearly) parallel it is the minimum-norm such point (lstsq).
    """
    lhs, rhs = _axes_system(camtoworlds)
    return np.linalg.lstsq(lhs, rhs, rcond=1e-8)[0]


def _focus_point_and_condition(camtoworlds: np.ndarray) -> tuple:
    """`focus_point` and the condition number of its system (inf, with the mean centre, when
    the axes are exactly parallel)."""
    cond = np.linalg.cond(_axes_system(camtoworlds)[0])
    if not np.isfinite(cond):
        return np.asarray(camtoworlds, np.float64)[:, :3, 3].mean(axis=0), np.inf
    return focus_point(camtoworlds), cond


def _rotation_to_z(up: np.ndarray) -> np.ndarray:
    """`[3]` unit vector -> `[3, 3]` proper rotation taking it to +z by the shortest arc."""
    z = np.array([0.0, 0.0, 1.0])
    c = float(up @ z)
    if c < -1.0 + 1e-9:
        # Antiparallel: any half-turn about a horizontal axis works.
        return np.diag([1.0, -1.0, -1.0])
    v = np.cross(up, z)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def apply_transform(transform: np.ndarray, camtoworlds: np.ndarray) -> np.ndarray:
    """Maps `[N, 3, 4]` poses by a similarity `[4, 4]` (s R | t), keeping the rotations rigid."""
    transform = np.asarray(transform, dtype=np.float64)
    poses = np.asarray(camtoworlds, dtype=np.float64)
    lin = transform[:3, :3]
    scale = np.cbrt(np.linalg.det(lin))
    rot = lin / scale
    out = np.empty(poses.shape[:1] + (3, 4))
    out[:, :, :3] = rot @ poses[:, :3, :3]
    out[:, :, 3] = poses[:, :3, 3] @ lin.T + transform[:3, 3]
    return out


def normalize_unbounded(camtoworlds: np.ndarray) -> tuple:
    """Recentres, levels and rescales a 360 capture so all cameras lie in the unit ball.

    `[N, 3, 4]` -> (`[N, 3, 4]` normalised poses, `[4, 4]` transform). The origin moves to
    the focus point (the mean camera centre when the optical axes are near parallel), the
    mean camera up vector is rotated to +z (a proper rotation, so handedness is kept), and
    a uniform scale puts the farthest camera at radius 1 - UNIT_BALL_MARGIN, as mip-NeRF 360
    needs for its contraction. `transform` maps original world points to normalised ones:
    x' = transform[:3, :3] @ x + transform[:3, 3].
    """
    poses = np.asarray(camtoworlds, dtype=np.float64)
    origins = poses[:, :3, 3]
    center, cond = _focus_point_and_condition(poses)
    spread = np.linalg.norm(origins - origins.mean(axis=0), axis=-1).max()
    # A focus point far outside the camera cluster means the axes barely converge.
    if cond > MAX_FOCUS_CONDITION or np.linalg.norm(center - origins.mean(axis=0)) > 10 * max(
        spread, 1e-12
    ):
        center = origins.mean(axis=0)
    up = poses[:, :3, 1].mean(axis=0)
    norm = np.linalg.norm(up)
    rot = _rotation_to_z(up / norm) if norm > 1e-9 else np.eye(3)
    radius = np.linalg.norm(origins - center, axis=-1).max()
    scale = (1.0 - UNIT_BALL_MARGIN) / radius if radius > 1e-12 else 1.0
    transform = np.eye(4)
    transform[:3, :3] = scale * rot
    transform[:3, 3] = -scale * rot @ center
    return apply_transform(transform, poses), transform


def average_pose(camtoworlds: np.ndarray) -> np.ndarray:
    """`[N, 3, 4]` -> `[3, 4]`: mean centre, mean back (z) axis, up from the mean y axis."""
    poses = np.asarray(camtoworlds, dtype=np.float64)
    position = poses[:, :3, 3].mean(axis=0)
    back = poses[:, :3, 2].mean(axis=0)
    back /= np.linalg.norm(back)
    up = poses[:, :3, 1].mean(axis=0)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back, position], axis=1)


def recenter_forward(camtoworlds: np.ndarray, bounds: np.ndarray) -> tuple:
    """LLFF-style normalisation of a forward-facing capture.

    `camtoworlds [N, 3, 4]`, `bounds [N, 2]` (near, far depths) -> (`[N, 3, 4]` poses,
    `[N, 2]` bounds, `[4, 4]` transform). Scales the world so the nearest bound becomes
    1/0.75 (just beyond the NDC near plane at depth 1) and expresses every pose relative to
    the average pose, so the mean camera sits at the origin looking down -z.
    """
    poses = np.asarray(camtoworlds, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    scale = 1.0 / (bounds.min() * 0.75)
    scaling = np.diag([scale, scale, scale, 1.0])
    scaled = apply_transform(scaling, poses)
    avg = np.eye(4)
    avg[:3, :] = average_pose(scaled)
    transform = np.linalg.inv(avg) @ scaling
    return apply_transform(transform, poses), bounds * scale, transform
