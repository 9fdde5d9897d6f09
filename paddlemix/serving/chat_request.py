"""OpenAI Chat Completions request bodies -> one checked Qwen-VL conversation (no paddle here).

Everything a client sends is untrusted. Text may carry ``<ref>``/``<box>``/``<quad>`` markup (RO
and GC questions are written with it) but no other Qwen-VL special token: a ``<|im_start|>`` would
forge a turn and an ``<img>`` tag would make the tokenizer read a path, so such text is refused
instead of being trusted to the tokenizer. Images come only as ``image_url`` parts: a ``data:``
URL with a base64 PNG/JPEG, or a file inside ``image_root`` when the server was given one. Each
image enters the prompt under a short content-hash key (``Picture n: <img>key</img>``) that the
engine maps back to the decoded image, so no client string ever reaches the file system.
"""

import base64
import binascii
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from PIL import Image, UnidentifiedImageError

from paddlemix.bird.image_tag import image_prefix
from paddlemix.processors.chat_template import DEFAULT_SYSTEM
from paddlemix.processors.special_tokens import MARKUP_TOKENS, SPECIAL_TOKENS

# Control tokens and image tags; <ref>, <box> and <quad> are legitimate question text.
FORBIDDEN_STRINGS = tuple(t for t in SPECIAL_TOKENS if t not in MARKUP_TOKENS)
IMAGE_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_TOKENS = 256


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and the OpenAI error body."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message, self.status, self.kind, self.param, self.code = message, status, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    max_request_bytes: int = 32 * 2**20
    max_image_bytes: int = 16 * 2**20  # one decoded image file
    max_image_pixels: int = 4096 * 4096  # width * height, checked before any pixel is decoded
    max_images: int = 4
    max_tokens: int = 1024  # upper bound on a request's max_tokens


@dataclass
class ChatRequest:
    """A checked conversation: ``history`` of (user, assistant) turns, then ``question``."""

    question: str
    history: List[Tuple[str, str]] = field(default_factory=list)
    system: str = DEFAULT_SYSTEM
    images: Dict[str, Image.Image] = field(default_factory=dict)  # prompt key -> decoded image
    image_size: Optional[Tuple[int, int]] = None  # (width, height) of the last image sent
    max_tokens: int = DEFAULT_MAX_TOKENS
    sampling: Optional[Tuple[float, float]] = None  # (temperature, top_p); None = greedy
    stream: bool = False

    @property
    def batch_key(self):
        """Requests with equal keys can share one generate call."""
        return self.sampling


def check_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise RequestError(f"{where}: expected a string, got {type(text).__name__}", param=where)
    for token in FORBIDDEN_STRINGS:
        if token in text:
            raise RequestError(
                f"{where}: text may not contain the control string {token!r} (images go in image_url parts)",
                param=where, code="forbidden_token",
            )
    return text


def decode_image(data: bytes, where: str, limits: Limits) -> Image.Image:
    """A PNG or JPEG within the pixel limit, fully decoded; anything else is a RequestError."""
    if len(data) > limits.max_image_bytes:
        raise RequestError(f"{where}: the image file is {len(data)} bytes; the limit is {limits.max_image_bytes}",
                           status=413, param=where, code="image_too_large")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise RequestError(f"{where}: {exc}", status=413, param=where, code="image_too_large") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise RequestError(f"{where}: not a PNG or JPEG image", param=where, code="invalid_image") from exc
    if image.format not in IMAGE_FORMATS:
        raise RequestError(f"{where}: {image.format} images are not accepted; send PNG or JPEG",
                           param=where, code="invalid_image")
    width, height = image.size
    if width * height > limits.max_image_pixels:
        # Checked from the header, so a small file that would inflate to gigabytes is never decoded.
        raise RequestError(
            f"{where}: {width}x{height} = {width * height} pixels; the limit is {limits.max_image_pixels}",
            status=413, param=where, code="image_too_large",
        )
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(f"{where}: the image data is damaged ({exc})", param=where, code="invalid_image") from exc
    return image


