"""Orchestration of `rlhfops bench`: per seed SFT, the in-process cycles, the shared Best-of-N draw
and the rows trained beside the cycles; then the speed ratios and the technique table."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rlhfops.bench.dense_prm import dense_prm_ppo
from rlhfops.bench.draw import draw_best_of_n_samples, overoptimisation, pareto, rerank_solve
from rlhfops.bench.pareto import trained_pareto
from rlhfops.bench.plan import BenchPlan, bench_config
from rlhfops.bench.records import Bench, CycleResult, EvalResult, SeedResult, write_bench
from rlhfops.bench.speed import speed_ratios
from rlhfops.bench.table import technique_table
from rlhfops.config import Config
from rlhfops.workspace import Workspace

Log = Callable[[str], None]


def bench_cycle(cfg: Config, ws: Workspace, log: Log) -> CycleResult:
    """One cycle through `rlhfops.cycle`'s stages in the pipeline's order, each timed; a deployed
    candidate is promoted to stable at once. Returns the cycle's evaluation, gate and timings."""
    from rlhfops import cycle as stages
    from rlhfops.registry import Registry

    seconds: dict[str, float] = {}

    def timed(name: str, *args, **kwargs):
        start = time.perf_counter()
        fn = stages.begin if name == "begin" else stages.STAGES[name]
        result = fn(*args, **kwargs)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return result

    n = timed("begin", cfg, ws)["cycle"]
    for name in ("collect", "annotate", "version_data"):
        timed(name, cfg, ws, n)
    for spec in timed("reward_plan", cfg, ws, n):
        timed("reward_member", cfg, ws, n, spec=spec)
    timed("reward_finish", cfg, ws, n)
    timed("prm", cfg, ws, n)
    timed("policy", cfg, ws, n)
    offline = timed("offline", cfg, ws, n)
    summary = timed("evaluate", cfg, ws, n)
    gate = timed("gate", cfg, ws, n)
    deployed = None
    if gate["decision"] == "deploy":
        deployed = timed("deploy_canary", cfg, ws, n)["version"]
        registry = Registry(ws.root)
        registry.record_decision(deployed, "promote", {"reason": "rlhfops bench: promoted at the pre-deploy gate"})
        registry.promote_canary()
    results: dict[str, EvalResult] = {
        name: {k: v for k, v in r.items() if k not in ("samples", "per_prompt")}  # type: ignore[misc]
        for name, r in summary["results"].items()
    }
    after = results[gate["candidate"]] if deployed else results["stable"]
    log(
        f"  cycle {n}: stable {results['stable']['gold_composite']:.3f}, "
        + ", ".join(f"{k} {r['gold_composite']:.3f}" for k, r in results.items() if k != "stable")
        + f"; gate {gate['decision']} {gate.get('candidate') or ''} ({sum(seconds.values()):.0f} s)"
    )
    return {
        "cycle": n,
        "results": results,
        "gate": {"decision": gate["decision"], "candidate": gate.get("candidate"), "reason": gate.get("reason")},
        "deployed": deployed,
        "after": after,
        "offline_samples": offline.get("samples"),
        "seconds": seconds,
    }


def run_seed(plan: BenchPlan, cfg: Config, root: Path, log: Log) -> SeedResult:
    """Everything one seed measures (the package docstring), in the workspace `root` (started
    afresh: a re-run must not continue an earlier run's cycles)."""
    import shutil

    from rlhfops.cycle import cycle_models
    from rlhfops.sft import run_sft

    if root.exists():
        shutil.rmtree(root)
    ws = Workspace(root)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> float:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now
        return seconds[name]

    run_sft(cfg, ws.model_dir("sft"), progress=False)
    log(f"  SFT in {lap('sft'):.0f} s")

    cycles = [bench_cycle(cfg, ws, log) for _ in range(plan.cycles)]
    lap("cycles")

    last = cycle_models(ws, plan.cycles)
    report, samples = draw_best_of_n_samples(cfg, ws.model_dir("sft"), last / "reward", last / "prm", root / "bon")
    over, rerank, bon_front = (
        overoptimisation(samples, cfg),
        rerank_solve(samples),
        pareto(samples, cfg, plan.grid_steps),
    )
    log(f"  Best-of-{samples.gold.shape[1]} draw scored and judged in {lap('draw'):.0f} s")

    trained = trained_pareto(cfg, ws, root / "pareto", plan.grid_steps, log)
    log(f"  {trained['policies']} weight-grid policies trained and judged in {lap('pareto'):.0f} s")

    dense = dense_prm_ppo(cfg, ws, root / "dense-prm")
    log(f"  dense-PRM PPO in {lap('dense_prm'):.0f} s")
    return {
        "seed": cfg.seed,
        "seconds": seconds,
        "cycles": cycles,
        "best_of_n": report,
        "overoptimisation": over,
        "rerank": rerank,
        "multi_objective_bon": bon_front,
        "multi_objective": trained,
        "dense_prm": dense,
        "members": cfg.reward.members,
    }


def run_bench(
    plan: BenchPlan, seeds: list[int], out: Path, overrides: list[str] | tuple[str, ...] = (), log: Log = print
) -> Bench:
    """Every seed (`run_seed`), then the speed ratios; writes and returns `<out>/bench.json`."""
    if not seeds:
        raise ValueError("rlhfops bench needs at least one seed")
    out = Path(out)
    started = time.perf_counter()
    rows = []
    for seed in seeds:
        log(f"seed {seed}")
        rows.append(run_seed(plan, bench_config(plan, seed, overrides), out / "runs" / f"seed-{seed}", log))
    log("speed ratios")
    cfg = bench_config(plan, seeds[0], overrides)
    with tempfile.TemporaryDirectory(prefix="rlhfops-bench-") as scratch:
        speed = speed_ratios(
            plan, cfg, Workspace(out / "runs" / f"seed-{seeds[0]}").model_dir("sft"), Path(scratch), log
        )
    bench: Bench = {
        "plan": plan.to_json(),
        "overrides": list(overrides),
        "seeds": list(seeds),
        "table": technique_table(rows),
        "rows": rows,
        "speed": speed,
        "seconds": time.perf_counter() - started,
    }
    write_bench(out, bench)
    return bench
