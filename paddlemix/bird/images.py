"""Any image a user or a data set hands over (path, PIL image, numpy array) as 8-bit RGB.

Biomedical images are often not 8-bit RGB. Greyscale becomes three equal channels; 16-bit, 32-bit
integer and float images are mapped to 0..255 by their own min..max range, rounded to the nearest
level (a CT slice stored as uint16 rarely spans the full 0..65535, and clipping it would leave a
white image); an alpha channel is dropped, as ``PIL.Image.convert("RGB")`` does in the upstream
pipeline. The model's image transform and the box gallery both read images through :func:`to_rgb`.
"""

import os
from typing import Union

import numpy as np
from PIL import Image

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
# PIL modes that hold more than 8 bits per pixel (or floats): rescaled through numpy.
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map an array's actual value range linearly onto 0..255 (a constant image becomes 0)."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, source: str) -> Image.Image:
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] of any numeric dtype -> 8-bit RGB image."""
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., :3] if array.shape[-1] == 4 else array  # drop alpha
    elif array.ndim != 2:
        raise ValueError(f"{source}: expected an image array [H, W] or [H, W, 1|3|4], got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = _scale_to_uint8(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def to_rgb(image: ImageInput) -> Image.Image:
    """Any supported image (path, PIL image, numpy array) as an 8-bit RGB PIL image."""
    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
        with Image.open(source) as opened:
            opened.load()
            image = opened.copy()
    else:
        source = type(image).__name__
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, source)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a path, PIL image or numpy array, got {type(image).__name__}")
    if image.mode in _WIDE_MODES:
        return _array_to_rgb(np.asarray(image), f"{source} (mode {image.mode})")
    if image.mode == "LA":
        image = image.convert("L")
    return image.convert("RGB")
