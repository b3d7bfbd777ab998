"""Compresses a trained masked-wavelet run into one file: `python -m jaxnerf360.compress`.

    python -m jaxnerf360.compress --checkpoint_dir=runs/x --out=scene.jnrf

What the file holds is `compressed.py`; `eval` and `render` read it with
`--compressed=scene.jnrf`.
"""

import os

import gin
from absl import flags, logging

from jaxnerf360 import cli, compressed, parallel
from jaxnerf360.cameras import Cameras
from jaxnerf360.data import load_split
from jaxnerf360.data.loaders import scene_kind
from jaxnerf360.errors import UserError
from jaxnerf360.trained import restore_trained

flags.DEFINE_string("out", None, "Compressed scene file to write (e.g. runs/x/scene.jnrf).")
flags.DEFINE_enum("network_dtype", "float16", ["float16", "float32"],
                  "Storage type of the networks (basis, MLPs).")


def compress(config, out_path: str, network_dtype: str = "float16") -> dict:
    """Writes the compressed file of the run in `config.checkpoint_dir`; returns a summary."""
    kind = scene_kind(config.dataset_loader, config.forward_facing, config.data_dir,
                      config.transforms_scene)
    # A run that learned its poses (or image maps) holds one correction per training view.
    views = load_split(config, "train").num_images if Cameras().learned else 0
    mesh = parallel.make_mesh(config.mesh_shape, fallback=True)
    model, state = restore_trained(config, kind, mesh, views)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    summary = compressed.write(out_path, model, state, gin.config_str(), network_dtype)
    report(summary)
    return summary


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


def main(_):
    """Entry point."""
    if not flags.FLAGS.out:
        raise UserError("--out is not set; add --out=path/to/scene.jnrf")
    if os.path.isdir(flags.FLAGS.out):
        raise UserError(f"--out={flags.FLAGS.out} is a directory; give the path of the file to "
                        "write, e.g. --out=scene.jnrf")
    if not flags.FLAGS.checkpoint_dir:
        raise UserError("--checkpoint_dir is not set; name the trained run to compress")
    logging.set_verbosity(logging.WARNING)
    compress(cli.load_run(check_dirs=False), flags.FLAGS.out, flags.FLAGS.network_dtype)


if __name__ == "__main__":
    cli.run(main)
