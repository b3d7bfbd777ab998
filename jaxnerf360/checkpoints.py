"""Orbax checkpoints and the gin config saved beside them."""

import os
import re

import gin
import jax
import orbax.checkpoint as ocp

from jaxnerf360 import renamed
from jaxnerf360.errors import UserError

CONFIG_NAME = "config.gin"

# Bindings that may change between a run and its resumption without changing the model.
_RESUMABLE = re.compile(
    r"^Config\.(max_steps|checkpoint_every|checkpoint_keep|print_every|summary_render_every|"
    r"render_\w+|eval_max_images|lpips_net|data_dir|checkpoint_dir)\s*="
)


def manager(checkpoint_dir: str, keep: int = 3) -> ocp.CheckpointManager:
    """A CheckpointManager over `checkpoint_dir/checkpoints`, keeping the last `keep`."""
    path = os.path.abspath(os.path.join(checkpoint_dir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(path, options=options)


def _stored(state) -> dict:
    """What a checkpoint stores of a train state. The sampler's state is stored under
    'occupancy', its name in every checkpoint written before samplers declared their state."""
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
            "occupancy": state.sampler_state}


def save(mgr: ocp.CheckpointManager, step: int, state) -> None:
    """Saves `state` at `step` (no-op if that step is already saved) and waits for it."""
    if mgr.latest_step() != step:
        mgr.save(step, args=ocp.args.StandardSave(_stored(state)), force=True)
    mgr.wait_until_finished()


def restore_latest(mgr: ocp.CheckpointManager, state, checkpoint_dir: str):
    """Restores the latest checkpoint into the structure of `state`; None if there is none."""
    step = mgr.latest_step()
    if step is None:
        return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _stored(state))
    try:
        stored = mgr.restore(step, args=ocp.args.StandardRestore(target))
        return state.replace(step=stored["step"], params=stored["params"],
                             opt_state=stored["opt_state"], sampler_state=stored["occupancy"])
    except (ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{checkpoint_dir}: the checkpoint at step {step} does not fit this model ({first}); "
            "use a new Config.checkpoint_dir or the config it was trained with"
        ) from None


def _model_bindings(text: str) -> list:
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or _RESUMABLE.match(stripped):
            continue
        lines.append(stripped)
    return lines


def check_and_save_config(checkpoint_dir: str, write: bool = True) -> None:
    """Writes the current gin config beside the checkpoints; refuses a different earlier one.

    A run resumed in the same directory must have the same model and data bindings
    (step counts, logging and paths may change).
    """
    path = os.path.join(checkpoint_dir, CONFIG_NAME)
    current = gin.config_str()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = renamed.migrate(f.read())
        old, new = sorted(_model_bindings(previous)), sorted(_model_bindings(current))
        if old != new:
            diff = sorted(set(old).symmetric_difference(new))
            raise UserError(
                f"{checkpoint_dir} holds a run with a different config ({path}; first difference: "
                f"{diff[0] if diff else 'binding order'}); use a new Config.checkpoint_dir"
            )
    if write:
        os.makedirs(checkpoint_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(current)


def read_run_config(checkpoint_dir: str) -> str:
    """The gin config text saved in a run directory (for eval and render)."""
    path = os.path.join(checkpoint_dir, CONFIG_NAME)
    if not os.path.exists(path):
        raise UserError(
            f"{path} not found: is {checkpoint_dir!r} the Config.checkpoint_dir of a trained run?"
        )
    with open(path, encoding="utf-8") as f:
        return f.read()
