"""Batch inference over Med-GRIT test files → prediction JSONL (``tests/models/BiRD/infer.py``).

Greedy by default, batched with left padding and a KV cache. ``chatml`` prompts are encoded by
the same function training uses; ``raw`` reproduces upstream's un-templated prompt. With
``--protocol qwen_vl_grounding`` the answer is pre-filled with ``<ref>PHRASE</ref><box>`` (the raw
form is Qwen-VL's ``<img>PATH</img><ref>PHRASE</ref><box>``) and the model only writes the box
(:mod:`paddlemix.bird.metrics.qwen_grounding`). Reruns resume after the last complete record, but only when
they are the same job: ``<output_file>.meta.json`` records the checkpoint, the test file and the
settings in :data:`FINGERPRINT_ARGS`, and a rerun that differs is refused until ``--overwrite``
(see :mod:`paddlemix.bird.predictions`). ``--test_dir`` answers each ``test_<TASK>.json`` of a folder
in one process, every file as its own job (what ``infer_all.sh`` runs).
"""

import argparse
import os
import sys
from typing import List, Optional, Set

from paddlemix.bird.image_tag import split_image_prefix
from paddlemix.bird.metrics import qwen_grounding
from paddlemix.bird.predictions import (
    Key,
    append_records,
    checkpoint_identity,
    file_sha256,
    open_resumable,
    prediction_record,
    record_key,
    start_predictions,
)

# The command-line settings that change what is written: a file made with other values is not
# resumed. A new prompt or generation option is added here (and to parse_args), nothing else.
FINGERPRINT_ARGS = (
    "task",
    "input_format",
    "protocol",
    "prompt_format",
    "all_turns",
    "max_new_tokens",
    "decode_strategy",
    "top_p",
    "temperature",
    "seed",
    "dtype",
)

PROTOCOLS = ("bird", qwen_grounding.PROTOCOL)
# The file names of infer_all.sh / --test_dir, in the order they are answered.
TASK_FILES = ("VG", "RO", "GC", "MII")
# Record fields the Qwen-VL grounding protocol scores with, carried into the predictions.
PASS_THROUGH = ("phrase", "bbox", "width", "height", "view")


def build_queries(records: List[dict], all_turns: bool = False) -> List[dict]:
    """One query per record (its first turn, as upstream scores), or one per turn with the
    reference answers of earlier turns as history."""
    queries = []
    for rec in records:
        turns = rec["conversations"]
        for k in range(len(turns) if all_turns else 1):
            question, annotation = turns[k]
            queries.append(
                {
                    "id": rec["id"],
                    "image": rec["image"],
                    "image_path": rec["image_path"],
                    "task": rec["task"],
                    "modality": rec["modality"],
                    "turn": k,
                    "history": [tuple(t) for t in turns[:k]],
                    "question": question,
                    "annotation": annotation,
                    **{k: rec[k] for k in PASS_THROUGH if k in rec},
                }
            )
    return queries


def prompt_ids(tokenizer, query: dict, prompt_format: str, protocol: str = "bird") -> List[int]:
    from paddlemix.processors.conversation import encode_prompt

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if prompt_format not in ("chatml", "raw"):
        raise ValueError(f"unknown prompt_format {prompt_format!r}; expected 'chatml' or 'raw'")
    if protocol == qwen_grounding.PROTOCOL:
        phrase = query_phrase(query)
        if prompt_format == "raw":
            image, _ = split_image_prefix(query["question"])
            return tokenizer.encode_text(qwen_grounding.raw_prompt(image or query["image"], phrase))
        prompt = encode_prompt(tokenizer, query["question"], query["history"])
        return prompt + tokenizer.encode_content(qwen_grounding.prefill(phrase))
    if prompt_format == "chatml":
        return encode_prompt(tokenizer, query["question"], query["history"])
    # Upstream fed the bare question (with its image tag) to the model, no ChatML roles.
    text = "".join(q + a for q, a in query["history"]) + query["question"]
    return tokenizer.encode_text(text)


def query_phrase(query: dict) -> str:
    phrase = qwen_grounding.record_phrase(query)
    if phrase is None:
        raise ValueError(
            f"record {query['id']} (turn {query['turn']}): no referring phrase for the {qwen_grounding.PROTOCOL} "
            "prompt (no 'phrase' field and no <ref> in the reference answer)"
        )
    return phrase


