"""Simulated users, so the canary loop runs on one machine.

Each user sends a prompt of the task (`simulate.split`) through the router, the evaluation judges
score the response (`eval.judges`, by default the task's own; the mean over the objectives they
labelled), and the user gives thumbs up when the score is at least `simulate.threshold`, flipped
with probability `simulate.noise`. A response no judge labelled gets no feedback (counted as
`unlabelled`). `simulate.concurrency` users send at once; a user told 429 / 503 with Retry-After
waits that long and sends again (up to BUSY_TRIES times).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import fmean
from typing import Any

import httpx

from rlhfops.annotation.judges import eval_judges
from rlhfops.config import Config
from rlhfops.tasks import make_task

BUSY_TRIES = 10  # sends of one request while the router answers 429 / 503 with Retry-After


def simulate_traffic(
    cfg: Config,
    ws: str | Path,
    n_requests: int,
    *,
    url: str | None = None,
    more: Callable[[], bool] | None = None,
    max_rounds: int = 1,
) -> dict[str, Any]:
    """Send `n_requests` simulated requests with feedback to the router at `url`; None starts the
    registry's stable + canary + router on free loopback ports and stops them afterwards. With `more`,
    another `n_requests` after each round while `more()` says so, up to `max_rounds` rounds in all
    (`rlhfops run`: until the online gate decides the canary)."""
    if n_requests < 1:
        raise ValueError(f"the number of simulated requests must be at least 1, got {n_requests}")
    sim = cfg.simulate
    task = make_task(cfg.task, cfg.seed)
    judge = eval_judges(cfg, task)
    examples = task.examples(sim.split, min(n_requests, _split_size(cfg, sim.split)))
    rng = random.Random(sim.seed)

    def plan() -> list[tuple[Any, str, bool]]:  # one round: (example, user, flipped feedback) per request
        return [
            (rng.choice(examples), f"user{rng.randrange(sim.n_users)}", rng.random() < sim.noise)
            for _ in range(n_requests)
        ]

    stack = None
    if url is None:
        from rlhfops.serving.router import start_stack

        stack = start_stack(cfg, ws, any_port=True)
        url = stack.url
    key = os.environ.get(cfg.serving.api_key_env)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    start = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=cfg.serving.timeout_s, headers=headers) as client:

            def one(item) -> dict[str, Any]:
                example, user, flip = item
                body = {"prompt": example.prompt, "max_tokens": sim.max_tokens, "user": user}
                for _ in range(BUSY_TRIES):  # a busy router (429 / 503) says when to come back
                    try:
                        r = client.post("/v1/completions", json=body)
                    except httpx.HTTPError as e:
                        raise ConnectionError(f"cannot reach the router at {url}: {type(e).__name__}") from None
                    if r.status_code not in (429, 503) or "retry-after" not in r.headers:
                        break
                    time.sleep(float(r.headers["retry-after"]))
                if r.status_code != 200:
                    return {"ok": False, "status": r.status_code}
                reply = r.json()
                text = reply["choices"][0]["text"]
                labelled = [v for v in judge([example.prompt], [text])[0].values() if v is not None]
                if not labelled:
                    return {"ok": True, "version": reply["model"], "gold": None, "up": None}
                gold = fmean(labelled)
                thumbs_up = (gold >= sim.threshold) != flip
                if sim.feedback == "score":
                    body = {"id": reply["id"], "score": 1.0 - gold if flip else gold}
                else:
                    body = {"id": reply["id"], "thumbs": "up" if thumbs_up else "down"}
                fb = client.post("/v1/feedback", json=body)
                return {"ok": fb.status_code == 200, "version": reply["model"], "gold": gold, "up": thumbs_up}

            results, rounds = [], 0
            with ThreadPoolExecutor(sim.concurrency) as pool:
                while rounds < max(1, max_rounds):
                    results += pool.map(one, plan())
                    rounds += 1
                    if more is None or not more():
                        break
    finally:
        if stack is not None:
            stack.stop()
    seconds = time.perf_counter() - start
    versions: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["ok"]:
            v = versions.setdefault(r["version"], {"requests": 0, "gold": [], "up": []})
            v["requests"] += 1
            if r["gold"] is not None:
                v["gold"].append(r["gold"])
                v["up"].append(float(r["up"]))
    per_version = {
        k: {
            "requests": v["requests"],
            "unlabelled": v["requests"] - len(v["gold"]),
            "mean_gold": fmean(v["gold"]) if v["gold"] else None,
            "thumbs_up_rate": fmean(v["up"]) if v["up"] else None,
        }
        for k, v in versions.items()
    }
    return {
        "url": url,
        "requests": len(results),
        "rounds": rounds,
        "errors": sum(not r["ok"] for r in results),
        "seconds": seconds,
        "requests_per_s": len(results) / seconds,
        "versions": per_version,
    }


def _split_size(cfg: Config, split: str) -> int:
    return {"train": cfg.task.n_train, "val": cfg.task.n_val, "test": cfg.task.n_test}[split]
