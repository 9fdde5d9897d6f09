"""Where a checkpoint's training loss goes: teacher-forced loss per kind of answer token.

    python -m paddlemix.tools.answer_loss --checkpoint output/demo --json_path data/demo/medgrit/train.json
        --image_root data/demo/sa_med2d/images [--task VG] [--modality mr] [--max_records 48]
        [--max_length 2048] [--out_json F]

Each record is encoded exactly as training encodes it and scored with the reference answer fed in
(teacher forcing). Every trained token is put in one kind:

  markup        ``<ref>``, ``</ref>``, ``<box>``, ``</box>``, ``<quad>``, ``</quad>``
  name          the phrase between ``<ref>`` and ``</ref>``
  digit 100s / 10s / 1s   a digit of a number, by its place value (box coordinates are 0-999)
  end           ``<|im_end|>``
  text          everything else (template words, punctuation, RO and caption answers)

and the table gives, per kind, the number of tokens, the mean negative log-likelihood (nats) and
how often the model's most likely token is the reference (top-1). For scale: a uniform guess over
ten digits costs ln 10 = 2.30 nats. The token-weighted mean over all kinds is the model's own loss
on these records.
"""

import argparse
import sys
from typing import Dict, List, Sequence

from paddlemix.bird.jsonio import write_json_atomic
from paddlemix.processors.special_tokens import IM_END, MARKUP_TOKENS, REF_START

PLACES = {0: "digit 1s", 1: "digit 10s", 2: "digit 100s"}
KINDS = ("markup", "name", "digit 100s", "digit 10s", "digit 1s", "digit 1000s+", "end", "text")


def token_kinds(pieces: Sequence[str]) -> List[str]:
    """The kind of each answer token, from the decoded pieces of one sequence (in order)."""
    kinds = []
    in_name = False
    for i, piece in enumerate(pieces):
        if piece in MARKUP_TOKENS:
            kinds.append("markup")
            in_name = piece == REF_START
        elif piece == IM_END:
            kinds.append("end")
        elif in_name:
            kinds.append("name")
        elif piece.isdigit() and len(piece) == 1:
            # Qwen splits numbers into single digits: the place value is the count of digits after it.
            after = 0
            while i + after + 1 < len(pieces) and pieces[i + after + 1].isdigit() and len(pieces[i + after + 1]) == 1:
                after += 1
            kinds.append(PLACES.get(after, "digit 1000s+"))
        else:
            kinds.append("text")
    return kinds


def loss_by_kind(model, tokenizer, image_processor, records: Sequence[dict], max_length: int,
                  show_progress: bool = True) -> Dict[str, dict]:
    """``{kind: {"tokens", "nll", "top1"}}`` summed over ``records`` plus ``"all"``."""
    import numpy as np
    import paddle
    import paddle.nn.functional as F
    from tqdm import tqdm

    from paddlemix.datasets.medgrit import record_image
    from paddlemix.processors.conversation import IGNORE_INDEX, encode_conversation

    totals = {k: {"tokens": 0, "nll": 0.0, "top1": 0} for k in KINDS + ("all",)}
    model.eval()
    for rec in tqdm(records, desc="scoring answers", disable=not show_progress):
        enc = encode_conversation(tokenizer, rec["conversations"], max_length=max_length)
        labels = np.asarray(enc.labels)
        positions = np.nonzero(labels[1:] != IGNORE_INDEX)[0] + 1  # trained tokens (never the first)
        images = paddle.to_tensor(image_processor([record_image(rec)])) if enc.image_paths else None
        with paddle.no_grad():
            out = model(input_ids=paddle.to_tensor([enc.input_ids]), images=images, return_dict=True)
        logits = out.logits[0].astype("float32")[paddle.to_tensor(positions - 1)]
        targets = paddle.to_tensor(labels[positions])
        nll = F.cross_entropy(logits, targets.unsqueeze(-1), reduction="none").numpy().reshape(-1)
        top1 = (logits.argmax(axis=-1) == targets).numpy()
        pieces = [tokenizer.decode([int(t)]) for t in enc.input_ids]
        kinds = token_kinds(pieces)
        for j, pos in enumerate(positions):
            for key in (kinds[pos], "all"):
                totals[key]["tokens"] += 1
                totals[key]["nll"] += float(nll[j])
                totals[key]["top1"] += int(top1[j])
    return {k: {"tokens": v["tokens"], "mean_nll": v["nll"] / v["tokens"], "top1": v["top1"] / v["tokens"]}
            for k, v in totals.items() if v["tokens"]}


def format_table(table: Dict[str, dict]) -> str:
    lines = [f"{'kind':<14} {'tokens':>7} {'mean NLL':>9} {'top-1':>6}"]
    for kind in KINDS + ("all",):
        if kind in table:
            row = table[kind]
            lines.append(f"{kind:<14} {row['tokens']:>7} {row['mean_nll']:>9.3f} {row['top1']:>6.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--json_path", required=True, help="a Med-GRIT file (train or test)")
    p.add_argument("--image_root", required=True)
    p.add_argument("--task", default=None, help="only records of this task (VG, RO, GC, MII)")
    p.add_argument("--modality", default=None, help="only records of this modality (e.g. mr)")
    p.add_argument("--max_records", type=int, default=48, help="the first N matching records")
    p.add_argument("--max_length", type=int, default=2048, help="as in training: trailing turns beyond it are dropped")
    p.add_argument("--out_json", default=None)
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)

    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.models.qwen_vl.builder import load_model

    records, _ = load_medgrit([args.json_path], args.image_root, strict=True)
    chosen = [r for r in records if (args.task is None or r["task"] == args.task.upper())
              and (args.modality is None or r["modality"] == args.modality)][: args.max_records]
    if not chosen:
        print(f"error: no records in {args.json_path} with task={args.task} modality={args.modality}", file=sys.stderr)
        return 2
    model, tokenizer, image_processor = load_model(args.checkpoint)
    table = loss_by_kind(model, tokenizer, image_processor, chosen, args.max_length, not args.no_progress)
    print(f"{len(chosen)} records of {args.json_path} (task {args.task or 'any'}, modality {args.modality or 'any'}), "
          f"teacher-forced, checkpoint {args.checkpoint}")
    print(format_table(table))
    if args.out_json:
        write_json_atomic(args.out_json, {"checkpoint": args.checkpoint, "json_path": args.json_path, "task": args.task,
                                          "modality": args.modality, "records": len(chosen), "kinds": table}, indent=2)
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
