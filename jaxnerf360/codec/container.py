"""The scene file container of the codec (`write_scene` / `read_scene`), little endian:

    b"JNRF" | u16 version (1) | u32 header length H | H bytes of UTF-8 JSON header | records |
    u32 CRC32 of every byte before it.

The header is {"tensors": [{"name", "kind", "dtype", "shape", "offset", "length"}, ...],
"text": [{"name", "offset", "length"}, ...]}; offsets are relative to the first record byte.
Kinds: "raw" (dtype float16, float32 or uint8, the little-endian C-order bytes), "masked"
(dtype float32, an `encode_masked` record) and "bits" (dtype bool, an `encode_bits_tensor`
record). Text entries are UTF-8 bytes. `read_scene` turns any damage into one `UserError` line
naming the file.
"""

import json
import os
import struct
import zlib

import numpy as np

from jaxnerf360.codec.records import (
    MAX_ELEMENTS,
    MAX_NDIM,
    Bits,
    Masked,
    decode_bits_tensor,
    decode_masked,
    encode_bits_tensor,
    encode_masked_parts,
    interleave,
)
from jaxnerf360.errors import UserError

MAGIC = b"JNRF"
VERSION = 1
_PREFIX = struct.Struct("<4sHI")
_CRC = struct.Struct("<I")
_RAW_DTYPES = {"float16": "<f2", "float32": "<f4", "uint8": "u1"}


def write_scene(path, tensors: dict, text: dict) -> dict:
    """Writes tensors (ndarray, Masked or Bits) and UTF-8 text to `path`; returns bytes per section.

    Sections: header, raw (plain tensors), mask (bit planes of masked records), values (codes,
    scales and shapes of masked records), bits (Bits records), text, crc and the total.
    """
    entries, blobs = [], []
    sizes = {"header": 0, "raw": 0, "mask": 0, "values": 0, "bits": 0, "text": 0,
             "crc": _CRC.size}
    offset = 0
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise UserError(f"write_scene: tensor name {name!r} is not a string")
        if isinstance(tensor, Masked):
            meta, mask_part, value_part = encode_masked_parts(*tensor)
            blob = interleave(meta, mask_part, value_part)
            sizes["mask"] += len(mask_part)
            sizes["values"] += len(meta) + len(value_part)
            kind, dtype, shape = "masked", "float32", np.shape(tensor.values)
        elif isinstance(tensor, Bits):
            blob = encode_bits_tensor(tensor.mask)
            sizes["bits"] += len(blob)
            kind, dtype, shape = "bits", "bool", np.shape(tensor.mask)
        else:
            array = np.asarray(tensor)
            dtype = array.dtype.name
            if dtype not in _RAW_DTYPES:
                raise UserError(
                    f"write_scene: tensor {name!r} has dtype {dtype}; use float16, float32, "
                    "uint8, Masked(values, mask) or Bits(mask)"
                )
            blob = np.ascontiguousarray(array, _RAW_DTYPES[dtype]).tobytes()
            sizes["raw"] += len(blob)
            kind, shape = "raw", array.shape
        entries.append({"name": name, "kind": kind, "dtype": dtype, "shape": list(shape),
                        "offset": offset, "length": len(blob)})  # fmt: skip
        blobs.append(blob)
        offset += len(blob)
    text_entries = []
    for name, value in text.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UserError(f"write_scene: text entry {name!r} must map a string to a string")
        blob = value.encode("utf-8")
        text_entries.append({"name": name, "offset": offset, "length": len(blob)})
        blobs.append(blob)
        sizes["text"] += len(blob)
        offset += len(blob)
    header = json.dumps({"tensors": entries, "text": text_entries}, separators=(",", ":"))
    header = header.encode("utf-8")
    head = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
    sizes["header"] = len(head)
    body = head + b"".join(blobs)
    body += _CRC.pack(zlib.crc32(body))
    sizes["total"] = len(body)
    tmp = f"{os.fspath(path)}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, path)  # A crash mid-write never leaves a half-written scene behind.
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)  # nor a temporary file after any failure
        raise
    return sizes


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(entry, keys: set, data_len: int, seen: set) -> None:
    """Validates one header entry's fields, its name and its byte range."""
    if not isinstance(entry, dict) or set(entry) != keys:
        raise UserError(f"header entry {str(entry)[:60]!r} must have exactly keys {sorted(keys)}")
    name = entry["name"]
    if not isinstance(name, str) or name in seen:
        raise UserError(f"header entry name {name!r} is not a string or is repeated")
    seen.add(name)
    off, length = entry["offset"], entry["length"]
    if not (_is_int(off) and _is_int(length) and 0 <= off and 0 <= length):
        raise UserError(f"record {name!r}: offset/length must be non-negative integers")
    if off + length > data_len:
        raise UserError(
            f"record {name!r}: bytes {off}..{off + length} lie outside the {data_len}-byte data"
        )


