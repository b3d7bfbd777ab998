"""Orbax checkpoints and the gin config saved beside them."""

import ast
import json
import logging as std_logging
import os
import re
import sys
import time

import gin
import jax
import orbax.checkpoint as ocp
from absl import logging

from jaxnerf360 import renamed
from jaxnerf360.cameras import IMAGE_MAP, PARAMS
from jaxnerf360.errors import UserError

CONFIG_NAME = "config.gin"
DATA_NAME = "data.json"  # what the run trains on: image count and size, to check on resume

# Bindings that may change between a run and its resumption without changing the model.
_RESUMABLE = re.compile(
    r"^Config\.(mesh_shape|max_steps|checkpoint_every|checkpoint_keep|print_every|summary_render_every|"
    r"render_\w+|eval_max_images|lpips_net|data_dir|checkpoint_dir)\s*="
)


def manager(checkpoint_dir: str, keep: int = 3) -> ocp.CheckpointManager:
    """A CheckpointManager over `checkpoint_dir/checkpoints`, keeping the last `keep`."""
    path = os.path.abspath(os.path.join(checkpoint_dir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(path, options=options)


def _stored(state) -> dict:
    """What a checkpoint stores of a train state. The sampler's state is stored under
    'occupancy', its name in every checkpoint written before samplers declared their state;
    the cameras' state (solved image maps) only where there is one."""
    stored = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
              "occupancy": state.sampler_state}
    if state.camera_state is not None:
        stored["cameras"] = state.camera_state
    return stored


def save(mgr: ocp.CheckpointManager, step: int, state) -> None:
    """Saves `state` at `step` (no-op if that step is already saved) and waits for it."""
    if mgr.latest_step() != step:
        mgr.save(step, args=ocp.args.StandardSave(_stored(state)), force=True)
    mgr.wait_until_finished()


class DamagedCheckpoint(Exception):
    """A saved step that cannot be read (truncated, zeroed or missing files): not the user's
    config at fault, and an intact earlier step may still be there."""


# Orbax's words when a readable checkpoint holds another tree or other shapes than the target.
_MISMATCH = ("Structure mismatch", "not compatible with the stored shape", "Requested shape",
             "tree structures do not match")


def _metadata(step_dir: str) -> dict:
    """The parsed default/_METADATA of a saved step (OSError or ValueError if unreadable)."""
    with open(os.path.join(step_dir, "default", "_METADATA"), encoding="utf-8") as f:
        return json.load(f)


def _damage(step_dir: str) -> str | None:
    """Why the files of a saved step cannot be what orbax wrote, or None if they can."""
    item = os.path.join(step_dir, "default")
    if not os.path.isdir(item):
        return "its default/ folder is missing"
    if not os.path.isfile(os.path.join(item, "_METADATA")):
        return "its default/_METADATA file is missing"
    try:
        _metadata(step_dir)
    except (OSError, ValueError):
        return "its default/_METADATA file is damaged"
    return None


def _stored_paths(step_dir: str) -> list:
    """The key paths (tuples of names) of the leaves a saved step holds, from its metadata
    (empty if that cannot be read)."""
    try:
        return [ast.literal_eval(key) for key in _metadata(step_dir)["tree_metadata"].keys()]
    except (OSError, ValueError, SyntaxError, KeyError, AttributeError):
        return []


def _mismatch_advice(step_dir: str, target: dict) -> str:
    """What to do about a checkpoint that does not fit: when both it and the model have image
    maps and only one holds solved maps' equations, the solver it was trained with; else a new
    directory or the config it was trained with."""
    paths = _stored_paths(step_dir)
    stored_maps = any(path[:3] == ("params", PARAMS, IMAGE_MAP) for path in paths)
    target_maps = IMAGE_MAP in target["params"].get(PARAMS, {})
    solved = any(path[:1] == ("cameras",) for path in paths)
    if stored_maps and target_maps and solved != ("cameras" in target):
        solver = "gauss_newton" if solved else "adam"
        return (f"it was trained with image maps solved by {solver!r}; add "
                f"--gin_bindings=\"Cameras.image_map_solver='{solver}'\" (the default was "
                "'adam' before 2026-12-06)")
    return "use a new Config.checkpoint_dir or the config it was trained with"


def restore_step(mgr: ocp.CheckpointManager, step: int, state, checkpoint_dir: str):
    """The checkpoint at `step` restored into the structure of `state`.

    Raises DamagedCheckpoint when its files cannot be read, UserError when they can but hold
    another model (a config mismatch).
    """
    step_dir = os.path.join(mgr.directory, str(step))
    damage = _damage(step_dir)
    if damage:
        raise DamagedCheckpoint(damage)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _stored(state))
    failure = None
    with _QuietRestore() as quiet:
        try:
            stored = mgr.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # orbax and tensorstore raise plain Exceptions on bad data
            failure = str(e).strip() or type(e).__name__
        if failure is not None:  # outside the except: the failed reads are free to go now
            quiet.drain()
    if failure is not None:
        first = failure.splitlines()[0].split(" See full TensorStore details")[0][:200]
        if any(words in failure for words in _MISMATCH):
            raise UserError(
                f"{checkpoint_dir}: the checkpoint at step {step} does not fit this model "
                f"({first}); {_mismatch_advice(step_dir, target)}")
        raise DamagedCheckpoint(f"its data cannot be read ({first})")
    return state.replace(step=stored["step"], params=stored["params"],
                         opt_state=stored["opt_state"], sampler_state=stored["occupancy"],
                         camera_state=stored.get("cameras"))


