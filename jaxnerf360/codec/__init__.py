"""Compressed-scene codec: quantisation, run lengths, canonical Huffman and a checked container.

Everything here is numpy plus the standard library; a scene file is data, never code (no pickle).
`entropy` holds the run-length and Huffman coders, `records` the tensor records (bit planes,
masked quantised tensors, bool tensors), `container` the file itself; the quantisation maths is
`jaxnerf360.geometry.quantize`, shared with the quantisation-aware field.
"""

from jaxnerf360.codec.container import MAGIC, VERSION, read_scene, write_scene
from jaxnerf360.codec.entropy import (
    MAX_CODE_LENGTH,
    huffman_decode,
    huffman_encode,
    rle_decode,
    rle_encode,
)
from jaxnerf360.codec.records import (
    MAX_ELEMENTS,
    MAX_LEVELS,
    MAX_NDIM,
    Bits,
    Masked,
    decode_bits_tensor,
    decode_masked,
    encode_bits,
    encode_bits_tensor,
    encode_masked,
    masked_values,
)
from jaxnerf360.geometry.quantize import dequantize, quantize

__all__ = [
    "MAGIC", "VERSION", "MAX_CODE_LENGTH", "MAX_ELEMENTS", "MAX_LEVELS", "MAX_NDIM", "Bits",
    "Masked", "decode_bits_tensor", "decode_masked", "dequantize", "encode_bits",
    "encode_bits_tensor", "encode_masked", "huffman_decode", "huffman_encode", "masked_values",
    "quantize", "read_scene", "rle_decode", "rle_encode", "write_scene",
]
