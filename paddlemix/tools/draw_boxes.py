"""Visual grounding error gallery: reference (green) vs predicted (red) boxes, worst IoU first.

    python -m paddlemix.tools.draw_boxes --pred_file pred_VG.jsonl --image_root IMAGES \\
        --out_dir gallery [--per_modality 6] [--clean upstream]

For each modality the records with the lowest match IoU are drawn (boxes are on the 1000-grid
and are scaled to each image's size) into ``out_dir/images/`` and listed in ``out_dir/index.html``
with the question, the reference, the response and what could not be parsed. A record's image is
its ``image`` field, absolute or relative to ``--image_root``; a missing image is drawn as a
blank grid so the boxes can still be compared. Imports neither paddle nor paddlenlp.
"""

import argparse
import html
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from paddlemix.bird.boxes import Box, grid_to_box, iou, parse_boxes
from paddlemix.bird.images import to_rgb
from paddlemix.bird.metrics.evaluate import read_predictions
from paddlemix.bird.metrics.params import CLEAN_MODES
from paddlemix.bird.metrics.records import clean_response, record_modality

REFERENCE_COLOR = (0, 200, 0)
PREDICTION_COLOR = (230, 0, 0)
MAX_SIDE = 768  # gallery images are downscaled to this longest side
MISSING_SIDE = 512


def match_iou(references: Sequence[Box], predictions: Sequence[Box]) -> float:
    """Mean over reference boxes of the best IoU any predicted box reaches (0 without predictions)."""
    if not references:
        return 0.0
    return float(np.mean([max((iou(p, r) for p in predictions), default=0.0) for r in references]))


@dataclass
class GalleryItem:
    record: dict
    modality: str
    references: List[Box]
    predictions: List[Box]
    unparsed: List[str] = field(default_factory=list)
    match_iou: float = 0.0
    first_iou: float = 0.0
    image_file: str = ""  # relative to out_dir
    image_found: bool = True


def worst_items(records: Sequence[dict], per_modality: int, clean: str = "none") -> Dict[str, List[GalleryItem]]:
    """Up to ``per_modality`` records per modality, lowest match IoU first (file order breaks ties)."""
    by_modality: Dict[str, List[GalleryItem]] = {}
    for record in records:
        references = parse_boxes(record.get("annotation")).boxes
        if not references:
            continue
        parsed = parse_boxes(clean_response(record.get("response"), clean))
        item = GalleryItem(
            record=record,
            modality=record_modality(record),
            references=references,
            predictions=parsed.boxes,
            unparsed=parsed.unparsed,
            match_iou=match_iou(references, parsed.boxes),
            first_iou=iou(parsed.boxes[0], references[0]) if parsed.boxes else 0.0,
        )
        by_modality.setdefault(item.modality, []).append(item)
    return {m: sorted(items, key=lambda it: it.match_iou)[:per_modality] for m, items in sorted(by_modality.items())}


def resolve_image(image: str, image_root: Optional[str]) -> str:
    if os.path.isabs(image) or not image_root:
        return image
    return os.path.join(image_root, image)


def draw_item(item: GalleryItem, image_path: str, out_path: str) -> None:
    """Draw the item's reference and predicted boxes on its image (or a blank grid) and save it."""
    if os.path.exists(image_path):
        canvas = to_rgb(image_path)  # 16-bit and float images stretched to 8 bits, not clipped
        scale = min(1.0, MAX_SIDE / max(canvas.size))
        if scale < 1.0:
            canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))))
    else:
        item.image_found = False
        canvas = Image.new("RGB", (MISSING_SIDE, MISSING_SIDE), (96, 96, 96))
    width, height = canvas.size
    pen = max(2, round(max(width, height) / 200))
    draw = ImageDraw.Draw(canvas)
    # Predictions first and the references thinner on top: a perfect hit shows both colours.
    for boxes, color, line in ((item.predictions, PREDICTION_COLOR, pen), (item.references, REFERENCE_COLOR, max(1, pen // 2))):
        for box in boxes:
            x1, y1, x2, y2 = grid_to_box(box, width, height)
            draw.rectangle([x1, y1, x2, y2], outline=color, width=line)
    if not item.image_found:
        draw.text((8, 8), "image not found", fill=(255, 255, 255))
    canvas.save(out_path)


def _field(record: dict, key: str) -> str:
    value = record.get(key)
    return html.escape("" if value is None else str(value))


def write_index(items: Dict[str, List[GalleryItem]], out_dir: str, source: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>VG error gallery</title>',
        "<style>body{font-family:sans-serif;margin:1em}"
        ".card{display:inline-block;vertical-align:top;width:400px;margin:6px;padding:6px;border:1px solid #ccc}"
        ".card img{max-width:100%}.k{color:#666}.ref{color:#080}.pred{color:#c00}</style></head><body>",
        f"<h1>VG error gallery</h1><p>{html.escape(source)}: "
        '<span class="ref">green = reference</span>, <span class="pred">red = prediction</span>. '
        "Match IoU = mean over reference boxes of the best IoU of any predicted box; worst first.</p>",
    ]
    for modality, modality_items in items.items():
        parts.append(f"<h2>{html.escape(modality)} ({len(modality_items)})</h2>")
        for item in modality_items:
            record = item.record
            missing = "" if item.image_found else f' <b>image not found: {_field(record, "image")}</b>'
            unparsed = (
                f'<div><span class="k">unparsed:</span> {html.escape(" | ".join(item.unparsed))}</div>' if item.unparsed else ""
            )
            parts.append(
                '<div class="card">'
                f'<img src="{html.escape(item.image_file)}" alt="{_field(record, "image")}">'
                f"<div><b>match IoU {item.match_iou:.3f}</b> · first-box IoU {item.first_iou:.3f}{missing}</div>"
                f'<div><span class="k">id:</span> {_field(record, "id")} · {_field(record, "image")}</div>'
                f'<div><span class="k">question:</span> {_field(record, "question")}</div>'
                f'<div class="ref"><span class="k">reference:</span> {_field(record, "annotation")}</div>'
                f'<div class="pred"><span class="k">response:</span> {_field(record, "response")}</div>'
                f"{unparsed}</div>"
            )
    parts.append("</body></html>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts) + "\n")
    return path


def build_gallery(
    pred_file: str, image_root: Optional[str], out_dir: str, per_modality: int = 6, clean: str = "none"
) -> str:
    """Draw the worst VG records of ``pred_file`` into ``out_dir``; return the index.html path."""
    _, records = read_predictions(pred_file, "VG")
    items = worst_items(records, per_modality, clean)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    for modality, modality_items in items.items():
        for rank, item in enumerate(modality_items):
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in modality)
            item.image_file = f"images/{safe}_{rank:03d}.png"
            image = item.record.get("image") or ""
            draw_item(item, resolve_image(image, image_root), os.path.join(out_dir, item.image_file))
    return write_index(items, out_dir, os.path.basename(pred_file))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Draw reference vs predicted VG boxes, worst IoU first.")
    parser.add_argument("--pred_file", required=True, help="VG prediction JSONL")
    parser.add_argument("--image_root", default=None, help="directory that relative 'image' paths start from")
    parser.add_argument("--out_dir", required=True, help="where images/ and index.html go")
    parser.add_argument("--per_modality", type=int, default=6, help="records drawn per modality")
    parser.add_argument("--clean", choices=CLEAN_MODES, default="none", help="response cleaning, as in eval.py")
    args = parser.parse_args(argv)
    index = build_gallery(args.pred_file, args.image_root, args.out_dir, args.per_modality, args.clean)
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
