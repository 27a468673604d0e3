"""OpenAI-compatible server for one registered model version (FastAPI + uvicorn).

    GET  /health               {"status": "ok", "version": ...}
    GET  /v1/models            the one model, id = the registry version
    POST /v1/completions       prompt (text, a list of texts, token ids or lists of them; raw text,
                               no template), max_tokens, temperature (0 = greedy), top_k, n, stop,
                               seed, logprobs (top-k, at most 5), echo, best_of (Best-of-N scored by
                               the reward ensemble), stream, user
    POST /v1/chat/completions  messages (content as text, a list of text parts, or null on an
                               assistant turn; the store keeps `chat.prompt_of` of them and the model
                               reads `chat.render`), max_tokens / max_completion_tokens,
                               temperature, top_k, n, stop, seed, logprobs + top_logprobs, best_of,
                               stream, user
    POST /v1/feedback          {"id": response id, "score": in [0, 1] | "thumbs": "up" | "down"},
                               one per interaction (needs an interaction store)
    GET  /metrics              Prometheus text by route template: requests, latency, tokens, and the
                               reward ensemble's mean spread on served responses when reward models load

A request naming another model than this one gets 404 `model_not_found`. Bodies are read and
checked by `serving.protocol` (errors in OpenAI's shape, naming the parameter). Each request is
then checked alone against `serving.*` limits and the model's context (every prompt's tokens plus
max_tokens), so nothing that reaches a batch is the client's fault.

Admission: a request waits in one of two lanes, `small` (at most 1/SMALL_SHARE of a full batch's
tokens, completions x max_tokens) and `large`, each emptied by a thread of its own, so a short
request never waits behind maximum-size ones. The lanes take turns on the model (`Turn`): a small
batch runs whole, a large one gives way between two decoding steps whenever a small batch waits,
so a small request waits at most one step of a large batch and never shares the CPU with it. A
lane admits a request while it holds at most QUEUED_BATCHES x `serving.max_batch` completions
waiting and, beyond one full batch waiting, expects to start it within MAX_WAIT_S (from its
measured batch time); otherwise it answers 429 with Retry-After (the expected wait). A lane
collects up to `serving.max_batch` completions with the same decoding settings (waiting
`batch_wait_ms` for more) into one `generate`; a seeded request and Best-of-N run alone, so a seed
reproduces its sample. If a batch fails its requests are retried one at a time, so a failure fails
one request. A request whose client has disconnected is dropped before it runs, and a running
batch whose clients have all gone stops at its next step. Shutdown (SIGTERM through
`wait_for_shutdown_signal`, then `RunningServer.stop`) finishes the requests in flight.

`stop` strings end a row in `generate` (the text cut before the first one; requests with other
stop strings are batched apart); logprobs come from one teacher-forced pass over prompt +
completion with the decoding's temperature and logits hook.
`stream: true` sends server-sent events as the tokens are decoded: `Steps`, the logits hook
`generate` calls at every step, hands each streamed row its text so far to a `TokenStream`, which
sends what more tokens cannot change (a possible start of a stop string, half a UTF-8 character
held back); the last chunk of a choice carries its finish reason, `stream_options.include_usage`
adds a usage chunk, and `data: [DONE]` ends it. Best-of-N and logprobs replies are streamed once
finished. With `$RLHFOPS_API_KEY` (`serving.api_key_env`) set, /v1/* and the API docs need
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rlhfops.chat import render
from rlhfops.config import Config, GenerationConfig, ServingConfig
from rlhfops.generation import Generation, cut_at_stop, generate, token_offsets
from rlhfops.inference.best_of_n import best_of_n
from rlhfops.modeling import load_decoder, stop_token_ids
from rlhfops.serving.protocol import (
    DONE,
    APIError,
    ChatRequest,
    Chunks,
    CompletionRequest,
    FeedbackRequest,
    GenerationRequest,
    Guard,
    busy,
    chat_prompt,
    check_bearer,
    disconnected,
    install_error_handlers,
    parse,
    read_json,
    record_feedback,
    sse,
    sse_events,
    streaming_response,
)
from rlhfops.serving.store import InteractionStore

log = logging.getLogger("rlhfops.serving")

SMALL_SHARE = 16  # a request of at most 1/16 of a full batch's tokens goes to the small lane
QUEUED_BATCHES = 2  # completions a lane holds waiting: at most this many full batches
MAX_WAIT_S = 2.0  # and no more than it expects to start within this many seconds (at least one batch)


def is_small(completions: int, max_tokens: int, cfg: ServingConfig) -> bool:
    """Whether a request is small (the server's small lane, the router's adaptive bound): at most
    1/SMALL_SHARE of a full batch's tokens."""
    return completions * max_tokens * SMALL_SHARE <= cfg.max_batch * cfg.max_tokens


