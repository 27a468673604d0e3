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
from rlhfops.bench.records import Bench, CycleResult, SeedResult, eval_headline, write_bench
from rlhfops.bench.speed import speed_ratios
from rlhfops.bench.table import technique_table
from rlhfops.config import Config
from rlhfops.workspace import Workspace

Log = Callable[[str], None]


def bench_cycle(cfg: Config, ws: Workspace, log: Log) -> CycleResult:
    """One cycle as the pipeline runs it (`rlhfops.cycle.run_in_process`: its stages in their
    declared order), each stage timed; a candidate the gate deploys is promoted to stable at once
    (no simulated traffic). Returns the cycle's evaluation, gate and timings."""
    from rlhfops.cycle import run_in_process
    from rlhfops.registry import Registry

    seconds: dict[str, float] = {}

    def on_stage(name: str, elapsed: float) -> None:
        seconds[name] = seconds.get(name, 0.0) + elapsed

    done = run_in_process(cfg, ws, on_stage)
    n, stages = done["cycle"], done["results"]
    summary, gate, offline = stages["evaluate"], stages["gate"], stages["offline"]
    deployed = stages["deploy_canary"]["version"] if "deploy_canary" in stages else None
    if deployed is not None:
        registry = Registry(ws.root)
        registry.record_decision(deployed, "promote", {"reason": "rlhfops bench: promoted at the pre-deploy gate"})
        registry.promote_canary()
    results = {name: eval_headline(r) for name, r in summary["results"].items()}
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
