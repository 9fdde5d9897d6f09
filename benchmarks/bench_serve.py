"""Serving throughput: batched (--max_batch 8) vs one-at-a-time (--max_batch 1), at 1 and 8 clients.

    python benchmarks/bench_serve.py [--checkpoint output/demo] [--requests 16] [--max_tokens 24]

Starts ``python -m paddlemix.tools.serve`` on 127.0.0.1 (a free port) once per mode, sends the same
``--requests`` VG questions about real demo images (each a different image and phrase) from 1 and
from 8 concurrent clients (each client sends its next request when its answer is back), in
``--rounds`` interleaved rounds, and prints the median requests/s, p50/p95 latency and mean batch
size per mode and client count, the batched / one-at-a-time throughput ratio at 8 clients (goal
>= 3), whether every answer (content and boxes) is the same in all runs, and, for scale, the
engine's own answers/s for 8 requests one call each vs one batch (no HTTP: the ceiling). Without
``--checkpoint`` a seeded, untrained checkpoint of the demo preset (the architecture
``scripts/demo.sh`` trains) is built in a temporary folder; its answers run to ``--max_tokens``.
Loopback only; a bounded number of requests; asserts nothing.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PHRASES = ("liver", "brain", "nucleus", "skull", "left kidney", "white matter", "spleen", "lesion")


def untrained_demo_checkpoint(path: str) -> str:
    import paddle

    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer

    paddle.seed(0)
    config = get_preset("demo")
    QWenVLForCausalLM(config).save_pretrained(path)
    QWenVLTokenizer(image_span=config.image_span).save_pretrained(path)
    return path


def demo_requests(n: int, work: str, max_tokens: int):
    from paddlemix.bird.demo_data import build_demo_set

    images = os.path.join(work, "demo_sa", "images")
    build_demo_set(os.path.join(work, "demo_sa"), max_images=n, seed=0, progress=False)
    names = sorted(os.listdir(images))
    bodies = []
    for k in range(n):
        with open(os.path.join(images, names[k % len(names)]), "rb") as handle:
            url = "data:image/png;base64," + base64.b64encode(handle.read()).decode()
        text = f"Where is the {PHRASES[k % len(PHRASES)]} in this image?"
        bodies.append({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}],
            "max_tokens": max_tokens})
    return bodies


def start_server(checkpoint: str, max_batch: int, window_ms: float):
    cmd = [sys.executable, "-m", "paddlemix.tools.serve", "--checkpoint", checkpoint, "--host", "127.0.0.1",
           "--port", "0", "--max_batch", str(max_batch), "--batch_window_ms", str(window_ms)]
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    for line in proc.stdout:
        if line.startswith("serving "):
            return proc, line.split(" on ")[1].split()[0]
    proc.wait()
    raise RuntimeError(f"the server did not start (exit {proc.returncode})")


def run_load(url: str, bodies, clients: int):
    """Send every body once from ``clients`` threads; (answers in body order, latencies, wall seconds)."""
    import httpx

    # One pooled client, as a real load generator keeps its connections (a new client per request
    # spends tens of milliseconds building a TLS context, which delays each client's next request).
    client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=clients))

    def one(body):
        start = time.perf_counter()
        reply = client.post(url + "/v1/chat/completions", json=body)
        reply.raise_for_status()
        message = reply.json()["choices"][0]["message"]
        return (message["content"], json.dumps(message["boxes"])), time.perf_counter() - start

    start = time.perf_counter()
    with client, ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    return [r[0] for r in results], [r[1] for r in results], wall


def engine_ceiling(checkpoint: str, bodies, rounds: int):
    """Answers/s of the engine alone (no HTTP), the first 8 requests one call each vs one batch of 8:
    the most batching can give the server."""
    from paddlemix.serving.chat_request import Limits, parse_chat_request
    from paddlemix.serving.engine import ChatEngine
    from paddlemix.models.qwen_vl.builder import load_model

    engine = ChatEngine(*load_model(checkpoint))
    jobs = [engine.prepare(parse_chat_request(json.dumps(b).encode(), Limits())) for b in bodies[:8]]
    engine.answer_jobs(jobs[:1])  # warm-up
    rates = {1: [], 8: []}
    for _ in range(rounds):
        start = time.perf_counter()
        for job in jobs:
            engine.answer_jobs([job])
        rates[1].append(len(jobs) / (time.perf_counter() - start))
        start = time.perf_counter()
        engine.answer_jobs(jobs)
        rates[8].append(len(jobs) / (time.perf_counter() - start))
    return {size: float(np.median(r)) for size, r in rates.items()}


def main(argv=None) -> int:
    import httpx

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="model to serve (default: an untrained demo-preset model)")
    p.add_argument("--requests", type=int, default=16, help="requests per run (each client count, each mode)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each setting, interleaved; the median is shown")
    p.add_argument("--max_tokens", type=int, default=24)
    p.add_argument("--batch_window_ms", type=float, default=10.0, help="the batched server's collection window")
    args = p.parse_args(argv)
    modes = (("one-at-a-time", 1), ("batched", 8))
    settings = [(mode, clients) for mode, _ in modes for clients in (1, 8)]
    with tempfile.TemporaryDirectory() as work:
        checkpoint = args.checkpoint or untrained_demo_checkpoint(os.path.join(work, "demo_untrained"))
        bodies = demo_requests(args.requests, work, args.max_tokens)
        servers = {}
        try:
            for mode, max_batch in modes:
                servers[mode] = start_server(checkpoint, max_batch, args.batch_window_ms)
                run_load(servers[mode][1], bodies[:2], 1)  # warm-up: first-call costs are not serving costs
            # Both servers stay up and the settings take turns, so a busy spell on a shared machine
            # hits every setting rather than one.
            runs = {setting: [] for setting in settings}
            for _ in range(args.rounds):
                for mode, clients in settings:
                    url = servers[mode][1]
                    before = httpx.get(url + "/health").json()["batches_run"]
                    got, latencies, wall = run_load(url, bodies, clients)
                    batches = httpx.get(url + "/health").json()["batches_run"] - before
                    runs[(mode, clients)].append((got, len(bodies) / wall, np.percentile(latencies, 50),
                                                  np.percentile(latencies, 95), len(bodies) / batches))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait()
        ceiling = engine_ceiling(checkpoint, bodies, args.rounds)
    print(f"checkpoint: {args.checkpoint or 'untrained demo preset'}; {args.requests} requests per run, "
          f"max_tokens {args.max_tokens}, median of {args.rounds} interleaved rounds")
    print(f"{'mode':<14} {'clients':>7} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'batch':>6}")
    rate = {}
    for setting in settings:
        rps, p50, p95, batch = (float(np.median([r[k] for r in runs[setting]])) for k in range(1, 5))
        rate[setting] = rps
        print(f"{setting[0]:<14} {setting[1]:>7} {rps:>7.2f} {p50:>7.2f} {p95:>7.2f} {batch:>6.1f}")
    ratio = rate[("batched", 8)] / rate[("one-at-a-time", 8)]
    print(f"throughput at 8 clients, batched / one-at-a-time: {ratio:.2f}x (goal >= 3x)")
    print(f"engine alone (no HTTP), 8 requests: {ceiling[1]:.2f} answers/s one call each, {ceiling[8]:.2f} in one "
          f"batch ({ceiling[8] / ceiling[1]:.2f}x: the most batching can give)")
    reference = runs[("one-at-a-time", 1)][0][0]
    answers = [r[0] for setting in settings for r in runs[setting]]
    differing = sorted({k for got in answers for k, (a, b) in enumerate(zip(got, reference)) if a != b})
    print(f"identical answers (content and boxes) in all {len(answers)} runs: {not differing}"
          + ("" if not differing else f"; requests that differ: {differing}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
