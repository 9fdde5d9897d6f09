"""Serve a checkpoint: OpenAI-compatible chat completions that return boxes, plus a web page.

    python -m paddlemix.tools.serve --checkpoint output/demo [--host 127.0.0.1] [--port 8000]
        [--max_batch 8] [--image_root DIR] [--api_key KEY] [--examples_dir DIR]

Binds 127.0.0.1 unless told otherwise. Prints ``serving MODEL on http://HOST:PORT`` once the
socket is bound (``--port 0`` picks a free port), then answers until interrupted.
"""

import argparse
import ipaddress
import os
import socket
import sys


def parse_args(argv=None):
    from paddlemix.serving.chat_request import Limits

    d = Limits()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="model directory written by training or conversion")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--max_batch", type=int, default=8, help="requests answered in one batch at most (1: one at a time)")
    p.add_argument("--batch_window_ms", type=float, default=10.0,
                   help="how long the first queued request waits for others to join its batch")
    p.add_argument("--regroup_ms", type=float, default=50.0,
                   help="that wait when the request queued during the previous batch (see paddlemix/serving/engine.py)")
    p.add_argument("--image_root", default=None, help="serve image_url file paths that resolve inside this folder")
    p.add_argument("--api_key", default=os.environ.get("BIRD_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $BIRD_API_KEY; none if unset)")
    p.add_argument("--examples_dir", default=None, help="PNG/JPEG images the web page offers as examples")
    p.add_argument("--model_name", default=None, help="model id in replies (default: the checkpoint folder's name)")
    p.add_argument("--max_tokens", type=int, default=d.max_tokens, help="largest max_tokens a request may ask for")
    p.add_argument("--max_image_pixels", type=int, default=d.max_image_pixels, help="width*height limit of an image")
    p.add_argument("--max_request_mb", type=float, default=d.max_request_bytes / 2**20, help="request body limit")
    p.add_argument("--dtype", default=None, help="load dtype, e.g. bfloat16 on GPU (default: as saved)")
    p.add_argument("--device", default=None, help="paddle device, e.g. cpu or gpu:0 (default: paddle's)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampled answers")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def main(argv=None) -> int:
    args = parse_args(argv)
    import paddle
    import uvicorn

    from paddlemix.serving.app import build_app
    from paddlemix.serving.chat_request import Limits
    from paddlemix.serving.engine import ChatEngine
    from paddlemix.models.qwen_vl.builder import load_model

    if args.image_root is not None and not os.path.isdir(args.image_root):
        raise NotADirectoryError(f"--image_root {args.image_root} is not a directory")
    if not is_loopback(args.host) and args.api_key is None:
        print(f"warning: serving on {args.host} without --api_key; anyone who can reach it can use it", file=sys.stderr)
    if args.device:
        paddle.set_device(args.device)
    paddle.seed(args.seed)
    model, tokenizer, image_processor = load_model(args.checkpoint, args.dtype)  # bad input: run() says so
    limits = Limits(max_request_bytes=int(args.max_request_mb * 2**20), max_image_pixels=args.max_image_pixels,
                    max_tokens=args.max_tokens)
    engine = ChatEngine(model, tokenizer, image_processor, max_batch=args.max_batch,
                        window_s=args.batch_window_ms / 1000.0, regroup_s=args.regroup_ms / 1000.0).start()
    model_id = args.model_name or os.path.basename(os.path.normpath(args.checkpoint))
    app = build_app(engine, model_id, limits, image_root=args.image_root, api_key=args.api_key,
                    examples_dir=args.examples_dir)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise OSError(f"cannot bind {args.host}:{args.port}: {exc}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model_id} on http://{shown}:{port} (max_batch {args.max_batch})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