def run_inference(
    model,
    tokenizer,
    image_processor,
    records: List[dict],
    output_file: str,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    prompt_format: str = "chatml",
    all_turns: bool = False,
    show_progress: bool = True,
    protocol: str = "bird",
    done: Optional[Set[Key]] = None,
    **generate_kwargs,
) -> int:
    """Write one prediction per query whose key is not in ``done``; returns how many were written.

    ``done`` are the keys already in ``output_file`` as :func:`paddlemix.bird.predictions.start_predictions`
    returns them after checking the file is this job's; None resumes whatever complete lines are there."""
    from tqdm import tqdm

    from paddlemix.datasets.medgrit import record_image
    from paddlemix.models.qwen_vl.generation import generate_batch

    if done is None:
        done = open_resumable(output_file)
    queries = build_queries(records, all_turns)
    todo = [q for q in queries if record_key(q) not in done]
    if done:
        print(f"resuming {output_file}: {len(queries) - len(todo)} of {len(queries)} predictions already there, "
              f"{len(todo)} to go")
    written = 0
    with tqdm(total=len(todo), desc=f"inference → {os.path.basename(output_file)}", disable=not show_progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            ids = [prompt_ids(tokenizer, q, prompt_format, protocol) for q in batch]
            images = image_processor([record_image(q) for q in batch])
            outputs = generate_batch(model, tokenizer, ids, images=images, max_new_tokens=max_new_tokens, **generate_kwargs)
            rows = []
            for q, out in zip(batch, outputs):
                rows.append(
                    prediction_record(
                        id=q["id"],
                        image=q["image"],
                        question=q["question"],
                        annotation=q["annotation"],
                        response=tokenizer.decode(out, skip_special_tokens=True).strip(),
                        task=q["task"],
                        modality=q["modality"],
                        turn=q["turn"],
                        **{k: q[k] for k in PASS_THROUGH if k in q},
                    )
                )
                if protocol == qwen_grounding.PROTOCOL:
                    # The response is the continuation after the pre-filled "<ref>PHRASE</ref><box>".
                    rows[-1].update(protocol=protocol, prefill=qwen_grounding.prefill(query_phrase(q)))
            append_records(output_file, rows)
            written += len(rows)
            bar.update(len(rows))
    return written


def load_records(json_path: str, image_root: str, input_format: str = "auto", task=None, lenient: bool = False):
    """Test records from a Med-GRIT file, LLaVA-Med's QA JSONL or a RefCOCO-family JSONL (detected when ``auto``)."""
    from paddlemix.datasets.llava_med import is_llava_med_file, load_llava_med_qa
    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.datasets.refcoco import is_refcoco_file, load_refcoco

    if input_format == "llava_med" or (input_format == "auto" and is_llava_med_file(json_path)):
        return load_llava_med_qa(json_path, image_root)
    if input_format == "refcoco" or (input_format == "auto" and is_refcoco_file(json_path)):
        return load_refcoco(json_path, image_root)
    records, report = load_medgrit(json_path, image_root, strict=not lenient, task=task)
    if not report.ok:
        print(report.format(), file=sys.stderr)
    return records


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="model directory written by training or conversion")
    p.add_argument("--json_path", help="Med-GRIT test file (JSON list or JSONL); or --test_dir")
    p.add_argument("--image_root", required=True, help="folder the records' image paths are relative to")
    p.add_argument("--output_file",
                   help="prediction JSONL (resumed if it exists and was made by the same job; see --overwrite)")
    p.add_argument("--test_dir", default=None,
                   help="instead of --json_path/--output_file: answer every test_<TASK>.json of --tasks found here "
                        "with one model load, each into --pred_dir/pred_<TASK>.jsonl (what infer_all.sh runs)")
    p.add_argument("--pred_dir", default=None, help="with --test_dir: where pred_<TASK>.jsonl go")
    p.add_argument("--tasks", default=",".join(TASK_FILES), help="with --test_dir: the tasks, comma-separated")
    p.add_argument("--task_max_new_tokens", default="",
                   help="with --test_dir: TASK=N,... replaces --max_new_tokens for those tasks (e.g. VG=64,RO=16)")
    p.add_argument("--overwrite", action="store_true",
                   help="start --output_file over even if it was made from another checkpoint, test file or settings")
    p.add_argument("--task", default=None, help="task of records without one (default: from the file name)")
    p.add_argument("--input_format", choices=("auto", "medgrit", "llava_med", "refcoco"), default="auto",
                   help="Med-GRIT records, LLaVA-Med's QA JSONL (task QA) or Qwen-VL's RefCOCO-family JSONL; auto detects")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--prompt_format", choices=("chatml", "raw"), default="chatml")
    p.add_argument("--protocol", choices=PROTOCOLS, default="bird",
                   help=f"{qwen_grounding.PROTOCOL}: pre-fill the answer with <ref>PHRASE</ref><box> (VG records; "
                        "with --prompt_format raw, Qwen-VL's <img>PATH</img><ref>PHRASE</ref><box>)")
    p.add_argument("--all_turns", action="store_true", help="answer every turn (upstream scores the first only)")
    p.add_argument("--decode_strategy", default="greedy_search", choices=("greedy_search", "sampling"))
    p.add_argument("--top_p", type=float, default=None, help="sampling only")
    p.add_argument("--temperature", type=float, default=None, help="sampling only")
    p.add_argument("--dtype", default=None, help="load dtype, e.g. bfloat16 on GPU (default: as saved)")
    p.add_argument("--device", default=None, help="paddle device, e.g. cpu or gpu:0 (default: paddle's)")
    p.add_argument("--lenient", action="store_true", help="skip invalid records (reported) instead of stopping")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("batch_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.test_dir is None:
        if not (args.json_path and args.output_file):
            p.error("give --json_path and --output_file (one test file), or --test_dir and --pred_dir")
    elif args.json_path or args.output_file or args.task or not args.pred_dir:
        p.error("--test_dir takes --pred_dir, and its tasks from the file names: no --json_path, --output_file or --task")
    try:
        args.task_max_new_tokens = parse_task_limits(args.task_max_new_tokens)
    except ValueError as exc:
        p.error(str(exc))
    unknown = sorted(set(args.task_max_new_tokens) - {t.strip() for t in args.tasks.split(",")})
    if unknown:
        p.error(f"--task_max_new_tokens names {', '.join(unknown)}, not in --tasks {args.tasks}")
    return args


def parse_task_limits(text: str) -> dict:
    """``"VG=64,RO=16"`` -> {"VG": 64, "RO": 16}; every count at least 1."""
    limits = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        task, _, count = item.partition("=")
        if not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"--task_max_new_tokens: {item!r} is not TASK=N with N at least 1")
        limits[task.strip()] = int(count)
    return limits