def model_not_found(model: str) -> APIError:
    return APIError(404, f"the model '{model}' does not exist here; GET /v1/models lists the models",
                    param="model", code="model_not_found")  # fmt: skip


def check_limits(body: GenerationRequest, prompts: list[str], cfg: ServingConfig) -> int:
    """Validate a request against `serving.*` limits; returns the max_tokens to use."""
    max_tokens = body.max_tokens or cfg.default_max_tokens
    if max_tokens > cfg.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; the limit is {cfg.max_tokens}", param="max_tokens")
    if body.n > cfg.max_n:
        raise APIError(400, f"n is {body.n}; the limit is {cfg.max_n}", param="n")
    if body.best_of is not None:
        if body.best_of > cfg.max_best_of:
            raise APIError(400, f"best_of is {body.best_of}; the limit is {cfg.max_best_of}", param="best_of")
        if body.n != 1:
            raise APIError(400, "best_of returns one completion per prompt; send n=1 with it", param="best_of")
        if body.best_of > 1 and body.logprobs_k is not None:
            raise APIError(400, "logprobs are not given for best_of completions", param="logprobs")
    if not prompts:
        raise APIError(400, "the request has no prompt", param="prompt")
    if len(prompts) * body.n > cfg.max_batch:
        raise APIError(400, f"{len(prompts)} prompts x n={body.n} exceeds the limit of {cfg.max_batch} completions",
                       param="n")  # fmt: skip
    for p in prompts:
        if len(p) > cfg.max_prompt_chars:
            raise APIError(400, f"a prompt is {len(p)} characters; the limit is {cfg.max_prompt_chars}",
                           param="prompt")  # fmt: skip
    return max_tokens


# ---- the work: decoding settings, jobs, lanes -----------------------------------------------------


@dataclass(frozen=True)
class Decoding:
    """How one request is decoded; jobs with equal `key`s share one generate call."""

    max_tokens: int
    temperature: float  # 0: greedy
    top_k: int
    template: bool  # chat prompts through `chat.render`; False: raw text (/v1/completions)
    stops: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; k: the chosen token's and the k likeliest
    seed: int | None = None
    best_of: int | None = None

    @property
    def key(self) -> tuple:
        return (self.max_tokens, self.temperature, self.top_k, self.template, self.stops)

    @property
    def alone(self) -> bool:
        """Seeded and Best-of-N requests run in a batch of their own."""
        return self.seed is not None or self.best_of is not None

    @property
    def streams_tokens(self) -> bool:
        """`stream: true` sends tokens as they are decoded, except Best-of-N (the best is known only
        at the end) and logprobs (a teacher-forced pass after decoding): those stream the finished
        reply."""
        return self.best_of is None and self.top_logprobs is None


@dataclass
class Completion:
    text: str
    finish_reason: str  # stop (eos or a stop string) | length
    completion_tokens: int
    tokens: list[str] | None = None  # with logprobs: each token's text
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None


class TokenStream:
    """What a streamed job has sent so far: per row (choice) the settled text, fed from the lane's
    thread at every decoding step and read by the response through an asyncio queue of
    (row, new text) items."""

    def __init__(self, rows: int, stops: tuple[str, ...], tidy: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.sent = [""] * rows
        self.ended = [False] * rows  # a stop string was seen: nothing more is sent before the end
        self.stops, self.tidy, self.loop = stops, tidy, loop

    def offer(self, row: int, text: str) -> None:
        """(lane thread) The row's decoded text so far: queue what more tokens cannot change."""
        if self.ended[row]:
            return
        cut, hit = cut_at_stop(text, self.stops)
        self.ended[row] = hit
        self._send(row, cut if hit else settled(text, self.stops, self.tidy))

    def _send(self, row: int, text: str) -> None:
        if len(text) > len(self.sent[row]) and text.startswith(self.sent[row]):
            delta, self.sent[row] = text[len(self.sent[row]) :], text
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (row, delta))

    def rest(self, row: int, final: str) -> str:
        """(event loop, once decoding is over) The final text's part not yet sent."""
        if not final.startswith(self.sent[row]):  # a failed batch retried with other samples
            log.warning("a streamed row's final text does not extend what was sent; the end is sent as is")
            return ""
        return final[len(self.sent[row]) :]


