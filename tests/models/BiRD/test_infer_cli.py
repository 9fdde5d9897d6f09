"""Batch inference: same records at any batch size, resumable after a kill, upstream fields."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # inference end to end, partly in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INFER = os.path.join(ROOT, "tests", "models", "BiRD", "infer.py")

QUESTIONS = [
    ("Where is the liver?", "<ref>liver</ref><box>(10,20),(300,400)</box>"),
    ("Please locate the left kidney in this CT image, and give its box.", "<ref>left kidney</ref><box>(1,2),(3,4)</box>"),
    ("Spleen?", "<ref>spleen</ref><box>(5,5),(50,50)</box>"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import paddle

    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer

    root = tmp_path_factory.mktemp("infer")
    images = root / "images"
    images.mkdir()
    rng = np.random.RandomState(0)
    records = []
    for i in range(11):
        name = ["ct_00", "mr_t1", "x_00"][i % 3] + f"--ds--case{i}--z_{i:04d}"
        Image.fromarray(rng.randint(0, 255, (40 + 7 * i, 48), dtype=np.uint8)).save(images / f"{name}.png")
        q, a = QUESTIONS[i % 3]
        records.append({"id": name, "conversations": [[f"Picture 1: <img>{name}.png</img>\n{q}", a]]})
    test_file = root / "test_VG.json"
    test_file.write_text(json.dumps(records))

    paddle.seed(3)
    config = get_preset("tiny", num_hidden_layers=1, visual={"layers": 1, "image_size": 56, "n_queries": 49})
    model = QWenVLForCausalLM(config)
    ckpt = root / "ckpt"
    model.save_pretrained(str(ckpt))
    QWenVLTokenizer(image_span=config.image_span).save_pretrained(str(ckpt))
    return root, ckpt, test_file, images


def infer(root, ckpt, test_file, images, out, *extra):
    """The CLI's main() in this process (paddle is imported once for the module)."""
    from paddlemix.tools.infer import main

    argv = ["--checkpoint", str(ckpt), "--json_path", str(test_file), "--image_root", str(images),
            "--output_file", str(out), "--max_new_tokens", "6", *extra]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), "")


