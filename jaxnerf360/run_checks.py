"""Start-up checks of a run's stages against each other: one clear line for each mismatch
(a head without patches, channels the field does not make, images a head cannot tile)."""

from jaxnerf360.errors import UserError
from jaxnerf360.model import HEAD


def check_pose_support(cameras, parts: dict) -> None:
    """Pose optimisation needs a field and sampler that pass gradients to the rays."""
    if not cameras.optimize_poses:
        return
    for key, part in parts.items():
        if key != HEAD and not part.supports_pose_optimization:
            raise UserError(f"Cameras.optimize_poses needs a field and sampler whose samples "
                            f"follow the rays with gradients; {type(part).__name__} does not "
                            "declare supports_pose_optimization (use MLPField or TensoRFField "
                            "with ProposalSampler or OccupancySampler)")


def check_appearance_chunks(model) -> None:
    """`Model.appearance_chunks` is a whole number of parts, at least 1 (1: the buffer whole)."""
    chunks = model.appearance_chunks
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise UserError(f"Model.appearance_chunks = {chunks!r}: give the number of parts the "
                        "colour buffer is computed in, a whole number of 1 or more (1: whole)")


def check_step_chunks(config, model, cameras, objective, supervision,
                      data_devices: int) -> None:
    """`Config.step_chunks` parts of whole rays: each device's share of the batch splits
    evenly, and nothing in the step spans the parts (a head's patches, a sample buffer sized
    for the whole batch, solved image maps, a term's own rays, a mean weighted over the batch).
    """
    chunks = config.step_chunks
    if chunks == 1:
        return
    if config.batch_size % (chunks * data_devices):
        raise UserError(f"Config.step_chunks={chunks}: Config.batch_size={config.batch_size} "
                        f"must be a multiple of step_chunks x {data_devices} data device(s)")
    spans = [("a head (Model.head) or patches (Config.patch_size)",
              model.head is not None or config.patch_size > 0),
             ("a sample buffer (OccupancySampler)", model.sampler().uses_sample_buffer()),
             ("solved image maps (Cameras.image_map_solver)", cameras.solves_maps),
             ("a term's independent rays (ray_term)", bool(objective.independent_rays)),
             ("a data term weighted over the batch (EdgeWeights)", supervision.needs_edges)]
    for what, present in spans:
        if present:
            raise UserError(f"Config.step_chunks={chunks} splits a step's rays into parts, "
                            f"which {what} cannot be: use Config.step_chunks=1")


def check_patches(config, model, objective, supervision, field) -> int:
    """Config.patch_size, checked against the head and the loss terms: 0 means independent
    pixels."""
    size = config.patch_size
    if model.head is not None and size <= 0:
        raise UserError("Model.head renders image patches; set Config.patch_size to the "
                        "output patch side (e.g. 32)")
    if objective.patch_terms and size <= 0:
        raise UserError(f"the loss term {objective.patch_terms[0]!r} compares image patches; "
                        "set Config.patch_size to the patch side (e.g. 16)")
    if objective.independent_rays and size <= 0:
        raise UserError("a loss term draws independent rays beside image patches (ray_term), "
                        "but Config.patch_size = 0 already trains on independent rays; set a "
                        "patch size or drop the term")
    if model.head is not None:
        check_head_channels(model.parts()[HEAD], field)
    wider = model.head_geometry()[0] or objective.margin
    if size and wider and config.background == "random":
        raise UserError("Config.background = 'random' draws a background per ray, which the "
                        "ground-truth margin of a head or the alignment loss does not have; "
                        "use 'white' or 'black'")
    if size and wider and (supervision.needs_images or supervision.needs_edges):
        raise UserError("spectral control's image blur and edge weights work on independent "
                        "pixels, not on patches with a margin (a head or the alignment loss); "
                        "turn them off (ImageBlur.schedule = (), EdgeWeights.until = 0)")
    k = model.head_geometry()[1]
    if size and size % k:
        raise UserError(f"Config.patch_size={size} must be a multiple of the head's "
                        f"upsampling factor {k} (output pixels per latent pixel)")
    if size and config.batch_size % (size * size):
        raise UserError(f"Config.batch_size={config.batch_size} must be a multiple of "
                        f"Config.patch_size^2={size * size} (whole patches per step)")
    return size


def check_output_size(scene, factor: int, where) -> None:
    """The training images split into whole k x k blocks for a head that upsamples by k."""
    if factor > 1 and (scene.width % factor or scene.height % factor):
        w, h = scene.width - scene.width % factor, scene.height - scene.height % factor
        raise UserError(f"the {scene.width}x{scene.height} images of {where} are not divisible "
                        f"by the head's upsampling factor {factor}; crop them to {w}x{h} or "
                        f"pad them to {w + factor * (w < scene.width)}x"
                        f"{h + factor * (h < scene.height)} (or change Config.factor)")


def check_head_channels(head, field) -> None:
    """The head reads channels the field composites, at the widths it expects."""
    made = field.channels()
    for name, width in head.input_channels().items():
        if made.get(name, 0) != width:
            raise UserError(f"{type(head).__name__} reads the field's {name!r} channel of "
                            f"width {width}, but {type(field).__name__} produces "
                            f"{made.get(name, 0)}; set the field's feature_dim to {width} "
                            f"(e.g. {type(field).__name__}.feature_dim = {width})")
