"""The HTTP side: OpenAI-style routes, the web page and its examples, keys and size limits (Starlette).

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``, ``GET /`` (the page),
``GET /examples`` and ``GET /examples/{name}`` (images offered on the page). Every error is a JSON
body ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status (5xx only for a server
fault), and no bad request stops the server.
"""

import asyncio
import hmac
import json
import os
import time
import uuid
from typing import List, Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .chat_request import Limits, RequestError, parse_chat_request

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_EXAMPLES = 24


def error_response(error: RequestError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def list_examples(examples_dir: Optional[str]) -> List[str]:
    if not examples_dir or not os.path.isdir(examples_dir):
        return []
    names = sorted(n for n in os.listdir(examples_dir) if n.lower().endswith(EXAMPLE_SUFFIXES))
    return names[:MAX_EXAMPLES]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes ``limit`` bytes (not buffered beyond that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the request body is {declared} bytes; the limit is {limit}", status=413,
                           code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the request body exceeds {limit} bytes", status=413, code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def completion_body(answer, model_id: str, completion_id: str, created: int) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model_id,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.content, "boxes": answer.boxes},
            "finish_reason": answer.finish_reason,
        }],
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": len(answer.token_ids),
            "total_tokens": answer.prompt_tokens + len(answer.token_ids),
        },
    }


def stream_events(answer, tokenizer, model_id: str, completion_id: str, created: int):
    """Server-sent events in OpenAI's chunk shape: the role, the text piece by piece (one token at a
    time, held back while a token ends inside a UTF-8 character), then ``boxes`` with the finish
    reason, then ``[DONE]``. The answer is generated whole first; the pieces follow it."""

    def chunk(delta: dict, finish_reason=None) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    sent = ""
    for k in range(1, len(answer.token_ids) + 1):
        text = tokenizer.decode(answer.token_ids[:k], skip_special_tokens=True)
        if text.endswith("\ufffd") and k < len(answer.token_ids):
            continue
        if len(text) > len(sent):
            yield chunk({"content": text[len(sent):]})
            sent = text
    yield chunk({"boxes": answer.boxes}, answer.finish_reason)
    yield "data: [DONE]\n\n"


def build_app(engine, model_id: str, limits: Limits, image_root: Optional[str] = None,
              api_key: Optional[str] = None, examples_dir: Optional[str] = None) -> Starlette:
    """The server's routes around a started :class:`~paddlemix.serving.engine.ChatEngine`."""
    created = int(time.time())
    examples = list_examples(examples_dir)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise RequestError("missing or wrong API key (send 'Authorization: Bearer KEY')", status=401,
                               kind="authentication_error", code="invalid_api_key")

    async def chat_completions(request: Request) -> Response:
        check_key(request)
        with engine.arriving():
            raw = await read_body(request, limits.max_request_bytes)
            chat = parse_chat_request(raw, limits, image_root)
            future = engine.submit(chat)
        answer = await asyncio.wrap_future(future)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        if chat.stream:
            events = stream_events(answer, engine.tokenizer, model_id, completion_id, now)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(completion_body(answer, model_id, completion_id, now))

    async def models(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"object": "list", "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": "paddlemix"}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": model_id, "pending": engine.pending(),
                             "batches_run": engine.batches_run, "max_batch": engine.max_batch})

    async def page(request: Request) -> Response:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html")

    async def example_list(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"examples": examples, "api_key_required": api_key is not None})

    async def example_image(request: Request) -> Response:
        check_key(request)
        name = request.path_params["name"]
        if name not in examples:  # only names the listing offers; no path ever comes from the client
            raise RequestError(f"no example image {name!r}", status=404, kind="not_found_error")
        return FileResponse(os.path.join(examples_dir, name))

    async def on_request_error(request: Request, exc: RequestError) -> Response:
        return error_response(exc)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(RequestError(str(exc.detail), status=exc.status_code, kind=kind))

    async def on_server_error(request: Request, exc: Exception) -> Response:
        return error_response(RequestError(f"internal error: {type(exc).__name__}: {exc}", status=500,
                                           kind="api_error"))

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/", page, methods=["GET"]),
        Route("/examples", example_list, methods=["GET"]),
        Route("/examples/{name}", example_image, methods=["GET"]),
    ]
    handlers = {RequestError: on_request_error, HTTPException: on_http_error, Exception: on_server_error}
    return Starlette(routes=routes, exception_handlers=handlers)
