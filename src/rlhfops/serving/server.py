"""OpenAI-compatible server for one registered model version (FastAPI + uvicorn).

    GET  /health               {"status": "ok", "version": ...}
    GET  /v1/models            the one model, id = the registry version
    POST /v1/completions       prompt (str | list[str]), max_tokens, temperature (0 = greedy), n,
                               best_of (Best-of-N scored by the reward ensemble), user
    POST /v1/chat/completions  messages (rendered by `chat.render`: the chat template when the
                               tokenizer has one, else the user turns joined; the interaction
                               store keeps the messages), max_tokens, temperature, n, best_of, user
    (`/v1/completions` takes its prompt as raw text: no template)
    POST /v1/feedback          {"id": response id, "score": float | "thumbs": "up" | "down"}
                               (needs an interaction store)
    GET  /metrics              Prometheus text: requests, errors, latency, tokens, and the reward
                               ensemble's mean spread on served responses when reward models load

Concurrent requests are generated together: a worker collects up to `serving.max_batch` prompts
(waiting at most `batch_wait_ms` for more) with the same decoding settings and runs one batched
`generate`. Limits (body size, prompt length, max_tokens, n, best_of) answer 4xx with one clear
sentence in OpenAI's error shape. With `$RLHFOPS_API_KEY` (`serving.api_key_env`) set, /v1/*
needs `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlhfops.chat import prompt_of, render_all
from rlhfops.config import Config, GenerationConfig, ServingConfig
from rlhfops.generation import generate
from rlhfops.inference.best_of_n import best_of_n
from rlhfops.modeling import load_decoder
from rlhfops.serving.store import InteractionStore


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_k: int = Field(0, ge=0)
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1)
    user: str | None = None
    stream: bool = False


class CompletionRequest(_Body):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class ChatRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    score: float | None = None
    thumbs: str | None = None


def feedback_score(body: FeedbackRequest) -> float:
    """The score a feedback request gives: `score`, or thumbs up = 1.0 / down = 0.0."""
    if (body.score is None) == (body.thumbs is None):
        raise APIError(400, "feedback needs exactly one of 'score' (a number) or 'thumbs' ('up' or 'down')")
    if body.thumbs is not None:
        if body.thumbs not in ("up", "down"):
            raise APIError(400, f"thumbs must be 'up' or 'down', got '{body.thumbs}'")
        return 1.0 if body.thumbs == "up" else 0.0
    return float(body.score)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx APIError."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body is {declared} bytes; the limit is {max_bytes}")
    raw = await request.body()
    if len(raw) > max_bytes:
        raise APIError(413, f"request body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    return data


def parse(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise APIError(400, f"'{where}': {err['msg']}") from None


def check_bearer(request: Request, token: str | None) -> None:
    if token and request.headers.get("authorization") != f"Bearer {token}":
        raise APIError(401, "missing or wrong bearer token (Authorization: Bearer <key>)", "authentication_error")


def check_limits(body: _Body, prompts: list[str], cfg: ServingConfig) -> int:
    """Validate a request against `serving.*` limits; returns the max_tokens to use."""
    if body.stream:
        raise APIError(400, "streaming is not supported; send stream=false")
    max_tokens = body.max_tokens or cfg.default_max_tokens
    if max_tokens > cfg.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}; the limit is {cfg.max_tokens}")
    if body.n > cfg.max_n:
        raise APIError(400, f"n is {body.n}; the limit is {cfg.max_n}")
    if body.best_of is not None:
        if body.best_of > cfg.max_best_of:
            raise APIError(400, f"best_of is {body.best_of}; the limit is {cfg.max_best_of}")
        if body.n != 1:
            raise APIError(400, "best_of returns one completion per prompt; send n=1 with it")
    if not prompts:
        raise APIError(400, "the request has no prompt")
    if len(prompts) * body.n > cfg.max_batch:
        raise APIError(400, f"{len(prompts)} prompts x n={body.n} exceeds the limit of {cfg.max_batch} completions")
    for p in prompts:
        if len(p) > cfg.max_prompt_chars:
            raise APIError(400, f"a prompt is {len(p)} characters; the limit is {cfg.max_prompt_chars}")
    return max_tokens


@dataclass
class _Job:
    key: tuple  # decoding settings; jobs with equal keys share one generate call
    prompts: list[str]
    future: asyncio.Future
    best_of: int | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str  # stop (eos) | length
    completion_tokens: int
    prompt_tokens: int


@dataclass
class ModelWorker:
    """The policy, its tokenizer and the batching queue in front of them."""

    model: Any
    tokenizer: Any
    cfg: ServingConfig
    scorer: Any = None  # CompositeReward when reward models are loaded
    logits_hook: Any = None  # the policy's decoding shift (`modeling.load_decoder`), None: plain
    generator: torch.Generator = field(default_factory=torch.Generator)
    queue: asyncio.Queue | None = None

    async def run(self) -> None:
        assert self.queue is not None
        while True:
            jobs = [await self.queue.get()]
            if self.cfg.batch_wait_ms > 0:
                await asyncio.sleep(self.cfg.batch_wait_ms / 1000)
            size = len(jobs[0].prompts)
            while not self.queue.empty() and size < self.cfg.max_batch:
                jobs.append(self.queue.get_nowait())
                size += len(jobs[-1].prompts)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key if job.best_of is None else (id(job),), []).append(job)
            for group in groups.values():
                try:
                    results = await asyncio.to_thread(self._complete, group)
                    for job, result in zip(group, results, strict=True):
                        if not job.future.done():
                            job.future.set_result(result)
                except Exception as e:  # a failed batch fails its requests, not the server
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)

    async def submit(
        self, prompts: list[str], max_tokens: int, temperature: float, top_k: int, best_of: int | None, template: bool
    ):
        """`template`: chat prompts, rendered by `chat.render`; False: raw text (`/v1/completions`)."""
        assert self.queue is not None
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job((max_tokens, temperature, top_k, template), prompts, future, best_of))
        return await future

    def _complete(self, group: list[_Job]) -> list[list[Completion]]:
        max_tokens, temperature, top_k, template = group[0].key
        prompts = [p for job in group for p in job.prompts]
        if group[0].best_of is not None:
            gen = GenerationConfig(max_new_tokens=max_tokens, temperature=max(temperature, 1e-3), top_k=top_k)
            results = best_of_n(
                self.model, self.tokenizer, prompts, group[0].best_of, self.scorer, generation=gen,
                generator=self.generator, logits_hook=self.logits_hook, template=template,
            )  # fmt: skip
            texts = [r.best for r in results]
            finish = ["stop"] * len(texts)
            lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        else:
            out = generate(
                self.model, self.tokenizer, prompts, max_tokens, greedy=temperature == 0,
                temperature=max(temperature, 1e-6), top_k=top_k, generator=self.generator,
                logits_hook=self.logits_hook, template=template,
            )  # fmt: skip
            texts = out.texts
            eos = self.tokenizer.eos_token_id
            ended = ((out.completion_ids == eos) & out.completion_mask.bool()).any(dim=1).tolist()
            finish = ["stop" if e else "length" for e in ended]
            lengths = out.completion_mask.sum(dim=1).tolist()
        rendered = render_all(self.tokenizer, prompts) if template else prompts
        prompt_lengths = [len(self.tokenizer(p)["input_ids"]) for p in rendered]
        flat = [Completion(*row) for row in zip(texts, finish, lengths, prompt_lengths, strict=True)]
        per_job, at = [], 0
        for job in group:
            per_job.append(flat[at : at + len(job.prompts)])
            at += len(job.prompts)
        return per_job

    def spreads(self, prompts: list[str], texts: list[str]) -> list[float]:
        """Per response the mean over objectives of the ensemble std: (N, M) -> (N,)."""
        return self.scorer.vectors(prompts, texts)["spreads"].mean(1).tolist()


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rlhfops_requests", "Requests by endpoint and status code", ["endpoint", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "rlhfops_request_latency_seconds", "Request latency", ["endpoint"], registry=self.registry
        )
        self.tokens = Counter("rlhfops_completion_tokens", "Generated tokens", registry=self.registry)
        self.spread = Histogram(
            "rlhfops_reward_spread", "Reward-ensemble spread (mean over objectives of the member std) per served "
            "response", registry=self.registry, buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        )  # fmt: skip
        self.spread_mean = Gauge(
            "rlhfops_reward_spread_mean", "Mean reward-ensemble spread over served responses", registry=self.registry
        )


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The prompt string of a chat request (`chat.prompt_of`: a lone user message is its text, else
    the messages' JSON): what the interaction store keeps; the model reads `chat.render` of it."""
    try:
        return prompt_of([{"role": m.role, "content": m.content} for m in messages])
    except ValueError as e:
        raise APIError(400, f"messages: {e}") from None


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
    generator = torch.Generator().manual_seed(cfg.serving.seed)
    worker = ModelWorker(model, tokenizer, cfg.serving, scorer, logits_hook=hook, generator=generator)
    metrics = ServerMetrics()
    token = os.environ.get(cfg.serving.api_key_env) or None
    spread_sum = [0.0, 0]  # running sum and count for the mean gauge

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.queue = asyncio.Queue()
        task = asyncio.create_task(worker.run())
        yield
        task.cancel()

    app = FastAPI(title=f"rlhfops {version}", lifespan=lifespan)
    app.state.version, app.state.worker, app.state.metrics = version, worker, metrics

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.kind)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        metrics.requests.labels(request.url.path, str(response.status_code)).inc()
        metrics.latency.labels(request.url.path).observe(time.perf_counter() - start)
        return response

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

    async def run(body: _Body, prompts: list[str], template: bool) -> tuple[list[Completion], dict[str, Any]]:
        max_tokens = check_limits(body, prompts, cfg.serving)
        if body.best_of is not None and body.best_of > 1 and scorer is None:
            raise APIError(400, "best_of needs reward models; start the server with serving.reward_models set")
        repeated = [p for p in prompts for _ in range(body.n)]
        best_of = body.best_of if body.best_of and body.best_of > 1 else None
        done = await worker.submit(repeated, max_tokens, body.temperature, body.top_k, best_of, template)
        metrics.tokens.inc(sum(c.completion_tokens for c in done))
        extra: dict[str, Any] = {"version": version, "prompts": repeated}
        if scorer is not None:
            spreads = await asyncio.to_thread(worker.spreads, repeated, [c.text for c in done])
            for s in spreads:
                metrics.spread.observe(s)
            spread_sum[0] += sum(spreads)
            spread_sum[1] += len(spreads)
            metrics.spread_mean.set(spread_sum[0] / spread_sum[1])
            extra["reward_spread"] = spreads
        return done, extra

    def usage(done: list[Completion]) -> dict[str, int]:
        p, c = sum(x.prompt_tokens for x in done), sum(x.completion_tokens for x in done)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def log(rid: str, done: list[Completion], prompts: list[str], latency_ms: float, user: str | None) -> list[str]:
        if store is None:
            return []
        ids = [rid] if len(done) == 1 else [f"{rid}:{i}" for i in range(len(done))]
        for i, (c, p) in enumerate(zip(done, prompts, strict=True)):
            store.log(p, c.text, version, latency_ms, "ok", user=user, request_id=ids[i])
        return ids

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        check_bearer(request, token)
        body = parse(CompletionRequest, await read_json(request, cfg.serving.max_request_bytes))
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        done, extra = await run(body, prompts, template=False)
        rid = f"cmpl-{uuid.uuid4().hex}"
        extra["interaction_ids"] = log(rid, done, extra["prompts"], 1000 * (time.perf_counter() - start), body.user)
        choices = [
            {"text": c.text, "index": i, "logprobs": None, "finish_reason": c.finish_reason} for i, c in enumerate(done)
        ]
        return {
            "id": rid, "object": "text_completion", "created": int(time.time()), "model": version,
            "choices": choices, "usage": usage(done), "rlhfops": extra,
        }  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        check_bearer(request, token)
        body = parse(ChatRequest, await read_json(request, cfg.serving.max_request_bytes))
        done, extra = await run(body, [chat_prompt(body.messages)], template=True)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        extra["interaction_ids"] = log(rid, done, extra["prompts"], 1000 * (time.perf_counter() - start), body.user)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            for i, c in enumerate(done)
        ]
        return {
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": version,
            "choices": choices, "usage": usage(done), "rlhfops": extra,
        }  # fmt: skip

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        check_bearer(request, token)
        body = parse(FeedbackRequest, await read_json(request, cfg.serving.max_request_bytes))
        return record_feedback(store, body)

    return app


def record_feedback(store: InteractionStore | None, body: FeedbackRequest) -> dict[str, Any]:
    if store is None:
        raise APIError(404, "this server keeps no interaction store; send feedback to the router")
    score = feedback_score(body)
    try:
        store.add_feedback(body.id, score)
    except KeyError:
        raise APIError(404, f"no interaction with id '{body.id}'") from None
    return {"id": body.id, "score": score, "status": "recorded"}


# ---- running on loopback --------------------------------------------------------------------------


@dataclass
class RunningServer:
    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


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
