"""Dihedral views: the seven flips and quarter turns of an image, applied alike to its pixels and boxes.

A nucleus seen mirrored or turned is still a nucleus, so for a modality whose labels say nothing
about left and right (microscopy tiles; not brain atlases, whose names carry a side) each training
image can be shown in eight orientations. Data construction writes a viewed image's records with
boxes recomputed in the view's frame and the record field ``"view"``; the training loader turns the
image the same way when it reads it. No file is written for a view.

Each view is a ``PIL.Image.Transpose`` operation. Boxes are pixel boxes ``(x1, y1, x2, y2)`` with the
end exclusive (:func:`paddlemix.bird.samed2d.mask_box`); a view maps pixel edges, so a box maps to
the box of the same pixels, exactly (``tests/bird/test_views.py`` checks it against PIL on masks).
"""

from typing import Callable, Dict, Tuple

from PIL import Image

T = Image.Transpose
# name -> (PIL operation, map of a pixel-edge point (x, y) of a W x H image into the view's frame)
_VIEWS: Dict[str, Tuple[T, Callable[[float, float, float, float], Tuple[float, float]]]] = {
    "flip_h": (T.FLIP_LEFT_RIGHT, lambda x, y, w, h: (w - x, y)),
    "flip_v": (T.FLIP_TOP_BOTTOM, lambda x, y, w, h: (x, h - y)),
    "rot180": (T.ROTATE_180, lambda x, y, w, h: (w - x, h - y)),
    "rot90": (T.ROTATE_90, lambda x, y, w, h: (y, w - x)),  # PIL turns counter-clockwise
    "rot270": (T.ROTATE_270, lambda x, y, w, h: (h - y, x)),
    "transpose": (T.TRANSPOSE, lambda x, y, w, h: (y, x)),
    "transverse": (T.TRANSVERSE, lambda x, y, w, h: (h - y, w - x)),
}
VIEWS = tuple(_VIEWS)
_SWAPS_SIDES = {"rot90", "rot270", "transpose", "transverse"}


def check_view(view: str) -> str:
    if view not in _VIEWS:
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
    return view


def view_size(view: str, width: int, height: int) -> Tuple[int, int]:
    """``(width, height)`` of the viewed image."""
    return (height, width) if check_view(view) in _SWAPS_SIDES else (width, height)


def view_box(view: str, box, width: int, height: int) -> Tuple[int, int, int, int]:
    """A pixel box of a ``width`` x ``height`` image, in the frame of ``view``."""
    x1, y1, x2, y2 = box
    point = _VIEWS[check_view(view)][1]
    (ax, ay), (bx, by) = point(x1, y1, width, height), point(x2, y2, width, height)
    return (int(min(ax, bx)), int(min(ay, by)), int(max(ax, bx)), int(max(ay, by)))


def apply_view(image: Image.Image, view: str) -> Image.Image:
    """The PIL image as ``view`` shows it."""
    return image.transpose(_VIEWS[check_view(view)][0])