def file_jobs(args) -> List[argparse.Namespace]:
    """The one job of ``--json_path``, or one per test file of ``--test_dir`` (missing tasks are
    skipped with a note); each job's settings are those a separate infer.py run would fingerprint."""
    if args.test_dir is None:
        return [args]
    jobs = []
    for task in filter(None, (t.strip() for t in args.tasks.split(","))):
        path = os.path.join(args.test_dir, f"test_{task}.json")
        if not os.path.isfile(path):
            print(f"infer: {path} not found, skipping {task}", file=sys.stderr)
            continue
        job = argparse.Namespace(**vars(args))
        job.json_path, job.task = path, task
        job.output_file = os.path.join(args.pred_dir, f"pred_{task}.jsonl")
        job.max_new_tokens = args.task_max_new_tokens.get(task, args.max_new_tokens)
        jobs.append(job)
    if not jobs:
        raise FileNotFoundError(f"no test_<TASK>.json for tasks {args.tasks} in {args.test_dir}")
    return jobs


def fingerprint(args) -> dict:
    """What ``args`` make a prediction file from (see :func:`paddlemix.bird.predictions.start_predictions`)."""
    if not os.path.isdir(args.checkpoint):
        raise FileNotFoundError(f"checkpoint directory {args.checkpoint} not found")
    if not os.path.isfile(args.json_path):
        raise FileNotFoundError(f"test file {args.json_path} not found")
    return {
        "checkpoint": checkpoint_identity(args.checkpoint),
        "test_file": {"path": os.path.abspath(args.json_path), "sha256": file_sha256(args.json_path)},
        "image_root": os.path.abspath(args.image_root),
        "settings": {name: getattr(args, name) for name in FINGERPRINT_ARGS},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import paddle

    if args.device:
        paddle.set_device(args.device)
    loaded = None  # the model is read once, for the first file with records
    for job in file_jobs(args):
        if args.test_dir is not None:
            print(f"infer: {job.task} (max_new_tokens {job.max_new_tokens})")
        paddle.seed(job.seed)  # each file as a run of its own would start
        records = load_records(job.json_path, job.image_root, job.input_format, job.task, job.lenient)
        done = start_predictions(job.output_file, fingerprint(job), overwrite=job.overwrite, inputs=[job.json_path])
        if not records:
            print(f"no records to answer in {job.json_path}: wrote an empty {job.output_file}")
            continue
        if loaded is None:
            from paddlemix.models.qwen_vl.builder import load_model

            loaded = load_model(args.checkpoint, args.dtype)
        extra = {k: v for k, v in (("top_p", job.top_p), ("temperature", job.temperature)) if v is not None}
        n = run_inference(
            *loaded,
            records,
            job.output_file,
            batch_size=job.batch_size,
            max_new_tokens=job.max_new_tokens,
            prompt_format=job.prompt_format,
            all_turns=job.all_turns,
            protocol=job.protocol,
            decode_strategy=job.decode_strategy,
            done=done,
            **extra,
        )
        print(f"wrote {n} predictions to {job.output_file}")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