def settled(text: str, stops: tuple[str, ...], tidy: bool = False) -> str:
    """The part of a row's text that more tokens cannot change: `text` without a tail that could
    begin a stop string, an unfinished UTF-8 character (U+FFFD), and with `tidy` (a tokenizer that
    cleans up tokenization spaces: " ." becomes ".") trailing spaces."""
    end = len(text)
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                end = min(end, len(text) - k)
                break
    return text[:end].rstrip("\ufffd " if tidy else "\ufffd")


@dataclass
class _Job:
    decoding: Decoding
    prompts: list[str]
    future: asyncio.Future
    stream: TokenStream | None = None
    gone: bool = False  # its client disconnected (set on the event loop, read by the lane's thread)


class Abandoned(Exception):
    """Every request of the batch being decoded has lost its client."""


class Turn:
    """Which lane decodes on the model now. A small batch runs whole; a large batch holds the model
    one decoding step at a time and gives way between steps whenever a small batch waits, so a
    small request waits at most one step of a large batch, and the lanes never split the CPU."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.owner: str | None = None
        self.small_waiting = False

    def acquire(self, lane: str) -> None:
        with self.cond:
            if lane == "small":
                self.small_waiting = True
                self.cond.wait_for(lambda: self.owner is None)
                self.small_waiting = False
            else:
                self.cond.wait_for(lambda: self.owner is None and not self.small_waiting)
            self.owner = lane

    def release(self) -> None:
        with self.cond:
            self.owner = None
            self.cond.notify_all()

    def give_way(self) -> None:
        """(large lane, between steps) Let a waiting small batch decode first."""
        if self.small_waiting:
            self.release()
            self.acquire("large")


class Steps:
    """The logits hook `generate` calls at every decoding step with the ids so far (B, P + t): it
    offers each streamed row its text up to the step before, stops decoding once every job of the
    batch has lost its client, gives the model way to a waiting small batch (large lane), and
    passes the logits on through the policy's own hook."""

    def __init__(
        self, jobs: list[_Job], tokenizer: Any, stop_ids: list[int], inner: Any, between: Callable[[], None] | None
    ) -> None:
        self.jobs, self.tokenizer, self.inner, self.between = jobs, tokenizer, inner, between
        self.stop_ids = set(stop_ids)
        self.needs_hidden = bool(getattr(inner, "needs_hidden", False))
        self.rows: list[tuple[int, TokenStream, int]] = []  # (batch row, its stream, row in the job)
        at = 0
        for job in jobs:
            if job.stream is not None:
                self.rows += [(at + k, job.stream, k) for k in range(len(job.prompts))]
            at += len(job.prompts)
        self.prompt_width: int | None = None

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor, *hidden: torch.Tensor) -> torch.Tensor:
        if all(job.gone for job in self.jobs):
            raise Abandoned
        if self.prompt_width is None:
            self.prompt_width = ids.shape[1]
        elif self.rows:
            decoded = ids[[r for r, _, _ in self.rows], self.prompt_width :].tolist()  # (S, t)
            for (_, stream, k), row in zip(self.rows, decoded, strict=True):
                end = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
                stream.offer(k, self.tokenizer.decode(row[:end], skip_special_tokens=True))
        if self.between is not None:
            self.between()
        return logits if self.inner is None else self.inner(ids, logits, *hidden)


