"""Camera poses as Lie-group maths: se(3) exponential and logarithm, composition, Sim(3)
alignment and pose errors (BARF's evaluation), and synthetic pose noise.

Poses are camera-to-world `[..., 3, 4]` matrices [R | c] (OpenGL cameras). A twist
xi = (w, v) `[..., 6]` has rotation part w (axis times angle, radians) first and translation
part v second; `se3_exp(xi)` is the rigid transform [exp(w^) | V(w) v]. Per-image corrections
act on the camera side: corrected = pose @ exp(xi), so a rotation turns the camera about its own
centre and a translation moves it along its own axes.
"""

import jax.numpy as jnp
import numpy as np

from jaxnerf360.errors import UserError

# Below this angle (radians) the series of the coefficients replace their closed forms, which
# lose all precision (and give NaN gradients) near zero.
_SMALL = 1e-2


def skew(w):
    """`[..., 3, 3]` cross-product matrix w^ of `w [..., 3]` (w^ x = w cross x)."""
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack([jnp.stack([zero, -z, y], -1), jnp.stack([z, zero, -x], -1),
                      jnp.stack([-y, x, zero], -1)], -2)


def _coefficients(theta2):
    """(sin t / t, (1 - cos t) / t^2, (t - sin t) / t^3) of t^2 = `theta2`, safe at zero."""
    small = theta2 < _SMALL**2
    t2 = jnp.where(small, 1.0, theta2)  # the closed forms only ever see a safe angle
    t = jnp.sqrt(t2)
    a = jnp.where(small, 1 - theta2 / 6 + theta2**2 / 120, jnp.sin(t) / t)
    b = jnp.where(small, 0.5 - theta2 / 24 + theta2**2 / 720, (1 - jnp.cos(t)) / t2)
    c = jnp.where(small, 1 / 6 - theta2 / 120 + theta2**2 / 5040, (t - jnp.sin(t)) / (t2 * t))
    return a, b, c


def so3_exp(w):
    """Rotation matrices `[..., 3, 3]` of axis-angle vectors `w [..., 3]` (Rodrigues)."""
    a, b, _ = _coefficients(jnp.sum(w * w, -1))
    k = skew(w)
    return jnp.eye(3) + a[..., None, None] * k + b[..., None, None] * (k @ k)


def se3_exp(xi):
    """Rigid transforms `[..., 3, 4]` of twists `xi [..., 6]` = (w, v)."""
    w, v = xi[..., :3], xi[..., 3:]
    a, b, c = _coefficients(jnp.sum(w * w, -1))
    k = skew(w)
    k2 = k @ k
    rot = jnp.eye(3) + a[..., None, None] * k + b[..., None, None] * k2
    jac = jnp.eye(3) + b[..., None, None] * k + c[..., None, None] * k2
    return jnp.concatenate([rot, (jac @ v[..., None])], -1)


def se3_log(pose):
    """Twists `[..., 6]` of rigid transforms `[..., 3, 4]` (rotation angles below pi)."""
    rot, t = pose[..., :3], pose[..., 3]
    cos = jnp.clip((jnp.trace(rot, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    theta = jnp.arccos(cos)
    theta2 = theta * theta
    small = theta < _SMALL
    safe = jnp.where(small, 1.0, theta)
    # w = theta / (2 sin theta) * vee(R - R^T)
    scale = jnp.where(small, 0.5 + theta2 / 12 + 7 * theta2**2 / 720, safe / (2 * jnp.sin(safe)))
    vee = jnp.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                     rot[..., 1, 0] - rot[..., 0, 1]], -1)
    w = scale[..., None] * vee
    a, b, _ = _coefficients(theta2)
    # V^-1 = I - w^/2 + (1 - a / (2 b)) / theta^2 w^2
    d = jnp.where(small, 1 / 12 + theta2 / 720 + theta2**2 / 30240,
                  (1 - a / (2 * b)) / jnp.where(small, 1.0, theta2))
    k = skew(w)
    v_inv = jnp.eye(3) - 0.5 * k + d[..., None, None] * (k @ k)
    return jnp.concatenate([w, (v_inv @ t[..., None])[..., 0]], -1)


def to_homogeneous(pose):
    """`[..., 4, 4]` of `[..., 3, 4]` (bottom row 0 0 0 1)."""
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], pose.dtype), pose.shape[:-2] + (1, 4))
    return jnp.concatenate([pose, bottom], -2)


