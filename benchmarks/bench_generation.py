"""Generation throughput of Qwen-VL at batch 1 and batch 8: generate_batch's greedy loop with the KV
cache ("lean"), PaddleNLP's greedy_search with the cache, and PaddleNLP's without it.

    python benchmarks/bench_generation.py [--preset tiny] [--new-tokens 32] [--prompt-tokens 40] [--repeats 3]

Prints new tokens per second for each setting and the ratios (lean vs PaddleNLP, cache speed-up,
batching gain). Random weights never stop early, so every row generates ``--new-tokens``: the
numbers measure the machinery (cache, padding, image encoding, per-step work), not quality. Each
setting runs ``--repeats`` times, the settings in turn, and the fastest run counts (a shared
machine's slow moments hit every setting alike).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_prompts(config, batch, prompt_tokens, rng):
    """Chat-like prompts, each with one image slot, of slightly different lengths (left padding)."""
    span = config.image_span
    prompts = []
    for i in range(batch):
        path = list(f"images/sample_{i}.png".encode())
        image = [config.img_start_id] + path + [config.img_pad_id] * (span - len(path)) + [config.img_end_id]
        text = rng.integers(100, 150000, prompt_tokens + i % 4).tolist()
        prompts.append([151644] + image + text + [151645, 198, 151644, 77091, 198])
    return prompts


def paddlenlp_greedy(model, prompts, pixels, new_tokens, use_cache):
    """The same left-padded batch through PaddleNLP's ``generate`` (greedy_search)."""
    import paddle

    pad = model.config.pad_token_id
    width = max(map(len, prompts))
    ids = paddle.to_tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = paddle.to_tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with paddle.no_grad():
        out, _ = model.generate(
            input_ids=ids, attention_mask=mask, images=paddle.to_tensor(pixels), max_new_tokens=new_tokens,
            decode_strategy="greedy_search", eos_token_id=[151645, 151643], pad_token_id=pad, use_cache=use_cache,
        )
    return [row for row in out.numpy().tolist()]


def timed_generation(model, prompts, pixels, new_tokens, setting):
    from paddlemix.models.qwen_vl.generation import generate_batch

    start = time.perf_counter()
    if setting == "lean":
        outputs = generate_batch(model, None, prompts, pixels, max_new_tokens=new_tokens)
    else:
        outputs = paddlenlp_greedy(model, prompts, pixels, new_tokens, use_cache=setting == "paddlenlp")
    elapsed = time.perf_counter() - start
    return sum(len(o) for o in outputs), elapsed


SETTINGS = {"lean": "lean greedy, cache", "paddlenlp": "PaddleNLP greedy, cache", "nocache": "PaddleNLP, no cache"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=40)
    parser.add_argument("--batch-sizes", type=int, nargs=2, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import paddle

    from paddlemix.models.qwen_vl.configuration import get_preset
    from paddlemix.models.qwen_vl.modeling import QWenVLForCausalLM

    paddle.seed(0)
    config = get_preset(args.preset)
    model = QWenVLForCausalLM(config)
    model.eval()
    rng = np.random.default_rng(0)
    size = config.visual["image_size"]
    print(
        f"preset {args.preset}: hidden {config.hidden_size}, {config.num_hidden_layers} layers, vocab "
        f"{config.vocab_size}, image span {config.image_span}; {args.new_tokens} new tokens, "
        f"prompt ~{config.image_span + args.prompt_tokens + 6} tokens; "
        f"paddle threads {paddle.get_flags('FLAGS_paddle_num_threads')['FLAGS_paddle_num_threads']}"
    )

    rates = {}
    warm = build_prompts(config, 1, args.prompt_tokens, rng)
    for setting in SETTINGS:
        timed_generation(model, warm, rng.standard_normal([1, 3, size, size]).astype(np.float32), 2, setting)
    for batch in args.batch_sizes:
        prompts = build_prompts(config, batch, args.prompt_tokens, rng)
        pixels = rng.standard_normal([batch, 3, size, size]).astype(np.float32)
        best = {}
        for _ in range(args.repeats):
            for setting in SETTINGS:
                tokens, seconds = timed_generation(model, prompts, pixels, args.new_tokens, setting)
                best[setting] = min(best.get(setting, (tokens, seconds)), (tokens, seconds), key=lambda r: r[1])
        for setting, label in SETTINGS.items():
            tokens, seconds = best[setting]
            rates[batch, setting] = tokens / seconds
            print(
                f"batch {batch:2d}  {label:24s} {tokens:4d} tokens in {seconds:6.2f} s"
                f"  -> {rates[batch, setting]:8.1f} tokens/s"
            )
    small, large = args.batch_sizes
    for batch in args.batch_sizes:
        print(
            f"batch {batch}: lean / PaddleNLP greedy {rates[batch, 'lean'] / rates[batch, 'paddlenlp']:.2f}x, "
            f"KV-cache speed-up (PaddleNLP) {rates[batch, 'paddlenlp'] / rates[batch, 'nocache']:.2f}x"
        )
    for setting, label in SETTINGS.items():
        print(f"batch {large} vs batch {small} throughput, {label}: {rates[large, setting] / rates[small, setting]:.2f}x")

if __name__ == "__main__":
    main()
