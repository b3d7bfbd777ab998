"""Compressed scene files (`.jnrf`): a trained state written as one file, and read back.

The file (format in `codec/`) holds what the field declares for itself (`Field.file_tensors`:
for masked wavelet planes, every plane and line as the 8-bit codes of its kept coefficients
with one scale and offset, the masks as run-length coded bit planes split by wavelet level),
the other networks (any proposal MLP) in float16 or float32, the camera corrections in float32,
the sampler's occupancy grid as a bit plane, and the run's gin config. Reading decodes the
field once into the form it renders in (a plain spatial VM field, at VM speed).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxnerf360 import codec, parallel
from jaxnerf360.cameras import PARAMS as CAMERA_PARAMS
from jaxnerf360.cameras import Cameras
from jaxnerf360.errors import UserError
from jaxnerf360.fields.wavelet import FILE_FORMAT, RENDER_BINDINGS
from jaxnerf360.geometry import wavelets
from jaxnerf360.model import FIELD, Model
from jaxnerf360.train_step import TrainState

FORMAT = FILE_FORMAT  # the only format so far: masked wavelet planes of a VM field
SAMPLER_STATE = "occupancy"  # the tensor holding the sampler's state (a bool grid)


def flatten(tree, prefix: str = "") -> dict:
    """{'a/b/c': leaf} of a nested dict of arrays."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def unflatten(flat: dict) -> dict:
    """The nested dict of `{'a/b/c': leaf}`."""
    out = {}
    for name, value in flat.items():
        *path, last = name.split("/")
        node = out
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def file_tensors(model, params, sampler_state=None, network_dtype: str = "float16") -> dict:
    """The tensors (for `codec.write_scene`) that store a trained state's `params`.

    The field's own records, the other networks cast to `network_dtype`, camera corrections
    in float32, the sampler state as `Bits`. UserError when the field has no compressed form.
    """
    model_params, camera_params = Cameras.split(jax.device_get(params))
    field = model.parts()[FIELD]
    own = field.file_tensors(flatten(model_params[FIELD]), network_dtype)
    if own is None:
        raise UserError(f"{type(field).__name__} with these settings has no compressed form; "
                        "compress needs a run trained with masked wavelet planes (Model.field "
                        "= @TensoRFField, TensoRFField.plane_coding = 'wavelet')")
    out = {f"{FIELD}/{name}": value for name, value in own.items()}
    for key, tree in model_params.items():
        if key != FIELD:
            out.update({name: np.asarray(v).astype(network_dtype)
                        for name, v in flatten(tree, f"{key}/").items()})
    if camera_params is not None:  # camera corrections keep full precision
        out.update({name: np.asarray(v, np.float32)
                    for name, v in flatten(camera_params, f"{CAMERA_PARAMS}/").items()})
    if sampler_state is not None:
        out[SAMPLER_STATE] = codec.Bits(np.asarray(sampler_state, bool))
    return out


def decoded_tensors(tensors: dict) -> dict:
    """The arrays that reading back `file_tensors` output gives: the in-memory quantised model."""
    out = {}
    for name, value in tensors.items():
        if isinstance(value, codec.Masked):
            out[name] = codec.masked_values(value.values, value.mask)
        elif isinstance(value, codec.Bits):
            out[name] = np.asarray(value.mask, bool)
        else:
            out[name] = np.asarray(value)
    return out


def write(path: str, model, state, config_text: str, network_dtype: str = "float16") -> dict:
    """Writes the compressed file of a trained `state`; returns {'file', 'bytes', 'sparsity'}.

    The file is read back and checked to hold exactly the quantised model.
    """
    field = model.parts()[FIELD]
    tensors = file_tensors(model, state.params, jax.device_get(state.sampler_state), network_dtype)
    meta = {"format": FORMAT, "scene_kind": model.scene_kind, "step": int(state.step),
            "wavelet": field.file_settings(), "network_dtype": network_dtype,
            "render_bindings": field.file_bindings()}
    sizes = codec.write_scene(path, tensors, {"config.gin": config_text,
                                              "scene.json": json.dumps(meta)})
    read, _ = codec.read_scene(path)
    for name, want in decoded_tensors(tensors).items():
        if read[name].dtype != want.dtype or not np.array_equal(read[name], want):
            raise AssertionError(f"{path}: tensor {name} does not decode bit-exactly")
    return {"file": path, "bytes": sizes, "sparsity": sparsity(tensors, meta["wavelet"])}


