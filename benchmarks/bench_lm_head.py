"""The LM head's cost on CPU: Paddle's plain matmul + softmax cross-entropy vs the fused NumPy head.

    python benchmarks/bench_lm_head.py head [--rows 100 200 400] [--hidden 64 128] [--repeats 5]
    python benchmarks/bench_lm_head.py step [--medgrit_dir data/demo/medgrit --image_root ...] [--steps 10]
    python benchmarks/bench_lm_head.py exp [--rows 223] [--repeats 5]
    python benchmarks/bench_lm_head.py adamw [--active_rows 3000] [--steps 20]
    python benchmarks/bench_lm_head.py embedding [--ids 1200] [--repeats 12]

head  forward + backward of the 151,936-column head and its mean cross-entropy over ROWS labelled
      positions, both ways, in GFLOP/s (6 * rows * hidden * vocab multiply-adds counted as 2 FLOPs
      each: the logits and the two gradient matmuls), beside two plain fp32 matmuls on the same
      cores: a square one (1024 x 1024 x 1024, Paddle's and NumPy's, the faster one) and one of the
      head's own shape (NumPy's [rows, hidden] x [hidden, 151,936]). NumPy's are timed before any
      Paddle kernel has run: Paddle's OpenMP workers keep spinning for a while after each kernel
      and, while they do, take cores from NumPy's BLAS threads (measured 67 against 155 GFLOP/s
      for the same square matmul right after a Paddle one).
step  the demo's training step (the demo config's preset, freezing, batch size, max length and
      AdamW settings; real batches of the demo set, in the order of the demo's seed): plain (Paddle's
      head, AdamW and PaddleNLP's decoder ops), the fused head, + the image feature cache,
      + CpuAdamW, + the decoder's CPU roads (SquareRMSNorm and its NumPy norm, the head-expanded
      mask, the NumPy rotary embedding and attention core) and the sparse embedding gradient, + the
      LM head's AdamW update deferred to a background thread (CpuAdamW.defer): the demo's step now.
      Blocks of steps alternate so machine drift hits all; prints steps/s, ratios to plain and
      labelled positions per batch.
exp   the head's elementwise pass over ROWS x 151,936 logits: NumPy's exp + row sums against
      cpu_kernels.exp_and_row_sums (one thread and the demo's threads), ns per value; then both
      exps' largest error from float64 (ulp and relative) over 25 M values in [-87, 88].
adamw CpuAdamW.step on the demo's two 151,936 x 64 matrices (the LM head, every row with a gradient;
      the token embedding, ACTIVE_ROWS rows with one) and 40 small ones, with the global-norm clip:
      the NumPy block update against the Numba kernel on one thread and on the demo's threads;
      median ms per step.
embedding the token embedding's forward + backward for IDS ids (a demo batch: 4 x ~300) into the
      151,936 x 64 table, its gradient dense (Paddle's default: a zero-filled table) and sparse
      (SelectedRows, what training on one CPU process uses with CpuAdamW); median ms.
Prints times and ratios; asserts nothing. Run with the demo's threads (``OMP_NUM_THREADS=$(nproc)``).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = os.path.join(ROOT, "paddlemix", "config", "BiRD", "sft_argument_demo.json")


def plain_head_loss(states, weight, targets, *unused):
    import paddle
    import paddle.nn.functional as F

    return F.cross_entropy(paddle.matmul(states, weight).astype("float32"), targets.reshape([-1, 1]), reduction="mean")


def best_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_matmul_gflops(shape_a, shape_b, repeats):
    """NumPy's fp32 matmul of these shapes in GFLOP/s (run it before any Paddle kernel: see above)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape_a).astype(np.float32)
    b = rng.standard_normal(shape_b).astype(np.float32)
    return 2 * shape_a[0] * shape_a[1] * shape_b[1] / best_time(lambda: a @ b, repeats) / 1e9


def paddle_square_gflops(repeats):
    import paddle

    pa = paddle.to_tensor(np.random.default_rng(0).standard_normal([1024, 1024]).astype(np.float32))
    return 2 * 1024**3 / best_time(lambda: paddle.matmul(pa, pa).numpy(), repeats) / 1e9


