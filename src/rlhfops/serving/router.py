"""The canary router: one OpenAI-compatible endpoint in front of the stable and the canary server.

Models: `/v1/models` lists ALIAS ("rlhfops", the id the deployment publishes) first, then the
stable and the canary version. A request for ALIAS (or naming no model) is split: it goes to the
canary with probability `serving.canary_percent` / 100 (seeded), or, with `serving.sticky` and a
`user` in the request, when sha256(user) mod 10000 < percent * 100, so a user always sees the same
version. A request naming a listed version is served by that version; any other model is 404
`model_not_found`. With a model registry (`start_stack`), which version is stable and which canary
is re-read whenever `registry.json` changes, so after a promote or rollback returns no new request
goes to the old canary.

Every completion is logged to the interaction store (id, time, prompt, response, version, latency,
status) under the response id it returns (for a failed request the response field holds the error
message); feedback (`/v1/feedback`) attaches to it later. Status `ok` is a served completion,
`rejected` a 4xx from the backend (the request's fault), `error` a 5xx, timeout or unreachable
backend (the version's fault, what the online gate counts). A request the router itself refuses
(malformed, an unknown model, a full queue) reaches no version and is not logged; neither is a 429
/ 503 from a backend whose queue is full.

Admission: at most QUEUED_BATCHES x `serving.max_batch` requests in flight per backend; beyond that
a split request goes to stable, and a full stable (or a named version that is full) answers 429
with Retry-After. A split request the canary fails (5xx, timeout, unreachable, or busy) is retried
once on stable; the failure is logged as the canary's error. Backend failures reach the client as
one sentence naming the arm and version, never its address. A request whose client disconnects is
cancelled at the backend too. `stream: true` is passed to the backend and its events relayed as
they come under the router's response id; the last chunk before `[DONE]` waits until the reply is
stored and carries its interaction ids; a stream the backend breaks off is the version's error.

Connections to a backend are spread over small httpx clients (`Pools`): one pool of a hundred
connections cost the router more CPU than decoding cost the servers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rlhfops.config import Config, ServingConfig
from rlhfops.registry import Registry, RegistryError
from rlhfops.serving.protocol import (
    DONE,
    APIError,
    ChatRequest,
    CompletionRequest,
    FeedbackRequest,
    Guard,
    busy,
    chat_prompt,
    check_bearer,
    disconnected,
    error_response,
    install_error_handlers,
    parse,
    read_json,
    record_feedback,
    sse,
    streaming_response,
)
from rlhfops.serving.server import (
    QUEUED_BATCHES,
    RunningServer,
    create_app,
    is_small,
    model_not_found,
    start_server,
)
from rlhfops.serving.store import InteractionStore

log = logging.getLogger("rlhfops.serving")

ALIAS = "rlhfops"  # the model id the deployment publishes; the canary split applies to it
LATENCY_TARGET_S = 1.5  # the router keeps a backend's small-request latency near this
POOL_CONNECTIONS = 8  # connections per httpx client (see Pools)


@dataclass(frozen=True)
class Backend:
    version: str  # registry version id, logged with every interaction
    url: str  # base URL of its server, e.g. http://127.0.0.1:8001


def canary_bucket(user: str) -> float:
    """A user's fixed position in [0, 100): sha256(user) mod 10000 / 100."""
    return int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) % 10000 / 100


@dataclass
class Split:
    percent: float
    sticky: bool
    rng: random.Random = field(default_factory=random.Random)

    def to_canary(self, user: str | None) -> bool:
        if self.sticky and user:
            return canary_bucket(user) < self.percent
        return self.rng.random() * 100 < self.percent


@dataclass
class Arms:
    """Which backend is stable and which is canary now: as given, or re-read from `registry`
    whenever its file changes (a version the registry names without a backend here is skipped)."""

    stable: Backend
    canary: Backend | None
    registry: Registry | None = None
    known: dict[str, Backend] = field(default_factory=dict)  # version -> its backend
    seen: tuple | None = None

    def __post_init__(self) -> None:
        self.known.update({b.version: b for b in (self.stable, self.canary) if b is not None})
        if self.registry is not None:
            self.seen = _file_key(self.registry.path)

    def refresh(self) -> None:
        if self.registry is None or (key := _file_key(self.registry.path)) == self.seen:
            return
        self.seen = key
        try:
            stable, canary = self.registry.stable(), self.registry.canary()
        except (RegistryError, OSError, KeyError, TypeError) as e:
            log.warning("the router keeps its arms: cannot read the registry (%s)", e)
            return
        if stable is not None and stable["id"] in self.known:
            self.stable = self.known[stable["id"]]
        self.canary = self.known.get(canary["id"]) if canary is not None else None
        if self.canary == self.stable:
            self.canary = None

    def listed(self) -> list[str]:
        return [ALIAS, self.stable.version] + ([self.canary.version] if self.canary else [])


