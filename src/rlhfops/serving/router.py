"""The canary router: one OpenAI-compatible endpoint in front of the stable and the canary server.

A request goes to the canary with probability `serving.canary_percent` / 100 (seeded), or, with
`serving.sticky` and a `user` in the request, when sha256(user) mod 10000 < percent * 100, so a
user always sees the same version. Every completion is logged to the interaction store (id,
time, prompt, response, version, latency, status) under the response id it returns (for a
failed request the response field holds the error message); feedback
(`/v1/feedback`) attaches to it later. Status `ok` is a served completion, `rejected` a 4xx from
the backend (the request's fault), `error` a 5xx or an unreachable backend (the version's fault).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rlhfops.chat import prompt_of
from rlhfops.config import Config, ServingConfig
from rlhfops.registry import Registry
from rlhfops.serving.server import (
    APIError,
    FeedbackRequest,
    RunningServer,
    check_bearer,
    create_app,
    error_response,
    parse,
    read_json,
    record_feedback,
    start_server,
)
from rlhfops.serving.store import InteractionStore


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


def create_router_app(stable: Backend, canary: Backend | None, cfg: ServingConfig, store: InteractionStore) -> FastAPI:
    """The router; `canary` None sends everything to stable."""
    split = Split(cfg.canary_percent if canary else 0.0, cfg.sticky, random.Random(cfg.seed))
    token = os.environ.get(cfg.api_key_env) or None
    registry = CollectorRegistry()
    requests = Counter("rlhfops_router_requests", "Requests by arm and status", ["arm", "status"], registry=registry)
    latency = Histogram("rlhfops_router_latency_seconds", "End-to-end latency by arm", ["arm"], registry=registry)
    share = Gauge("rlhfops_router_canary_share", "Share of completions the canary served", registry=registry)
    counts = {"stable": 0, "canary": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # idle connections are dropped before the backend's keep-alive timeout closes them, so a
        # request never races a server-side close
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512, keepalive_expiry=2.0)
        app.state.client = httpx.AsyncClient(timeout=cfg.timeout_s, limits=limits)
        yield
        await app.state.client.aclose()

    app = FastAPI(title="rlhfops canary router", lifespan=lifespan)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.kind)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        arms = {"stable": stable, **({"canary": canary} if canary else {})}
        status = {}
        for arm, b in arms.items():
            try:
                r = await app.state.client.get(b.url + "/health", timeout=5)
                status[arm] = {"version": b.version, "ok": r.status_code == 200}
            except httpx.HTTPError:
                status[arm] = {"version": b.version, "ok": False}
        ok = all(s["ok"] for s in status.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "arms": status}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_bearer(request, token)
        versions = [stable.version] + ([canary.version] if canary else [])
        return {
            "object": "list",
            "data": [{"id": v, "object": "model", "created": 0, "owned_by": "rlhfops"} for v in versions],
        }

    async def forward(request: Request, path: str) -> JSONResponse:
        start = time.perf_counter()
        check_bearer(request, token)
        body = await read_json(request, cfg.max_request_bytes)
        user = body.get("user") if isinstance(body.get("user"), str) else None
        arm = "canary" if canary and split.to_canary(user) else "stable"
        backend = canary if arm == "canary" else stable
        headers = {"authorization": request.headers["authorization"]} if "authorization" in request.headers else {}
        prompt = body.get("prompt") if path == "/v1/completions" else _chat_prompt(body)
        try:
            r = await app.state.client.post(backend.url + path, json=body, headers=headers)
            status = "ok" if r.status_code == 200 else "rejected" if r.status_code < 500 else "error"
            reply = r.json()
        except (httpx.HTTPError, ValueError) as e:
            status, reply = "error", None
            message = f"the {arm} backend ({backend.version} at {backend.url}) failed: {type(e).__name__}: {e}"
        latency_ms = 1000 * (time.perf_counter() - start)
        rid = f"{'cmpl' if path == '/v1/completions' else 'chatcmpl'}-{uuid.uuid4().hex}"
        requests.labels(arm, status).inc()
        latency.labels(arm).observe(latency_ms / 1000)
        if status != "ok":
            detail = message if reply is None else str(reply.get("error", {}).get("message", ""))[:500]
            store.log(str(prompt), detail, backend.version, latency_ms, status, user=user, request_id=rid)
            if reply is None:
                return error_response(502, message, "server_error")
            return JSONResponse(reply, status_code=r.status_code)
        counts[arm] += 1
        share.set(counts["canary"] / (counts["stable"] + counts["canary"]))
        extra = reply.get("rlhfops", {})
        prompts = extra.get("prompts") or [str(prompt)] * len(reply["choices"])
        texts = [c.get("text", c.get("message", {}).get("content", "")) for c in reply["choices"]]
        ids = [rid] if len(texts) == 1 else [f"{rid}:{i}" for i in range(len(texts))]
        for i, (p, t) in enumerate(zip(prompts, texts, strict=True)):
            store.log(p, t, backend.version, latency_ms, "ok", user=user, request_id=ids[i])
        reply["id"] = rid
        reply["rlhfops"] = {**extra, "arm": arm, "interaction_ids": ids}
        return JSONResponse(reply)

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        return await forward(request, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        return await forward(request, "/v1/chat/completions")

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        check_bearer(request, token)
        return record_feedback(store, parse(FeedbackRequest, await read_json(request, cfg.max_request_bytes)))

    return app


def _chat_prompt(body: dict[str, Any]) -> str:
    """The prompt string of a chat request as the server stores it (`chat.prompt_of`), for a
    request the backend did not answer; messages that are not role / content pairs: their JSON."""
    messages = body.get("messages")
    try:
        return prompt_of(messages)
    except ValueError:
        return json.dumps(messages, ensure_ascii=False, default=str)


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
        router_app = create_router_app(backends["stable"], backends.get("canary"), sc, store)
        router = start_server(router_app, sc.host, 0 if any_port else ports["router"])
    except BaseException:
        for s in servers.values():
            s.stop()
        raise
    return Stack(router, servers, backends, store)