def bench_head(args):
    import paddle

    from paddlemix.models.qwen_vl.linear_cross_entropy import linear_cross_entropy

    vocab = 151936
    # Every NumPy reference first, while no Paddle worker thread exists yet.
    square_numpy = numpy_matmul_gflops([1024, 1024], [1024, 1024], args.repeats)
    shaped = {(h, r): numpy_matmul_gflops([r, h], [h, vocab], args.repeats) for h in args.hidden for r in args.rows}
    square_paddle = paddle_square_gflops(args.repeats)
    best = max(square_numpy, square_paddle)
    print(f"plain fp32 matmul 1024^3: paddle {square_paddle:.1f} GFLOP/s, numpy {square_numpy:.1f} GFLOP/s")
    rng = np.random.default_rng(0)
    for hidden in args.hidden:
        weight = paddle.to_tensor((rng.standard_normal([hidden, vocab]) * 0.02).astype(np.float32), stop_gradient=False)
        for rows in args.rows:
            states = paddle.to_tensor(rng.standard_normal([rows, hidden]).astype(np.float32), stop_gradient=False)
            targets = paddle.to_tensor(rng.integers(0, vocab, rows))

            def step(fn):
                fn(states, weight, targets).backward()
                states.clear_gradient()
                weight.clear_gradient()

            flops = 6 * rows * hidden * vocab
            plain = best_time(lambda: step(plain_head_loss), args.repeats)
            fused = best_time(lambda: step(linear_cross_entropy), args.repeats)
            print(
                f"hidden {hidden:4d} rows {rows:4d}: plain {plain * 1e3:7.1f} ms ({flops / plain / 1e9:5.1f} GFLOP/s)  "
                f"fused {fused * 1e3:7.1f} ms ({flops / fused / 1e9:5.1f} GFLOP/s)  speed-up {plain / fused:.2f}x  "
                f"square matmul / fused throughput {best / (flops / fused / 1e9):.2f}x  "
                f"head-shaped matmul ({shaped[hidden, rows]:.1f} GFLOP/s) / fused {shaped[hidden, rows] / (flops / fused / 1e9):.2f}x"
            )


def bench_exp(args):
    from paddlemix.models.qwen_vl.cpu_kernels import HAVE_NUMBA, cpu_threads, exp_and_row_sums

    rng = np.random.default_rng(0)
    for rows in args.rows:
        logits = (rng.standard_normal([rows, 151936]) * 4).astype(np.float32)
        work = np.empty_like(logits)
        sums = np.empty(rows, dtype=np.float32)

        def numpy_pass():
            np.exp(logits, out=work)
            np.sum(work, axis=1, out=sums)

        def kernel_pass(threads):
            np.copyto(work, logits)
            exp_and_row_sums(work, sums, threads)

        copy = best_time(lambda: np.copyto(work, logits), args.repeats)  # taken off the kernel's time
        numpy_seconds = best_time(numpy_pass, args.repeats)
        line = f"rows {rows}: numpy exp + sum {numpy_seconds / logits.size * 1e9:.3f} ns/value"
        for threads in sorted({1, cpu_threads()}):
            seconds = best_time(lambda: kernel_pass(threads), args.repeats) - copy
            line += (
                f"  kernel ({'numba' if HAVE_NUMBA else 'numpy fallback'}, {threads} thread(s)) "
                f"{seconds / logits.size * 1e9:.3f} ns/value = {numpy_seconds / seconds:.2f}x faster"
            )
        print(line)
    # accuracy against float64 on values spread over the kernel's whole range
    sweep = np.concatenate([rng.uniform(-87, 88, 20_000_000), rng.uniform(-0.4, 0.4, 5_000_000)]).astype(np.float32)
    want = np.exp(sweep.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    mine = sweep.reshape(1, -1).copy()
    exp_and_row_sums(mine, np.empty(1, dtype=np.float32))
    for name, got in (("numpy exp", np.exp(sweep)), ("kernel", mine[0])):
        error = np.abs(got - want)
        print(f"{name}: at most {np.max(error / ulp):.2f} ulp, {np.max(error / want):.2e} relative from float64 "
              f"over {sweep.size:,} values in [-87, 88]")


def bench_adamw(args):
    import paddle

    from paddlemix.models.qwen_vl import cpu_adamw
    from paddlemix.models.qwen_vl.cpu_kernels import HAVE_NUMBA

    paddle.seed(0)
    embedding = paddle.create_parameter([151936, 64], "float32")
    params = [embedding, paddle.create_parameter([64, 151936], "float32")]
    params += [paddle.create_parameter([64, 192], "float32") for _ in range(40)]
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(p.shape).astype(np.float32) * 1e-3 for p in params]
    grads[0][rng.permutation(151936)[args.active_rows :]] = 0.0
    grads = [paddle.to_tensor(g) for g in grads]

    def per_step(numba, threads):
        opt = cpu_adamw.CpuAdamW(learning_rate=3e-3, parameters=params, beta2=0.95, weight_decay=0.0,
                                 grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
        saved = cpu_adamw.HAVE_NUMBA, cpu_adamw.cpu_threads
        cpu_adamw.HAVE_NUMBA, cpu_adamw.cpu_threads = numba, (lambda: threads)
        try:
            times = []
            for _ in range(args.steps + 2):
                for p, g in zip(params, grads):
                    p._set_grad_ivar(g)
                start = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - start)
                opt.clear_grad()
        finally:
            cpu_adamw.HAVE_NUMBA, cpu_adamw.cpu_threads = saved
        return float(np.median(times[2:]))

    numpy_seconds = per_step(False, 1)
    line = f"AdamW step, NumPy blocks {numpy_seconds * 1e3:.1f} ms"
    if HAVE_NUMBA:
        from paddlemix.models.qwen_vl.cpu_kernels import cpu_threads

        for threads in sorted({1, cpu_threads()}):
            seconds = per_step(True, threads)
            line += f"  Numba kernel, {threads} thread(s) {seconds * 1e3:.1f} ms = {numpy_seconds / seconds:.2f}x faster"
    print(line)


