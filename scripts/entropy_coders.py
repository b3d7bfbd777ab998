"""Entropy coders on a trained masked-wavelet run's streams: our Huffman against constriction.

    pip install constriction   # only for this measurement
    python scripts/entropy_coders.py --checkpoint_dir=runs/wavelet_lego200_cpu

For every plane and line of the run, the streams that `jaxnerf360.compress` writes (the run
lengths of each mask bit plane, the 8-bit codes of the kept coefficients) are coded with
(a) the codec's canonical Huffman, tables included, and (b) constriction's range coder with a
static categorical model of the stream's own frequencies, plus 4 bytes per distinct symbol
for that model (symbol and frequency). The empirical entropy is the floor for both. The same
is done with the level split switched off, so the two layouts can be compared too.
"""

import jax
import numpy as np

from jaxnerf360 import cli, codec, compressed, parallel
from jaxnerf360.codec import records
from jaxnerf360.data.loaders import scene_kind
from jaxnerf360.trained import restore_trained


def entropy_bytes(symbols: np.ndarray) -> float:
    """n * H(empirical frequencies) / 8."""
    if symbols.size == 0:
        return 0.0
    p = np.unique(symbols, return_counts=True)[1] / symbols.size
    return float(-symbols.size * np.sum(p * np.log2(p)) / 8)


def range_coded_bytes(symbols: np.ndarray) -> float:
    """constriction's range coder with the stream's own static model, plus the model."""
    import constriction

    if symbols.size == 0:
        return 0.0
    values, index, counts = np.unique(symbols, return_inverse=True, return_counts=True)
    if values.size == 1:
        return 4.0  # the one symbol; nothing else to code
    model = constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(index.astype(np.int32), model)
    return 4.0 * encoder.get_compressed().size + 4.0 * values.size


def streams(tensors: dict, split_levels: bool):
    """Yields ('mask' | 'values', symbols) for every stream the codec would write."""
    for value in tensors.values():
        if not isinstance(value, codec.Masked):
            continue
        codes, _, _ = codec.quantize(value.values)
        levels = value.levels if split_levels else 0
        for group in records.level_groups(value.values.shape, levels, "stream"):
            m = value.mask.reshape(-1) if group is None else value.mask[..., group].reshape(-1)
            q = codes.reshape(-1) if group is None else codes[..., group].reshape(-1)
            yield "mask", codec.rle_encode(m)[1]
            yield "values", q[m]


def measure(tensors: dict) -> list:
    """Rows (layout, stream kind, symbols, entropy, Huffman, range coder) in bytes."""
    rows = []
    for split in (True, False):
        totals = {}
        for kind, symbols in streams(tensors, split):
            t = totals.setdefault(kind, np.zeros(4))
            t += (symbols.size, entropy_bytes(symbols), len(codec.huffman_encode(symbols)),
                  range_coded_bytes(symbols))
        for kind, t in totals.items():
            rows.append(("per level" if split else "per tensor", kind, *t))
    return rows


def main(argv):
    """Entry point."""
    del argv
    config = cli.load_run(check_dirs=False)
    kind = scene_kind(config.dataset_loader, config.forward_facing, config.data_dir,
                      config.transforms_scene)
    model, state = restore_trained(config, kind, parallel.make_mesh())
    tensors = compressed.file_tensors(model, jax.device_get(state.params))
    print(f"{'layout':11s} {'stream':7s} {'symbols':>10s} {'entropy B':>11s} {'Huffman B':>11s} "
          f"{'range B':>11s} {'range/Huffman':>13s}")
    for layout, kind, n, ent, huff, rng in measure(tensors):
        print(f"{layout:11s} {kind:7s} {n:10.0f} {ent:11.0f} {huff:11.0f} {rng:11.0f} "
              f"{rng / max(huff, 1):13.3f}")


if __name__ == "__main__":
    cli.run(main)
