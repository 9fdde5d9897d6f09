"""``paddlemix.tools.answer_loss``: token kinds, and per-kind losses that add up to the model's own loss."""

import json
import math

import numpy as np
import pytest

from paddlemix.tools.answer_loss import format_table, main, token_kinds


def test_token_kinds_follow_markup_and_place_values():
    pieces = ["<ref>", "left", " frontal", " lobe", "</ref>", "<box>", "(", "1", "2", "3", ",", "4", "5", ")",
              ",(", "7", ",", "1", "0", "0", "0", ")", "</box>", "<|im_end|>", "The", " bone"]
    assert token_kinds(pieces) == [
        "markup", "name", "name", "name", "markup", "markup", "text",
        "digit 100s", "digit 10s", "digit 1s", "text", "digit 10s", "digit 1s", "text",
        "text", "digit 1s", "text", "digit 1000s+", "digit 100s", "digit 10s", "digit 1s", "text", "markup",
        "end", "text", "text",
    ]


@pytest.fixture(scope="module")
def scored(demo_data, tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("answer_loss") / "loss.json"
    argv = ["--checkpoint", tiny_base, "--json_path", demo_data["train_json"], "--image_root", demo_data["images"],
            "--task", "VG", "--max_records", "4", "--max_length", "256", "--out_json", str(out), "--no_progress"]
    assert main(argv) == 0
    return json.loads(out.read_text())


@pytest.mark.slow  # demo_data builds the demo data in subprocesses
def test_kinds_add_up_to_the_models_own_loss(scored, demo_data, tiny_base):
    import paddle

    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.processors.conversation import encode_conversation
    from paddlemix.models.qwen_vl.builder import load_model

    kinds = scored["kinds"]
    parts = [v for k, v in kinds.items() if k != "all"]
    assert sum(v["tokens"] for v in parts) == kinds["all"]["tokens"]
    assert {"markup", "name", "digit 100s", "end"} <= set(kinds)
    # the model's own masked-LM loss over the same four records, token-weighted
    model, tokenizer, image_processor = load_model(tiny_base)
    model.eval()
    records, _ = load_medgrit([demo_data["train_json"]], demo_data["images"], strict=True)
    total, count = 0.0, 0
    for rec in [r for r in records if r["task"] == "VG"][:4]:
        enc = encode_conversation(tokenizer, rec["conversations"], max_length=256)
        n = int((np.asarray(enc.labels)[1:] != -100).sum())
        with paddle.no_grad():
            loss = model(input_ids=paddle.to_tensor([enc.input_ids]), labels=paddle.to_tensor([enc.labels]),
                         images=paddle.to_tensor(image_processor([rec["image_path"]])), return_dict=True).loss
        total, count = total + float(loss) * n, count + n
    assert count == kinds["all"]["tokens"]
    assert math.isclose(sum(v["mean_nll"] * v["tokens"] for v in parts) / count, total / count, rel_tol=1e-4)
    # an untrained model over 151,936 ids is near ln(151936) = 11.9 nats everywhere
    assert 10 < kinds["all"]["mean_nll"] < 14 and kinds["all"]["top1"] < 0.05
    assert "digit 100s" in format_table(kinds)


@pytest.mark.slow
def test_no_matching_records_is_an_error(demo_data, tiny_base, capsys):
    argv = ["--checkpoint", tiny_base, "--json_path", demo_data["train_json"], "--image_root", demo_data["images"],
            "--modality", "no-such-modality"]
    assert main(argv) == 2
    assert "no records" in capsys.readouterr().err
