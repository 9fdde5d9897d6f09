"""The model behind the server: answers checked chat requests, batching those that arrive together.

Requests are queued; one worker thread takes the first, waits up to ``window_s`` for more (up to
``max_batch``), and answers each group of requests with equal sampling settings in one left-padded
:func:`~paddlemix.models.qwen_vl.generation.generate_batch` call. A batch whose first request queued while the
previous batch ran waits up to ``regroup_s`` instead: it serves other clients than the previous
batch did, and those are about to send again, so waiting lets clients that wait for their answers
merge into full batches instead of settling into two alternating half batches. While requests are
still being read and checked (``arriving``, counted by the HTTP side), the wait is extended, up to
``4 * regroup_s`` in all. Greedy answers are the same alone or batched
(left padding with a mask and mask-counted rotary positions; ``max_new_tokens`` is the group's
largest and each answer is cut to its own ``max_tokens``, which greedy decoding makes equivalent).
After generation, answers that contain boxes get one teacher-forced pass to score them.
"""

import contextlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle

from paddlemix.bird.boxes import corner_pair_spans
from paddlemix.models.qwen_vl.generation import generate_batch, left_padded_batch
from paddlemix.processors.conversation import encode_prompt
from paddlemix.processors.special_tokens import MARKUP_TOKENS

from .answer_boxes import answer_boxes
from .chat_request import ChatRequest, RequestError


SCORE_ROWS = 64  # answer positions whose logits are held at once
ARRIVAL_POLL_S = 0.002


@dataclass
class Answer:
    content: str
    token_ids: List[int]
    finish_reason: str  # "stop" or "length"
    boxes: List[dict]
    prompt_tokens: int


@dataclass
class _Job:
    request: ChatRequest
    prompt_ids: List[int]
    images: list  # the request's images in prompt order
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


@paddle.no_grad()
def answer_token_probs(model, pad_id: int, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                       images=None) -> List[List[float]]:
    """For each (prompt, answer): the model's probability of every answer token given everything
    before it (one left-padded forward pass; the LM head runs on the answer positions only)."""
    ids, mask, images = left_padded_batch([list(p) + list(a) for p, a in zip(prompts, answers)], pad_id, images)
    longest = ids.shape[1]
    hidden = model.transformer(
        input_ids=paddle.to_tensor(ids), images=images, attention_mask=paddle.to_tensor(mask),
        use_cache=False, return_dict=True,
    ).last_hidden_state  # [B, L, H]
    # Answer token j of a row sits at column longest - len(answer) + j and is predicted one column earlier.
    rows, cols, targets = [], [], []
    for row, answer in enumerate(answers):
        for j, token in enumerate(answer):
            rows.append(row)
            cols.append(longest - len(answer) + j - 1)
            targets.append(token)
    if not targets:
        return [[] for _ in answers]
    flat = paddle.to_tensor(np.asarray(rows) * longest + np.asarray(cols), dtype="int64")
    states = paddle.gather(hidden.reshape([-1, hidden.shape[-1]]), flat)  # [n, H]
    targets = np.asarray(targets)
    probs = []
    # Softmax in float64 numpy, a few rows at a time ([rows, 151936] logits): paddle 3.3's CPU
    # log_softmax takes seconds per row at this width and loses ~0.5% of a probability to rounding.
    for start in range(0, len(targets), SCORE_ROWS):
        logits = model.lm_head(states[start:start + SCORE_ROWS]).astype("float32").numpy().astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        picked = logits[np.arange(len(logits)), targets[start:start + SCORE_ROWS]]
        probs.extend(np.exp(picked - log_norm).tolist())
    out, k = [], 0
    for answer in answers:
        out.append(probs[k:k + len(answer)])
        k += len(answer)
    return out


