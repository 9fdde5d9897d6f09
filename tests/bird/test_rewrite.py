"""The optional paraphrase step against a fake OpenAI-compatible server on 127.0.0.1."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paddlemix.bird.construct.build import build_medgrit
from paddlemix.bird.construct.paraphrase import ChatRewriter, keeps_markup, rewrite_answers
from paddlemix.bird.tasks import TASKS
from paddlemix.tools import build_medgrit as build_cli

from tests.bird.sa_med2d_tree import make_sa_root


class FakeChat:
    """A chat-completions server whose reply depends on ``mode``; it records every request."""

    def __init__(self):
        self.mode = "keep"
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, dict(self.headers), body))
                text = body["messages"][-1]["content"]
                if fake.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                if fake.mode == "keep":
                    reply = "In other words: " + text
                elif fake.mode == "move_box":
                    reply = re.sub(r"\((\d+),", lambda m: f"({int(m.group(1)) + 1},", text, count=1)
                else:  # "drop_markup"
                    reply = re.sub(r"<box>.*?</box>", "", text) or "nothing"
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def fake():
    with FakeChat() as server:
        yield server


@pytest.fixture
def sa_root(tmp_path):
    make_sa_root(tmp_path)
    return tmp_path


def answers(out_dir):
    records = json.loads((out_dir / "train.json").read_text())
    for task in TASKS:
        records += json.loads((out_dir / f"test_{task}.json").read_text())
    return records


def test_paraphrases_that_keep_markup_replace_gc_and_mii_answers(sa_root, fake):
    rewriter = ChatRewriter(fake.url, "fake-model", api_key="k-123")
    stats = build_medgrit(str(sa_root), str(sa_root / "out"), min_mask_area=1, rewriter=rewriter, progress=False)
    records = answers(sa_root / "out")
    n = sum(len(r["conversations"]) for r in records if r["task"] in ("GC", "MII"))
    assert stats["rewrite"] == {"rewritten": n, "rejected": 0, "failed": 0}
    for rec in records:
        for _, answer in rec["conversations"]:
            assert answer.startswith("In other words: ") == (rec["task"] in ("GC", "MII"))
    path, headers, body = fake.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer k-123"
    assert body["model"] == "fake-model" and body["messages"][0]["role"] == "system"
    assert len(fake.requests) == n


@pytest.mark.parametrize("mode,outcome", [("move_box", "rejected"), ("drop_markup", "rejected"), ("error", "failed")])
def test_bad_paraphrases_and_failures_keep_the_original(sa_root, tmp_path, fake, mode, outcome):
    plain = build_medgrit(str(sa_root), str(tmp_path / "plain"), min_mask_area=1, progress=False)
    fake.mode = mode
    stats = build_medgrit(str(sa_root), str(tmp_path / "rw"), min_mask_area=1, progress=False,
                          rewriter=ChatRewriter(fake.url + "/chat/completions", "m", timeout=5))
    assert plain["rewrite"] is None
    records = answers(tmp_path / "rw")
    with_boxes = sum(len(r["conversations"]) for r in records if r["task"] == "MII")
    total = sum(len(r["conversations"]) for r in records if r["task"] in ("GC", "MII"))
    if mode == "error":
        assert stats["rewrite"] == {"rewritten": 0, "rejected": 0, "failed": total}
    else:
        # GC answers carry no markup, so only dropping or moving boxes in MII answers is caught.
        assert stats["rewrite"]["rejected"] == with_boxes
        assert stats["rewrite"]["rewritten"] == total - with_boxes
    for name in ["train.json"] + [f"test_{t}.json" for t in TASKS]:
        before = json.loads((tmp_path / "plain" / name).read_text())
        after = json.loads((tmp_path / "rw" / name).read_text())
        for a, b in zip(before, after, strict=True):
            if a["task"] == "MII" or mode == "error":
                assert a == b


def test_keeps_markup():
    liver, spleen = "<ref>liver</ref><box>(1,2),(30,40)</box>", "<ref>spleen</ref><box>(5,6),(70,80)</box>"
    original = f"This CT slice shows {liver} and {spleen}."
    assert keeps_markup(original, f"Seen: {liver.replace('(1,2)', '(1, 2)')}, {spleen}")
    assert not keeps_markup(original, f"{spleen} and {liver}")
    assert not keeps_markup(original, f"{liver.replace('40', '41')} {spleen}")
    assert not keeps_markup(original, f"{liver.replace('liver', 'the liver')} {spleen}")
    assert not keeps_markup(original, original + " <box>(1,2),(3,4)</box>")
    assert not keeps_markup(original, "   ")
    assert keeps_markup("The liver is small.", "A small liver.")
    assert not keeps_markup("The liver is small.", "A small <ref>liver</ref>.")


def test_rewrite_answers_with_any_callable():
    records = [
        {"task": "GC", "conversations": [["q", "one"], ["q", "two"]]},
        {"task": "RO", "conversations": [["q", "liver"]]},
        {"task": "MII", "conversations": [["q", "<ref>a</ref><box>(1,2),(3,4)</box>"]]},
    ]

    def rewrite(text):
        if text == "two":
            raise TimeoutError("slow")
        return text.upper()

    counts = rewrite_answers(records, rewrite, workers=2)
    assert counts == {"rewritten": 1, "rejected": 1, "failed": 1}
    answers = [a for r in records for _, a in r["conversations"]]
    assert answers == ["ONE", "two", "liver", "<ref>a</ref><box>(1,2),(3,4)</box>"]


def test_cli_rewrite_flags(sa_root, fake, capsys):
    out = sa_root / "cli"
    argv = ["--sa_root", str(sa_root), "--out_dir", str(out), "--no_progress", "--min_mask_area", "1",
            "--rewrite_endpoint", fake.url, "--rewrite_model", "m", "--rewrite_api_key_env", "NO_SUCH_VARIABLE_SET"]
    assert build_cli.main(argv) == 0
    assert json.loads((out / "stats.json").read_text())["rewrite"]["rewritten"] > 0
    assert "Authorization" not in fake.requests[0][1]
    with pytest.raises(SystemExit):
        build_cli.main(argv[:-4])
