"""The gin-configurable `Config` and the absl flags that load it."""

import dataclasses
import os

import gin
from absl import flags

from jaxnerf360.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_configs", None, "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", None, "Gin bindings that override the config files.")

# Modules whose configurables must be registered before gin parses a file.
_REGISTERING_MODULES = ("jaxnerf360.model", "jaxnerf360.samplers", "jaxnerf360.fields.mlp",
                        "jaxnerf360.fields.tensorf")


@gin.configurable
@dataclasses.dataclass
class Config:
    """Every run-level choice: data, optimisation, losses, checkpoints and outputs."""

    # --- data ---
    dataset_loader: str = "synthetic"  # blender | llff | colmap | synthetic
    data_dir: str | None = None  # scene folder; the synthetic loader writes one if empty
    factor: int = 1  # image downsampling factor (area filter), focal scaled to match
    background: str = "white"  # white | black | random (random: per ray, training only)
    forward_facing: bool = False  # LLFF: use NDC rays (kind FORWARD)
    llff_hold: int = 8  # every llff_hold-th image is a test image (LLFF, COLMAP)
    near: float | None = None  # None: the loader's default for the scene kind
    far: float | None = None
    # --- optimisation ---
    batch_size: int = 16384  # rays per step over all devices and hosts
    max_steps: int = 250000
    lr_init: float = 2e-3
    lr_final: float = 2e-5
    lr_delay_steps: int = 512  # warm-up: lr scaled by lr_delay_mult rising to 1 (sine ease)
    lr_delay_mult: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_eps: float = 1e-6
    grid_lr_init: float = 0.02  # grid factors (TensoRF planes and lines) have their own rate
    grid_lr_final: float = 0.002
    grad_max_norm: float = 0.001  # clip by global norm; 0 disables
    seed: int = 0
    # --- losses ---
    # charbonnier (mip-NeRF 360, real scenes) | mse. Use mse on object scenes with a plain
    # background: the L1-like Charbonnier loss pulls every ray to the background colour
    # early on, and the field collapses to empty space (as multinerf's Blender configs do).
    data_loss_type: str = "charbonnier"
    data_loss_mult: float = 1.0
    charb_padding: float = 0.001  # Charbonnier epsilon
    interlevel_loss_mult: float = 1.0
    distortion_loss_mult: float = 0.01
    # Grid regularisers (fields with VM factors only). TensoRF's L1 weight drops from
    # l1_density_mult to l1_density_mult_rest at l1_density_switch_step (its first
    # alpha-mask update); TV weights decay with the grid learning rate, as in TensoRF.
    l1_density_mult: float = 0.0
    l1_density_mult_rest: float | None = None  # None: no switch
    l1_density_switch_step: int = 0
    tv_density_mult: float = 0.0  # = 0.02 x TensoRF's TV_weight_density
    tv_appearance_mult: float = 0.0  # = 0.02 x TensoRF's TV_weight_app
    # Masked wavelet planes: weight w of the mask penalty w * mean(sigmoid(m)) over every mask
    # logit (the expected kept fraction): w is the loss that keeping every coefficient is worth,
    # whatever the grid size. Larger gives sparser, smaller files.
    mask_loss_mult: float = 0.0
    # --- camera poses: joint optimisation (jaxnerf360/poses.py) ---
    pose_noise: float = 0.0  # std of camera-side se(3) noise on the training poses (BARF: 0.15)
    pose_init: str = "given"  # given | identity (every training camera starts at the identity)
    optimize_poses: bool = False  # learn a camera-side se(3) correction per training image
    optimize_focal: str = "none"  # none | shared | per_image: learn log focal-length scales
    pose_lr_init: float = 1e-3  # the poses' own Adam, decaying log-linearly to pose_lr_final
    pose_lr_final: float = 1e-4
    # Test views: before metrics, refine each test pose photometrically with the field frozen
    # (BARF's protocol), starting from its true pose mapped into the optimised frame.
    test_pose_steps: int = 0  # 0: no refinement
    test_pose_lr_init: float = 1e-3
    test_pose_lr_final: float = 1e-4
    test_pose_batch: int = 1024
    # Near bound of the training rays on a schedule: ((train_frac, near), ...) piecewise linear
    # and non-increasing, in the rays' own t units (NDC t: 0 is the near plane at depth 1, and
    # negative values reach in front of it); each ray's near is raised to it, so a schedule
    # that ends at or below the rays' own near lets go. Starting LLFF at 0.4 (Joint-TensoRF's
    # recipe) keeps content right in front of the cameras from explaining pose errors early.
    near_schedule: tuple = ()
    # --- spectral control (jaxnerf360/fields/spectral.py, jaxnerf360/supervision.py) ---
    # Master switch: False ignores the field's filter schedules (TensoRFField.density_blur,
    # appearance_blur), image_blur and the edge-guided loss, so one binding turns all off.
    spectral_control: bool = True
    # Train against Gaussian-blurred images: ((train_frac, sigma), ...) piecewise linear, sigma
    # as a fraction of the image width, non-increasing; () is off. With image_blur_random_scale
    # each step draws a scale in [0, 1] for the sigma.
    image_blur: tuple = ()
    image_blur_random_scale: bool = False
    # Edge-guided loss: until train_frac edge_loss_until, pixels whose Sobel magnitude exceeds
    # edge_threshold_mult times their image's mean weigh edge_weight, the rest non_edge_weight.
    edge_loss_until: float = 0.0
    edge_threshold_mult: float = 1.25
    edge_weight: float = 1.5
    non_edge_weight: float = 0.5
    edge_loss_every: int = 1  # weigh edges on every n-th step only (Joint-TensoRF alternates: 2)
    # --- checkpoints, logging and outputs (everything lives under checkpoint_dir) ---
    checkpoint_dir: str | None = None
    checkpoint_every: int = 5000
    checkpoint_keep: int = 3
    print_every: int = 100
    summary_render_every: int = 0  # render a test view to TensorBoard every N steps; 0: never
    render_chunk_size: int = 4096  # rays per forward pass when rendering whole images
    eval_max_images: int | None = None  # evaluate only the first N test views
    lpips_net: str = "alex"  # alex | vgg16 | none
    render_path: str = "auto"  # auto | ellipse | spiral | interp
    render_frames: int = 120
    render_fps: int = 30
    render_factor: int = 1  # render videos at 1/render_factor of the training resolution


