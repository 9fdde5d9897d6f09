"""Does the demo's randomly initialised, frozen resampler keep where things are?

    python benchmarks/study_resampler_locality.py [--preset demo] [--seed 42] [--images 8] [--spatial_init S]

The resampler turns the ViT's g x g patch features into sqrt(Q) x sqrt(Q) query features by
cross-attention. If query i attended to the patches under its own grid cell, the LLM would get a
spatial map; with random projections it may attend anywhere. For demo images (``data/demo``, or
random pixels when absent) this prints, per attention head, the attention-weighted mean distance
(in patches) from each query's own cell centre to the patches it attends to, against the same
distance under uniform attention; and the attention mass on the query's own 2 x 2 patch cell
against the uniform share. A ratio near 1 means the query features carry no position.

``--spatial_init S`` first applies the spatially-preserving initialisation that training's
``resampler_init: spatial`` uses (``Resampler.init_spatial``, there with S = 4): the learned
queries zero (so a query is its sin-cos position) and the query and key projections S times the
identity without bias, so a query's attention logits are S^2 * pos_i . (x_j + pos_j) / sqrt(d),
peaked where the key's position matches its own.
"""

import argparse
import glob
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--image_root", default=os.path.join(ROOT, "data", "demo", "sa_med2d", "images"))
    parser.add_argument("--spatial_init", type=float, default=None, metavar="S")
    args = parser.parse_args(argv)

    import paddle
    import paddle.nn.functional as F

    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset
    from paddlemix.models.qwen_vl.vision import resize_pos_embed
    from paddlemix.processors.image_processing import QWenVLImageProcessor

    paddle.seed(args.seed)  # the same construction as training's random start
    config = get_preset(args.preset)
    visual = QWenVLForCausalLM(config).transformer.visual
    visual.eval()
    if args.spatial_init is not None:
        visual.attn_pool.init_spatial(args.spatial_init)
    found = sorted(glob.glob(os.path.join(args.image_root, "*.png")))
    paths = found[:: max(1, len(found) // args.images)][: args.images]  # spread over the modalities
    if paths:
        pixels = paddle.to_tensor(np.asarray(QWenVLImageProcessor.from_config(config)(paths), dtype=np.float32))
    else:
        size = config.visual["image_size"]
        pixels = paddle.to_tensor(np.random.default_rng(0).standard_normal([args.images, 3, size, size]).astype(np.float32))

    with paddle.no_grad():
        x = visual.conv1(pixels).flatten(2).transpose([0, 2, 1])
        x = x + resize_pos_embed(visual.positional_embedding, x.shape[1])
        x = visual.transformer(visual.ln_pre(x))  # [N, L, width]
        pool = visual.attn_pool
        key_pos = resize_pos_embed(pool.pos_embed, x.shape[1])
        kv = pool.ln_kv(pool.kv_proj(x))
        q = (pool.ln_q(pool.query) + pool.pos_embed).unsqueeze(0).expand([x.shape[0], -1, -1])
        attn = pool.attn
        e, h = attn.embed_dim, attn.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        qh = (paddle.matmul(q, w[:, :e]) + b[:e]).reshape([x.shape[0], -1, h, e // h]).transpose([0, 2, 1, 3])
        kh = (paddle.matmul(kv + key_pos, w[:, e : 2 * e]) + b[e : 2 * e]).reshape([x.shape[0], -1, h, e // h]).transpose([0, 2, 1, 3])
        weights = F.softmax(paddle.matmul(qh, kh, transpose_y=True) / math.sqrt(e // h), axis=-1).numpy()  # [N, h, Q, L]

    queries, patches = weights.shape[2], weights.shape[3]
    qg, pg = math.isqrt(queries), math.isqrt(patches)
    cell = pg / qg
    qr, qc = np.divmod(np.arange(queries), qg)
    centre = np.stack([(qr + 0.5) * cell, (qc + 0.5) * cell], 1)  # [Q, 2] in patch units
    pr, pc = np.divmod(np.arange(patches), pg)
    where = np.stack([pr + 0.5, pc + 0.5], 1)  # [L, 2]
    distance = np.linalg.norm(centre[:, None] - where[None], axis=-1)  # [Q, L]
    own = (np.floor(where[None, :, 0] / cell) == qr[:, None]) & (np.floor(where[None, :, 1] / cell) == qc[:, None])
    uniform_distance = distance.mean()
    print(
        f"preset {args.preset}, seed {args.seed}: {len(paths) or args.images} {'demo' if paths else 'random'} images, "
        f"{patches} patches ({pg}x{pg}) -> {queries} queries ({qg}x{qg}), {h} head(s); "
        f"{'spatial init S=%g' % args.spatial_init if args.spatial_init is not None else 'random init'}"
    )
    for head in range(h):
        wh = weights[:, head]  # [N, Q, L]
        mean_distance = float((wh * distance[None]).sum(-1).mean())
        own_mass = float((wh * own[None]).sum(-1).mean())
        print(
            f"head {head}: attended distance {mean_distance:.2f} patches vs uniform {uniform_distance:.2f} "
            f"(ratio {mean_distance / uniform_distance:.2f}); mass on own cell {own_mass:.4f} vs uniform "
            f"{own.sum(1).mean() / patches:.4f} (x{own_mass / (own.sum(1).mean() / patches):.2f}); "
            f"max weight {wh.max(-1).mean():.4f} (uniform {1 / patches:.4f})"
        )


if __name__ == "__main__":
    main()
