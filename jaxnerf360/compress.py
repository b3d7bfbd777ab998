"""Compresses a trained masked-wavelet run into one file: `python -m jaxnerf360.compress`.

    python -m jaxnerf360.compress --checkpoint_dir=runs/x --out=scene.jnrf

The file (format in `codec.py`) holds every VM plane and line as the 8-bit codes of its kept
coefficients with one scale and offset (the grid of quantisation-aware training), the masks as
run-length coded bit planes split by wavelet level, the networks (basis, colour MLP, any
proposal MLP) in float16 or float32, the occupancy grid as a bit plane, and the run's gin
config. `eval` and `render` read it with `--compressed=scene.jnrf`: it is decoded once into a
plain spatial VM field, which renders at VM speed.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from jaxnerf360 import cli, codec, configs, parallel, pipeline
from jaxnerf360.errors import UserError
from jaxnerf360.fields import wavelet
from jaxnerf360.geometry import wavelets

flags.DEFINE_string("out", None, "Compressed scene file to write (e.g. runs/x/scene.jnrf).")
flags.DEFINE_enum("network_dtype", "float16", ["float16", "float32"],
                  "Storage type of the networks (basis, MLPs).")

FORMAT = "masked-wavelet-vm"


def _flatten(tree, prefix: str = "") -> dict:
    """{'a/b/c': leaf} of a nested dict of arrays."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def _unflatten(flat: dict) -> dict:
    """The nested dict of `{'a/b/c': leaf}`."""
    out = {}
    for name, value in flat.items():
        *path, last = name.split("/")
        node = out
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def _leaf_name(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def file_tensors(params, settings: dict, occupancy=None, network_dtype: str = "float16") -> dict:
    """The tensors a compressed file stores (for `codec.write_scene`) for wavelet `params`.

    Factors become `codec.Masked` records (planes split by wavelet level), mask logits are
    folded into them, the networks are cast to `network_dtype`, the occupancy grid is `Bits`.
    """
    if settings["bits"] not in (0, 8):
        raise UserError(f"TensoRFField.quantize_bits={settings['bits']}: compressed files store "
                        "8-bit codes; train with 8 (or 0)")
    flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
    out = {}
    for name, value in flat.items():
        leaf = _leaf_name(name)
        if wavelet.is_mask(leaf):
            continue
        if wavelet.is_factor(leaf):
            mask = flat[name[: -len(leaf)] + wavelet.mask_name(leaf)] >= 0
            levels = settings["levels"] if wavelet.is_plane(leaf) else 0
            out[name] = codec.Masked(value.astype(np.float32), mask, levels)
        elif name.startswith("poses/"):  # camera corrections keep full precision
            out[name] = value.astype(np.float32)
        else:
            out[name] = value.astype(network_dtype)
    if occupancy is not None:
        out["occupancy"] = codec.Bits(np.asarray(occupancy, bool))
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


def spatial_params(decoded: dict, settings: dict) -> dict:
    """Spatial VM field parameters (float32, nested) from decoded file arrays.

    Applies the per-level division and the inverse DWT to the planes (once, here), so the
    field renders with `plane_coding='spatial'` at plain VM speed.
    """
    flat = {}
    for name, value in decoded.items():
        if name == "occupancy" or name.startswith("poses/"):
            continue
        value = jnp.asarray(value, jnp.float32)
        leaf = _leaf_name(name)
        if wavelet.is_factor(leaf):  # masked coefficients are already zero
            value = wavelet.decode_factor(leaf, value, jnp.ones_like(value), settings,
                                          quantize=False)
        flat[name] = value
    return _unflatten(flat)


def compress(config, out_path: str, network_dtype: str = "float16") -> dict:
    """Writes the compressed file of the run in `config.checkpoint_dir`; returns a summary."""
    import gin

    from jaxnerf360.data.loaders import scene_kind

    kind = scene_kind(config.dataset_loader, config.forward_facing)
    model, state = pipeline.restore_trained(config, kind, parallel.make_mesh())
    field = model.field()
    if getattr(field, "plane_coding", None) != "wavelet":
        raise UserError(f"{config.checkpoint_dir}: compress needs a run trained with masked "
                        "wavelet planes (Model.field = @TensoRFField, TensoRFField.plane_coding "
                        "= 'wavelet')")
    params = jax.device_get(state.params)
    settings = field.wavelet_settings()
    tensors = file_tensors(params, settings, jax.device_get(state.occupancy), network_dtype)
    meta = {"format": FORMAT, "scene_kind": kind, "step": int(state.step),
            "wavelet": settings, "network_dtype": network_dtype}
    text = {"config.gin": gin.config_str(), "scene.json": json.dumps(meta)}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    sizes = codec.write_scene(out_path, tensors, text)
    # Read it back: the file must hold exactly the quantised model.
    read, _ = codec.read_scene(out_path)
    for name, want in decoded_tensors(tensors).items():
        if read[name].dtype != want.dtype or not np.array_equal(read[name], want):
            raise AssertionError(f"{out_path}: tensor {name} does not decode bit-exactly")
    summary = {"file": out_path, "bytes": sizes, "sparsity": sparsity(tensors, settings)}
    report(summary)
    return summary


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


def report(summary: dict) -> None:
    """Prints the size breakdown and the sparsity of a compressed file."""
    b, s = summary["bytes"], summary["sparsity"]
    mib = 2.0**20
    print(f"wrote {summary['file']}: {b['total']:,} bytes ({b['total'] / mib:.3f} MiB)")
    rows = [("grid values (8-bit codes, scales, shapes)", b["values"]),
            ("grid masks (bit planes by level)", b["mask"]),
            ("networks (basis, MLPs)", b["raw"]), ("occupancy grid", b["bits"]),
            ("header, config and checksum", b["header"] + b["text"] + b["crc"])]
    for what, n in rows:
        print(f"  {what:44s} {n:>11,} bytes  {100 * n / b['total']:5.1f}%")
    levels = ", ".join(f"{100 * z:.1f}" for z in s["plane_zero_fraction_by_level"])
    print(f"  zero coefficients: {100 * s['zero_fraction']:.2f}% of {s['coefficients']:,} "
          f"({s['kept']:,} kept); planes by level, coarsest first: {levels}%; lines: "
          f"{100 * s['line_zero_fraction']:.1f}%")
    if s["kept"]:
        bits = 8 * (b["values"] + b["mask"]) / s["kept"]
        print(f"  {bits:.2f} bits per kept coefficient (values and masks)")


def load(path: str) -> tuple:
    """(gin config text, metadata, decoded arrays) of a compressed file; clear errors."""
    tensors, text = codec.read_scene(path)
    try:
        meta = json.loads(text["scene.json"])
        config_text = text["config.gin"]
        if meta.get("format") != FORMAT:
            raise ValueError(meta.get("format"))
        settings = meta["wavelet"]
        settings = {k: settings[k] for k in ("wavelet", "levels", "divisors", "bits")}
    except (KeyError, ValueError, TypeError):
        raise UserError(f"{path}: not a compressed jaxnerf360 scene (missing or unknown "
                        "scene.json / config.gin); write one with python -m "
                        "jaxnerf360.compress") from None
    meta["wavelet"] = settings
    return config_text, meta, tensors


def restore_compressed(path: str, scene_kind: str, mesh):
    """(model, state) to render a compressed file: a spatial VM field, its occupancy grid."""
    _, meta, tensors = load(path)
    if meta["scene_kind"] != scene_kind:
        raise UserError(f"{path} holds a {meta['scene_kind']} scene, but the data is "
                        f"{scene_kind}; check Config.data_dir and Config.dataset_loader")
    try:
        params = spatial_params(tensors, meta["wavelet"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    model = pipeline.build_model(scene_kind)
    occupancy = tensors.get("occupancy")
    state = pipeline.TrainState(step=jnp.asarray(meta["step"], jnp.int32), params=params,
                                opt_state=None,
                                occupancy=None if occupancy is None else jnp.asarray(occupancy))
    return model, parallel.replicate(state, mesh)


def load_config(path: str, bindings) -> configs.Config:
    """The Config of a compressed file: its saved gin config, rendered by a spatial VM field.

    Outputs go under the file's path without its extension unless a binding sets
    Config.checkpoint_dir.
    """
    import gin

    config_text, _, _ = load(path)
    configs._import_registering_modules()
    gin.clear_config()
    try:
        gin.parse_config(config_text)
    except (ValueError, NameError, KeyError, TypeError, SyntaxError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: its gin config does not parse here ({first})") from None
    configs.parse_gin([], ["TensoRFField.plane_coding = 'spatial'",
                           f"Config.checkpoint_dir = {os.path.splitext(path)[0]!r}",
                           *(bindings or [])])
    config = configs.Config()
    configs.validate(config)
    return config


def main(_):
    """Entry point."""
    if not flags.FLAGS.out:
        raise UserError("--out is not set; add --out=path/to/scene.jnrf")
    if not flags.FLAGS.checkpoint_dir:
        raise UserError("--checkpoint_dir is not set; name the trained run to compress")
    logging.set_verbosity(logging.WARNING)
    compress(cli.load_run(check_dirs=False), flags.FLAGS.out, flags.FLAGS.network_dtype)


if __name__ == "__main__":
    cli.run(main)
