"""The gin-configurable `Config` and the absl flags that load it."""

import dataclasses
import os
import re
import tokenize

import gin
from absl import flags

from jaxnerf360 import renamed
from jaxnerf360.errors import UserError, first_line

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_configs", None, "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", None, "Gin bindings that override the config files.")

# Modules whose configurables must be registered before gin parses a file.
_REGISTERING_MODULES = ("jaxnerf360.model", "jaxnerf360.samplers", "jaxnerf360.fields.mlp",
                        "jaxnerf360.fields.tensorf", "jaxnerf360.cameras",
                        "jaxnerf360.supervision", "jaxnerf360.objective", "jaxnerf360.heads",
                        "jaxnerf360.latent", "jaxnerf360.alignment", "jaxnerf360.perceptual",
                        "jaxnerf360.data.misalign", "jaxnerf360.data.patch_sampling",
                        "jaxnerf360.registration")


@gin.configurable
@dataclasses.dataclass
class Config:
    """Every run-level choice: data, optimisation, losses, checkpoints and outputs."""

    # --- data ---
    dataset_loader: str = "synthetic"  # blender | llff | colmap | synthetic | transforms
    data_dir: str | None = None  # scene folder; the synthetic loader writes one if empty
    factor: int = 1  # image downsampling factor (area filter), focal scaled to match
    background: str = "white"  # white | black | random (random: per ray, training only)
    forward_facing: bool = False  # LLFF: use NDC rays (kind FORWARD)
    llff_hold: int = 8  # every llff_hold-th image is a test image (LLFF, COLMAP, transforms)
    # transforms.json scenes: 'bounded' (an object on a transparent background, the file's
    # frame), 'unbounded' (normalised as a 360 capture) or 'auto' (bounded iff the first
    # frame has transparent pixels); the log says which
    transforms_scene: str = "auto"
    near: float | None = None  # None: the loader's default for the scene kind
    far: float | None = None
    # --- optimisation ---
    batch_size: int = 16384  # rays per step over all devices and hosts
    # (data, model) device mesh: the batch splits over data, the parameters a field declares
    # shardable (TensoRF's planes) over model; None is (all devices, 1)
    mesh_shape: tuple | None = None
    # float32 | bfloat16: the networks' matrix products and convolutions (jaxnerf360/
    # precision.py); parameters, accumulations and volume rendering stay float32
    compute_dtype: str = "float32"
    max_steps: int = 250000
    lr_init: float = 2e-3
    lr_final: float = 2e-5
    lr_delay_steps: int = 512  # warm-up: lr scaled by lr_delay_mult rising to 1 (sine ease)
    lr_delay_mult: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_eps: float = 1e-6
    grad_max_norm: float = 0.001  # clip by global norm; 0 disables
    # Each step's rays in this many equal parts, one after another, their gradients averaged
    # into one update (the same step, up to float rounding). On a CPU a part's activations
    # stay in cache: 1.5x faster MLP steps on lego_cpu.gin (BENCHMARKS.md). Independent
    # rays only (no head or patches, no sample buffer, no solved image maps); 1 on a GPU.
    step_chunks: int = 1
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
    # Technique settings live with their modules (jaxnerf360/renamed.py lists the old names):
    # the cameras and their corrections in Cameras (cameras.py), blurred targets and edge
    # weights in ImageBlur and EdgeWeights (supervision.py), the grid factors' learning rate
    # and regularisers in TensoRFField.
    # --- spectral control (jaxnerf360/fields/spectral.py, jaxnerf360/supervision.py) ---
    # Master switch: False ignores the field's filter schedules (TensoRFField.density_blur,
    # appearance_blur), ImageBlur and EdgeWeights, so one binding turns all off.
    spectral_control: bool = True
    # Train on P x P patches of output pixels (0: independent pixels). A head needs patches;
    # Config.batch_size then counts output pixels (a multiple of P^2).
    patch_size: int = 0
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
    # Serve the live web viewer (jaxnerf360/viewer.py) on this loopback port while training
    # (0: no viewer); it renders between steps within a quarter of the wall time.
    viewer_port: int = 0


def import_registering_modules() -> None:
    """Imports every module with gin configurables, so gin can parse any binding."""
    import importlib

    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