def read_image_url(url, where: str, limits: Limits, image_root: Optional[str]) -> bytes:
    """The bytes an ``image_url`` names: a base64 ``data:`` URL, or a file inside ``image_root``."""
    if not isinstance(url, str) or not url:
        raise RequestError(f"{where}: expected a URL string", param=where)
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError(f"{where}: a data URL must be 'data:image/png;base64,...'", param=where)
        if len(payload) * 3 // 4 > limits.max_image_bytes:
            raise RequestError(f"{where}: the image is larger than {limits.max_image_bytes} bytes",
                               status=413, param=where, code="image_too_large")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"{where}: the data URL is not valid base64", param=where) from exc
    if "://" in url and not url.startswith("file://"):
        raise RequestError(f"{where}: the server does not fetch URLs; send the image as a data: URL", param=where)
    if image_root is None:
        raise RequestError(f"{where}: local image paths are served only when the server runs with --image_root",
                           status=403, kind="permission_error", param=where)
    path = url[len("file://"):] if url.startswith("file://") else url
    root = os.path.realpath(image_root)
    real = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, real]) != root:
        raise RequestError(f"{where}: {path!r} is outside the server's image root", status=403,
                           kind="permission_error", param=where)
    if not os.path.isfile(real):
        raise RequestError(f"{where}: no image {path!r} under the image root", status=404,
                           kind="not_found_error", param=where)
    if os.path.getsize(real) > limits.max_image_bytes:
        raise RequestError(f"{where}: the image file is larger than {limits.max_image_bytes} bytes",
                           status=413, param=where, code="image_too_large")
    with open(real, "rb") as handle:
        return handle.read()


def _content_parts(content, where: str) -> List[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise RequestError(f"{where}: content must be a string or a non-empty list of parts", param=where)
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
            raise RequestError(f"{where}[{i}]: a part must be {{'type': 'text' | 'image_url', ...}}", param=where)
    return content


def _number(body: dict, name: str, low: float, high: float) -> Optional[float]:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"{name} must be a number in [{low}, {high}], got {value!r}", param=name)
    return float(value)


def parse_chat_request(raw: bytes, limits: Limits, image_root: Optional[str] = None) -> ChatRequest:
    """Check a ``/v1/chat/completions`` body and turn it into a :class:`ChatRequest`."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    if body.get("n", 1) != 1:
        raise RequestError("only n = 1 is supported", param="n")

    request = ChatRequest(question="")
    turns: List[str] = []  # user, assistant, user, ... texts
    n_images = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where}: expected an object with role and content", param="messages")
        role = message.get("role")
        parts = _content_parts(message.get("content"), f"{where}.content")
        if role == "system":
            if i != 0:
                raise RequestError(f"{where}: a system message may only come first", param="messages")
            if any(p["type"] != "text" for p in parts):
                raise RequestError(f"{where}: a system message holds text only", param="messages")
            request.system = "\n".join(check_text(p.get("text"), f"{where}.content") for p in parts)
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise RequestError(
                f"{where}: expected role {expected!r}, got {role!r} (after an optional system message, "
                "user and assistant alternate and the last message is the user's)", param="messages",
            )
        prefix, texts = "", []
        for j, part in enumerate(parts):
            part_where = f"{where}.content[{j}]"
            if part["type"] == "text":
                texts.append(check_text(part.get("text"), part_where))
                continue
            if role != "user":
                raise RequestError(f"{part_where}: only user messages may carry images", param="messages")
            n_images += 1
            if n_images > limits.max_images:
                raise RequestError(f"{part_where}: at most {limits.max_images} images per request", param="messages")
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            data = read_image_url(url, part_where, limits, image_root)
            image = decode_image(data, part_where, limits)
            key = hashlib.sha256(data).hexdigest()[:16]
            request.images[key] = image
            request.image_size = image.size
            # Qwen-VL puts a turn's images before its text and numbers them through the conversation.
            prefix += image_prefix(key, n_images)
        turns.append(prefix + "\n".join(texts))
    if len(turns) % 2 == 0:
        raise RequestError("the last message must be the user's", param="messages")
    request.history = [(turns[k], turns[k + 1]) for k in range(0, len(turns) - 1, 2)]
    request.question = turns[-1]

    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", DEFAULT_MAX_TOKENS))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limits.max_tokens:
        raise RequestError(f"max_tokens must be an integer in [1, {limits.max_tokens}], got {max_tokens!r}",
                           param="max_tokens")
    request.max_tokens = max_tokens
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p is not None and top_p <= 0:
        raise RequestError("top_p must be greater than 0", param="top_p")
    # Greedy when neither is given, or when temperature is 0 (as OpenAI defines it).
    if temperature != 0.0 and (temperature is not None or top_p is not None):
        request.sampling = (1.0 if temperature is None else temperature, 1.0 if top_p is None else top_p)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false", param="stream")
    request.stream = stream
    return request
