"""Tests for the scene codec: quantisation, RLE, Huffman, the container and its robustness."""

import json
import struct
import time
import zlib

import numpy as np
import pytest

from jaxnerf360 import codec
from jaxnerf360.codec import records
from jaxnerf360.errors import UserError

RNG = np.random.default_rng(0)


def _roundtrip_quant(x):
    q, scale, offset = codec.quantize(x)
    y = codec.dequantize(q, scale, offset)
    return q, scale, offset, y


# ----------------------------------------------------------------------------- quantisation


@pytest.mark.parametrize(
    "x",
    [
        RNG.normal(size=1000).astype(np.float32),
        (RNG.uniform(size=(7, 9)) * 1e6 - 3e5).astype(np.float32),
        (1000.0 + RNG.uniform(size=500)).astype(np.float32),  # Offset large relative to range.
        np.array([np.finfo(np.float32).tiny, 1.0], np.float32),
        np.array([1.5], np.float32),
    ],
)
def test_quantize_properties(x):
    q, scale, offset, y = _roundtrip_quant(x)
    assert q.dtype == np.uint8 and q.shape == x.shape and y.dtype == np.float32
    assert np.float32(scale) == scale and np.float32(offset) == offset
    # Error of the affine code plus the float32 roundings of the code and the reconstruction.
    err = np.abs(y.astype(np.float64) - x.astype(np.float64))
    assert np.all(err <= scale / 2 + 4 * np.abs(np.spacing(np.abs(x).max())))
    if x.size > 1 and x.min() < x.max():
        assert q.min() == 0 and q.max() == 255  # The min/max map to the ends of the code range.
    q2, scale2, offset2 = codec.quantize(y)
    np.testing.assert_array_equal(q2, q)
    # The reconstructed max may round, so the scale can move by one float32 step; the codes cannot.
    assert offset2 == offset and scale2 == pytest.approx(scale, rel=1e-6)


def test_quantize_bit_exact_brute_force():
    """Many random ranges and offsets: requantising is the identity.

    (Ranges of at least 1e-3 of the offset: below ~255 float32 steps a code can move.)
    """
    rng = np.random.default_rng(1)
    for _ in range(2000):
        offset = 10.0 ** rng.uniform(-30, 30) * rng.choice([-1, 1])
        width = abs(offset) * 10.0 ** rng.uniform(-3, 3) + 1e-30
        x = (offset + width * rng.uniform(size=rng.integers(2, 40))).astype(np.float32)
        q, scale, offset, y = _roundtrip_quant(x)
        np.testing.assert_array_equal(codec.quantize(y)[0], q)


def test_quantize_constant_empty_and_bits():
    q, scale, offset, y = _roundtrip_quant(np.full((3, 4), 2.5, np.float32))
    assert scale == 1.0 and offset == 2.5 and not q.any()
    np.testing.assert_array_equal(y, np.full((3, 4), 2.5, np.float32))
    q, scale, offset, y = _roundtrip_quant(np.zeros((0, 3), np.float32))
    assert q.shape == (0, 3) and y.shape == (0, 3)
    with pytest.raises(UserError, match="range too large"):
        codec.quantize(np.array([-3.4e38, 3.4e38, 0.0], np.float32))
    q, scale, _ = codec.quantize(np.linspace(0, 1, 100, dtype=np.float32), bits=3)
    assert q.max() == 7 and scale == pytest.approx(1 / 7, rel=1e-6)
    with pytest.raises(UserError, match="NaN"):
        codec.quantize(np.array([1.0, np.nan], np.float32))
    with pytest.raises(UserError, match="bits"):
        codec.quantize(np.ones(3), bits=9)


def test_quantize_in_jax_gives_the_numpy_codes():
    import jax.numpy as jnp

    x = (RNG.normal(size=(6, 50)) * 0.2 - 0.05).astype(np.float32)
    q, scale, offset = codec.quantize(x)
    jq, jscale, joffset = codec.quantize(jnp.asarray(x), xnp=jnp)
    np.testing.assert_array_equal(np.asarray(jq), q)
    assert float(jscale) == scale and float(joffset) == offset
    np.testing.assert_array_equal(codec.dequantize(jq, jscale, joffset, xnp=jnp),
                                  codec.dequantize(q, scale, offset))