def _gin_error(error: Exception) -> UserError:
    """One clear line for a gin error; a moved binding names where it lives now."""
    if isinstance(error, tokenize.TokenError):
        return UserError("bad gin config or binding: a bracket or quote is never closed; check "
                         "the gin files and --gin_bindings")
    text = str(error)
    match = re.search(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", text)
    moved = match and renamed.new_name(match.group(1), match.group(2))
    if moved:
        where = re.search(r'In file "([^"]+)", line (\d+)', text)
        place = f" ({where.group(1)}, line {where.group(2)})" if where else ""
        return UserError(f"{match.group(1)}.{match.group(2)} is now {moved}{place}: the "
                         "setting lives with the module that uses it; rename the binding")
    return UserError(f"bad gin config or binding: {first_line(error)}")


_INCLUDE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""", re.MULTILINE)


def _resolve_includes(path: str, seen: set) -> None:
    """Lets gin find every file `path` includes, beside the including file or in the current
    folder, down the whole chain; a missing one is one line naming both files."""
    folder = os.path.dirname(os.path.abspath(path))
    gin.add_config_file_search_path(folder)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"gin config {path}: cannot read it ({e})") from None
    for name in _INCLUDE.findall(text):
        found = next((c for c in (os.path.join(folder, name), os.path.abspath(name))
                      if os.path.isfile(c)), None)
        if found is None:
            raise UserError(f"gin config {path} includes {name!r}, which is neither beside it "
                            f"({folder}) nor in the current folder ({os.getcwd()})")
        if found not in seen:
            seen.add(found)
            _resolve_includes(found, seen)


def variants(base: str, spec: str) -> list:
    """[(name, files, bindings)] of the base config and each `;`-separated variant of `spec`:
    the base file plus the variant's `,`-separated parts (a part ending in .gin is a file,
    anything else a binding); the first entry is the base itself."""
    out = []
    for name in ["base"] + spec.split(";"):
        parts = [] if name == "base" else [p for p in name.split(",") if p]
        out.append((name, [base] + [p for p in parts if p.endswith(".gin")],
                    [p for p in parts if not p.endswith(".gin")]))
    return out


def parse_gin(configs, bindings) -> None:
    """Parses gin files and bindings, turning gin's errors into one clear line."""
    import_registering_modules()
    configs = list(configs or [])
    seen = set()
    for path in configs:
        if not os.path.isfile(path):
            raise UserError(f"gin config {path!r} does not exist; see configs/ for the choices")
        _resolve_includes(path, seen)
    try:
        gin.parse_config_files_and_bindings(
            configs, list(bindings or []), skip_unknown=False, finalize_config=False
        )
    except (ValueError, NameError, KeyError, TypeError, SyntaxError, tokenize.TokenError) as e:
        raise _gin_error(e) from None
    except OSError as e:  # a file gin could not open after all
        raise UserError(f"bad gin config: {first_line(e)}") from None


def parse_saved(text: str, what: str) -> None:
    """Parses the gin config a run saved (`what` names it in errors), migrating old names."""
    import_registering_modules()
    try:
        gin.parse_config(renamed.migrate(text))
    except (ValueError, NameError, KeyError, TypeError, SyntaxError, OSError,
            tokenize.TokenError) as e:  # an unclosed bracket reaches us as the tokenizer's error
        why = ("a bracket or quote is never closed" if isinstance(e, tokenize.TokenError)
               else first_line(e))
        raise UserError(f"{what}: its saved gin config does not parse here ({why}); fix or "
                        "replace it") from None


def load(gin_configs=None, bindings=None, checkpoint_dir: str | None = None,
         compressed: str | None = None, check_dirs: bool = True) -> "Config":
    """The validated Config of gin files, of a trained run's directory, or of a compressed
    scene file; `bindings` apply on top of each.

    A run directory gives its saved config.gin (outputs stay in the run); a compressed file
    its saved config, rendered by the field's decoded form, with outputs under the file's
    path without its extension unless a binding sets Config.checkpoint_dir.
    """
    if compressed:
        from jaxnerf360 import compressed as compressed_lib

        if checkpoint_dir or gin_configs:
            raise UserError("--compressed carries its own config: drop --checkpoint_dir and "
                            "--gin_configs (--gin_bindings still apply)")
        text, field_bindings = compressed_lib.read_config(compressed)
        gin.clear_config()
        parse_saved(text, compressed)
        parse_gin([], [*field_bindings, f"Config.checkpoint_dir = "
                                        f"{os.path.splitext(compressed)[0]!r}", *(bindings or [])])
        config = Config()
    elif checkpoint_dir:
        from jaxnerf360 import checkpoints

        if gin_configs:
            raise UserError("--checkpoint_dir names a run, which carries its own config: drop "
                            "--gin_configs (--gin_bindings still apply)")
        parse_saved(checkpoints.read_run_config(checkpoint_dir),
                    os.path.join(checkpoint_dir, checkpoints.CONFIG_NAME))
        parse_gin([], bindings)
        config = Config(checkpoint_dir=checkpoint_dir)
    else:
        parse_gin(gin_configs, bindings)
        config = Config()
    validate(config, check_dirs=check_dirs)
    return config


def load_config(check_dirs: bool = True) -> Config:
    """Reads --gin_configs/--gin_bindings and returns the validated Config."""
    return load(FLAGS.gin_configs, FLAGS.gin_bindings, check_dirs=check_dirs)


def validate(config: Config, check_dirs: bool = True) -> None:
    """Checks values that would otherwise fail late or deep inside JAX."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        numeric = field.type in (int, float) or field.type == "int" or field.type == "float"
        if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UserError(f"Config.{field.name}={value!r} must be a number")
    loaders = ("blender", "llff", "colmap", "synthetic", "transforms")
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
    if config.compute_dtype not in ("float32", "bfloat16"):
        raise UserError(f"Config.compute_dtype={config.compute_dtype!r} is unknown; use "
                        "'float32' or 'bfloat16'")
    if config.data_loss_type not in ("charbonnier", "mse"):
        raise UserError(f"Config.data_loss_type={config.data_loss_type!r} is unknown; "
                        "use 'charbonnier' or 'mse'")
    for name in ("batch_size", "max_steps", "factor", "render_chunk_size", "checkpoint_every",
                 "checkpoint_keep", "print_every", "render_frames", "render_factor",
                 "step_chunks"):
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise UserError(f"Config.{name}={value!r} must be a positive integer")
    if not isinstance(config.viewer_port, int) or not 0 <= config.viewer_port < 65536:
        raise UserError(f"Config.viewer_port={config.viewer_port!r} must be a port number "
                        "(1 to 65535), or 0 for no viewer")
    if not isinstance(config.patch_size, int) or config.patch_size < 0:
        raise UserError(f"Config.patch_size={config.patch_size!r} must be a non-negative "
                        "integer (0: independent pixels)")
    if not (config.lr_init > 0 and config.lr_final > 0):
        raise UserError(f"Config.lr_init/lr_final must be positive, got {config.lr_init}, "
                        f"{config.lr_final}")