@dataclass
class Lane:
    """One queue of jobs, the thread that decodes them with its own tokenizer and generator
    (generate sets padding state on its tokenizer, so two threads never share one; a thread of its
    own, not the event loop's shared pool, so the router's store writes never wait for a batch),
    and a throughput estimate."""

    name: str
    limit: int  # completions it may hold waiting
    tokenizer: Any
    generator: torch.Generator
    thread: ThreadPoolExecutor
    jobs: deque = field(default_factory=deque)
    waiting: int = 0  # completions queued
    batch_seconds: float = 0.0  # moving average of one batch's generation time
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def expected_wait(self, max_batch: int, extra: int = 0) -> float:
        """Seconds until `extra` more completions would start: the batch running, then the queue."""
        return (1 + math.ceil((self.waiting + extra) / max_batch)) * self.batch_seconds

    def admits(self, completions: int, max_batch: int) -> bool:
        """One full batch may always wait; more only while the expected wait stays under MAX_WAIT_S."""
        if self.waiting + completions > self.limit:
            return False
        return self.waiting + completions <= max_batch or self.expected_wait(max_batch, completions) <= MAX_WAIT_S

    def retry_after(self, max_batch: int) -> int:
        return max(1, min(60, math.ceil(self.expected_wait(max_batch))))

    def put(self, job: _Job) -> None:
        self.jobs.append(job)
        self.waiting += len(job.prompts)
        self.ready.set()

    def take(self, max_batch: int) -> list[_Job]:
        """The first waiting job and the later ones with its decoding key, up to max_batch completions."""
        group: list[_Job] = []
        size = 0
        for job in list(self.jobs):
            if job.future.done():  # its client gave up
                self._remove(job)
                continue
            if not group:
                group, size = [job], len(job.prompts)
                if job.decoding.alone:
                    break
            elif not job.decoding.alone and job.decoding.key == group[0].decoding.key:
                if size + len(job.prompts) > max_batch:
                    break
                group.append(job)
                size += len(job.prompts)
        for job in group:
            self._remove(job)
        if not self.jobs:
            self.ready.clear()
        return group

    def _remove(self, job: _Job) -> None:
        self.jobs.remove(job)
        self.waiting -= len(job.prompts)


def drop(job: _Job) -> None:
    """The job's client has gone: a queued job is skipped, a running batch of only such jobs stops."""
    job.gone = True
    job.future.cancel()