def _decode_tensor(entry: dict, blob: memoryview, max_elements: int) -> np.ndarray:
    """The ndarray of one validated tensor entry."""
    name, kind, dtype, shape = entry["name"], entry["kind"], entry["dtype"], entry["shape"]
    if not isinstance(kind, str) or not isinstance(dtype, str):
        raise UserError(f"tensor {name!r}: kind and dtype must be strings")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise UserError(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} dims")
    if not all(_is_int(d) and d >= 0 for d in shape):
        raise UserError(f"tensor {name!r}: shape {shape} must hold non-negative integers")
    n = 1
    for d in shape:
        n *= d
    if n > max_elements or any(d > max_elements for d in shape):  # [0, 2**70] is empty yet absurd.
        raise UserError(f"tensor {name!r}: shape {shape} has {n} elements, over {max_elements}")
    if kind == "raw":
        if dtype not in _RAW_DTYPES:
            raise UserError(f"tensor {name!r}: unknown raw dtype {dtype!r}")
        itemsize = np.dtype(_RAW_DTYPES[dtype]).itemsize
        if n * itemsize != len(blob):
            raise UserError(
                f"tensor {name!r}: shape {shape} of {dtype} needs {n * itemsize} bytes, "
                f"record has {len(blob)}"
            )
        return np.frombuffer(blob, _RAW_DTYPES[dtype]).astype(dtype).reshape(shape)
    decoders = {"masked": ("float32", decode_masked), "bits": ("bool", decode_bits_tensor)}
    if kind in decoders:
        want, decode = decoders[kind]
        if dtype != want:
            raise UserError(f"tensor {name!r}: {kind} tensors are {want}, header says {dtype!r}")
        out = decode(blob, max_elements)
        if list(out.shape) != shape:
            raise UserError(f"tensor {name!r}: record shape {out.shape} != header shape {shape}")
        return out
    raise UserError(f"tensor {name!r}: unknown kind {kind!r}")


def read_scene(path, max_elements: int = MAX_ELEMENTS) -> tuple[dict, dict]:
    """(tensors, text) of a scene file; any damage raises a one-line UserError naming the file."""
    try:
        size = os.path.getsize(path)
        if size > 8 * max_elements + (1 << 24):
            raise UserError(f"file is {size} bytes, larger than any scene this reader accepts")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read scene file ({e.strerror}); check the path") from None
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    try:
        return _parse(data, max_elements)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _parse(data: bytes, max_elements: int) -> tuple[dict, dict]:
    """Checks and decodes a whole scene file held in memory."""
    if len(data) < 4 and MAGIC.startswith(data):
        raise UserError(f"truncated scene file ({len(data)} bytes)")
    if data[:4] != MAGIC:
        raise UserError(f"not a jaxnerf360 scene file (magic {bytes(data[:4])!r}, want {MAGIC!r})")
    if len(data) < 6:
        raise UserError("truncated scene file (no version)")
    (version,) = struct.unpack_from("<H", data, 4)
    if version != VERSION:
        raise UserError(f"unsupported scene format version {version}; this reader knows {VERSION}")
    if len(data) < _PREFIX.size + _CRC.size:
        raise UserError(f"truncated scene file ({len(data)} bytes)")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != crc:
        raise UserError("checksum mismatch: the file is truncated or corrupted")
    _, _, header_len = _PREFIX.unpack_from(data, 0)
    body_end = len(data) - _CRC.size
    if header_len > body_end - _PREFIX.size:
        raise UserError(f"header length {header_len} runs past the end of the file")
    try:
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UserError("header is not valid UTF-8 JSON") from None
    if not isinstance(header, dict) or set(header) != {"tensors", "text"}:
        raise UserError("header must be an object with exactly the keys 'tensors' and 'text'")
    if not isinstance(header["tensors"], list) or not isinstance(header["text"], list):
        raise UserError("header 'tensors' and 'text' must be lists")
    records = memoryview(data)[_PREFIX.size + header_len : body_end]
    tensors, seen = {}, set()
    keys = {"name", "kind", "dtype", "shape", "offset", "length"}
    for entry in header["tensors"]:
        _check_entry(entry, keys, len(records), seen)
        blob = records[entry["offset"] : entry["offset"] + entry["length"]]
        try:
            tensors[entry["name"]] = _decode_tensor(entry, blob, max_elements)
        except UserError as e:
            message = str(e)
            if not message.startswith(("tensor ", "record ")):
                message = f"tensor {entry['name']!r}: {message}"
            raise UserError(message) from None
    text, seen = {}, set()
    for entry in header["text"]:
        _check_entry(entry, {"name", "offset", "length"}, len(records), seen)
        blob = records[entry["offset"] : entry["offset"] + entry["length"]]
        try:
            text[entry["name"]] = bytes(blob).decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"text {entry['name']!r} is not valid UTF-8") from None
    return tensors, text
