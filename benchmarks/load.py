"""Admission control under a burst: `--clients` concurrent clients against the loopback stack
(stable + canary servers and the router, from a registry, in a child process), each sending
`--per-client` requests, a `--large-share` of them maximum-size (every prompt and completion the
limits allow: `serving.max_batch` completions of `serving.max_tokens` tokens, the longest prompt the
model's context leaves room for), the rest small; halfway through, the canary is rolled back in the
registry.

Checks (`ok`): every reply is 200, or 429 / 503 with Retry-After; none other 5xx; small-request p99
under `--small-p99-s` while large ones run; every 200's interaction ids in the store; no request sent
after the rollback returned is answered by the old canary. Also printed: the clients' own event-loop
lag (on a loaded machine part of every latency they measure is theirs).

    python benchmarks/load.py --out workspace/bench/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

import httpx

from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.modeling import init_policy, save_policy
from rlhfops.registry import Registry
from rlhfops.serving.store import InteractionStore

STACK = """
import json, sys
from rlhfops.config import load_config
from rlhfops.serving.router import start_stack
from rlhfops.serving.server import wait_for_shutdown_signal
stack = start_stack(load_config(sys.argv[1]), sys.argv[2], any_port=True)
print(json.dumps({"url": stack.url}), flush=True)
wait_for_shutdown_signal()
stack.stop()
"""


def spawn(script: str, *argv: str) -> tuple[subprocess.Popen, str]:
    # one intra-op thread: a tiny model gains nothing from more, and idle OpenMP threads spin on the cores
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], stdout=subprocess.PIPE, text=True, env=env)
    return proc, json.loads(proc.stdout.readline())["url"]


def pct(xs: list[float], q: int) -> float | None:
    if len(xs) < 2:
        return xs[0] if xs else None
    return quantiles(xs, n=100)[q - 1]


async def drive(url: str, args: argparse.Namespace, cfg, ws: Path) -> tuple[list[dict], float, float, list[float]]:
    sc = cfg.serving
    # the longest prompt that leaves room for max_tokens in the context: "q: 1+1+...+1?\n" plus <bos>
    large_prompt = "q: " + "1+" * ((cfg.model.max_position_embeddings - sc.max_tokens - 7) // 2) + "1?\n"
    per_prompt = sc.max_batch // sc.max_n
    large = {"prompt": [large_prompt] * per_prompt, "n": sc.max_n, "max_tokens": sc.max_tokens}
    rng = random.Random(0)
    plan = [[rng.random() < args.large_share for _ in range(args.per_client)] for _ in range(args.clients)]
    total = args.clients * args.per_client
    results: list[dict] = []
    rollback_at: list[float] = []
    # one connection pool per 25 clients: httpx's pool does work linear in its size per request
    pools = [httpx.AsyncClient(base_url=url, timeout=300) for _ in range(0, args.clients, 25)]
    try:

        async def roll_back_halfway() -> None:
            while len(results) < total // 2:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(Registry(ws).rollback_canary)
            rollback_at.append(time.perf_counter())

        async def one_client(k: int) -> None:
            for i, is_large in enumerate(plan[k]):
                body = large if is_large else {"prompt": f"q: {k % 10}+{i % 10}?\n", "max_tokens": args.small_tokens}
                start = time.perf_counter()
                try:
                    r = await pools[k // 25].post("/v1/completions", json={**body, "user": f"u{k}"})
                    status, headers = r.status_code, r.headers
                    reply = r.json() if status == 200 else None
                except httpx.HTTPError as e:
                    status, headers, reply = f"{type(e).__name__}", {}, None
                results.append({
                    "large": is_large, "status": status, "start": start, "seconds": time.perf_counter() - start,
                    "retry_after": headers.get("retry-after"), "model": reply and reply["model"],
                    "ids": reply["rlhfops"]["interaction_ids"] if reply else [],
                })  # fmt: skip
                if status in (429, 503):
                    await asyncio.sleep(min(float(headers.get("retry-after", 1)), args.max_backoff_s))

        async def clients_lag() -> None:
            while len(results) < total:  # how late a 10 ms sleep wakes: the clients' own event-loop lag
                start = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - start - 0.01)

        lags: list[float] = []
        began = time.perf_counter()
        await asyncio.gather(clients_lag(), roll_back_halfway(), *(one_client(k) for k in range(args.clients)))
    finally:
        for pool in pools:
            await pool.aclose()
    return results, rollback_at[0] - began if rollback_at else float("nan"), began, lags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--config", default="smoke")
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--per-client", type=int, default=3)
    ap.add_argument("--large-share", type=float, default=0.1)
    ap.add_argument("--small-tokens", type=int, default=8)
    ap.add_argument("--small-p99-s", type=float, default=5.0)
    ap.add_argument("--max-backoff-s", type=float, default=2.0, help="clients wait min(Retry-After, this) after a 429")
    args = ap.parse_args()

    cfg = load_config(args.config)
    ws = Path(tempfile.mkdtemp(prefix="load."))
    tokenizer, model = init_policy(cfg)
    path = save_policy(model, tokenizer, cfg, ws / "policy")
    reg = Registry(ws)
    stable = reg.register(path, stage="stable")
    canary = reg.register(path, parent=stable, stage="canary")
    proc, url = spawn(STACK, args.config, str(ws))
    try:
        wall = time.perf_counter()
        results, rollback_s, began, lags = asyncio.run(drive(url, args, cfg, ws))
        seconds = time.perf_counter() - wall
    finally:
        proc.send_signal(signal.SIGTERM)
        drained = proc.wait(120) == 0
    store = InteractionStore.for_workspace(ws)
    rows = store.interactions()
    stored = {r["id"] for r in rows}
    small_ids = {r["ids"][0] for r in results if r["status"] == 200 and not r["large"]}
    router_small = [r["latency_ms"] / 1000 for r in rows if r["id"] in small_ids]
    ok = [r for r in results if r["status"] == 200]
    small_ok = [r["seconds"] for r in ok if not r["large"]]
    large_ok = [r["seconds"] for r in ok if r["large"]]
    codes: dict[str, int] = {}
    for r in results:
        codes[str(r["status"])] = codes.get(str(r["status"]), 0) + 1
    after = [r for r in results if r["start"] - began > rollback_s]
    result = {
        "config": args.config,
        "clients": args.clients,
        "requests": len(results),
        "large_requests": sum(r["large"] for r in results),
        "large_request": f"{cfg.serving.max_batch} completions x {cfg.serving.max_tokens} tokens",
        "small_request": f"1 completion x {args.small_tokens} tokens",
        "status_codes": codes,
        "other_5xx_or_failed": sum(r["status"] not in (200, 429, 503) for r in results),
        "busy_without_retry_after": sum(r["status"] in (429, 503) and not r["retry_after"] for r in results),
        "small_200": len(small_ok),
        "small_p50_s": pct(small_ok, 50),
        "small_p99_s": pct(small_ok, 99),
        "small_p99_in_router_s": pct(router_small, 99),
        "large_200": len(large_ok),
        "large_p50_s": pct(large_ok, 50),
        "large_max_s": max(large_ok, default=None),
        "replies_missing_from_store": sum(any(i not in stored for i in r["ids"]) for r in ok),
        "rollback_at_s": rollback_s,
        "canary_replies_before_rollback": sum(r["model"] == canary for r in results if r not in after),
        "requests_sent_after_rollback": len(after),
        "canary_replies_sent_after_rollback": sum(r["model"] == canary for r in after),
        "drained_on_sigterm": drained,
        "clients_loop_lag_p99_s": pct(lags, 99),
        "seconds": seconds,
    }
    result["ok"] = (
        result["other_5xx_or_failed"] == 0
        and result["busy_without_retry_after"] == 0
        and result["small_p99_s"] is not None
        and result["small_p99_s"] < args.small_p99_s
        and result["large_200"] > 0
        and result["replies_missing_from_store"] == 0
        and result["canary_replies_sent_after_rollback"] == 0
        and result["canary_replies_before_rollback"] > 0
    )
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