class ModelWorker:
    """The policy, its tokenizer and the two lanes in front of them."""

    def __init__(
        self, model: Any, tokenizer: Any, cfg: ServingConfig, scorer: Any = None, logits_hook: Any = None, seed: int = 0
    ) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg  # this tokenizer: the event loop's
        self.scorer = scorer  # CompositeReward when reward models are loaded
        self.logits_hook = logits_hook  # the policy's decoding shift (`modeling.load_decoder`), None: plain
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.turn = Turn()
        limit = QUEUED_BATCHES * cfg.max_batch
        self.lanes = {
            name: Lane(name, limit, copy.deepcopy(tokenizer), torch.Generator().manual_seed(seed + i),
                       ThreadPoolExecutor(1, thread_name_prefix=f"lane-{name}"))
            for i, name in enumerate(("small", "large"))
        }  # fmt: skip

    def lane_for(self, completions: int, max_tokens: int) -> Lane:
        return self.lanes["small" if is_small(completions, max_tokens, self.cfg) else "large"]

    def prompt_tokens(self, prompts: list[str], decoding: Decoding) -> list[int]:
        """Each prompt's length in tokens as the model reads it; 400 when it and max_tokens do not
        fit the model's context."""
        lengths = []
        for i, p in enumerate(prompts):
            text = render(self.tokenizer, p) if decoding.template else p
            n = len(self.tokenizer(text)["input_ids"])
            if self.context and n + decoding.max_tokens > self.context:
                raise APIError(400, f"prompt {i} is {n} tokens; with max_tokens {decoding.max_tokens} it exceeds "
                               f"the model's context of {self.context}", param="prompt")  # fmt: skip
            lengths.append(n)
        return lengths

    def enqueue(self, prompts: list[str], decoding: Decoding, stream: bool = False) -> _Job:
        """Queue `prompts` in their lane (429 when it is full); `stream`: the job feeds a TokenStream."""
        lane = self.lane_for(len(prompts), decoding.max_tokens)
        if not lane.admits(len(prompts), self.cfg.max_batch):
            raise busy(f"the server's {lane.name}-request queue is full ({lane.waiting} completions waiting); "
                       "retry later", lane.retry_after(self.cfg.max_batch))  # fmt: skip
        loop = asyncio.get_running_loop()
        job = _Job(decoding, prompts, loop.create_future())
        if stream:
            tidy = bool(getattr(self.tokenizer, "clean_up_tokenization_spaces", False))
            job.stream = TokenStream(len(prompts), decoding.stops, tidy, loop)
        lane.put(job)
        return job

    async def submit(self, prompts: list[str], decoding: Decoding, request: Request | None = None) -> list[Completion]:
        """The completions of `prompts` (429 when the lane is full; dropped if the client leaves)."""
        job = self.enqueue(prompts, decoding)
        if request is None:
            return await job.future
        watcher = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.future.done():
            drop(job)
            raise APIError(499, "the client disconnected")
        return job.future.result()

    async def run(self, lane: Lane) -> None:
        while True:
            await lane.ready.wait()
            if self.cfg.batch_wait_ms > 0:
                await asyncio.sleep(self.cfg.batch_wait_ms / 1000)
            group = lane.take(self.cfg.max_batch)
            if group:
                await self._run(lane, group)

    async def _run(self, lane: Lane, group: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(lane.thread, self._complete, lane, group)
        except Abandoned:
            for job in group:
                drop(job)
            return
        except Exception as e:
            if len(group) > 1:  # find the failing request: the others still get their completions
                for job in group:
                    await self._run(lane, [job])
                return
            log.error("generation failed for one request: %s: %s", type(e).__name__, e)
            if not group[0].future.done():
                group[0].future.set_exception(APIError(500, "the model failed on this request", "server_error"))
            return
        took = time.perf_counter() - start
        lane.batch_seconds = took if not lane.batch_seconds else 0.8 * lane.batch_seconds + 0.2 * took
        for job, result in zip(group, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    def _complete(self, lane: Lane, group: list[_Job]) -> list[list[Completion]]:
        """(the lane's thread) Decode one group, holding the model's turn."""
        self.turn.acquire(lane.name)
        try:
            return self._decode(lane, group)
        finally:
            self.turn.release()

    def _decode(self, lane: Lane, group: list[_Job]) -> list[list[Completion]]:
        d = group[0].decoding
        prompts = [p for job in group for p in job.prompts]
        generator = torch.Generator().manual_seed(d.seed) if d.seed is not None else lane.generator
        if d.best_of is not None:
            gen = GenerationConfig(max_new_tokens=d.max_tokens, temperature=max(d.temperature, 1e-3), top_k=d.top_k)
            results = best_of_n(
                self.model, lane.tokenizer, prompts, d.best_of, self.scorer, generation=gen,
                generator=generator, logits_hook=self.logits_hook, template=d.template,
            )  # fmt: skip
            done = []
            for r in results:
                text, stopped = cut_at_stop(r.best, d.stops)
                n = len(lane.tokenizer(text, add_special_tokens=False)["input_ids"])
                done.append(Completion(text, "stop" if stopped or n < d.max_tokens else "length", n))
            return [done]
        steps = Steps(group, lane.tokenizer, self.stop_ids, self.logits_hook,
                      self.turn.give_way if lane.name == "large" else None)  # fmt: skip
        out = generate(
            self.model, lane.tokenizer, prompts, d.max_tokens, greedy=d.temperature == 0,
            temperature=max(d.temperature, 1e-6), top_k=d.top_k, generator=generator,
            logits_hook=steps, template=d.template, stop=d.stops,
        )  # fmt: skip
        per_job, at = [], 0
        for job in group:
            rows = list(range(at, at + len(job.prompts)))
            per_job.append(self._finish(lane.tokenizer, out, rows, job.decoding))
            at += len(job.prompts)
        return per_job

    def _finish(self, tokenizer: Any, out: Generation, rows: list[int], d: Decoding) -> list[Completion]:
        """The completions of one job's rows (`generate` cut them at eos or a stop string), with
        logprobs when asked: each kept token's text, its log-prob and the likeliest ones."""
        scored = None
        if d.top_logprobs is not None:
            temperature = 1.0 if d.temperature == 0 else max(d.temperature, 1e-6)
            scored = teacher_forced_logprobs(self.model, out, rows, temperature, d.top_logprobs, self.logits_hook)
        done = []
        for j, r in enumerate(rows):
            kept = int(out.completion_mask[r].sum())
            c = Completion(out.texts[r], "stop" if out.stopped[r] else "length", kept)
            if scored is not None:
                ids = out.completion_ids[r, :kept].tolist()
                text = tokenizer.decode(ids, skip_special_tokens=True)
                chosen, top = scored
                c.tokens = [text[a:b] for a, b in token_offsets(tokenizer, ids)]
                c.token_logprobs = chosen[j][:kept]
                c.top_logprobs = [{tokenizer.decode([t]): lp for t, lp in step} for step in top[j][:kept]]
            done.append(c)
        return done

    def spreads(self, prompts: list[str], texts: list[str]) -> list[float]:
        """Per response the mean over objectives of the ensemble std: (N, M) -> (N,)."""
        return self.scorer.vectors(prompts, texts)["spreads"].mean(1).tolist()


@torch.no_grad()
def teacher_forced_logprobs(
    model: Any, out: Generation, rows: list[int], temperature: float, k: int, hook: Any = None
) -> tuple[list[list[float]], list[list[list[tuple[int, float]]]]]:
    """Per row and completion token: the chosen token's log-prob and the k likeliest (token id,
    log-prob), from `log_softmax(hook(logits) / temperature)` as `generate` samples from."""
    ids = torch.cat([out.prompt_ids[rows], out.completion_ids[rows]], dim=1)  # (R, P+T)
    mask = torch.cat([out.prompt_mask[rows], out.completion_mask[rows]], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    needs_hidden = bool(getattr(hook, "needs_hidden", False))
    res = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=needs_hidden)
    p, t = out.prompt_ids.shape[1], out.completion_ids.shape[1]
    logits = res.logits[:, p - 1 : p - 1 + t].float()  # (R, T, V): position i predicts completion token i
    if hook is not None:
        steps = []
        for i in range(t):
            extra = (res.hidden_states[-1][:, p - 1 + i].float(),) if needs_hidden else ()
            steps.append(hook(ids[:, : p + i], logits[:, i], *extra))
        logits = torch.stack(steps, dim=1)
    logp = torch.log_softmax(logits / temperature, dim=-1)
    chosen = logp.gather(-1, out.completion_ids[rows][..., None]).squeeze(-1)  # (R, T)
    top = logp.topk(min(k, logp.shape[-1]), dim=-1) if k else None
    tops = [
        [list(zip(top.indices[r, i].tolist(), top.values[r, i].tolist(), strict=True)) if top is not None else []
         for i in range(t)]
        for r in range(len(rows))
    ]  # fmt: skip
    return chosen.tolist(), tops


# ---- the app --------------------------------------------------------------------------------------


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rlhfops_requests", "Requests by route template and status code", ["endpoint", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "rlhfops_request_latency_seconds", "Request latency by route template", ["endpoint"], registry=self.registry
        )
        self.tokens = Counter("rlhfops_completion_tokens", "Generated tokens", registry=self.registry)
        self.spread = Histogram(
            "rlhfops_reward_spread", "Reward-ensemble spread (mean over objectives of the member std) per served "
            "response", registry=self.registry, buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        )  # fmt: skip
        self.spread_mean = Gauge(
            "rlhfops_reward_spread_mean", "Mean reward-ensemble spread over served responses", registry=self.registry
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


def token_id_prompts(prompt: list[int] | list[list[int]], tokenizer: Any) -> list[str]:
    """Token-id prompts as the text they decode to (400 for an id outside the vocabulary)."""
    rows = [prompt] if prompt and isinstance(prompt[0], int) else prompt
    vocab = len(tokenizer)
    texts = []
    for i, row in enumerate(rows):
        bad = next((t for t in row if not 0 <= t < vocab), None)
        if bad is not None:
            raise APIError(400, f"prompt {i} has token id {bad}; ids are in [0, {vocab})", param="prompt")
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


def completion_logprobs(c: Completion, offset: int = 0) -> dict[str, Any] | None:
    """OpenAI's completions logprobs: tokens, token_logprobs, top_logprobs, text_offset."""
    if c.tokens is None:
        return None
    offsets, at = [], offset
    for piece in c.tokens:
        offsets.append(at)
        at += len(piece)
    return {"tokens": c.tokens, "token_logprobs": c.token_logprobs, "top_logprobs": c.top_logprobs,
            "text_offset": offsets}  # fmt: skip


def chat_logprobs(c: Completion) -> dict[str, Any] | None:
    """OpenAI's chat logprobs: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    if c.tokens is None:
        return None

    def entry(token: str, lp: float) -> dict[str, Any]:
        return {"token": token, "logprob": lp, "bytes": list(token.encode("utf-8"))}

    content = [
        {**entry(tok, lp), "top_logprobs": [entry(t, x) for t, x in top.items()]}
        for tok, lp, top in zip(c.tokens, c.token_logprobs, c.top_logprobs, strict=True)
    ]
    return {"content": content}


def create_app(
    model_dir: str | Path, version: str, cfg: Config, *, store: InteractionStore | None = None, scorer: Any = None
) -> FastAPI:
    """The server for one model directory, answering as model id `version`. `scorer` ranks
    Best-of-N candidates and gives the spread metric (a `CompositeReward`, or anything with its
    `__call__` and `vectors`); None loads the ensembles in `serving.reward_models` if set."""
    # decoded as it was evaluated at the gate: an offline-RL policy with its Q - V shift
    tokenizer, model, hook = load_decoder(cfg, model_dir)
    if scorer is None and cfg.serving.reward_models:
        from rlhfops.reward.build import composite_reward

        scorer = composite_reward(cfg, cfg.serving.reward_models)
    worker = ModelWorker(model, tokenizer, cfg.serving, scorer, logits_hook=hook, seed=cfg.serving.seed)
    metrics = ServerMetrics()
    token = os.environ.get(cfg.serving.api_key_env) or None
    spread_sum = [0.0, 0]  # running sum and count for the mean gauge

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(worker.run(lane)) for lane in worker.lanes.values()]
        yield
        for task in tasks:
            task.cancel()
        for lane in worker.lanes.values():
            lane.thread.shutdown(wait=False)

    app = FastAPI(title=f"rlhfops {version}", lifespan=lifespan)
    app.state.version, app.state.worker, app.state.metrics = version, worker, metrics
    install_error_handlers(app)
    app.add_middleware(Guard, token=token, observe=metrics.observe)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": version}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_bearer(request, token)
        return {"object": "list", "data": [{"id": version, "object": "model", "created": 0, "owned_by": "rlhfops"}]}

    def prepare(
        body: CompletionRequest | ChatRequest, prompts: list[str], template: bool
    ) -> tuple[Decoding, list[int], list[str]]:
        """A request checked: its decoding, each prompt's token count, the prompts once per choice."""
        if body.model is not None and body.model != version:
            raise model_not_found(body.model)
        max_tokens = check_limits(body, prompts, cfg.serving)
        if body.best_of is not None and body.best_of > 1 and scorer is None:
            raise APIError(400, "best_of needs reward models; start the server with serving.reward_models set",
                           param="best_of")  # fmt: skip
        decoding = Decoding(
            max_tokens, body.temperature, body.top_k, template, tuple(body.stops), body.logprobs_k, body.seed,
            body.best_of if body.best_of and body.best_of > 1 else None,
        )  # fmt: skip
        return decoding, worker.prompt_tokens(prompts, decoding), [p for p in prompts for _ in range(body.n)]

    async def served(done: list[Completion], repeated: list[str], rid: str, start: float, user: str | None):
        """Metrics and the interaction store for finished completions; the reply's `rlhfops` field."""
        metrics.tokens.inc(sum(c.completion_tokens for c in done))
        extra: dict[str, Any] = {"version": version, "prompts": repeated, "responses": [c.text for c in done]}
        if scorer is not None:
            spreads = await asyncio.to_thread(worker.spreads, repeated, [c.text for c in done])
            for s in spreads:
                metrics.spread.observe(s)
            spread_sum[0] += sum(spreads)
            spread_sum[1] += len(spreads)
            metrics.spread_mean.set(spread_sum[0] / spread_sum[1])
            extra["reward_spread"] = spreads
        extra["interaction_ids"] = log_interactions(rid, done, repeated, start, user)
        return extra

    def usage(done: list[Completion], lengths: list[int]) -> dict[str, int]:
        """Prompt tokens once per prompt (not per choice), completion tokens per choice."""
        p, c = sum(lengths), sum(x.completion_tokens for x in done)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def log_interactions(rid: str, done: list[Completion], prompts: list[str], start: float, user: str | None):
        if store is None:
            return []
        latency_ms = 1000 * (time.perf_counter() - start)
        ids = [rid] if len(done) == 1 else [f"{rid}:{i}" for i in range(len(done))]
        for i, (c, p) in enumerate(zip(done, prompts, strict=True)):
            store.log(p, c.text, version, latency_ms, "ok", user=user, request_id=ids[i])
        return ids

    async def answer(
        request: Request, body: CompletionRequest | ChatRequest, prompts: list[str], chat: bool, start: float
    ) -> Any:
        """The reply to a checked request: JSON, or a stream of chunks when it asks for one."""
        decoding, lengths, repeated = prepare(body, prompts, template=chat)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if body.stream and decoding.streams_tokens:
            job = worker.enqueue(repeated, decoding, stream=True)  # a full lane is a 429 before the stream starts
            chunks = Chunks(rid, int(time.time()), version, chat, body.include_usage)
            echo = repeated if getattr(body, "echo", False) else None
            return streaming_response(stream_tokens(job, chunks, lengths, repeated, echo, start, body.user))
        done = await worker.submit(repeated, decoding, request)
        extra = await served(done, repeated, rid, start, body.user)
        if chat:
            choices = [
                {"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": chat_logprobs(c),
                 "finish_reason": c.finish_reason}
                for i, c in enumerate(done)
            ]  # fmt: skip
        else:
            choices = [
                {"index": i, "text": p + c.text if body.echo else c.text, "logprobs": completion_logprobs(c),
                 "finish_reason": c.finish_reason}
                for i, (c, p) in enumerate(zip(done, repeated, strict=True))
            ]  # fmt: skip
        out = {
            "id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": version, "choices": choices, "usage": usage(done, lengths), "rlhfops": extra,
        }  # fmt: skip
        return streaming_response(sse_events(out, body.include_usage)) if body.stream else out

    async def stream_tokens(
        job: _Job,
        chunks: Chunks,
        lengths: list[int],
        repeated: list[str],
        echo: list[str] | None,
        start: float,
        user: str | None,
    ) -> AsyncIterator[str]:
        """A streamed job's chunks as its rows decode: per choice the role (chat) or the echoed prompt,
        then its text piece by piece; once decoding is over each choice's unsent rest and finish
        reason, the usage when asked, `[DONE]`. A client that leaves cancels the job."""
        stream = job.stream
        try:
            for i in range(len(repeated)):
                if chunks.chat:
                    yield chunks.role(i)
                elif echo is not None:
                    yield chunks.text(i, echo[i])
            while True:
                if not stream.queue.empty():
                    row, piece = stream.queue.get_nowait()
                    yield chunks.text(row, piece)
                    continue
                if job.future.done():
                    break
                item = asyncio.ensure_future(stream.queue.get())
                await asyncio.wait({item, job.future}, return_when=asyncio.FIRST_COMPLETED)
                if item.done():
                    row, piece = item.result()
                    yield chunks.text(row, piece)
                else:
                    item.cancel()
            try:
                done = job.future.result()
            except APIError as e:
                yield sse({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}})
                return
            for i, c in enumerate(done):
                if rest := stream.rest(i, c.text):
                    yield chunks.text(i, rest)
            extra = await served(done, repeated, chunks.id, start, user)
            last = len(done) - 1
            for i, c in enumerate(done):
                yield chunks.finish(i, c.finish_reason, extra if i == last and not chunks.include_usage else None)
            if chunks.include_usage:
                yield chunks.usage(usage(done, lengths), extra)
            yield DONE
        finally:
            if not job.future.done():
                drop(job)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        start = time.perf_counter()
        check_bearer(request, token)
        body = parse(CompletionRequest, await read_json(request, cfg.serving.max_request_bytes))
        if isinstance(body.prompt, str):
            prompts = [body.prompt]
        elif body.prompt and not isinstance(body.prompt[0], str):
            prompts = token_id_prompts(body.prompt, tokenizer)
        else:
            prompts = list(body.prompt)
        return await answer(request, body, prompts, chat=False, start=start)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        start = time.perf_counter()
        check_bearer(request, token)
        body = parse(ChatRequest, await read_json(request, cfg.serving.max_request_bytes))
        return await answer(request, body, [chat_prompt(body.messages)], chat=True, start=start)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        check_bearer(request, token)
        body = parse(FeedbackRequest, await read_json(request, cfg.serving.max_request_bytes))
        return record_feedback(store, body)

    return app


# ---- running on loopback --------------------------------------------------------------------------


@dataclass
class RunningServer:
    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self, timeout: float = 60.0) -> None:
        """Stop accepting connections, finish the requests in flight (up to `timeout` s), then exit."""
        self.server.should_exit = True
        self.thread.join(timeout)


def wait_for_shutdown_signal() -> None:
    """Block the main thread until SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends); then the
    caller stops its servers, which drain the requests in flight."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in signals}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def start_server(app: FastAPI, host: str, port: int, timeout: float = 30.0) -> RunningServer:
    """Run `app` under uvicorn in a daemon thread; returns once it accepts connections (port 0:
    any free port, read back from the socket)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start (is the port in use?)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server, thread, f"http://{host}:{bound}")