def compose(a, b):
    """The transform a @ b `[..., 3, 4]` of transforms a, b `[..., 3, 4]` (b applied first)."""
    return jnp.concatenate([a[..., :3] @ b[..., :3], a[..., :3] @ b[..., 3:] + a[..., 3:]], -1)


def invert(pose):
    """The inverse `[..., 3, 4]` of rigid transforms `[..., 3, 4]`."""
    rt = jnp.swapaxes(pose[..., :3], -1, -2)
    return jnp.concatenate([rt, -rt @ pose[..., 3:]], -1)


def correct(poses, xi):
    """Camera-side corrections: `poses [..., 3, 4] @ se3_exp(xi [..., 6])`."""
    return compose(poses, se3_exp(xi))


def perturb(poses, std: float, seed: int) -> np.ndarray:
    """`poses [N, 3, 4]` with camera-side se(3) noise N(0, std^2) on each twist component.

    BARF's protocol for the Blender scenes uses std 0.15. The noise depends only on `seed`
    and the number of poses, so every run (and a resumed one) sees the same perturbation.
    """
    if not np.isfinite(std) or std < 0:
        raise UserError(f"pose noise std={std!r} must be a non-negative number")
    poses = np.asarray(poses, np.float32)
    noise = np.random.default_rng(seed).normal(0.0, std, (poses.shape[0], 6))
    return np.asarray(correct(jnp.asarray(poses), jnp.asarray(noise, jnp.float32)), np.float32)