def set_aside(mgr: ocp.CheckpointManager, step: int, reason: str) -> str:
    """Moves a damaged step's folder to `<step>.damaged` (never deletes it), so the next save
    of that step does not collide, and says so in one warning line; returns the new path."""
    source = os.path.join(mgr.directory, str(step))
    if jax.process_count() > 1:  # every process names the target before the folder moves
        ocp.multihost.sync_global_processes(f"set_aside_name_{step}")
    target, n = f"{source}.damaged", 1
    while os.path.exists(target):
        n += 1
        target = f"{source}.damaged.{n}"
    if jax.process_index() == 0:
        os.rename(source, target)
    if jax.process_count() > 1:  # every process reloads only once the folder has moved
        ocp.multihost.sync_global_processes(f"set_aside_{step}")
    mgr.reload()
    logging.warning("checkpoint at step %d is damaged (%s): moved aside to %s; trying the "
                    "step before it", step, reason, target)
    return target


def restore_newest_intact(mgr: ocp.CheckpointManager, state_at, checkpoint_dir: str):
    """The newest checkpoint that can be read, restored into `state_at(step)` (the state's
    structure at that step); damaged steps are set aside. None when there is none at all;
    UserError when every step is damaged."""
    steps = sorted(mgr.all_steps(), reverse=True)
    damaged = []
    for step in steps:
        try:
            restored = restore_step(mgr, step, state_at(step), checkpoint_dir)
        except DamagedCheckpoint as e:
            damaged.append(set_aside(mgr, step, str(e)))
            continue
        if damaged:
            logging.warning("restored step %d, the newest intact checkpoint in %s", step,
                            checkpoint_dir)
        return restored
    if damaged:
        raise UserError(f"{checkpoint_dir}: no intact checkpoint: every saved step is damaged "
                        f"(moved aside to {', '.join(damaged)}); start afresh with a new "
                        "Config.checkpoint_dir")
    return None


class _AbandonedReads(std_logging.Filter):
    """Drops asyncio's late report of an orbax read that a failed restore abandoned: on a
    busy machine it can come after `_QuietRestore.drain` has waited."""

    def filter(self, record):
        """False for 'Task exception was never retrieved' of orbax's deserialisation."""
        text = record.getMessage()
        return not ("never retrieved" in text and "async_deserialize" in text)


_ABANDONED = _AbandonedReads()


