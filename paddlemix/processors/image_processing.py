"""Qwen-VL's image transform: any image -> 8-bit RGB -> bicubic resize to S x S -> CLIP normalisation.

Output is numpy float32 [N, 3, S, S]; :meth:`QWenVLImageProcessor.to_tensor` makes it a paddle
tensor (paddle is imported only there, so data code can use this module without paddle).

Biomedical images are often not 8-bit RGB. Greyscale becomes three equal channels; 16-bit, 32-bit
integer and float images are mapped to 0..255 by their own min..max range (a CT slice stored as
uint16 rarely spans the full 0..65535); an alpha channel is dropped, as ``PIL.Image.convert("RGB")``
does in the upstream pipeline.
"""

import os
from typing import List, Sequence, Union

import numpy as np
from PIL import Image

__all__ = ["QWenVLImageProcessor", "to_rgb", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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


class QWenVLImageProcessor:
    """``processor(images)`` -> float32 [N, 3, S, S]; ``S`` is the vision tower's ``image_size``."""

    def __init__(self, image_size: int = 448, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        self.image_size = int(image_size)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    @classmethod
    def from_config(cls, config) -> "QWenVLImageProcessor":
        """For a ``QWenVLConfig`` (or anything with a ``visual`` dict holding ``image_size``)."""
        return cls(image_size=config.visual["image_size"])

    def transform(self, image: ImageInput) -> np.ndarray:
        """One image -> float32 [3, S, S]."""
        rgb = to_rgb(image).resize((self.image_size, self.image_size), Image.BICUBIC)
        pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0  # [3, S, S] in [0, 1]
        return (pixels - self.mean) / self.std

    def preprocess(self, images: Union[ImageInput, Sequence[ImageInput]]) -> np.ndarray:
        """One image or a list of images -> float32 [N, 3, S, S]."""
        if isinstance(images, (str, os.PathLike, Image.Image)) or (
            isinstance(images, np.ndarray) and images.dtype != object
        ):
            images = [images]
        batch: List[np.ndarray] = [self.transform(image) for image in images]
        if not batch:
            return np.zeros([0, 3, self.image_size, self.image_size], dtype=np.float32)
        return np.stack(batch).astype(np.float32)

    __call__ = preprocess

    def to_tensor(self, images: Union[ImageInput, Sequence[ImageInput]]):
        """Like :meth:`preprocess` but returns a paddle float32 tensor."""
        import paddle

        return paddle.to_tensor(self.preprocess(images))