# ----------------------------------------------------------------------------- run lengths


@pytest.mark.parametrize(
    "bits",
    [
        np.zeros(0, bool),
        np.zeros(17, bool),
        np.ones(17, bool),
        np.array([True]),
        np.array([False]),
        np.array([False] * 5 + [True] * 3),
        RNG.uniform(size=(13, 11)) < 0.3,
        RNG.uniform(size=5000) < 0.05,
    ],
)
def test_rle_roundtrip(bits):
    first, runs = codec.rle_encode(bits)
    assert runs.dtype == np.uint32 and int(runs.sum()) == bits.size
    assert np.all(runs > 0)
    # Independent truth: the number of runs is one plus the number of value changes.
    flat = bits.reshape(-1)
    if flat.size:
        assert runs.size == 1 + np.count_nonzero(flat[1:] != flat[:-1]) and first == flat[0]
    np.testing.assert_array_equal(codec.rle_decode(first, runs, bits.size), flat)


def test_rle_decode_validates():
    with pytest.raises(UserError, match="sum to 5, expected 6"):
        codec.rle_decode(0, np.array([2, 3], np.uint32), 6)
    with pytest.raises(UserError, match="length 0"):
        codec.rle_decode(1, np.array([2, 0, 3], np.uint32), 5)
    with pytest.raises(UserError, match="first bit"):
        codec.rle_decode(2, np.array([5], np.uint32), 5)
    with pytest.raises(UserError, match="cannot cover"):
        codec.rle_decode(0, np.ones(10, np.uint32), 3)


# ----------------------------------------------------------------------------- Huffman


def _entropy_bits(s):
    """Shannon bound in bits of an i.i.d. source with the empirical frequencies of s."""
    p = np.unique(s, return_counts=True)[1] / s.size
    return -s.size * np.sum(p * np.log2(p))


@pytest.mark.parametrize(
    "symbols",
    [
        np.zeros(0, np.int64),
        np.full(1000, 7, np.uint8),
        np.array([3, 9, 9, 3, 9], np.int32),
        RNG.geometric(0.2, 20000) - 1,
        RNG.integers(0, 256, 20000),
        RNG.integers(0, 2**32, 3000, dtype=np.uint64),
        np.array([255, 256, 257, 511, 512, 2**31, 2**32 - 1, 0], np.uint64),
    ],
)
def test_huffman_roundtrip(symbols):
    data = codec.huffman_encode(symbols)
    out = codec.huffman_decode(data)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, symbols)


def test_huffman_compresses_skewed_source_near_entropy():
    s = (RNG.geometric(0.3, 50000) - 1).astype(np.uint8)
    data = codec.huffman_encode(s)
    assert len(data) < s.nbytes / 2
    # Huffman is within one bit per symbol of the entropy (plus a small table).
    assert 8 * len(data) <= _entropy_bits(s) + s.size + 8 * 200
    single = codec.huffman_encode(np.full(800, 5))
    assert len(single) <= 800 // 8 + 40  # One bit per symbol.


def test_huffman_long_code_lengths_are_limited():
    # Fibonacci-like counts force a very deep unrestricted Huffman tree.
    counts = [1, 1]
    while len(counts) < 25:
        counts.append(counts[-1] + counts[-2])
    s = np.repeat(np.arange(25), counts)
    RNG.shuffle(s)
    np.testing.assert_array_equal(codec.huffman_decode(codec.huffman_encode(s)), s)


def test_huffman_roundtrip_1e6_symbols():
    s = RNG.geometric(0.1, 10**6)
    np.testing.assert_array_equal(codec.huffman_decode(codec.huffman_encode(s)), s)