def _import_registering_modules() -> None:
    import importlib

    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


def parse_gin(configs, bindings) -> None:
    """Parses gin files and bindings, turning gin's errors into one clear line."""
    _import_registering_modules()
    configs = list(configs or [])
    for path in configs:
        if not os.path.isfile(path):
            raise UserError(f"gin config {path!r} does not exist; see configs/ for the choices")
        # `include 'x.gin'` inside a config resolves beside the including file.
        gin.add_config_file_search_path(os.path.dirname(os.path.abspath(path)))
    try:
        gin.parse_config_files_and_bindings(
            configs, list(bindings or []), skip_unknown=False, finalize_config=False
        )
    except (ValueError, NameError, KeyError, TypeError, SyntaxError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"bad gin config or binding: {first}") from None


def load_config(check_dirs: bool = True) -> Config:
    """Reads --gin_configs/--gin_bindings and returns the validated Config."""
    parse_gin(FLAGS.gin_configs, FLAGS.gin_bindings)
    config = Config()
    validate(config, check_dirs=check_dirs)
    return config


def validate(config: Config, check_dirs: bool = True) -> None:
    """Checks values that would otherwise fail late or deep inside JAX."""
    loaders = ("blender", "llff", "colmap", "synthetic")
    if config.dataset_loader not in loaders:
        raise UserError(
            f"Config.dataset_loader={config.dataset_loader!r} is unknown; choose one of {loaders}"
        )
    if check_dirs and not config.checkpoint_dir:
        raise UserError("Config.checkpoint_dir is not set; add "
                        "--gin_bindings=\"Config.checkpoint_dir='runs/x'\"")
    if check_dirs and not config.data_dir:
        raise UserError("Config.data_dir is not set; add "
                        "--gin_bindings=\"Config.data_dir='path/to/scene'\"")
    if config.background not in ("white", "black", "random"):
        raise UserError(
            f"Config.background={config.background!r} is unknown; use 'white', 'black' or 'random'"
        )
    if config.data_loss_type not in ("charbonnier", "mse"):
        raise UserError(f"Config.data_loss_type={config.data_loss_type!r} is unknown; "
                        "use 'charbonnier' or 'mse'")
    for name in ("batch_size", "max_steps", "factor", "render_chunk_size", "checkpoint_every",
                 "checkpoint_keep", "print_every", "render_frames", "render_factor",
                 "edge_loss_every"):
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"Config.{name}={value!r} must be a positive integer")
    for a, b in (("lr_init", "lr_final"), ("grid_lr_init", "grid_lr_final")):
        if not (getattr(config, a) > 0 and getattr(config, b) > 0):
            raise UserError(f"Config.{a}/{b} must be positive, got {getattr(config, a)}, "
                            f"{getattr(config, b)}")
    for name in ("l1_density_mult", "tv_density_mult", "tv_appearance_mult", "mask_loss_mult",
                 "pose_noise", "edge_loss_until", "edge_threshold_mult", "edge_weight",
                 "non_edge_weight", "test_pose_steps"):
        value = getattr(config, name)
        if not isinstance(value, int | float) or not value >= 0:
            raise UserError(f"Config.{name}={value!r} must be a non-negative number")
    if config.pose_init not in ("given", "identity"):
        raise UserError(f"Config.pose_init={config.pose_init!r} is unknown; use 'given' or "
                        "'identity'")
    if config.optimize_focal not in ("none", "shared", "per_image"):
        raise UserError(f"Config.optimize_focal={config.optimize_focal!r} is unknown; use "
                        "'none', 'shared' or 'per_image'")
    if config.optimize_focal != "none" and not config.optimize_poses:
        raise UserError("Config.optimize_focal needs Config.optimize_poses = True")
    for a, b in (("pose_lr_init", "pose_lr_final"), ("test_pose_lr_init", "test_pose_lr_final")):
        if not (getattr(config, a) > 0 and getattr(config, b) > 0):
            raise UserError(f"Config.{a}/{b} must be positive")
    from jaxnerf360.fields.spectral import check_schedule

    check_schedule(config.image_blur, "Config.image_blur")
    check_schedule(config.near_schedule, "Config.near_schedule", allow_negative=True)


def background_rgb(config: Config):
    """The fixed background colour for loading and evaluation ((1,1,1) for 'random')."""
    return (0.0, 0.0, 0.0) if config.background == "black" else (1.0, 1.0, 1.0)
