"""The one parameter object of every scorer: thresholds, bootstrap, cleaning and box reading, written down once."""

from dataclasses import dataclass
from typing import Tuple

from ..box_formats import DEFAULT_BOX_FORMAT, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, check_box_format

CLEAN_MODES = ("none", "upstream")
ACC_THRESHOLDS = (0.25, 0.5, 0.75)  # MedRegA's Acc@0.25/0.5/0.75, first box vs first box


@dataclass(frozen=True)
class Params:
    """How records are scored (pycocotools' ``Params`` in spirit: every knob explicit, checked once).

    - ``iou_threshold``: VG's box threshold: BiRD's ``Recall@t`` (IoU > t) and the one-to-one
      ``match_*@t`` scores (IoU >= t); 0.5 is the paper's.
    - ``acc_thresholds``: the ``Acc@a`` set, first predicted box vs first reference box, IoU >= a.
    - ``bootstrap``: resamples for 95% intervals (0: none); ``seed`` seeds them.
    - ``clean``: ``none`` scores responses as written; ``upstream`` first strips the raw special
      tokens BiRD's own scripts strip (:func:`paddlemix.bird.metrics.records.clean_upstream`).
    - ``box_format``: how VG responses write boxes (:mod:`paddlemix.bird.box_formats`);
      ``min_pixels`` / ``max_pixels`` bound Qwen2.5-VL's ``smart_resize``.
    - ``per_turn``: records of several turns are also scored turn by turn (``per_turn`` key).
    """

    iou_threshold: float = 0.5
    acc_thresholds: Tuple[float, ...] = ACC_THRESHOLDS
    bootstrap: int = 0
    seed: int = 0
    clean: str = "none"
    box_format: str = DEFAULT_BOX_FORMAT
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    per_turn: bool = True

    def __post_init__(self):
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if not all(0.0 <= a <= 1.0 for a in self.acc_thresholds):
            raise ValueError(f"acc_thresholds must lie in [0, 1], got {self.acc_thresholds}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if self.clean not in CLEAN_MODES:
            raise ValueError(f"unknown clean mode {self.clean!r}; expected one of {', '.join(CLEAN_MODES)}")
        check_box_format(self.box_format)