def test_huffman_decode_validates():
    data = codec.huffman_encode(RNG.integers(0, 40, 500))
    for cut in [0, 5, 11, len(data) // 2, len(data) - 1]:
        with pytest.raises(UserError, match="Huffman data"):
            codec.huffman_decode(data[:cut])
    with pytest.raises(UserError, match="trailing"):
        codec.huffman_decode(data + b"\0")
    # Code lengths 1, 1, 1 break the Kraft inequality.
    bad = struct.pack("<QH", 3, 3) + bytes([0x11, 0x10]) + struct.pack("<Q", 3) + b"\0"
    with pytest.raises(UserError, match="prefix code"):
        codec.huffman_decode(bad + struct.pack("<Q", 0))
    # A symbol count no bit stream of that size can hold.
    bad = struct.pack("<QH", 10**12, 1) + bytes([0x10]) + struct.pack("<Q", 8) + b"\0"
    with pytest.raises(UserError, match="cannot fit"):
        codec.huffman_decode(bad + struct.pack("<Q", 0))
    with pytest.raises(UserError, match="symbols"):
        codec.huffman_encode(np.array([-1, 2]))


# ----------------------------------------------------------------------------- container


def _scene(rng):
    values = rng.normal(size=(20, 30, 8)).astype(np.float32)
    mask = rng.uniform(size=values.shape) < 0.05
    tensors = {
        "mlp/w16": rng.normal(size=(5, 7)).astype(np.float16),
        "mlp/w32": rng.normal(size=(3, 4)).astype(np.float32),
        "scalar": np.float32(2.5) * np.ones((), np.float32),
        "bytes": rng.integers(0, 256, (6,), dtype=np.uint8),
        "empty": np.zeros((0, 4), np.float32),
        "grid": codec.Masked(values, mask),
        "plane": codec.Masked(values[:16, :24, :4].transpose(2, 0, 1),
                              mask[:16, :24, :4].transpose(2, 0, 1), levels=3),
        "occupancy": codec.Bits(rng.uniform(size=(9, 10, 11)) < 0.2),
    }
    text = {"config.gin": "Config.factor = 4\n# ünïcode ✓\n", "empty": ""}
    return tensors, text, values, mask


@pytest.fixture
def scene_file(tmp_path):
    tensors, text, values, mask = _scene(np.random.default_rng(2))
    path = tmp_path / "scene.jnrf"
    sizes = codec.write_scene(path, tensors, text)
    return path, tensors, text, values, mask, sizes


def test_container_roundtrip(scene_file):
    path, tensors, text, values, mask, sizes = scene_file
    out, out_text = codec.read_scene(path)
    assert out_text == text
    for name in ["mlp/w16", "mlp/w32", "scalar", "bytes", "empty"]:
        assert out[name].dtype == tensors[name].dtype
        np.testing.assert_array_equal(out[name], tensors[name])
    expected = codec.masked_values(values, mask)
    assert out["grid"].dtype == np.float32
    np.testing.assert_array_equal(out["grid"].view(np.uint32), expected.view(np.uint32))
    assert sizes["total"] == path.stat().st_size
    np.testing.assert_array_equal(out["plane"], codec.masked_values(*tensors["plane"][:2]))
    np.testing.assert_array_equal(out["occupancy"], tensors["occupancy"].mask)
    parts = ["header", "raw", "mask", "values", "bits", "text", "crc"]
    assert sum(sizes[k] for k in parts) == sizes["total"]
    assert sizes["mask"] + sizes["values"] < values.nbytes / 10


def test_masked_record_helpers():
    values = RNG.normal(size=(4, 5)).astype(np.float32)
    for mask in [np.zeros((4, 5), bool), np.ones((4, 5), bool), RNG.uniform(size=(4, 5)) < 0.5]:
        out = codec.decode_masked(codec.encode_masked(values, mask))
        assert out.shape == values.shape and not out[~mask].any()
        np.testing.assert_array_equal(out, codec.masked_values(values, mask))
    with pytest.raises(UserError, match="differ"):
        codec.encode_masked(values, np.ones((5, 4), bool))
    with pytest.raises(UserError, match="over"):
        codec.decode_masked(codec.encode_masked(values, values > 0), max_elements=10)
    record = bytearray(codec.encode_masked(values, values > 0))
    record[1 : 1 + 16] = struct.pack("<QQ", 0, 2**64 - 1)  # Zero elements, absurd dimension.
    with pytest.raises(UserError, match="over"):
        codec.decode_masked(bytes(record))
    record = codec.encode_masked(values, values > 0)
    with pytest.raises(UserError, match="values of level group 0: .*truncated"):
        codec.decode_masked(record[:-1])


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("keep", [0.0, 0.05, 0.5, 1.0])
def test_quantise_encode_decode_dequantise_is_exact_per_level(levels, keep):
    """Random sparse packed planes [R, H, W]: decoding gives the quantised values bit for bit."""
    rng = np.random.default_rng(levels)
    for shape in [(3, 16, 32), (1, 48, 16), (2, 3, 16, 16)]:
        values = rng.normal(size=shape).astype(np.float32) * 0.3
        mask = rng.uniform(size=shape) < keep
        codes, scale, offset = codec.quantize(values)
        want = np.where(mask, codec.dequantize(codes, scale, offset), np.float32(0))
        out = codec.decode_masked(codec.encode_masked(values, mask, levels))
        assert out.dtype == np.float32 and out.shape == shape
        np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
    with pytest.raises(UserError, match="not divisible"):
        codec.encode_masked(np.zeros((2, 12, 16), np.float32), np.ones((2, 12, 16), bool), 3)


def test_level_split_masks_code_smaller_when_levels_differ():
    """Coarse levels kept and fine ones dropped: per-level bit planes beat one plane."""
    from jaxnerf360.geometry import wavelets

    rng = np.random.default_rng(5)
    level = wavelets.level_of((256, 256), 4)
    keep = np.array([1.0, 0.9, 0.5, 0.1, 0.01])[level]
    mask = rng.uniform(size=(4, 256, 256)) < keep
    values = rng.normal(size=mask.shape).astype(np.float32)
    split = records.encode_masked_parts(values, mask, 4)[1]
    whole = records.encode_masked_parts(values, mask, 0)[1]
    assert len(split) < len(whole), (len(split), len(whole))


def test_bits_records_roundtrip_and_validate():
    for mask in [np.zeros((0, 3), bool), np.zeros((4, 4), bool), np.ones((5,), bool),
                 RNG.uniform(size=(6, 7, 8)) < 0.1]:
        np.testing.assert_array_equal(codec.decode_bits_tensor(codec.encode_bits_tensor(mask)),
                                      mask)
    record = codec.encode_bits_tensor(np.ones((4, 4), bool))
    with pytest.raises(UserError, match="bits record"):
        codec.decode_bits_tensor(record[:-1])
    with pytest.raises(UserError, match="over"):
        codec.decode_bits_tensor(record, max_elements=8)
    with pytest.raises(UserError, match="bool"):
        codec.encode_bits_tensor(np.ones(3))


def test_write_scene_rejects_bad_tensors(tmp_path):
    with pytest.raises(UserError, match="int64"):
        codec.write_scene(tmp_path / "a", {"x": np.arange(3)}, {})
    with pytest.raises(UserError, match="text"):
        codec.write_scene(tmp_path / "a", {}, {"x": 3})


# ----------------------------------------------------------------------------- robustness


def _split(data):
    """(header dict, record bytes) of a valid scene file."""
    (hlen,) = struct.unpack_from("<I", data, 6)
    return json.loads(data[10 : 10 + hlen]), data[10 + hlen : -4]


def _join(header, records, version=codec.VERSION, magic=codec.MAGIC):
    """A scene file with a valid CRC from a header dict (or raw bytes) and record bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = struct.pack("<4sHI", magic, version, len(raw)) + raw + records
    return body + struct.pack("<I", zlib.crc32(body))


def _expect_user_error(path, data, match):
    path.write_bytes(data)
    with pytest.raises(UserError, match=match) as info:
        codec.read_scene(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_read_scene_damaged_files(scene_file, tmp_path):
    path, *_ = scene_file
    data = path.read_bytes()
    bad = tmp_path / "bad.jnrf"
    for cut in [0, 3, 5, 9, 10, 40, len(data) // 2, len(data) - 1]:
        _expect_user_error(bad, data[:cut], "truncated|checksum|magic")
    for pos in np.linspace(0, len(data) - 1, 60).astype(int):
        flipped = bytearray(data)
        flipped[pos] ^= 0x5A
        _expect_user_error(bad, bytes(flipped), "checksum|magic|version")
    _expect_user_error(bad, b"PK\x03\x04" + data[4:], "not a jaxnerf360 scene file")
    header, records = _split(data)
    _expect_user_error(bad, _join(header, records, version=999), "version 999")
    _expect_user_error(bad, _join(b"{not json", records), "JSON")
    _expect_user_error(bad, _join(b"[" * 100000, records), "JSON")
    with pytest.raises(UserError, match="cannot read"):
        codec.read_scene(tmp_path / "missing.jnrf")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("shape", [10**12], "elements"),
        ("shape", [-5, 7], "non-negative"),
        ("shape", [5, 8], "needs 80 bytes"),  # mlp/w16 is 5x7 float16: 70 bytes.
        ("shape", "5x7", "shape"),
        ("shape", [True, 7], "non-negative integers"),
        ("shape", [0, 2**70], "elements"),
        ("offset", 10**9, "outside"),
        ("offset", -1, "non-negative"),
        ("length", 10**9, "outside"),
        ("offset", 1.5, "integers"),
        ("kind", "zstd", "unknown kind"),
        ("dtype", "float64", "unknown raw dtype"),
    ],
)
def test_read_scene_absurd_header(scene_file, tmp_path, field, value, match):
    path, *_ = scene_file
    header, records = _split(path.read_bytes())
    header["tensors"][0][field] = value  # Entry 0 is mlp/w16.
    message = _expect_user_error(tmp_path / "bad.jnrf", _join(header, records), match)
    assert "mlp/w16" in message or field == "shape" and value == "5x7"


def test_read_scene_masked_header_edits(scene_file, tmp_path):
    path, *_ = scene_file
    header, records = _split(path.read_bytes())
    grid = next(e for e in header["tensors"] if e["name"] == "grid")
    grid["shape"] = [20, 30, 9]
    _expect_user_error(tmp_path / "bad.jnrf", _join(header, records), "grid.*shape")
    grid["shape"], grid["length"] = [20, 30, 8], grid["length"] - 3
    _expect_user_error(tmp_path / "bad.jnrf", _join(header, records), "grid")
    header["text"].append(dict(header["text"][0]))
    _expect_user_error(tmp_path / "bad.jnrf", _join(header, records), "repeated|grid")


def _mutate(rng, data, header, records):
    """One random corruption of a valid scene file."""
    choice = rng.integers(6)
    if choice == 0:  # Byte flips (the CRC catches these).
        out = bytearray(data)
        for pos in rng.integers(0, len(data), rng.integers(1, 4)):
            out[pos] = rng.integers(256)
        return bytes(out)
    if choice == 1:
        return data[: rng.integers(len(data))]
    if choice == 2:
        pos = rng.integers(len(data))
        return data[:pos] + rng.bytes(rng.integers(1, 8)) + data[pos:]
    if choice in (3, 4):  # Record bytes damaged but the CRC recomputed: reaches the decoders.
        out = bytearray(records)
        for pos in rng.integers(0, len(records), rng.integers(1, 4)):
            out[pos] = rng.integers(256)
        if choice == 4 and rng.integers(2):
            out = out[: rng.integers(len(out))]
        return _join(header, bytes(out))
    header = json.loads(json.dumps(header))
    entries = header["tensors"] + header["text"]
    entry = entries[rng.integers(len(entries))]
    key = list(entry)[rng.integers(len(entry))]
    options = [0, -1, 1, 2**31, 2**64, 10**20, 3.5, None, "x", True]
    options += [[], [3], [2**40, 2**40], [0, 2**70]]
    entry[key] = options[rng.integers(len(options))]
    if key in ("offset", "length") and rng.integers(2):
        entry[key] = int(rng.integers(0, len(records) + 10))
    return _join(header, records)


def test_fuzz_read_scene(scene_file, tmp_path):
    path, *_ = scene_file
    data = path.read_bytes()
    header, records = _split(data)
    rng = np.random.default_rng(3)
    bad = tmp_path / "fuzz.jnrf"
    start, count, outcomes = time.perf_counter(), 0, {"ok": 0, "error": 0}
    while count < 3000 and time.perf_counter() - start < 20:
        bad.write_bytes(_mutate(rng, data, header, records))
        try:
            codec.read_scene(bad)
            outcomes["ok"] += 1
        except UserError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
        count += 1
    assert count >= 500 and outcomes["error"] > 0, outcomes
