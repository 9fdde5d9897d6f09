"""Serving test helpers: tiny checkpoints (a random one and a scripted one), a server process, images."""

import base64
import io
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The scripted model's one answer. Every token in it is distinct (note " ," and ","), so a model
# that maps each token to the next one writes exactly this.
SCRIPTED_ANSWER = "<ref>liver</ref><box>(12 ,34),(567,890)</box>"
SCRIPTED_LOGIT = 12.0  # the logit of the scripted next token; every other logit is exactly 0


def tiny_config():
    from paddlemix.models.qwen_vl import get_preset

    return get_preset("tiny", num_hidden_layers=1, visual={"layers": 1, "image_size": 56, "n_queries": 49})


def save_checkpoint(model, tokenizer, path):
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


def build_scripted_model(tokenizer):
    """A tiny Qwen-VL whose every block adds nothing to the residual stream, so the last hidden state
    is the current token's embedding: a bigram table. Embeddings of the chain "\\n" -> SCRIPTED_ANSWER
    -> <|im_end|> are one-hot and the LM head maps each to its successor with logit SCRIPTED_LOGIT."""
    import paddle

    from paddlemix.models.qwen_vl import QWenVLForCausalLM

    paddle.seed(11)
    config = tiny_config()
    model = QWenVLForCausalLM(config)
    chain = tokenizer.encode_text("\n") + tokenizer.encode_text(SCRIPTED_ANSWER) + [tokenizer.im_end_id]
    assert len(set(chain[:-1])) == len(chain) - 1, "the scripted chain needs distinct tokens"
    hidden, vocab = config.hidden_size, config.vocab_size
    wte = np.zeros([vocab, hidden], dtype=np.float32)
    head = np.zeros([hidden, vocab], dtype=np.float32)
    # RMSNorm turns the one-hot embedding into sqrt(H / (1 + H * eps)) * one-hot.
    norm = np.sqrt(hidden / (1.0 + hidden * config.layer_norm_epsilon))
    for k, (token, following) in enumerate(zip(chain, chain[1:])):
        wte[token, k] = 1.0
        head[k, following] = SCRIPTED_LOGIT / norm
    params = dict(model.named_parameters())
    params["transformer.wte.weight"].set_value(paddle.to_tensor(wte))
    params["lm_head.weight"].set_value(paddle.to_tensor(head))
    for name, param in params.items():
        if name.endswith("attn.c_proj.weight") or name.endswith("mlp.c_proj.weight"):
            param.set_value(paddle.zeros(param.shape, dtype=param.dtype))
    return model


class Server:
    """``python -m paddlemix.tools.serve`` on 127.0.0.1 and a free port, stopped by ``close()``."""

    def __init__(self, checkpoint, *extra, timeout=180):
        cmd = [sys.executable, "-m", "paddlemix.tools.serve", "--checkpoint", checkpoint, "--port", "0", *extra]
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                        env=env)
        self.log = []
        deadline = time.monotonic() + timeout
        self.url = None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.log.append(line)
            if line.startswith("serving "):
                self.url = line.split(" on ")[1].split()[0]
                break
        if self.url is None:
            self.close()
            raise RuntimeError("the server did not start:\n" + "".join(self.log[-40:]))

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def png_data_url(array) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(text, data_url):
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": text}]}
