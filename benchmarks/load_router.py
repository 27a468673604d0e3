"""Load run of the canary router on loopback: stable + canary servers and the router in this
process, `--clients` concurrent clients sending `--requests` completions through the router.

Checks: no errors (a 429 or 503 with Retry-After is the right answer to overload, not an error:
the client waits min(Retry-After, `--max-backoff-s`) and sends the request again), one interaction
record per request in the store (counted), canary share within `canary_percent` +- 1 pp; prints
p50 / p99 latency of the answered requests, how many were refused as busy, and throughput.

    python benchmarks/load_router.py --out workspace/bench/load_router.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from statistics import quantiles

import httpx

from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.modeling import init_policy, save_policy
from rlhfops.serving.router import Backend, create_router_app
from rlhfops.serving.server import create_app, start_server
from rlhfops.serving.store import InteractionStore


async def drive(
    url: str, n_requests: int, clients: int, max_tokens: int, max_backoff_s: float
) -> tuple[list[float], list[str], int, int]:
    latencies: list[float] = []
    arms: list[str] = []
    errors = busy = 0
    counter = iter(range(n_requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(k: int) -> None:
            nonlocal errors, busy
            for i in counter:
                body = {"prompt": f"q: {i % 10}+{k % 10}?\n", "max_tokens": max_tokens, "user": f"u{i}"}
                while True:
                    start = time.perf_counter()
                    r = await client.post("/v1/completions", json=body)
                    retry_after = r.headers.get("retry-after")
                    if r.status_code not in (429, 503) or retry_after is None:
                        break
                    busy += 1  # overload answered as it should be: back off, send it again
                    await asyncio.sleep(min(float(retry_after), max_backoff_s))
                if r.status_code != 200:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - start)
                    arms.append(r.json()["rlhfops"]["arm"])

        await asyncio.gather(*(worker(k) for k in range(clients)))
    return latencies, arms, errors, busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--model", default=None, help="model directory to serve (default: a fresh model of --config)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--max-backoff-s", type=float, default=2.0, help="clients wait min(Retry-After, this) after a 429")
    args = ap.parse_args()

    cfg = load_config(args.config)
    tmp = Path(tempfile.mkdtemp(prefix="load_router."))
    model_dir = args.model
    if model_dir is None:
        tokenizer, model = init_policy(cfg)
        model_dir = save_policy(model, tokenizer, cfg, tmp / "policy")
    store = InteractionStore.for_workspace(tmp)
    servers = {v: start_server(create_app(model_dir, v, cfg), "127.0.0.1", 0) for v in ("stable", "canary")}
    router = start_server(
        create_router_app(Backend("stable", servers["stable"].url), Backend("canary", servers["canary"].url),
                          cfg.serving, store),
        "127.0.0.1", 0,
    )  # fmt: skip
    try:
        start = time.perf_counter()
        latencies, arms, errors, busy = asyncio.run(
            drive(router.url, args.requests, args.clients, args.max_tokens, args.max_backoff_s)
        )
        seconds = time.perf_counter() - start
    finally:
        router.stop()
        for s in servers.values():
            s.stop()
    records = store.count()
    canary_share = store.count("canary") / records if records else 0.0
    cuts = quantiles(latencies, n=100)
    result = {
        "config": args.config,
        "model": str(model_dir),
        "model_parameters": sum(p.numel() for p in init_policy(cfg)[1].parameters()),
        "max_tokens": args.max_tokens,
        "requests": args.requests,
        "clients": args.clients,
        "errors": errors,
        "busy_with_retry_after": busy,
        "records_in_store": records,
        "lost_records": args.requests - records,
        "canary_percent": cfg.serving.canary_percent,
        "canary_share_pct": 100 * canary_share,
        "canary_share_replies_pct": 100 * arms.count("canary") / max(len(arms), 1),
        "latency_p50_ms": 1000 * cuts[49],
        "latency_p99_ms": 1000 * cuts[98],
        "seconds": seconds,
        "requests_per_s": args.requests / seconds,
    }
    result["ok"] = (
        errors == 0 and records == args.requests and abs(result["canary_share_pct"] - cfg.serving.canary_percent) <= 1
    )
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