class _QuietRestore:
    """Holds back what orbax's abandoned reads print after a failed restore ('Exception
    ignored', 'Event loop is closed' and asyncio's 'Task exception was never retrieved', from
    tensorstore's threads for a moment after the failure, which is itself reported in one
    line); after a success it lets stderr through."""

    def __enter__(self):
        self._hook, self._stderr = sys.unraisablehook, sys.stderr
        self._held, self._last, self.failed = [], time.monotonic(), False
        sys.unraisablehook = lambda unraisable: None
        sys.stderr = self
        # asyncio reports each abandoned read's task ("Task exception was never retrieved")
        self._asyncio = std_logging.getLogger("asyncio")
        self._asyncio_disabled, self._asyncio.disabled = self._asyncio.disabled, True
        return self

    def write(self, text):
        """Holds `text` back (sys.stderr's interface)."""
        self._held.append(text)
        self._last = time.monotonic()
        return len(text)

    def flush(self):
        """Nothing to flush (sys.stderr's interface)."""

    def drain(self) -> None:
        """After a failure: collects the abandoned reads and waits until they fall silent."""
        import gc

        self.failed = True
        if _ABANDONED not in self._asyncio.filters:
            self._asyncio.addFilter(_ABANDONED)
        deadline = time.monotonic() + 3.0
        while True:
            gc.collect()
            if time.monotonic() > deadline or time.monotonic() - self._last > 0.3:
                break
            time.sleep(0.05)

    def __exit__(self, *exc):
        sys.unraisablehook, sys.stderr = self._hook, self._stderr
        self._asyncio.disabled = self._asyncio_disabled
        if not self.failed and self._held:
            sys.stderr.write("".join(self._held))
        return False


def _bindings(text: str) -> list:
    """The bindings of a gin config text, one string each: gin wraps a long value onto
    indented lines after a trailing backslash, and these are joined back."""
    bindings = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if bindings and (line[:1].isspace() or bindings[-1].endswith("\\")):
            bindings[-1] = bindings[-1].rstrip("\\").rstrip() + " " + stripped
        else:
            bindings.append(stripped)
    return bindings


def _model_bindings(text: str) -> list:
    return [b for b in _bindings(text) if not _RESUMABLE.match(b)]


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
        _write_whole(path, current)


def read_run_config(checkpoint_dir: str) -> str:
    """The gin config text saved in a run directory (for eval and render)."""
    path = os.path.join(checkpoint_dir, CONFIG_NAME)
    if not os.path.exists(path):
        raise UserError(
            f"{path} not found: is {checkpoint_dir!r} the Config.checkpoint_dir of a trained run?"
        )
    with open(path, encoding="utf-8") as f:
        return f.read()


def saved_data_dir(checkpoint_dir: str) -> str | None:
    """The Config.data_dir of the run saved in `checkpoint_dir` (None if there is none)."""
    path = os.path.join(checkpoint_dir, CONFIG_NAME)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        found = [re.match(r"Config\.data_dir\s*=\s*(.+)$", b) for b in _bindings(f.read())]
    match = next((m for m in found if m), None)
    try:
        return None if match is None else str(ast.literal_eval(match.group(1).strip()))
    except (ValueError, SyntaxError):
        return None


def check_data(checkpoint_dir: str, data_dir: str, previous_dir: str | None, scene,
               write: bool = True) -> None:
    """Records what a run trains on, and on resume checks the data still fits it.

    Resuming with another Config.data_dir (moved data) is allowed, with a warning line; a
    training split with another image count or size than the run's is refused.
    """
    path = os.path.join(checkpoint_dir, DATA_NAME)
    summary = {"num_images": scene.num_images, "width": scene.width, "height": scene.height}
    moved = previous_dir is not None and os.path.abspath(previous_dir) != os.path.abspath(
        data_dir)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                before = json.load(f)
            before = {key: int(before[key]) for key in summary}
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path} is damaged; delete it (it is written again from the data "
                            "on the next start) or restore it") from None
        if before != summary:
            raise UserError(
                f"{data_dir} holds {summary['num_images']} training images of "
                f"{summary['width']}x{summary['height']}, but the run in {checkpoint_dir} "
                f"trained on {before['num_images']} of {before['width']}x{before['height']}; "
                "resume with the data it was trained on, or use a new Config.checkpoint_dir")
    if moved:
        match = "the same image count and size" if os.path.exists(path) else (
            "its image count and size could not be checked (no record from before)")
        logging.warning("Config.data_dir changed from %s to %s since the run started: %s",
                        previous_dir, data_dir, match)
    if write and not os.path.exists(path):
        _write_whole(path, json.dumps(summary))


def _write_whole(path: str, text: str) -> None:
    """Writes `text` to `path` so that a reader (another process of the job) sees the old file
    or the new one, never a part."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)

