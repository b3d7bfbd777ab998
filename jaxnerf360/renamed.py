"""Gin bindings that moved from `Config` to the module that owns the setting.

A run's saved config (`config.gin` beside its checkpoints, the text inside a `.jnrf` file) is
migrated on reading: old names become new ones, so runs trained before the move still load
and resume. A gin file or binding that a user writes with an old name is an error that names
the new binding (`configs.parse_gin`).
"""

import re

MOVED = {
    **{f"Config.{name}": f"Cameras.{name}" for name in (
        "pose_noise", "pose_init", "optimize_poses", "optimize_focal", "pose_lr_init",
        "pose_lr_final", "test_pose_steps", "test_pose_lr_init", "test_pose_lr_final",
        "test_pose_batch", "near_schedule")},
    "Config.image_blur": "ImageBlur.schedule",
    "Config.image_blur_random_scale": "ImageBlur.random_scale",
    "Config.edge_loss_until": "EdgeWeights.until",
    "Config.edge_threshold_mult": "EdgeWeights.threshold_mult",
    "Config.edge_weight": "EdgeWeights.edge_weight",
    "Config.non_edge_weight": "EdgeWeights.non_edge_weight",
    "Config.edge_loss_every": "EdgeWeights.every",
    **{f"Config.{name}": f"TensoRFField.{name}" for name in (
        "grid_lr_init", "grid_lr_final", "l1_density_mult", "l1_density_mult_rest",
        "l1_density_switch_step", "tv_density_mult", "tv_appearance_mult", "mask_loss_mult")},
}

_BINDING = re.compile(r"^(\s*)(Config\.\w+)(\s*=)", re.MULTILINE)


def migrate(text: str) -> str:
    """Gin config text with every moved binding renamed to where it lives now."""
    return _BINDING.sub(lambda m: m.group(1) + MOVED.get(m.group(2), m.group(2)) + m.group(3),
                        text)


def new_name(configurable: str, parameter: str) -> str | None:
    """The binding that replaced `configurable.parameter`, or None if it did not move."""
    return MOVED.get(f"{configurable}.{parameter}")