def bench_embedding(args):
    import paddle

    weight = paddle.create_parameter([151936, 64], "float32")
    ids = paddle.to_tensor(np.random.default_rng(0).integers(0, 5000, (1, args.ids)))
    line = f"embedding of {args.ids} ids, forward + backward:"
    medians = {}
    for sparse in (False, True):
        times = []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            paddle.nn.functional.embedding(ids, weight, sparse=sparse).sum().backward()
            times.append(time.perf_counter() - start)
            weight.clear_gradient(False)  # freed, as CpuAdamW.clear_grad does
        medians[sparse] = float(np.median(times[2:]))
        line += f"  {'sparse' if sparse else 'dense'} {medians[sparse] * 1e3:.2f} ms"
    print(line + f"  = {medians[False] / medians[True]:.0f}x")


def demo_batches(args, config, tokenizer, image_processor, count):
    import paddle

    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.datasets.sft import SFTCollator, SFTDataset

    records, _ = load_medgrit([os.path.join(args.medgrit_dir, "train.json")], args.image_root)
    rng = np.random.default_rng(config["seed"])
    size = config["per_device_train_batch_size"]
    # Twice the records needed: the ones longer than max_length are left out by the dataset.
    chosen = [records[i] for i in rng.permutation(len(records))[: 2 * count * size]]
    dataset = SFTDataset(chosen, tokenizer, image_processor, config["max_length"], show_progress=False)
    collate = SFTCollator(tokenizer.pad_token_id)
    batches = []
    for start in range(0, min(len(dataset) - size + 1, count * size), size):
        batch = collate([dataset[i] for i in range(start, start + size)])
        batches.append({k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()})
    return batches


def use_decoder_fast_paths(model, fast: bool) -> None:
    """Switch the decoder between this repository's CPU roads (SquareRMSNorm's NumPy norm, the
    head-expanded mask of QWenVLModel.get_masks, the NumPy rotary embedding and attention core) and
    PaddleNLP's own (six Paddle kernels a norm, the broadcast [B, 1, S, S] mask, Paddle's rotary,
    matmul and softmax kernels)."""
    import types

    from paddlenlp.transformers.qwen.modeling import QWenAttention, QWenModel, QWenRMSNorm

    from paddlemix.models.qwen_vl.cpu_attention import CpuQWenAttention
    from paddlemix.models.qwen_vl.modeling import SquareRMSNorm

    for layer in model.sublayers():
        if isinstance(layer, QWenRMSNorm):
            layer.__class__ = SquareRMSNorm if fast else QWenRMSNorm
        elif isinstance(layer, QWenAttention):
            layer.__class__ = CpuQWenAttention if fast else QWenAttention
    decoder = model.transformer
    if fast:
        decoder.__dict__.pop("get_masks", None)
    else:
        decoder.get_masks = types.MethodType(QWenModel.get_masks, decoder)


