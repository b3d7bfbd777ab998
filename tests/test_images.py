"""Tests for image reading, area downsampling and compositing."""

import numpy as np
import pytest
from PIL import Image

from jaxnerf360.data import images
from jaxnerf360.errors import UserError


def _write(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_load_png_rgba_keeps_alpha_and_exact_values(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    image = images.load_image(_write(tmp_path / "a.png", pixels))
    assert image.shape == (5, 7, 4) and image.dtype == np.float32
    np.testing.assert_array_equal(image, pixels.astype(np.float32) / 255.0)


def test_load_png_rgb_and_grey_give_three_channels(tmp_path):
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    image = images.load_image(_write(tmp_path / "rgb.png", rgb))
    assert image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image, rgb / np.float32(255.0))
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    image = images.load_image(_write(tmp_path / "grey.png", grey))
    assert image.shape == (5, 7, 3)
    np.testing.assert_array_equal(image[..., 1], grey / np.float32(255.0))


def test_load_jpeg_three_channels_in_unit_range(tmp_path):
    pixels = np.full((8, 8, 3), 200, np.uint8)
    image = images.load_image(_write(tmp_path / "a.jpg", pixels, quality=95))
    assert image.shape == (8, 8, 3) and image.dtype == np.float32
    assert np.all((image >= 0) & (image <= 1))
    np.testing.assert_allclose(image, 200 / 255, atol=3 / 255)


def test_load_missing_image_names_it(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(UserError, match="nope.png"):
        images.load_image(path)


def test_load_garbage_image_names_it(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not a png" * 10)
    with pytest.raises(UserError, match="broken.png.*cannot read"):
        images.load_image(path)


@pytest.mark.parametrize("shape", [(12, 8, 3), (12, 8), (6, 9, 4)])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_downsample_is_block_mean(shape, factor):
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    h, w = shape[0] // factor, shape[1] // factor
    cropped = image[: h * factor, : w * factor]
    truth = cropped.reshape((h, factor, w, factor) + shape[2:]).mean(axis=(1, 3))
    out = images.downsample(image, factor)
    assert out.shape == truth.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, truth, rtol=1e-6, atol=1e-7)


def test_downsample_crop_is_logged_once(monkeypatch):
    messages = []
    monkeypatch.setattr(images.logging, "warning", lambda *args: messages.append(args))
    monkeypatch.setattr(images, "_reported_crops", set())
    image = np.ones((13, 10, 3), np.float32)
    for _ in range(3):
        assert images.downsample(image, 4).shape == (3, 2, 3)
    assert len(messages) == 1
    images.downsample(np.ones((16, 8, 3), np.float32), 4)  # divisible: nothing to say
    assert len(messages) == 1


def test_downsample_keeps_a_constant_image_constant():
    out = images.downsample(np.full((16, 16, 3), 0.25, np.float32), 8)
    np.testing.assert_array_equal(out, 0.25)


@pytest.mark.parametrize("factor", [0, -2, 1.5, "2", True, None])
def test_downsample_rejects_bad_factor(factor):
    with pytest.raises(UserError, match="factor"):
        images.downsample(np.zeros((8, 8, 3), np.float32), factor)


def test_composite_formula_and_limits():
    rng = np.random.default_rng(2)
    rgba = rng.random((4, 5, 4), dtype=np.float32)
    background = (0.1, 0.6, 0.9)
    out = images.composite(rgba, background)
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    a = rgba[..., 3:]
    np.testing.assert_allclose(out, rgba[..., :3] * a + np.array(background) * (1 - a), atol=1e-6)
    rgba[..., 3] = 0.0
    np.testing.assert_allclose(
        images.composite(rgba, background), np.broadcast_to(background, (4, 5, 3))
    )
    rgba[..., 3] = 1.0
    np.testing.assert_allclose(images.composite(rgba, background), rgba[..., :3])
    rgb = rgba[..., :3]
    assert images.composite(rgb, background) is rgb  # nothing to composite


def test_composite_rejects_bad_background():
    with pytest.raises(UserError, match="background"):
        images.composite(np.zeros((2, 2, 4), np.float32), (1.0, 1.0))


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.JPG", "c.txt", ".hidden.png", "d.jpeg"]:
        (tmp_path / name).write_bytes(b"")
    assert images.list_images(tmp_path) == ["a.JPG", "b.png", "d.jpeg"]
