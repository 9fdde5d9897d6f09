"""Qwen-VL's image transform: any image -> 8-bit RGB -> bicubic resize to S x S -> CLIP normalisation.

Output is numpy float32 [N, 3, S, S]; :meth:`QWenVLImageProcessor.to_tensor` makes it a paddle
tensor (paddle is imported only there, so data code can use this module without paddle). How
16-bit, float, greyscale and RGBA images become 8-bit RGB is :func:`paddlemix.bird.images.to_rgb`.
"""

import os
from typing import List, Sequence, Union

import numpy as np
from PIL import Image

from paddlemix.bird.images import ImageInput, to_rgb

__all__ = ["QWenVLImageProcessor", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