def bench_step(args):
    import paddle

    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset, modeling
    from paddlemix.models.qwen_vl.cpu_adamw import CpuAdamW
    from paddlemix.tools.supervised_finetune import freeze_vision
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer
    from paddlemix.models.qwen_vl.vision import FrozenFeatureCache
    from paddlemix.processors.image_processing import QWenVLImageProcessor

    with open(CONFIG) as f:
        config = json.load(f)
    paddle.seed(config["seed"])
    model_config = get_preset(config["model_preset"])
    model = QWenVLForCausalLM(model_config)
    if config["freeze_vision"]:
        freeze_vision(model, train_resampler=config["train_resampler"])
    model.train()
    tokenizer = QWenVLTokenizer(image_span=model_config.image_span)
    batches = demo_batches(args, config, tokenizer, QWenVLImageProcessor.from_config(model_config), args.steps)

    def optimizer(cls):  # one per variant, each with its own moments, on the same weights
        return cls(
            learning_rate=config["learning_rate"], beta2=config["adam_beta2"], weight_decay=config["weight_decay"],
            parameters=[p for p in model.parameters() if not p.stop_gradient],
            grad_clip=paddle.nn.ClipGradByGlobalNorm(config["max_grad_norm"]),
        )

    labelled = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    fused = modeling.linear_cross_entropy
    cache = FrozenFeatureCache(2**30) if config.get("image_feature_cache_mb", 0) > 0 else None
    # name: (head, feature cache, optimizer, decoder fast paths); the last is the demo's step now
    variants = {
        "plain": (plain_head_loss, None, optimizer(paddle.optimizer.AdamW), False),
        "fused": (fused, None, optimizer(paddle.optimizer.AdamW), False),
    }
    if cache is not None:
        variants["fused+cache"] = (fused, cache, optimizer(paddle.optimizer.AdamW), False)
    variants["+numpy_adamw"] = (fused, cache, optimizer(CpuAdamW), False)
    variants["+decoder_ops"] = (fused, cache, optimizer(CpuAdamW), True)
    deferred = optimizer(CpuAdamW)
    deferred.defer(model.deferrable_parameters())  # as the trainer does
    variants["+deferred_head"] = (fused, cache, deferred, True)

    def run(head, feature_cache, opt, fast):
        modeling.linear_cross_entropy = head
        model.transformer.image_feature_cache = feature_cache
        use_decoder_fast_paths(model, fast)
        model.transformer.wte._sparse = fast  # training's sparse embedding gradient (with CpuAdamW)
        start = time.perf_counter()
        for batch in batches:
            loss = model(**batch, use_cache=False, return_dict=True).loss
            loss.backward()
            opt.step()
            opt.clear_grad()
        if isinstance(opt, CpuAdamW):
            opt.finish_updates()  # the last deferred update counts too
        return time.perf_counter() - start

    print(
        f"demo step: preset {config['model_preset']}, batch {config['per_device_train_batch_size']}, "
        f"max_length {config['max_length']}, {len(batches)} batches, labelled positions per batch "
        f"{min(labelled)}..{max(labelled)} (mean {np.mean(labelled):.0f}); threads {os.environ.get('OMP_NUM_THREADS', '1')}"
    )
    print("variants, each adding to the one before from fused+cache on: " + ", ".join(variants))
    # Warm-up (every variant once); it also fills the image feature cache, so the cached blocks time a
    # later epoch (the demo's 800 steps compute 364 images' features and reuse them 2,836 times).
    for variant in variants.values():
        run(*variant)
    totals = dict.fromkeys(variants, 0.0)
    try:
        for _ in range(args.rounds):
            for name, variant in variants.items():
                seconds = run(*variant)
                totals[name] += seconds
                print(f"  {name}: {len(batches) / seconds:.3f} steps/s")
    finally:
        modeling.linear_cross_entropy = fused
        model.transformer.image_feature_cache = None
        use_decoder_fast_paths(model, True)
        model.transformer.wte._sparse = False
    steps = args.rounds * len(batches)
    print(", ".join(f"{name} {steps / seconds:.3f} steps/s" for name, seconds in totals.items()))
    print(", ".join(f"{name} / plain {totals['plain'] / totals[name]:.2f}x" for name in totals if name != "plain"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    head = sub.add_parser("head")
    head.add_argument("--rows", type=int, nargs="+", default=[100, 200, 400])
    head.add_argument("--hidden", type=int, nargs="+", default=[64, 128])
    head.add_argument("--repeats", type=int, default=5)
    step = sub.add_parser("step")
    step.add_argument("--medgrit_dir", default=os.path.join(ROOT, "data", "demo", "medgrit"))
    step.add_argument("--image_root", default=os.path.join(ROOT, "data", "demo", "sa_med2d", "images"))
    step.add_argument("--steps", type=int, default=10, help="batches per timed block")
    step.add_argument("--rounds", type=int, default=2, help="blocks per variant")
    exp = sub.add_parser("exp")
    exp.add_argument("--rows", type=int, nargs="+", default=[223])
    exp.add_argument("--repeats", type=int, default=5)
    adamw = sub.add_parser("adamw")
    adamw.add_argument("--active_rows", type=int, default=3000, help="embedding rows with a gradient")
    adamw.add_argument("--steps", type=int, default=20)
    embedding = sub.add_parser("embedding")
    embedding.add_argument("--ids", type=int, default=1200)
    embedding.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args(argv)
    {"head": bench_head, "step": bench_step, "exp": bench_exp, "adamw": bench_adamw,
     "embedding": bench_embedding}[args.what](args)


if __name__ == "__main__":
    main()