class ChatEngine:
    """``submit(request)`` -> a Future of :class:`Answer`; ``start()``/``stop()`` the worker."""

    def __init__(self, model, tokenizer, image_processor, max_batch: int = 8, window_s: float = 0.01,
                 regroup_s: float = 0.05):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.max_batch, self.window_s, self.regroup_s = max_batch, window_s, regroup_s
        self._last_batch_end = 0.0
        self._arriving = 0
        self._arriving_lock = threading.Lock()
        self.max_length = int(getattr(model.config, "seq_length", 2048))
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self.batches_run = 0
        # Ids that decode(skip_special_tokens=True) drops; they must count as no bytes for scoring.
        self._dropped_ids = {i for t, i in tokenizer.special_tokens.items() if t not in MARKUP_TOKENS}

    # -- requests -> jobs -------------------------------------------------------------------
    def prepare(self, request: ChatRequest) -> _Job:
        """Encode the prompt (the encoder training uses) and check it fits; errors are RequestErrors."""
        ids = encode_prompt(self.tokenizer, request.question, request.history, request.system)
        if len(ids) + request.max_tokens > self.max_length:
            raise RequestError(
                f"the prompt is {len(ids)} tokens and max_tokens is {request.max_tokens}; together they exceed "
                f"the model's {self.max_length}", param="max_tokens", code="context_length_exceeded",
            )
        images = [request.images[key] for key in self.tokenizer.image_paths(ids)]
        return _Job(request, ids, images)

    def submit(self, request: ChatRequest) -> Future:
        job = self.prepare(request)
        self._queue.put(job)
        return job.future

    def pending(self) -> int:
        return self._queue.qsize()

    @contextlib.contextmanager
    def arriving(self):
        """Held by the HTTP side while it reads and checks a request that may join the next batch."""
        with self._arriving_lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._arriving_lock:
                self._arriving -= 1

    # -- the worker ---------------------------------------------------------------------------
    def start(self) -> "ChatEngine":
        self._thread = threading.Thread(target=self._run, name="chat-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _collect(self, first: _Job) -> List[_Job]:
        jobs = [first]
        start = time.monotonic()
        wait = self.regroup_s if first.queued_at < self._last_batch_end else self.window_s
        while len(jobs) < self.max_batch:
            now = time.monotonic()
            remaining = start + wait - now
            if remaining <= 0:
                if self._arriving == 0 or now - start >= 4 * self.regroup_s:
                    break
                remaining = ARRIVAL_POLL_S
            try:
                job = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if job is None:
                self._queue.put(None)  # let _run see the stop after this batch
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            groups: Dict[object, List[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.request.batch_key, []).append(job)
            for group in groups.values():
                try:
                    answers = self.answer_jobs(group)
                except Exception as exc:  # one bad batch must not stop the server
                    answers, error = None, exc
                # Before any answer leaves: a request its client sends after this answer is not one
                # that queued during the batch.
                self._last_batch_end = time.monotonic()
                for k, job in enumerate(group):
                    if answers is None:
                        job.future.set_exception(error)
                    else:
                        job.future.set_result(answers[k])

    # -- one batch --------------------------------------------------------------------------
    def _pixels(self, jobs: Sequence[_Job]):
        images = [image for job in jobs for image in job.images]
        return self.image_processor(images) if images else None

    def _token_bytes(self, ids: Sequence[int]) -> List[bytes]:
        enc = self.tokenizer.encoding
        return [b"" if i in self._dropped_ids or i >= enc.n_vocab else enc.decode_single_token_bytes(i) for i in ids]

    def answer_jobs(self, jobs: Sequence[_Job]) -> List[Answer]:
        """Generate for ``jobs`` (equal sampling settings) in one batch, then score their boxes."""
        self.batches_run += 1
        sampling = jobs[0].request.sampling
        kwargs = {} if sampling is None else {
            "decode_strategy": "sampling", "temperature": sampling[0], "top_p": sampling[1]}
        outs = generate_batch(
            self.model, self.tokenizer, [job.prompt_ids for job in jobs], images=self._pixels(jobs),
            max_new_tokens=max(job.request.max_tokens for job in jobs), **kwargs,
        )
        outs = [out[:job.request.max_tokens] for out, job in zip(outs, jobs)]
        contents = [self.tokenizer.decode(out, skip_special_tokens=True) for out in outs]
        # Only answers that wrote a box need the scoring pass.
        boxed = [k for k, text in enumerate(contents) if corner_pair_spans(text)]
        probs: Dict[int, List[float]] = {}
        if boxed:
            scored = [jobs[k] for k in boxed]
            rows = answer_token_probs(
                self.model, self.tokenizer.eod_id, [j.prompt_ids for j in scored], [outs[k] for k in boxed],
                images=self._pixels(scored),
            )
            probs = dict(zip(boxed, rows))
        answers = []
        for k, (job, out, content) in enumerate(zip(jobs, outs, contents)):
            token_bytes = self._token_bytes(out) if k in probs else None
            answers.append(Answer(
                content=content,
                token_ids=out,
                finish_reason="length" if len(out) >= job.request.max_tokens else "stop",
                boxes=answer_boxes(content, token_bytes, probs.get(k), job.request.image_size),
                prompt_tokens=len(job.prompt_ids),
            ))
        return answers
