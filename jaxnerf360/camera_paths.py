"""Camera paths for rendering videos: ellipse (360 scenes), spiral (forward-facing), keyframes.

Pure numpy. Poses are camera-to-world `[..., 3, 4]` in OpenGL convention (the camera
looks down its -z axis, +y is up). Paths are returned as float32 `[n_frames, 3, 4]`.
"""

import numpy as np

from jaxnerf360.data.normalize import average_pose, focus_point
from jaxnerf360.data.scene import FORWARD
from jaxnerf360.errors import UserError


def _normalize(v, axis=-1):
    """Unit vectors along `axis`."""
    return v / np.linalg.norm(v, axis=axis, keepdims=True)


def _as_poses(camtoworlds, min_count=1, what="camera path"):
    """Checks and returns float64 `[N, 3, 4]` poses (accepts `[N, 4, 4]`)."""
    poses = np.asarray(camtoworlds, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1] not in (3, 4) or poses.shape[2] != 4:
        raise UserError(f"{what}: expected camtoworlds shaped [N, 3, 4], got {poses.shape}")
    if poses.shape[0] < min_count:
        raise UserError(f"{what}: needs at least {min_count} cameras, got {poses.shape[0]}")
    if not np.all(np.isfinite(poses)):
        raise UserError(f"{what}: camtoworlds contain NaN or inf")
    return poses[:, :3, :]


def _check_frames(n_frames):
    """Checks the frame count is a positive integer."""
    if not isinstance(n_frames, (int, np.integer)) or n_frames <= 0:
        raise UserError(f"Config.render_frames={n_frames!r} must be a positive integer")


def look_at(position, target, up):
    """Camera-to-world `[3, 4]` at `position [3]` looking at `target [3]` with `up [3]` up.

    OpenGL convention: the camera's -z axis points at the target and its +y axis is as
    close to `up` as possible.
    """
    position = np.asarray(position, dtype=np.float64)
    back = _normalize(position - np.asarray(target, dtype=np.float64))
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9 * max(np.linalg.norm(up), 1e-30):
        # Looking straight along `up`: any perpendicular right vector will do.
        helper = np.eye(3)[np.argmin(np.abs(back))]
        right = np.cross(helper, back)
    right = _normalize(right)
    new_up = np.cross(back, right)
    return np.stack([right, new_up, back, position], axis=1)


def ellipse_path(camtoworlds, n_frames, z_variation=0.0, z_phase=0.0, percentile=90.0):
    """An elliptical orbit `[n_frames, 3, 4]` through the cameras' spread, for 360 scenes.

    The centre of focus is the point nearest to all optical axes; the ellipse lies in
    the plane orthogonal to the average up vector at the cameras' mean height, with
    its axes along the principal directions of the camera positions and semi-axes the
    `percentile` of their distances from the focus. Every frame looks at the focus
    point. `z_variation` (a fraction of the cameras' 10-90 percentile height spread)
    moves frames up and down once per orbit, shifted by `z_phase` turns.
    """
    _check_frames(n_frames)
    poses = _as_poses(camtoworlds, min_count=2, what="ellipse_path")
    positions = poses[:, :, 3]
    up = _normalize(poses[:, :, 1].mean(axis=0))
    focus = focus_point(poses)

    offsets = positions - focus
    heights = offsets @ up
    flat = offsets - heights[:, None] * up
    # Principal in-plane axes of the camera positions (the third eigenvector is ~up).
    _, vecs = np.linalg.eigh(flat.T @ flat)
    axis0 = vecs[:, -1] - (vecs[:, -1] @ up) * up
    if np.linalg.norm(axis0) < 1e-9:
        axis0 = np.cross(up, np.eye(3)[np.argmin(np.abs(up))])
    axis0 = _normalize(axis0)
    axis1 = np.cross(up, axis0)
    radius0 = np.percentile(np.abs(flat @ axis0), percentile)
    radius1 = np.percentile(np.abs(flat @ axis1), percentile)
    radius0, radius1 = max(radius0, 1e-6), max(radius1, 1e-6)
    centre = focus + heights.mean() * up
    z_low, z_high = np.percentile(heights, [10.0, 90.0])
    z_amplitude = z_variation * 0.5 * (z_high - z_low)

    # Start the orbit at the first camera's angle so the video begins near a real view.
    theta0 = np.arctan2((flat[0] @ axis1) / radius1, (flat[0] @ axis0) / radius0)
    thetas = theta0 + np.linspace(0.0, 2.0 * np.pi, n_frames, endpoint=False)
    frames = []
    for theta in thetas:
        position = (
            centre
            + radius0 * np.cos(theta) * axis0
            + radius1 * np.sin(theta) * axis1
            + z_amplitude * np.cos(theta + 2.0 * np.pi * z_phase) * up
        )
        frames.append(look_at(position, focus, up))
    return np.stack(frames).astype(np.float32)


