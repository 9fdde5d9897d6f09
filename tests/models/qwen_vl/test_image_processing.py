"""QWenVLImageProcessor: colour conversion, range scaling, resizing and CLIP normalisation."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from paddlemix.bird.images import to_rgb
from paddlemix.processors.image_processing import QWenVLImageProcessor

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def normalised(rgb_uint8):
    """[H, W, 3] uint8 -> [3, H, W] as (x / 255 - mean) / std, computed here in float64."""
    return ((rgb_uint8.astype(np.float64) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def test_rgb_values_are_normalised_with_clip_statistics():
    rgb = np.random.default_rng(0).integers(0, 256, [32, 32, 3], dtype=np.uint8)
    out = QWenVLImageProcessor(image_size=32)([Image.fromarray(rgb), rgb])
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], normalised(rgb), atol=1e-5)
    np.testing.assert_allclose(out[1], normalised(rgb), atol=1e-5)
    # Black and white land at -mean/std and (1 - mean)/std.
    extremes = QWenVLImageProcessor(image_size=2)(np.array([[[0, 0, 0], [255, 255, 255]]] * 2, dtype=np.uint8))
    np.testing.assert_allclose(extremes[0, :, 0, 0], -MEAN / STD, atol=1e-6)
    np.testing.assert_allclose(extremes[0, :, 0, 1], (1 - MEAN) / STD, atol=1e-6)


def test_resize_is_bicubic_to_the_configured_size(tiny_config):
    processor = QWenVLImageProcessor.from_config(tiny_config)
    assert processor.image_size == 224
    rgb = np.random.default_rng(1).integers(0, 256, [50, 80, 3], dtype=np.uint8)
    resized = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.BICUBIC))
    np.testing.assert_allclose(processor(rgb)[0], normalised(resized), atol=1e-5)


def test_greyscale_becomes_three_equal_channels():
    grey = np.random.default_rng(2).integers(0, 256, [16, 16], dtype=np.uint8)
    for image in (grey, Image.fromarray(grey), Image.fromarray(grey).convert("LA"), grey[..., None]):
        rgb = np.asarray(to_rgb(image))
        assert rgb.shape == (16, 16, 3)
        for c in range(3):
            np.testing.assert_array_equal(rgb[..., c], grey)
    out = QWenVLImageProcessor(image_size=16)(grey)[0]
    np.testing.assert_allclose(out, normalised(np.stack([grey] * 3, -1)), atol=1e-5)


def test_sixteen_bit_is_scaled_by_its_own_range(tmp_path):
    ct = np.random.default_rng(3).integers(1000, 3001, [20, 20]).astype(np.uint16)
    ct[0, 0], ct[0, 1] = 1000, 3000  # the actual range
    want = np.round((ct.astype(np.float64) - 1000) / 2000 * 255).astype(np.uint8)
    path = tmp_path / "ct16.png"
    Image.fromarray(ct).save(path)
    assert Image.open(path).mode.startswith("I")
    for image in (ct, Image.fromarray(ct), str(path), path):
        rgb = np.asarray(to_rgb(image))
        np.testing.assert_array_equal(rgb[..., 0], want)
        np.testing.assert_array_equal(rgb[..., 2], want)
    floats = ct.astype(np.float32) * 0.5  # float images are scaled the same way
    np.testing.assert_array_equal(np.asarray(to_rgb(floats))[..., 1], want)
    assert np.asarray(to_rgb(np.full([4, 4], 5000, np.uint16))).max() == 0  # constant image


def test_alpha_is_dropped():
    rgba = np.random.default_rng(4).integers(0, 256, [8, 8, 4], dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: colour is kept, not composited
    for image in (rgba, Image.fromarray(rgba, mode="RGBA")):
        np.testing.assert_array_equal(np.asarray(to_rgb(image)), rgba[..., :3])


def test_batches_and_errors():
    processor = QWenVLImageProcessor(image_size=8)
    assert processor([]).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="expected an image array"):
        processor(np.zeros([2, 8, 8, 3], np.uint8))
    with pytest.raises(TypeError, match="path, PIL image or numpy array"):
        to_rgb(42)
    tensor = processor.to_tensor(np.zeros([8, 8, 3], np.uint8))
    assert list(tensor.shape) == [1, 3, 8, 8]


def test_module_does_not_import_paddle():
    code = "import sys, paddlemix.processors.image_processing; print('paddle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