def _load(path: str) -> tuple:
    """(gin config text, metadata, decoded arrays) of a compressed file; clear errors."""
    tensors, text = codec.read_scene(path)
    try:
        meta = json.loads(text["scene.json"])
        config_text = text["config.gin"]
        if meta.get("format") != FORMAT:
            raise ValueError(meta.get("format"))
        settings = meta["wavelet"]
        meta["wavelet"] = {k: settings[k] for k in ("wavelet", "levels", "divisors", "bits")}
        # Files written before the header named them: the format's own rendering bindings.
        meta.setdefault("render_bindings", list(RENDER_BINDINGS))
    except (KeyError, ValueError, TypeError):
        raise UserError(f"{path}: not a compressed jaxnerf360 scene (missing or unknown "
                        "scene.json / config.gin); write one with python -m "
                        "jaxnerf360.compress") from None
    return config_text, meta, tensors


def read_config(path: str) -> tuple:
    """(the run's gin config text, the bindings that render the decoded field) of a file."""
    config_text, meta, _ = _load(path)
    return config_text, list(meta["render_bindings"])


def restore(path: str, scene_kind: str, mesh) -> tuple:
    """(model, state) that render a compressed file (its gin config parsed with
    `read_config`'s bindings): the decoded field, the sampler state, no optimiser."""
    _, meta, tensors = _load(path)
    if meta["scene_kind"] != scene_kind:
        raise UserError(f"{path} holds a {meta['scene_kind']} scene, but the data is "
                        f"{scene_kind}; check Config.data_dir and Config.dataset_loader")
    model = Model(scene_kind=scene_kind)
    field_prefix = f"{FIELD}/"
    own = {k[len(field_prefix):]: v for k, v in tensors.items() if k.startswith(field_prefix)}
    try:
        field_params = model.parts()[FIELD].params_from_file(own, meta["wavelet"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    others = {k: jnp.asarray(v, jnp.float32) for k, v in tensors.items()
              if not k.startswith((field_prefix, f"{CAMERA_PARAMS}/")) and k != SAMPLER_STATE}
    params = {**unflatten(others), FIELD: unflatten(field_params)}
    sampler_state = tensors.get(SAMPLER_STATE)
    state = TrainState(step=jnp.asarray(meta["step"], jnp.int32), params=params, opt_state=None,
                       sampler_state=None if sampler_state is None else jnp.asarray(sampler_state))
    return model, parallel.replicate(state, mesh)


def sparsity(tensors: dict, settings: dict) -> dict:
    """Zero (masked-out) fraction of all grid coefficients, of lines, and of each plane level."""
    kept = total = 0
    lines = [0, 0]
    levels = np.zeros((settings["levels"] + 1, 2), np.int64)
    for value in tensors.values():
        if not isinstance(value, codec.Masked):
            continue
        mask = np.asarray(value.mask)
        kept, total = kept + int(mask.sum()), total + mask.size
        if value.levels:
            level = wavelets.level_of(mask.shape[-2:], value.levels)
            for k in range(value.levels + 1):
                sel = mask[..., level == k]
                levels[k] += (int(sel.sum()), sel.size)
        else:
            lines[0], lines[1] = lines[0] + int(mask.sum()), lines[1] + mask.size
    return {"zero_fraction": 1 - kept / max(total, 1), "coefficients": total, "kept": kept,
            "line_zero_fraction": 1 - lines[0] / max(lines[1], 1),
            "plane_zero_fraction_by_level": [1 - k / max(n, 1) for k, n in levels]}