def spiral_path(camtoworlds, n_frames, n_rots=2, zrate=0.5, near=4.0 / 3.0, far=8.0,
                percentile=90.0):
    """An LLFF-style spiral `[n_frames, 3, 4]` around the average pose of forward-facing views.

    `near`/`far` are the scene depth bounds in world units (the defaults fit LLFF
    recentring, which puts the nearest depth at 1/0.75); the frames look at a point on
    the average optical axis at the disparity-weighted focal depth. The spiral's
    extent per camera axis is the `percentile` of the cameras' offsets from the
    average pose, and it makes `n_rots` turns while moving in depth at `zrate`.
    """
    _check_frames(n_frames)
    if not 0 < near < far:
        raise UserError(f"spiral_path: need 0 < near < far, got near={near} and far={far}")
    poses = _as_poses(camtoworlds, what="spiral_path")
    avg = average_pose(poses)
    rot, centre = avg[:, :3], avg[:, 3]
    # Focus where LLFF does: 3/4 of the way from the near to the far plane in disparity.
    dt = 0.75
    focal = 1.0 / ((1.0 - dt) / (0.9 * near) + dt / (5.0 * far))
    target = centre + rot @ np.array([0.0, 0.0, -focal])
    local = (poses[:, :, 3] - centre) @ rot  # offsets in the average camera's frame
    radii = np.percentile(np.abs(local), percentile, axis=0)
    up = rot[:, 1]

    thetas = np.linspace(0.0, 2.0 * np.pi * n_rots, n_frames, endpoint=False)
    frames = []
    for theta in thetas:
        offset = radii * np.array([np.cos(theta), -np.sin(theta), -np.sin(theta * zrate)])
        frames.append(look_at(centre + rot @ offset, target, up))
    return np.stack(frames).astype(np.float32)


def rotation_to_quaternion(rot):
    """Unit quaternion `[..., 4]` (w, x, y, z) with w >= 0 of rotation matrices `[..., 3, 3]`."""
    rot = np.asarray(rot, dtype=np.float64)
    m = rot.reshape(-1, 3, 3)
    trace = np.trace(m, axis1=1, axis2=2)
    # Pick the largest of 4w^2, 4x^2, 4y^2, 4z^2 to divide by (Shepperd's method).
    cands = np.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=-1)
    which = np.argmax(cands, axis=-1)
    q = np.empty((m.shape[0], 4))
    for i, (r, k) in enumerate(zip(m, which, strict=True)):
        if k == 0:
            s = 2.0 * np.sqrt(max(1.0 + trace[i], 1e-300))
            q[i] = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s,
                    (r[1, 0] - r[0, 1]) / s]
        else:
            a = k - 1
            b, c = (a + 1) % 3, (a + 2) % 3
            s = 2.0 * np.sqrt(max(1.0 + r[a, a] - r[b, b] - r[c, c], 1e-300))
            q[i, 0] = (r[c, b] - r[b, c]) / s
            q[i, 1 + a] = 0.25 * s
            q[i, 1 + b] = (r[b, a] + r[a, b]) / s
            q[i, 1 + c] = (r[c, a] + r[a, c]) / s
    q = np.where(q[:, :1] < 0, -q, q)
    return _normalize(q).reshape(rot.shape[:-2] + (4,))


def quaternion_to_rotation(q):
    """Rotation matrices `[..., 3, 3]` of quaternions `[..., 4]` (w, x, y, z; normalised here)."""
    w, x, y, z = np.moveaxis(_normalize(np.asarray(q, dtype=np.float64)), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def slerp(q0, q1, u):
    """Spherical linear interpolation of unit quaternions `[4]` at fraction `u` in [0, 1]."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(q0 @ q1)
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        q1, dot = -q1, -dot
    if dot > 1.0 - 1e-10:
        return _normalize((1.0 - u) * q0 + u * q1)
    angle = np.arccos(min(dot, 1.0))
    return (np.sin((1.0 - u) * angle) * q0 + np.sin(u * angle) * q1) / np.sin(angle)


def interpolate_path(camtoworlds, n_frames):
    """A smooth path `[n_frames, 3, 4]` through the given cameras, in order.

    Frame i sits at path parameter s = i (K-1) / (n_frames-1) for K cameras, so camera
    k is reproduced exactly at frame k (n_frames-1) / (K-1) whenever that is an
    integer (always the first and last frames). Positions follow a uniform
    Catmull-Rom spline (ends extrapolated linearly), rotations a quaternion slerp.
    """
    _check_frames(n_frames)
    poses = _as_poses(camtoworlds, what="interpolate_path")
    k = poses.shape[0]
    if k == 1 or n_frames == 1:
        return np.repeat(poses[:1], n_frames, axis=0).astype(np.float32)
    positions = poses[:, :, 3]
    padded = np.concatenate(
        [2 * positions[:1] - positions[1:2], positions, 2 * positions[-1:] - positions[-2:-1]]
    )
    quats = rotation_to_quaternion(poses[:, :, :3])
    frames = []
    for i in range(n_frames):
        # Integer arithmetic so keyframes land exactly on u == 0.
        seg, rem = divmod(i * (k - 1), n_frames - 1)
        if rem == 0:
            frames.append(poses[seg])
            continue
        u = rem / (n_frames - 1)
        p0, p1, p2, p3 = padded[seg : seg + 4]
        position = 0.5 * (
            2 * p1
            + (p2 - p0) * u
            + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2
            + (3 * p1 - p0 - 3 * p2 + p3) * u**3
        )
        rot = quaternion_to_rotation(slerp(quats[seg], quats[seg + 1], u))
        frames.append(np.concatenate([rot, position[:, None]], axis=1))
    return np.stack(frames).astype(np.float32)


PATH_KINDS = ("auto", "ellipse", "spiral", "interp")


def make_path(kind, camtoworlds, n_frames, scene_kind=None, **kwargs):
    """The `kind` path (`Config.render_path`); 'auto' is spiral for FORWARD scenes, else ellipse."""
    if kind not in PATH_KINDS:
        raise UserError(f"Config.render_path={kind!r} is unknown; choose one of {PATH_KINDS}")
    if kind == "auto":
        kind = "spiral" if scene_kind == FORWARD else "ellipse"
    fn = {"ellipse": ellipse_path, "spiral": spiral_path, "interp": interpolate_path}[kind]
    return fn(camtoworlds, n_frames, **kwargs)