def test_cli_script_runs(setup):
    root, ckpt, test_file, images = setup
    out = root / "cli.jsonl"
    cmd = [sys.executable, INFER, "--checkpoint", str(ckpt), "--json_path", str(test_file), "--image_root", str(images),
           "--output_file", str(out), "--max_new_tokens", "3", "--batch_size", "11"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote 11 predictions" in r.stdout


def test_batch_sizes_write_identical_records(setup):
    root, ckpt, test_file, images = setup
    one = root / "b1.jsonl"
    eight = root / "b8.jsonl"
    r1 = infer(root, ckpt, test_file, images, one, "--batch_size", "1")
    assert r1.returncode == 0, r1.stderr[-2000:]
    r8 = infer(root, ckpt, test_file, images, eight, "--batch_size", "8")
    assert r8.returncode == 0, r8.stderr[-2000:]
    assert one.read_text() == eight.read_text()
    rows = [json.loads(l) for l in one.read_text().splitlines()]
    assert len(rows) == 11
    for row in rows:
        assert {"id", "image", "question", "annotation", "response", "task", "modality"} <= set(row)
        assert row["task"] == "VG" and row["modality"] == row["id"].split("_")[0]
        assert "<|im_end|>" not in row["response"] and "<|endoftext|>" not in row["response"]
        assert not row["question"].startswith("Picture 1")


def test_killed_run_resumes_to_the_same_file(setup):
    root, ckpt, test_file, images = setup
    full = root / "full.jsonl"
    assert infer(root, ckpt, test_file, images, full, "--batch_size", "4").returncode == 0
    part = root / "part.jsonl"
    text = full.read_text()
    # What a kill leaves: 5 complete lines and half of the sixth.
    lines = text.splitlines(keepends=True)
    part.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    (root / "part.jsonl.meta.json").write_text((root / "full.jsonl.meta.json").read_text())
    r = infer(root, ckpt, test_file, images, part, "--batch_size", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "5 of 11 predictions already there, 6 to go" in r.stdout and "wrote 6 predictions" in r.stdout
    assert part.read_text() == text
    # A finished file is left alone.
    r = infer(root, ckpt, test_file, images, part, "--batch_size", "4")
    assert "wrote 0 predictions" in r.stdout and part.read_text() == text


def test_raw_prompt_format_runs(setup):
    root, ckpt, test_file, images = setup
    out = root / "raw.jsonl"
    r = infer(root, ckpt, test_file, images, out, "--prompt_format", "raw", "--batch_size", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 11


def test_llava_med_qa_flows_through_inference_and_eval(setup):
    """A LLaVA-Med-format fixture → tiny-model predictions (task QA) → eval.py --task QA."""
    root, ckpt, _, images = setup
    names = sorted(p.name for p in images.iterdir())[:3]
    lines = [
        {"question_id": 100 + i, "image": name, "text": f"What is shown in this image? <image>",
         "gpt4_answer": f"A grey scan number {i} with a bright region.",
         "domain": {"chest_xray": i == 0, "mri": i == 1, "ct_scan": i == 2, "histology": False, "gross": False}}
        for i, name in enumerate(names)
    ]
    qa_file = root / "llava_med_eval_qa50_qa.jsonl"
    qa_file.write_text("".join(json.dumps(l) + "\n" for l in lines))
    pred = root / "pred_QA.jsonl"
    r = infer(root, ckpt, qa_file, images, pred, "--batch_size", "2")
    assert r.returncode == 0 and "wrote 3 predictions" in r.stdout
    rows = [json.loads(l) for l in pred.read_text().splitlines()]
    assert [row["task"] for row in rows] == ["QA"] * 3
    assert [row["id"] for row in rows] == ["100", "101", "102"]
    assert [row["modality"] for row in rows] == ["x", "mr", "ct"]
    assert rows[0]["question"] == "What is shown in this image?"
    assert rows[1]["annotation"] == "A grey scan number 1 with a bright region."

    out_json = root / "metrics_QA.json"
    eval_py = os.path.join(ROOT, "tests", "models", "BiRD", "eval.py")
    r = subprocess.run([sys.executable, eval_py, "--task", "QA", "--pred_file", str(pred), "--out_json", str(out_json)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads(out_json.read_text())
    assert metrics["task"] == "QA" and metrics["n"] == 3
    assert set(metrics["per_modality"]) == {"x", "mr", "ct"}
    parts = [metrics["macro"][k] for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L")]
    assert abs(metrics["macro"]["mBMR"] - sum(parts) / 6) < 1e-12


# -- faults: a rerun of another job, an output that is not a prediction file, empty or bad input --


def test_rerun_with_other_settings_test_file_or_checkpoint_is_refused(setup, tmp_path):
    import shutil

    from paddlemix.bird.predictions import PredictionMismatch

    root, ckpt, test_file, images = setup
    my_ckpt, my_test = tmp_path / "ckpt", tmp_path / "test_VG.json"
    shutil.copytree(ckpt, my_ckpt)
    records = json.loads(test_file.read_text())[:2]
    my_test.write_text(json.dumps(records))
    out = tmp_path / "pred.jsonl"
    assert infer(root, my_ckpt, my_test, images, out).returncode == 0
    written = out.read_text()
    assert len(written.splitlines()) == 2

    with pytest.raises(PredictionMismatch, match=r"settings\.max_new_tokens: was 6, now 5.*--overwrite"):
        infer(root, my_ckpt, my_test, images, out, "--max_new_tokens", "5")
    with pytest.raises(PredictionMismatch, match=r"settings\.prompt_format: was 'chatml', now 'raw'"):
        infer(root, my_ckpt, my_test, images, out, "--prompt_format", "raw")
    records[0]["conversations"][0][1] = "<ref>liver</ref><box>(11,20),(300,400)</box>"  # a corrected reference
    my_test.write_text(json.dumps(records))
    with pytest.raises(PredictionMismatch, match=r"test_file\.sha256: was"):
        infer(root, my_ckpt, my_test, images, out)
    my_test.write_text(json.dumps(json.loads(test_file.read_text())[:2]))
    weights = next(p for p in my_ckpt.iterdir() if p.suffix == ".pdparams")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # retrained in place
    with pytest.raises(PredictionMismatch, match=rf"checkpoint\.files\.{weights.name}: was"):
        infer(root, my_ckpt, my_test, images, out)
    assert out.read_text() == written  # nothing written by a refused run

    r = infer(root, my_ckpt, my_test, images, out, "--max_new_tokens", "2", "--overwrite")
    assert r.returncode == 0 and "wrote 2 predictions" in r.stdout
    meta = json.loads((tmp_path / "pred.jsonl.meta.json").read_text())
    assert meta["fingerprint"]["settings"]["max_new_tokens"] == 2
    r = infer(root, my_ckpt, my_test, images, out, "--max_new_tokens", "2")  # the same job again: resumed
    assert "2 of 2 predictions already there, 0 to go" in r.stdout and "wrote 0 predictions" in r.stdout


def test_output_that_is_not_a_prediction_file_is_refused_and_left_intact(setup, tmp_path):
    from paddlemix.bird.predictions import PredictionMismatch

    root, ckpt, test_file, images = setup
    before = test_file.read_text()
    with pytest.raises(PredictionMismatch, match="is the input file"):
        infer(root, ckpt, test_file, images, test_file)
    other = tmp_path / "notes.jsonl"  # JSON Lines, but not predictions
    other.write_text('{"id": "a", "conversations": []}\n{"id": "b", "conversations": []}\n{"id": "c"')
    other_before = other.read_text()
    with pytest.raises(PredictionMismatch, match="is not a prediction file"):
        infer(root, ckpt, test_file, images, other, "--overwrite")
    listing = tmp_path / "list.json"  # another test file: one JSON list, no newline
    listing.write_text(before)
    with pytest.raises(PredictionMismatch, match="is not a prediction file"):
        infer(root, ckpt, test_file, images, listing)
    assert test_file.read_text() == before and other.read_text() == other_before and listing.read_text() == before
    assert not (tmp_path / "notes.jsonl.meta.json").exists()


def test_prediction_file_without_its_record_is_not_resumed(setup, tmp_path):
    from paddlemix.bird.predictions import PredictionMismatch

    root, ckpt, test_file, images = setup
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"id": "x", "annotation": "a", "response": "r", "task": "VG"}) + "\n")
    with pytest.raises(PredictionMismatch, match=r"no old\.jsonl\.meta\.json.*--overwrite"):
        infer(root, ckpt, test_file, images, old)


def test_empty_test_file_writes_an_empty_prediction_file(setup, tmp_path):
    root, ckpt, _, images = setup
    empty = tmp_path / "test_VG.jsonl"
    empty.write_text("")
    out = tmp_path / "pred_VG.jsonl"
    r = infer(root, ckpt, empty, images, out)
    assert r.returncode == 0 and "no records to answer in" in r.stdout and "wrote an empty" in r.stdout
    assert out.read_text() == "" and (tmp_path / "pred_VG.jsonl.meta.json").exists()


@pytest.mark.parametrize("option", ["--max_new_tokens", "--batch_size"])
def test_non_positive_counts_are_usage_errors(setup, tmp_path, option, capsys):
    root, ckpt, test_file, images = setup
    with pytest.raises(SystemExit) as exc:
        infer(root, ckpt, test_file, images, tmp_path / "p.jsonl", option, "0")
    assert exc.value.code == 2 and f"{option} must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_cli_reports_bad_input_in_one_error_line(setup, tmp_path):
    root, ckpt, test_file, images = setup
    bad = tmp_path / "test_VG.json"
    bad.write_text('[{"id": "a", "conversations": [["Where?", "<box>(1,2),(3,4)</box>"]]}, {"id": "b", "convers')
    cmd = [sys.executable, INFER, "--checkpoint", str(ckpt), "--json_path", str(bad), "--image_root", str(images),
           "--output_file", str(tmp_path / "p.jsonl")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:1: broken_json: Unterminated string starting at (line 1")
    assert "Traceback" not in r.stderr and not (tmp_path / "p.jsonl").exists()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, BIRD_DEBUG="1"))
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_image_path_longer_than_the_image_span_is_answered(setup, tmp_path):
    """The tiny model's span is 49 ids; a 125-byte CJK folder name used to abort inference."""
    import shutil

    root, ckpt, test_file, images = setup
    name = sorted(p.name for p in images.iterdir())[0]
    folder = tmp_path / ("病例图像" * 10)
    folder.mkdir()
    shutil.copy(images / name, folder / name)
    image = f"{folder.name}/{name}"
    assert len(image.encode()) > 49
    my_test = tmp_path / "test_VG.json"
    my_test.write_text(json.dumps([{"id": "long", "image": image, "conversations": [[QUESTIONS[0][0], QUESTIONS[0][1]]]}]))
    out = tmp_path / "pred.jsonl"
    r = infer(root, ckpt, my_test, tmp_path, out, "--lenient")
    assert r.returncode == 0 and "wrote 1 predictions" in r.stdout
    assert json.loads(out.read_text())["image"] == image


def test_qwen_vl_grounding_protocol_end_to_end(setup):
    """RefCOCO-family JSONL -> phrase pre-filled prompts (raw and ChatML) -> predictions -> Precision@1."""
    import re

    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer
    from paddlemix.tools.infer import build_queries, load_records, prompt_ids

    root, ckpt, _, images = setup
    names = sorted(os.listdir(images))[:3]
    lines = []
    for name in names:
        width, height = Image.open(images / name).size
        lines.append({"image": name, "sent": f"spot {len(lines)}", "bbox": [0, 0, width // 2, height], "width": width, "height": height})
    ref_file = root / "refcoco_val.jsonl"
    ref_file.write_text("".join(json.dumps(l) + "\n" for l in lines))

    tok = QWenVLTokenizer.from_pretrained(str(ckpt))
    (query,) = build_queries(load_records(str(ref_file), str(images))[:1])
    tail = [151851] + tok.encoding.encode("spot 0") + [151852, 151853]  # <ref>spot 0</ref><box>
    raw = prompt_ids(tok, query, "raw", "qwen_vl_grounding")
    assert raw[0] == 151857 and raw[-len(tail):] == tail and 151644 not in raw  # <img>...: no ChatML
    assert tok.decode(raw) == f"<img>{names[0]}</img><ref>spot 0</ref><box>"
    chat = prompt_ids(tok, query, "chatml", "qwen_vl_grounding")
    assert chat[-len(tail) - 3:-len(tail)] == [151644, 77091, 198] and chat[-len(tail):] == tail  # assistant\n, then the prefill

    eval_py = os.path.join(ROOT, "tests", "models", "BiRD", "eval.py")
    for prompt_format in ("raw", "chatml"):
        pred = root / f"pred_refcoco_{prompt_format}.jsonl"
        r = infer(root, ckpt, ref_file, images, pred, "--protocol", "qwen_vl_grounding", "--prompt_format", prompt_format)
        assert r.returncode == 0 and "wrote 3 predictions" in r.stdout
        rows = [json.loads(l) for l in pred.read_text().splitlines()]
        assert [row["prefill"] for row in rows] == ["<ref>spot 0</ref><box>", "<ref>spot 1</ref><box>", "<ref>spot 2</ref><box>"]
        assert all(row["protocol"] == "qwen_vl_grounding" and row["bbox"] == [float(v) for v in l["bbox"]]
                   for row, l in zip(rows, lines))
        out_json = root / f"metrics_{prompt_format}.json"
        r = subprocess.run([sys.executable, eval_py, "--pred_file", str(pred), "--out_json", str(out_json),
                            "--protocol", "qwen_vl_grounding"], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        metrics = json.loads(out_json.read_text())
        # Independently: a hit when the first "(a,b),(c,d)" / 999 overlaps the left half of the image at IoU >= 0.5.
        hits = 0
        for row in rows:
            m = re.search(r"\((\d+),(\d+)\),\((\d+),(\d+)\)", row["response"])
            if m:
                x1, y1, x2, y2 = (int(v) / 999 for v in m.groups())
                right = row["bbox"][2] / row["width"]  # the reference is (0, 0)-(right, 1) of the image
                inter = max(0, min(x2, right) - max(x1, 0)) * max(0, min(y2, 1) - max(y1, 0))
                union = (x2 - x1) * (y2 - y1) + right - inter
                hits += union > 0 and inter / union >= 0.5
        assert metrics["n"] == 3 and metrics["micro"]["Precision@1"] == hits / 3


def test_test_dir_mode_writes_what_separate_runs_write(setup, tmp_path):
    """infer_all.sh's one-process mode: each test file gets the file and fingerprint a run of its own
    would (so either resumes the other), missing tasks are skipped, and no file at all is an error."""
    import shutil

    root, ckpt, test_file, images = setup
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy(test_file, tests / "test_VG.json")
    shutil.copy(test_file, tests / "test_GC.json")  # VG-style answers; GC questions are free text anyway
    from paddlemix.tools.infer import main

    argv = ["--checkpoint", str(ckpt), "--image_root", str(images), "--test_dir", str(tests),
            "--pred_dir", str(tmp_path / "pred"), "--task_max_new_tokens", "VG=3,GC=5", "--batch_size", "4"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(argv) == 0
    assert f"{tests / 'test_RO.json'} not found, skipping RO" in stderr.getvalue()
    assert "infer: VG (max_new_tokens 3)" in stdout.getvalue() and "infer: GC (max_new_tokens 5)" in stdout.getvalue()
    assert sorted(os.listdir(tmp_path / "pred")) == [
        "pred_GC.jsonl", "pred_GC.jsonl.meta.json", "pred_VG.jsonl", "pred_VG.jsonl.meta.json"]
    for task, tokens in (("VG", "3"), ("GC", "5")):
        alone = tmp_path / f"alone_{task}.jsonl"
        r = infer(root, ckpt, tests / f"test_{task}.json", images, alone, "--task", task, "--max_new_tokens", tokens,
                  "--batch_size", "4")
        assert r.returncode == 0
        made = tmp_path / "pred" / f"pred_{task}.jsonl"
        assert alone.read_text() == made.read_text() and len(made.read_text().splitlines()) == 11
        assert json.loads((tmp_path / f"alone_{task}.jsonl.meta.json").read_text())["fingerprint"] == json.loads(
            (tmp_path / "pred" / f"pred_{task}.jsonl.meta.json").read_text())["fingerprint"]
    # A GC answer of 5 tokens is not the same job as one of 3: the one-file run refuses to resume it.
    from paddlemix.bird.predictions import PredictionMismatch

    with pytest.raises(PredictionMismatch, match="max_new_tokens"):
        infer(root, ckpt, tests / "test_GC.json", images, tmp_path / "pred" / "pred_GC.jsonl", "--task", "GC",
              "--max_new_tokens", "3")

    from paddlemix.cli import run

    empty = tmp_path / "empty"
    empty.mkdir()
    with contextlib.redirect_stderr(stderr):
        assert run(main, ["--checkpoint", str(ckpt), "--image_root", str(images), "--test_dir", str(empty),
                          "--pred_dir", str(tmp_path / "p2")]) == 2
    assert f"no test_<TASK>.json for tasks VG,RO,GC,MII in {empty}" in stderr.getvalue()
    for wrong, said in ((["--json_path", str(test_file)], "no --json_path"), (["--task", "VG"], "no --json_path"),
                        ([], "--test_dir takes --pred_dir"), (["--task_max_new_tokens", "VQ=4"], "names VQ, not in"),
                        (["--task_max_new_tokens", "VG=0"], "'VG=0' is not TASK=N")):
        extra = [] if wrong == [] else ["--pred_dir", str(tmp_path / "p3")]
        usage = io.StringIO()
        with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(usage):
            main(["--checkpoint", str(ckpt), "--image_root", str(images), "--test_dir", str(tests), *extra, *wrong])
        assert exc.value.code == 2 and said in usage.getvalue()