def _file_key(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)  # written atomically: a new inode per update


@dataclass
class Admission:
    """How many requests of one size class one backend may have in flight. Small requests: an AIMD
    bound that shrinks by 10% when a reply took over LATENCY_TARGET_S and grows by one when it took
    under half that, so queueing stays near the target however fast the machine is; large ones: a
    fixed bound (one running and the server's queue)."""

    limit: float
    ceiling: int
    adaptive: bool
    in_flight: int = 0
    floor: int = 16  # the adaptive bound never goes below it

    def full(self) -> bool:
        return self.in_flight >= int(self.limit)

    def observe(self, seconds: float) -> None:
        if not self.adaptive:
            return
        if seconds > LATENCY_TARGET_S:
            self.limit = max(self.floor, self.limit * 0.9)
        elif seconds < LATENCY_TARGET_S / 2:
            self.limit = min(self.ceiling, self.limit + 1)


class Pools:
    """Connections to one backend, held in httpx clients of at most POOL_CONNECTIONS each: httpx's
    pool does work quadratic in its size on every request it starts or finishes (each idle
    connection polled, a list of all built per connection), which with one pool of a hundred
    connections cost the router more than the model cost the server. A request takes the least
    busy client."""

    def __init__(self, connections: int, timeout_s: float) -> None:
        # idle connections are dropped before the backend's keep-alive timeout (30 s) closes them,
        # so a request never races a server-side close
        limits = httpx.Limits(
            max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS, keepalive_expiry=20.0
        )
        timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self.clients = [
            httpx.AsyncClient(timeout=timeout, limits=limits) for _ in range(math.ceil(connections / POOL_CONNECTIONS))
        ]
        self.busy = [0] * len(self.clients)

    async def open(self, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, Callable[[], Awaitable[None]]]:
        """A request's response with its body unread, and the call that closes it (the client
        counts as busy until then)."""
        i = min(range(len(self.clients)), key=self.busy.__getitem__)
        self.busy[i] += 1
        client = self.clients[i]
        try:
            r = await client.send(client.build_request(method, url, **kwargs), stream=True)
        except BaseException:
            self.busy[i] -= 1
            raise

        async def close() -> None:
            try:
                await r.aclose()
            finally:
                self.busy[i] -= 1

        return r, close

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request's response, read whole."""
        r, close = await self.open(method, url, **kwargs)
        try:
            await r.aread()
        finally:
            await close()
        return r

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()


@dataclass
class Outcome:
    """One try at a backend: its status and reply, or `failure` (a sentence without the address)."""

    status: int | None = None
    reply: dict[str, Any] | None = None
    failure: str | None = None
    retry_after: str | None = None
    stream: httpx.Response | None = None  # a 200 stream, its body unread
    close: Callable[[], Awaitable[None]] | None = None  # closes `stream` and frees its admission slot

    @property
    def kind(self) -> str:
        """ok | busy (the backend's queue is full) | rejected (4xx) | error (the version's fault)."""
        if self.failure is not None or self.status is None or self.status >= 500 and self.status != 503:
            return "error"
        if self.status == 200:
            return "ok"
        return "busy" if self.status in (429, 503) else "rejected"


