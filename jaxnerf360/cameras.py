"""The cameras stage: the poses a run starts from, learned corrections, rays, pose errors.

`Cameras` owns everything about the training cameras: the poses a run starts from (the given
ones, perturbed by seeded se(3) noise, or all at the identity), the learned camera-side
corrections and focal scales (their parameters, their optimiser group), the learned maps of
the training images (`image_maps.py`: where in its image each ray's target colour is read),
casting the training rays from batch pixels through the corrected cameras inside the train
step, the near-bound schedule of those rays, the pose errors the log shows, and mapping test
views into the optimised frame. The train step, eval, render and compress ask it; none of
them looks inside its parameters. The se(3) and Sim(3) maths is `poses.py`.
"""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxnerf360 import image_maps, poses
from jaxnerf360.data import views as views_lib
from jaxnerf360.errors import UserError
from jaxnerf360.parts import ParamGroup

PARAMS = "poses"  # the camera corrections' key in a state's parameters (checkpoint layout)
POSE = "pose"  # their optimiser group label
IMAGE_MAP = "image_map"  # the learned image maps' key in the corrections, and their group


@gin.configurable(denylist=["scene", "seed"])
class Cameras:
    """The training cameras of one split, their corrections and their settings (gin).

    Args (gin):
      pose_noise: std of camera-side se(3) noise on the training poses (BARF: 0.15).
      pose_init: 'given' | 'identity' (every training camera starts at the identity).
      optimize_poses: learn a camera-side se(3) correction per training image.
      optimize_focal: 'none' | 'shared' | 'per_image': learn log focal-length scales.
      pose_lr_init, pose_lr_final: the corrections' own Adam, log-linear.
      test_pose_steps: before metrics, refine each test pose photometrically for this many
        steps with the field frozen (BARF's protocol), starting from its true pose mapped
        into the optimised frame; 0: no refinement.
      test_pose_lr_init, test_pose_lr_final, test_pose_batch: that refinement's schedule and
        rays per step.
      near_schedule: ((train_frac, near), ...) piecewise linear and non-increasing, in the
        rays' own t units (NDC t: 0 is the near plane at depth 1, negative values reach in
        front of it); each training ray's near is raised to it, so a schedule that ends at or
        below the rays' own near lets go. Starting LLFF at 0.4 (Joint-TensoRF's recipe) keeps
        content right in front of the cameras from explaining pose errors early.
      image_maps: 'none' | 'translation' | 'rigid' | 'similarity': learn a map of each
        training image's pixels (`image_maps.py`); the data term reads each ray's colour at
        its pixel's mapped position, so images that are shifted or turned against their
        cameras are moved back. The cameras stay as given.
      image_map_solver: 'gauss_newton' (each image's map solved every step from the normal
        equations of its rays over about `image_map_memory` steps, with a zero-mean prior of
        sd `image_map_prior` pixels, and the maps moved toward it with a time constant of
        `image_map_relax` steps, log-linear to `image_map_relax_final`) or 'adam' (the maps
        trained by gradient like any parameter, at image_map_lr_init -> image_map_lr_final
        pixels per step, log-linear).
      image_map_start: the fraction of training from which the maps learn (the field is too
        blurred before it to say where an image belongs).
    """

    def __init__(self, scene=None, seed: int = 0, *, pose_noise: float = 0.0,
                 pose_init: str = "given", optimize_poses: bool = False,
                 optimize_focal: str = "none", pose_lr_init: float = 1e-3,
                 pose_lr_final: float = 1e-4, test_pose_steps: int = 0,
                 test_pose_lr_init: float = 1e-3, test_pose_lr_final: float = 1e-4,
                 test_pose_batch: int = 1024, near_schedule: tuple = (),
                 image_maps: str = "none", image_map_lr_init: float = 1e-2,
                 image_map_lr_final: float = 1e-3, image_map_start: float = 0.1,
                 image_map_solver: str = "gauss_newton", image_map_memory: int = 200,
                 image_map_relax: int = 100, image_map_relax_final: int | None = None,
                 image_map_prior: float = 3.0):
        self.pose_noise, self.pose_init = pose_noise, pose_init
        self.optimize_poses, self.optimize_focal = optimize_poses, optimize_focal
        self.pose_lr_init, self.pose_lr_final = pose_lr_init, pose_lr_final
        self.test_pose_steps, self.test_pose_batch = test_pose_steps, test_pose_batch
        self.test_pose_lr_init, self.test_pose_lr_final = test_pose_lr_init, test_pose_lr_final
        self.near_schedule = near_schedule
        self.image_maps, self.image_map_start = image_maps, image_map_start
        self.image_map_lr_init, self.image_map_lr_final = image_map_lr_init, image_map_lr_final
        self.image_map_solver, self.image_map_memory = image_map_solver, image_map_memory
        self.image_map_prior, self.image_map_relax = image_map_prior, image_map_relax
        self.image_map_relax_final = (image_map_relax if image_map_relax_final is None
                                      else image_map_relax_final)
        self._check()
        self.truth = self.initial = None
        self.size = None if scene is None else (scene.height, scene.width)
        if scene is not None:
            self.truth = np.array(scene.camtoworlds)
            self.initial = poses.initial(self.truth, pose_noise, pose_init, seed)

    def _check(self) -> None:
        from jaxnerf360.schedules import check_schedule

        if not _number(self.pose_noise) or self.pose_noise < 0:
            raise UserError(f"Cameras.pose_noise={self.pose_noise!r} must be a non-negative "
                            "number")
        if self.pose_init not in ("given", "identity"):
            raise UserError(f"Cameras.pose_init={self.pose_init!r} is unknown; use 'given' or "
                            "'identity'")
        if self.optimize_focal not in ("none", "shared", "per_image"):
            raise UserError(f"Cameras.optimize_focal={self.optimize_focal!r} is unknown; use "
                            "'none', 'shared' or 'per_image'")
        if self.optimize_focal != "none" and not self.optimize_poses:
            raise UserError("Cameras.optimize_focal needs Cameras.optimize_poses = True")
        for a, b in (("pose_lr_init", "pose_lr_final"),
                     ("test_pose_lr_init", "test_pose_lr_final")):
            if not (_number(getattr(self, a)) and _number(getattr(self, b))
                    and getattr(self, a) > 0 and getattr(self, b) > 0):
                raise UserError(f"Cameras.{a}/{b} must be positive")
        for name in ("test_pose_steps", "test_pose_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (
                    name == "test_pose_batch" and value == 0):
                raise UserError(f"Cameras.{name}={value!r} must be a "
                                f"{'positive' if name == 'test_pose_batch' else 'non-negative'}"
                                " integer")
        check_schedule(self.near_schedule, "Cameras.near_schedule", allow_negative=True)
        if self.image_maps != "none" and self.image_maps not in image_maps.MODELS:
            raise UserError(f"Cameras.image_maps={self.image_maps!r} is unknown; use 'none', "
                            f"{', '.join(repr(m) for m in image_maps.MODELS)}")
        if self.image_maps != "none" and self.optimize_poses:
            raise UserError("Cameras.image_maps and Cameras.optimize_poses both correct "
                            "misaligned images: use one of the two")
        if not (_number(self.image_map_lr_init) and _number(self.image_map_lr_final)
                and self.image_map_lr_init > 0 and self.image_map_lr_final > 0):
            raise UserError("Cameras.image_map_lr_init/image_map_lr_final must be positive")
        if self.image_map_solver not in ("gauss_newton", "adam"):
            raise UserError(f"Cameras.image_map_solver={self.image_map_solver!r} is unknown; "
                            "use 'gauss_newton' or 'adam'")
        for name in ("image_map_memory", "image_map_relax", "image_map_relax_final"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"Cameras.{name}={value!r} must be a positive integer (steps)")
        if not (_number(self.image_map_prior) and self.image_map_prior > 0):
            raise UserError(f"Cameras.image_map_prior={self.image_map_prior!r} must be a "
                            "positive number (pixels)")
        if not (_number(self.image_map_start) and 0 <= self.image_map_start < 1):
            raise UserError(f"Cameras.image_map_start={self.image_map_start!r} must be a "
                            "fraction of training in [0, 1)")

    @property
    def learned(self) -> bool:
        """Whether a state holds learned corrections (poses or image maps)."""
        return self.optimize_poses or self.image_maps != "none"

    @property
    def tracked(self) -> bool:
        """Whether the log reports pose errors (poses learned, or started off the truth)."""
        return self.optimize_poses or not np.array_equal(self.initial, self.truth)

    def training_scene(self, scene):
        """`scene` with the poses the run starts from (the images are shared, not copied)."""
        return dataclasses.replace(scene, camtoworlds=np.array(self.initial))

    def log_initial_errors(self) -> None:
        """One log line with the errors of the poses the run starts from, if tracked."""
        if not self.tracked:
            return
        start = poses.pose_errors(self.initial, self.truth)
        logging.info("initial training poses: %.3f deg mean rotation error, %.4f mean "
                     "translation error (scene units, after Sim(3) alignment of distinct "
                     "centres)", start["rotation_deg"], start["translation"])

    # --- parameters ---

    def init_params(self, num_images: int | None = None) -> dict | None:
        """Zero corrections for every training camera (None when nothing is learned);
        `num_images` when the cameras were made without a scene."""
        n = self.initial.shape[0] if num_images is None else num_images
        if self.optimize_poses:
            return poses.init_params(n, self.optimize_focal)
        if self.image_maps != "none":
            return {IMAGE_MAP: image_maps.init_params(n, self.image_maps)}
        return None

    def param_groups(self) -> dict:
        """{label: ParamGroup} of the learned corrections: their own Adam (no warm-up)."""
        if self.optimize_poses:
            return {POSE: ParamGroup(self.pose_lr_init, self.pose_lr_final, warmup=False)}
        if self.image_maps != "none":
            # Solved maps are written by `refiner`, not trained: their group never opens.
            window = (1.0, 1.0) if self.solves_maps else (self.image_map_start, 1.0)
            return {IMAGE_MAP: ParamGroup(self.image_map_lr_init, self.image_map_lr_final,
                                          warmup=False, window=window)}
        return {}

    @property
    def solves_maps(self) -> bool:
        """Whether image maps are solved from their normal equations (not trained)."""
        return self.image_maps != "none" and self.image_map_solver == "gauss_newton"

    def init_state(self, num_images: int | None = None) -> dict | None:
        """What the cameras carry between steps besides parameters: the accumulated normal
        equations of solved image maps (None otherwise)."""
        if not self.solves_maps:
            return None
        n = self.initial.shape[0] if num_images is None else num_images
        return image_maps.init_normal_equations(n, self.image_maps)

    def map_statistics(self, camera_params, batch: dict, views, rendered):
        """This batch's normal equations of the solved image maps (`image_maps.py`), from
        the rendered colours `[..., 3]` of its pixels; None when maps are not solved."""
        if not self.solves_maps or camera_params is None:
            return None
        cam_idx = batch["rays"].cam_idx[..., 0]
        if rendered.shape[:-1] != cam_idx.shape:
            raise UserError("Cameras.image_map_solver='gauss_newton' needs a rendered colour "
                            "for every pixel of the batch, and the head renders fewer: use "
                            "Cameras.image_map_solver = 'adam'")
        maps = camera_params[IMAGE_MAP]
        value, jac = image_maps.read_with_jacobian(views.images, maps, cam_idx,
                                                   batch["pixels"], self.image_maps)
        return image_maps.normal_equations(jac, value - rendered, maps, cam_idx,
                                           maps.shape[0])

    def refiner(self, max_steps: int):
        """`refine(params, camera_state, statistics, step) -> (params, camera_state)`, run
        after each optimiser update: from `image_map_start` on, the batch's normal equations
        join the accumulated ones (older ones fading over `image_map_memory` steps), each
        image's map is solved from them, and the maps move 1/relax of the way to it (relax
        log-linear over the window). None when maps are not solved."""
        from jaxnerf360.schedules import fraction_step

        if not self.solves_maps:
            return None
        start = fraction_step(self.image_map_start, max_steps)
        keep = 1.0 - 1.0 / self.image_map_memory
        first, last = np.log(self.image_map_relax), np.log(self.image_map_relax_final)

        def refine(params, camera_state, statistics, step):
            on = step >= start
            frac = jnp.clip((step - start) / max(1, max_steps - start), 0.0, 1.0)
            relax = jnp.exp(-(first + (last - first) * frac))
            sums = jax.tree.map(lambda old, new: jnp.where(on, keep * old + new, old),
                                camera_state, statistics)
            camera_params = dict(params[PARAMS])
            maps = camera_params[IMAGE_MAP]
            solved = image_maps.solve(sums, self.image_map_prior)
            camera_params[IMAGE_MAP] = jnp.where(on, maps + (solved - maps) * relax, maps)
            return {**params, PARAMS: camera_params}, sums

        return refine

    @staticmethod
    def split(params: dict) -> tuple:
        """(model parameters, camera corrections or None) of a state's parameters."""
        model = {k: v for k, v in params.items() if k != PARAMS}
        return model, params.get(PARAMS)

    @staticmethod
    def join(model_params: dict, camera_params) -> dict:
        """The inverse of `split`."""
        if camera_params is None:
            return dict(model_params)
        return {**model_params, PARAMS: camera_params}

    @staticmethod
    def param_labels(params: dict) -> dict:
        """The group of every leaf of the camera corrections in a state's `params`: POSE, or
        IMAGE_MAP for the image maps."""
        if PARAMS not in params:
            return {}
        return {PARAMS: {key: jax.tree.map(lambda _, k=key: IMAGE_MAP if k == IMAGE_MAP
                                           else POSE, value)
                         for key, value in params[PARAMS].items()}}

    # --- rays, inside the train step ---

    def rays(self, camera_params, batch: dict, train_frac, views):
        """The batch's training rays: cast from its pixels through the corrected `views`
        cameras when corrections are learned, then their near bounds raised by the schedule
        (not when `train_frac` is None)."""
        rays = batch["rays"]
        if camera_params is not None and IMAGE_MAP not in camera_params:
            rays = poses.corrected_rays(views, camera_params, batch["pixels"],
                                        rays.cam_idx[..., 0])
        if self.near_schedule and train_frac is not None:
            rays = scheduled_near(rays, self.near_schedule, train_frac)
        return rays

    def target(self, camera_params, batch: dict, target, views):
        """The batch's target colours: `target`, or with learned image maps each image read
        at its pixels' mapped positions (from `views.images`)."""
        if camera_params is None or IMAGE_MAP not in camera_params:
            return target
        maps = camera_params[IMAGE_MAP]
        if self.solves_maps:
            maps = jax.lax.stop_gradient(maps)
        return image_maps.targets(views.images, maps,
                                  batch["rays"].cam_idx[..., 0], batch["pixels"],
                                  self.image_maps)

    def map_matrices(self, params, height: int, width: int) -> np.ndarray | None:
        """`[N, 3, 3]` the learned image maps of a state's `params` as maps of absolute pixel
        coordinates (`registration.warp`'s), or None."""
        camera_params = self.split(params)[1]
        if camera_params is None or IMAGE_MAP not in camera_params:
            return None
        return image_maps.matrices(jax.device_get(camera_params[IMAGE_MAP]), self.image_maps,
                                   height, width)

    # --- poses and their errors, on the host ---

    def current(self, params) -> np.ndarray:
        """The training poses `[N, 3, 4]` a state's parameters hold (the initial ones when
        poses are not learned)."""
        camera_params = self.split(params)[1]
        if camera_params is None or IMAGE_MAP in camera_params:
            return np.array(self.initial)
        return poses.current(self.initial, jax.device_get(camera_params))

    def errors(self, params) -> dict:
        """{'pose_rotation_deg', 'pose_translation'} of the current poses (when tracked), or
        {'image_map_px'}: how far the learned image maps move pixels, on average."""
        if jax.process_count() > 1 and jax.process_index() != 0:
            return {}
        maps = None if self.size is None else self.map_matrices(params, *self.size)
        if maps is not None:
            return {"image_map_px": float(image_maps.displacement(maps, *self.size).mean())}
        if not self.tracked:
            return {}
        err = poses.pose_errors(self.current(params), self.truth)
        return {"pose_rotation_deg": err["rotation_deg"], "pose_translation": err["translation"]}

    @staticmethod
    def describe(stats) -> str:
        """The pose (or image-map) part of a progress line (empty when not tracked)."""
        if "image_map_px" in stats:
            return f"  image maps {stats['image_map_px']:.2f} px"
        if "pose_rotation_deg" not in stats:
            return ""
        return f"  pose {stats['pose_rotation_deg']:.3f} deg {stats['pose_translation']:.4f}"

    def report(self, params) -> tuple:
        """({'poses': errors before and after}, alignment) of a trained run, for metrics.json."""
        before = poses.pose_errors(self.initial, self.truth)
        after = poses.pose_errors(self.current(params), self.truth)
        report = {"poses": {
            "rotation_deg_before": before["rotation_deg"],
            "translation_before": before["translation"],
            "rotation_deg": after["rotation_deg"], "translation": after["translation"],
            "rotation_deg_orientation_fit": after["rotation_deg_orientation_fit"],
            "note": "mean over training views after Sim(3) alignment of camera centres to the "
                    "truth (none for coinciding centres, e.g. identity poses); translation in "
                    "scene units (the loader's normalised world); rotation_deg_orientation_fit: "
                    "after the rotation fitted to the orientations instead (a diagnostic)",
            "test_pose_steps": self.test_pose_steps}}
        logging.info("training poses: rotation %.3f -> %.3f deg, translation %.4f -> %.4f "
                     "(scene units, after Sim(3) alignment of distinct centres); rotation %.3f "
                     "deg after a fit of the orientations", before["rotation_deg"],
                     after["rotation_deg"], before["translation"], after["translation"],
                     after["rotation_deg_orientation_fit"])
        return report, after["align"]

    @staticmethod
    def test_poses(scene, align) -> np.ndarray:
        """The test poses `[N, 3, 4]` of `scene` mapped into the optimised frame by the
        alignment `report` gives (BARF's protocol)."""
        return poses.unalign(scene.camtoworlds, align)

    @staticmethod
    def views(scene, images: bool = False, edges=None) -> views_lib.Views:
        """Device copies of a split's cameras (and images or edge maps) for the train step."""
        return views_lib.from_scene(scene, images=images, edges=edges)

    def for_test_view(self, scene, index: int, pose) -> tuple:
        """(Cameras, Views) that refine test view `index` of `scene` from `pose` `[3, 4]`: one
        learned correction (no focal scale, no near schedule), at the test-pose rates."""
        refine = Cameras(optimize_poses=True, pose_lr_init=self.test_pose_lr_init,
                         pose_lr_final=self.test_pose_lr_final)
        refine.truth = refine.initial = np.asarray(pose, np.float32)[None]
        views = self.views(scene).replace(camtoworlds=jnp.asarray(refine.initial),
                                          intrinsics=jnp.asarray(scene.intrinsics[index:index + 1]),
                                          distortion=jnp.asarray(
                                              _distortion(scene)[index:index + 1]))
        return refine, views


def scheduled_near(rays, schedule, train_frac):
    """`rays` with each near bound raised to the schedule's value at `train_frac`."""
    from jaxnerf360.schedules import schedule_value

    near = jnp.maximum(rays.near, schedule_value(schedule, train_frac))
    return rays.replace(near=jnp.minimum(near, rays.far))


def _distortion(scene) -> np.ndarray:
    if scene.distortion is None:
        return np.zeros_like(scene.intrinsics)
    return np.asarray(scene.distortion, np.float32)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
