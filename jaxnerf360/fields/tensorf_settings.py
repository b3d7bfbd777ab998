"""TensoRFField's settings: checked at start-up (one clear line each), and its grid sizes as the
field stores them (rounded for wavelet planes), with the upsampling schedule in those sizes."""

from absl import logging

from jaxnerf360 import schedules
from jaxnerf360.errors import UserError
from jaxnerf360.fields import vm
from jaxnerf360.geometry import wavelets

_ROUNDING_LOGGED: set = set()


def check(field) -> None:
    """Raises a UserError naming the first setting of `field` (a TensoRFField) that is bad."""
    _check_training_settings(field)
    schedules.check_schedule(field.density_blur, "TensoRFField.density_blur")
    schedules.check_schedule(field.appearance_blur, "TensoRFField.appearance_blur")
    for name in ("density_ranks", "appearance_ranks", "resolution", "box_min", "box_max"):
        value = getattr(field, name)
        if len(value) != 3:
            raise UserError(f"TensoRFField.{name}={tuple(value)} needs 3 entries, one per "
                            "(plane, line) pair / axis")
    for name in ("density_ranks", "appearance_ranks"):
        if any(int(r) < 1 for r in getattr(field, name)):
            raise UserError(f"TensoRFField.{name}={tuple(getattr(field, name))} must be "
                            "positive")
    if any(int(n) < 2 for n in field.resolution):
        raise UserError(f"TensoRFField.resolution={tuple(field.resolution)} needs at least 2 "
                        "grid points per axis")
    steps = [int(t) for t in field.upsample_steps]
    if any(t <= 0 for t in steps) or list(steps) != sorted(set(steps)):
        raise UserError(f"TensoRFField.upsample_steps={tuple(field.upsample_steps)} must be "
                        "positive and strictly increasing")
    if field.final_resolution is not None and steps:
        final = tuple(int(n) for n in field.final_resolution)
        if len(final) != 3 or any(final[i] < int(field.resolution[i]) for i in range(3)):
            raise UserError(f"TensoRFField.final_resolution={tuple(field.final_resolution)} "
                            f"must have 3 entries, each at least resolution="
                            f"{tuple(field.resolution)}: the schedule only grows the grid")
    if field.plane_coding not in ("spatial", "wavelet"):
        raise UserError(f"TensoRFField.plane_coding={field.plane_coding!r} is unknown; use "
                        "'spatial' or 'wavelet'")
    if field.plane_coding == "wavelet":
        _check_wavelet_settings(field)
    if field.density_activation not in ("softplus", "relu"):
        raise UserError(f"TensoRFField.density_activation={field.density_activation!r} is "
                        "unknown; use 'softplus' or 'relu'")
    size = [hi - lo for lo, hi in zip(field.box_min, field.box_max, strict=True)]
    if any(s <= 0 for s in size):
        raise UserError(f"TensoRFField box {tuple(field.box_min)} to {tuple(field.box_max)} "
                        "has a non-positive size; box_max must exceed box_min on every axis")


def _check_training_settings(field) -> None:
    """One clear line for a bad learning rate or regulariser weight of the grid factors."""
    if not (field.grid_lr_init > 0 and field.grid_lr_final > 0):
        raise UserError(f"TensoRFField.grid_lr_init/grid_lr_final must be positive, got "
                        f"{field.grid_lr_init!r}, {field.grid_lr_final!r}")
    for name in ("l1_density_mult", "tv_density_mult", "tv_appearance_mult", "mask_loss_mult"):
        value = getattr(field, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise UserError(f"TensoRFField.{name}={value!r} must be a non-negative number")
    if field.mask_loss_mult > 0 and field.plane_coding != "wavelet":
        raise UserError("TensoRFField.mask_loss_mult > 0 needs masked wavelet planes "
                        "(TensoRFField.plane_coding = 'wavelet'); set it to 0 for this field")


def _check_wavelet_settings(field) -> None:
    """One clear line for bad wavelet levels, quantisation, filter bank or level divisors."""
    from jaxnerf360.fields.wavelet import level_divisors

    if not 1 <= int(field.wavelet_levels) <= 4:
        raise UserError(f"TensoRFField.wavelet_levels={field.wavelet_levels} must be 1 to 4")
    if int(field.quantize_bits) not in (0, *range(2, 9)):
        raise UserError(f"TensoRFField.quantize_bits={field.quantize_bits} must be 2 to 8, "
                        "or 0 for no quantisation")
    wavelets.filter_bank(field.wavelet, "TensoRFField.wavelet")  # fails here, at start-up
    level_divisors(int(field.wavelet_levels), field.level_divisors)


def round_resolution(field, resolution) -> tuple:
    """`resolution` as `field` stores it: multiples of 2^levels for wavelet planes."""
    if field.plane_coding != "wavelet":
        return tuple(int(n) for n in resolution)
    return tuple(wavelets.round_size(int(n), int(field.wavelet_levels)) for n in resolution)


def wavelet_resolution(field) -> tuple:
    """The initial grid size of a wavelet-coded `field`, rounded (and the rounding logged)."""
    rounded = round_resolution(field, field.resolution)
    if rounded != tuple(int(n) for n in field.resolution):
        _log_rounding(tuple(field.resolution), rounded, field.wavelet_levels)
    return rounded


def _log_rounding(requested, rounded, levels) -> None:
    """Logs once per (requested, rounded) pair that a grid size was rounded for wavelets."""
    if (requested, rounded) not in _ROUNDING_LOGGED:
        _ROUNDING_LOGGED.add((requested, rounded))
        logging.info("TensoRFField: grid %s rounded to %s (divisible by 2^%d for the wavelet "
                     "levels)", requested, rounded, levels)


def resolution_schedule(field) -> list:
    """[(step, (nx, ny, nz))]: `vm.upsampling_schedule` of the field, sizes as it stores them."""
    if field.final_resolution is None or not field.upsample_steps:
        return []
    out = []
    for step, res in vm.upsampling_schedule(field.resolution, field.final_resolution,
                                            field.upsample_steps):
        stored = round_resolution(field, res)
        if stored != res:
            _log_rounding(res, stored, field.wavelet_levels)
        out.append((step, stored))
    return out