def create_router_app(
    stable: Backend,
    canary: Backend | None,
    cfg: ServingConfig,
    store: InteractionStore,
    *,
    registry: Registry | None = None,
) -> FastAPI:
    """The router; `canary` None sends everything to stable; with `registry` the arms follow it."""
    arms = Arms(stable, canary, registry)
    split = Split(cfg.canary_percent, cfg.sticky, random.Random(cfg.seed))
    token = os.environ.get(cfg.api_key_env) or None
    limit = QUEUED_BATCHES * cfg.max_batch
    admission: dict[tuple[str, bool], Admission] = {}  # (version, small) -> its bound

    def bound(version: str, small: bool) -> Admission:
        if (version, small) not in admission:
            ceiling = limit if small else QUEUED_BATCHES + 1
            admission[version, small] = Admission(ceiling, ceiling, adaptive=small, floor=max(1, cfg.max_batch // 4))
        return admission[version, small]

    metrics = CollectorRegistry()
    requests = Counter("rlhfops_router_requests", "Requests by arm and status", ["arm", "status"], registry=metrics)
    latency = Histogram("rlhfops_router_latency_seconds", "End-to-end latency by arm", ["arm"], registry=metrics)
    share = Gauge("rlhfops_router_canary_share", "Share of completions the canary served", registry=metrics)
    counts = {"stable": 0, "canary": 0}

    pools: dict[str, Pools] = {}  # backend url -> its connection pools

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for b in arms.known.values():
            pools[b.url] = Pools(limit + 16, cfg.timeout_s)
        yield
        for p in pools.values():
            await p.aclose()

    app = FastAPI(title="rlhfops canary router", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(Guard, token=token)

    @app.get("/health")
    async def health() -> JSONResponse:
        arms.refresh()
        status = {}
        for arm, b in {"stable": arms.stable, **({"canary": arms.canary} if arms.canary else {})}.items():
            try:
                r = await pools[b.url].request("GET", b.url + "/health", timeout=5)
                status[arm] = {"version": b.version, "ok": r.status_code == 200}
            except httpx.HTTPError:
                status[arm] = {"version": b.version, "ok": False}
        ok = all(s["ok"] for s in status.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "arms": status}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_bearer(request, token)
        arms.refresh()
        data = [{"id": v, "object": "model", "created": 0, "owned_by": "rlhfops"} for v in arms.listed()]
        return {"object": "list", "data": data}

    def choose(model: str | None, user: str | None, small: bool) -> tuple[str, Backend, bool]:
        """(arm, backend, whether the request named its version)."""
        arms.refresh()
        if model is None or model == ALIAS:
            to_canary = arms.canary is not None and split.to_canary(user)
            if to_canary and bound(arms.canary.version, small).full():
                to_canary = False  # a full canary sends its share to stable
            return ("canary", arms.canary, False) if to_canary else ("stable", arms.stable, False)
        if model == arms.stable.version:
            return "stable", arms.stable, True
        if arms.canary is not None and model == arms.canary.version:
            return "canary", arms.canary, True
        raise model_not_found(model)

    async def call(
        request: Request, arm: str, backend: Backend, path: str, body: dict[str, Any], small: bool
    ) -> Outcome:
        """One try at `backend`. A streamed 200 comes back unread (`Outcome.stream`); it holds its
        admission slot until `Outcome.close`."""
        slot = bound(backend.version, small)
        if slot.full():
            full = f"the {arm} backend ({backend.version}) has {slot.in_flight} requests in flight; retry later"
            return Outcome(429, {"error": {"message": full}}, retry_after=str(math.ceil(LATENCY_TARGET_S)))
        headers = {"authorization": request.headers["authorization"]} if "authorization" in request.headers else {}
        send = asyncio.ensure_future(pools[backend.url].open("POST", backend.url + path, json=body, headers=headers))
        gone = asyncio.ensure_future(disconnected(request))
        slot.in_flight += 1
        start = time.perf_counter()
        held = False
        try:
            await asyncio.wait({send, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not send.done():  # the client left: closing the connection drops the work at the backend
                send.cancel()
                raise APIError(499, "the client disconnected")
            r, close = send.result()
            if body.get("stream") and r.status_code == 200:
                held = True

                async def finish() -> None:
                    try:
                        await close()
                    finally:
                        slot.in_flight -= 1

                return Outcome(200, stream=r, close=finish)
            try:
                await r.aread()
            finally:
                await close()
            if r.status_code == 200:
                slot.observe(time.perf_counter() - start)
            return Outcome(r.status_code, r.json(), retry_after=r.headers.get("retry-after"))
        except (httpx.HTTPError, ValueError) as e:
            return Outcome(failure=f"the {arm} backend ({backend.version}) failed: {type(e).__name__}")
        finally:
            gone.cancel()
            if not held:
                slot.in_flight -= 1

    async def forward(request: Request, path: str) -> Any:
        start = time.perf_counter()
        check_bearer(request, token)
        raw = await read_json(request, cfg.max_request_bytes)
        body = parse(CompletionRequest if path == "/v1/completions" else ChatRequest, raw)
        prompt = chat_prompt(body.messages) if isinstance(body, ChatRequest) else raw["prompt"]
        small = is_small(_completions(body), body.max_tokens or cfg.default_max_tokens, cfg)
        arm, backend, named = choose(body.model, body.user, small)
        outcome = await call(request, arm, backend, path, {**raw, "model": backend.version}, small)
        if arm == "canary" and not named and outcome.kind in ("error", "busy"):
            if outcome.kind == "error":  # the canary's fault: counted against it, then stable answers
                await log_failure(arm, backend, outcome, prompt, body.user, start)
            arm, backend = "stable", arms.stable
            outcome = await call(request, arm, backend, path, {**raw, "model": backend.version}, small)
        if outcome.kind != "ok":
            if outcome.kind != "busy":
                await log_failure(arm, backend, outcome, prompt, body.user, start)
            return failure_response(arm, backend, outcome)
        rid = f"{'cmpl' if path == '/v1/completions' else 'chatcmpl'}-{uuid.uuid4().hex}"
        if outcome.stream is not None:
            return streaming_response(relay(outcome, arm, backend, rid, prompt, body.user, start))
        reply = outcome.reply
        extra = reply.get("rlhfops", {})
        texts = [c.get("text", c.get("message", {}).get("content", "")) for c in reply["choices"]]
        reply["id"] = rid
        reply["rlhfops"] = await served(arm, backend, rid, extra, texts, prompt, body.user, start)
        return JSONResponse(reply)

    async def served(
        arm: str,
        backend: Backend,
        rid: str,
        extra: dict[str, Any],
        texts: list[str],
        prompt: Any,
        user: str | None,
        start: float,
    ) -> dict[str, Any]:
        """Count and store a served reply (its texts: the backend's `responses`, else the choices');
        its `rlhfops` field."""
        latency_ms = 1000 * (time.perf_counter() - start)
        requests.labels(arm, "ok").inc()
        latency.labels(arm).observe(latency_ms / 1000)
        counts[arm] += 1
        share.set(counts["canary"] / (counts["stable"] + counts["canary"]))
        texts = extra.get("responses") or texts
        prompts = extra.get("prompts") or [str(prompt)] * len(texts)
        ids = [rid] if len(texts) == 1 else [f"{rid}:{i}" for i in range(len(texts))]
        rows = [(p, t, ids[i]) for i, (p, t) in enumerate(zip(prompts, texts, strict=True))]
        await asyncio.to_thread(_log_rows, store, rows, backend.version, latency_ms, user)
        return {**extra, "arm": arm, "interaction_ids": ids}

    async def relay(
        outcome: Outcome, arm: str, backend: Backend, rid: str, prompt: Any, user: str | None, start: float
    ) -> AsyncIterator[str]:
        """The backend's stream passed on chunk by chunk under the router's id; the last chunk
        before `[DONE]` is held back until the reply is stored, then carries the interaction ids.
        A stream the backend breaks off is the version's error; a client that leaves closes it."""
        last: dict[str, Any] | None = None
        extra: dict[str, Any] = {}
        texts: dict[int, str] = {}
        try:
            async for line in outcome.stream.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == DONE.strip():
                    break
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    raise ValueError(str(chunk["error"].get("message", "")))
                chunk["id"] = rid
                extra = chunk.pop("rlhfops", extra)
                for c in chunk.get("choices", []):
                    piece = c.get("text") if "text" in c else (c.get("delta") or {}).get("content")
                    texts[c["index"]] = texts.get(c["index"], "") + (piece or "")
                if last is not None:
                    yield sse(last)
                last = chunk
            else:
                raise httpx.RemoteProtocolError("the stream ended before [DONE]")
            ordered = [texts[i] for i in sorted(texts)]
            last["rlhfops"] = await served(arm, backend, rid, extra, ordered, prompt, user, start)
            yield sse(last)
            yield DONE
        except (httpx.HTTPError, ValueError) as e:
            failed = Outcome(failure=f"the {arm} backend ({backend.version}) failed mid-stream: {type(e).__name__}")
            await log_failure(arm, backend, failed, prompt, user, start)
            yield sse({"error": {"message": failed.failure, "type": "server_error", "param": None, "code": None}})
        finally:
            await outcome.close()

    async def log_failure(arm: str, backend: Backend, outcome: Outcome, prompt: Any, user: str | None, start: float):
        latency_ms = 1000 * (time.perf_counter() - start)
        requests.labels(arm, outcome.kind).inc()
        latency.labels(arm).observe(latency_ms / 1000)
        detail = outcome.failure or str((outcome.reply or {}).get("error", {}).get("message", ""))[:500]
        rid = f"err-{uuid.uuid4().hex}"
        text = prompt if isinstance(prompt, str) else str(prompt)
        await asyncio.to_thread(store.log, text, detail, backend.version, latency_ms, outcome.kind, user, rid)

    def failure_response(arm: str, backend: Backend, outcome: Outcome) -> JSONResponse:
        if outcome.kind == "busy":
            retry = int(outcome.retry_after) if (outcome.retry_after or "").isdigit() else 1
            message = str((outcome.reply or {}).get("error", {}).get("message", f"the {arm} backend is busy"))
            return busy(message, retry, outcome.status or 429).response()
        if outcome.kind == "rejected":
            return JSONResponse(outcome.reply, status_code=outcome.status)
        if outcome.failure is not None:  # unreachable or timed out: try again shortly
            return busy(outcome.failure, 1, 503).response()
        return error_response(502, f"the {arm} backend ({backend.version}) failed with HTTP {outcome.status}",
                              "server_error")  # fmt: skip

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await forward(request, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        return await forward(request, "/v1/chat/completions")

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        check_bearer(request, token)
        body = parse(FeedbackRequest, await read_json(request, cfg.max_request_bytes))
        return await asyncio.to_thread(record_feedback, store, body)

    app.state.arms = arms
    return app


def _completions(body: CompletionRequest | ChatRequest) -> int:
    """How many completions a request asks for: prompts x n."""
    if (
        isinstance(body, ChatRequest)
        or isinstance(body.prompt, str)
        or not body.prompt
        or isinstance(body.prompt[0], int)
    ):
        return body.n
    return len(body.prompt) * body.n


def _log_rows(
    store: InteractionStore, rows: list[tuple[str, str, str]], version: str, latency_ms: float, user: str | None
) -> None:
    for prompt, text, rid in rows:
        store.log(prompt, text, version, latency_ms, "ok", user=user, request_id=rid)


@dataclass
class Stack:
    """stable + canary servers and the router, running on loopback."""

    router: RunningServer
    servers: dict[str, RunningServer]  # arm -> server
    backends: dict[str, Backend]
    store: InteractionStore

    @property
    def url(self) -> str:
        return self.router.url

    def stop(self) -> None:
        self.router.stop()
        for s in self.servers.values():
            s.stop()


def start_stack(
    cfg: Config, ws_root: str | Path, *, any_port: bool = False, store: InteractionStore | None = None
) -> Stack:
    """Serve the registry's stable (and canary, if there is one) behind the router, logging to
    the workspace's interaction store; `any_port` binds free ports instead of `serving.*_port`."""
    registry = Registry(ws_root)
    versions = {"stable": registry.stable(), "canary": registry.canary()}
    if versions["stable"] is None:
        raise ValueError(f"the model registry in '{ws_root}' has no stable version; register one first")
    store = store or InteractionStore.for_config(cfg.serving.store_url, ws_root)
    sc = cfg.serving
    ports = {"stable": sc.stable_port, "canary": sc.canary_port, "router": sc.router_port}
    servers: dict[str, RunningServer] = {}
    backends: dict[str, Backend] = {}
    try:
        for arm, v in versions.items():
            if v is None:
                continue
            app = create_app(v["path"], v["id"], cfg)
            servers[arm] = start_server(app, sc.host, 0 if any_port else ports[arm])
            backends[arm] = Backend(v["id"], servers[arm].url)
        router_app = create_router_app(backends["stable"], backends.get("canary"), sc, store, registry=registry)
        router = start_server(router_app, sc.host, 0 if any_port else ports["router"])
    except BaseException:
        for s in servers.values():
            s.stop()
        raise
    return Stack(router, servers, backends, store)