def procrustes(src, dst):
    """Similarity (s, R, t) minimising sum |s R src_i + t - dst_i|^2 (Umeyama), numpy float64.

    `src`, `dst` `[N, 3]` with N >= 3 points not all on a line. R is a proper rotation.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = np.mean(np.sum(xs**2, -1))
    if src.shape[0] < 3 or var_s <= 0:
        raise UserError("pose alignment needs at least 3 distinct camera centres")
    u, sig, vt = np.linalg.svd(xd.T @ xs / src.shape[0])
    fix = _reflection_fix(u, vt)
    rot = u @ fix @ vt
    scale = np.sum(sig * np.diag(fix)) / var_s
    return scale, rot, mu_d - scale * rot @ mu_s


def rotation_angle_deg(r1, r2) -> np.ndarray:
    """Angles in degrees `[...]` of the relative rotations r1^T r2 of `[..., 3, 3]` matrices."""
    rel = np.swapaxes(np.asarray(r1, np.float64), -1, -2) @ np.asarray(r2, np.float64)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1) / 2
    vee = np.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                    rel[..., 1, 0] - rel[..., 0, 1]], -1)
    # atan2 stays accurate near 0 degrees, where arccos of a rounded cosine does not.
    return np.degrees(np.arctan2(np.linalg.norm(vee, axis=-1) / 2, cos))


def pose_errors(poses, gt) -> dict:
    """BARF's pose errors of `poses [N, 3, 4]` against ground truth `gt [N, 3, 4]`.

    The camera centres of `poses` are aligned to those of `gt` by a Sim(3) Procrustes fit
    (the scene's gauge: scale, rotation and position are unobservable); the rotations get
    the fit's rotation. Returns the mean rotation error in degrees and the mean distance
    between aligned and true centres in the units of `gt` (the scene's world units), with the
    alignment (s, R, t). Centres that coincide (every camera at the identity, BARF's
    forward-facing start) fix no alignment, so, as BARF does, they are compared unaligned.
    """
    poses, gt = np.asarray(poses, np.float64), np.asarray(gt, np.float64)
    if np.ptp(poses[:, :, 3], axis=0).max(initial=0.0) == 0.0:
        scale, rot, shift = 1.0, np.eye(3), np.zeros(3)
    else:
        scale, rot, shift = procrustes(poses[:, :, 3], gt[:, :, 3])
    centres = scale * poses[:, :, 3] @ rot.T + shift
    rotations = rot @ poses[:, :, :3]
    fitted = orientation_fit(poses[:, :, :3], gt[:, :, :3]) @ poses[:, :, :3]
    return {"rotation_deg": float(np.mean(rotation_angle_deg(rotations, gt[:, :, :3]))),
            "translation": float(np.mean(np.linalg.norm(centres - gt[:, :, 3], axis=-1))),
            "rotation_deg_orientation_fit": float(np.mean(rotation_angle_deg(fitted,
                                                                             gt[:, :, :3]))),
            "align": (float(scale), rot, shift)}


def orientation_fit(rotations, gt_rotations) -> np.ndarray:
    """The rotation R `[3, 3]` minimising sum |R rotations_i - gt_i|_F^2 (numpy float64).

    A diagnostic beside BARF's centre-based fit: when the camera centres are nearly planar
    (forward-facing captures), small errors in their depth tilt the centre fit, while this
    fit says how well the orientations agree with each other.
    """
    m = np.einsum("nij,nkj->ik", np.asarray(gt_rotations, np.float64),
                  np.asarray(rotations, np.float64))
    u, _, vt = np.linalg.svd(m)
    return u @ _reflection_fix(u, vt) @ vt


def _reflection_fix(u, vt) -> np.ndarray:
    """diag(1, 1, ±1) that makes u @ fix @ vt a proper rotation (Kabsch / Umeyama)."""
    return np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])


def align(poses, alignment) -> np.ndarray:
    """`poses [N, 3, 4]` mapped by a Sim(3) (s, R, t) from `pose_errors` (rotation by R)."""
    scale, rot, shift = alignment
    poses = np.asarray(poses, np.float64)
    centres = scale * poses[:, :, 3] @ rot.T + shift
    return np.concatenate([rot @ poses[:, :, :3], centres[..., None]], -1).astype(np.float32)


def unalign(poses, alignment) -> np.ndarray:
    """The inverse of `align`: ground-truth frame poses into the optimised frame."""
    scale, rot, shift = alignment
    poses = np.asarray(poses, np.float64)
    centres = (poses[:, :, 3] - shift) @ rot / scale
    return np.concatenate([rot.T @ poses[:, :, :3], centres[..., None]], -1).astype(np.float32)


def init_params(num_images: int, focal: str = "none") -> dict:
    """Zero pose corrections `{'xi': [N, 6]}`, plus `'log_focal'` ([N], or [1] shared)."""
    out = {"xi": jnp.zeros((num_images, 6), jnp.float32)}
    if focal == "per_image":
        out["log_focal"] = jnp.zeros((num_images,), jnp.float32)
    elif focal == "shared":
        out["log_focal"] = jnp.zeros((1,), jnp.float32)
    elif focal != "none":
        raise UserError(f"Cameras.optimize_focal={focal!r} is unknown; use 'none', 'shared' or "
                        "'per_image'")
    return out


def corrected_cameras(views, params, cam_idx):
    """(camtoworlds `[..., 3, 4]`, intrinsics `[..., 4]`) of images `cam_idx [...]` corrected."""
    c2w = correct(views.camtoworlds[cam_idx], params["xi"][cam_idx])
    intrinsics = views.intrinsics[cam_idx]
    if "log_focal" in params:
        log_focal = params["log_focal"]
        scale = jnp.exp(log_focal[cam_idx] if log_focal.shape[0] > 1 else log_focal[0])
        scale = jnp.broadcast_to(scale, intrinsics.shape[:-1])[..., None]
        intrinsics = jnp.concatenate([intrinsics[..., :2] * scale, intrinsics[..., 2:]], -1)
    return c2w, intrinsics


def corrected_rays(views, params, pixels, cam_idx):
    """Rays through `pixels [..., 2]` (col, row; centres at +0.5) of images `cam_idx [...]`.

    Cast with the pose (and focal) corrections `params` applied to the views' cameras, inside
    the train step, so the photometric loss reaches the poses.
    """
    from jaxnerf360.data.cameras import pixels_to_rays

    c2w, intrinsics = corrected_cameras(views, params, cam_idx)
    ndc = None if views.ndc is None else dict(views.ndc)
    return pixels_to_rays(pixels[..., 0], pixels[..., 1], c2w, intrinsics,
                          views.distortion[cam_idx], views.near, views.far, cam_idx, ndc=ndc,
                          xnp=jnp)


def initial(camtoworlds, noise: float = 0.0, init: str = "given", seed: int = 0) -> np.ndarray:
    """The training poses a run starts from: the given ones, with `noise` (see `perturb`), or
    every camera at the identity (`init='identity'`, BARF's forward-facing protocol)."""
    camtoworlds = np.asarray(camtoworlds, np.float32)
    if init == "identity":
        return np.tile(np.eye(3, 4, dtype=np.float32), (camtoworlds.shape[0], 1, 1))
    if noise > 0:
        return perturb(camtoworlds, noise, seed)
    return camtoworlds


def current(initial_poses, params) -> np.ndarray:
    """The corrected training poses `[N, 3, 4]` (numpy) of a state's pose parameters."""
    xi = jnp.asarray(params["xi"])
    return np.asarray(correct(jnp.asarray(initial_poses), xi))
