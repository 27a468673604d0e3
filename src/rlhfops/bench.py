"""`rlhfops bench`: the technique table and the speed ratios, measured on the built-in task.

Per seed, in its own workspace `<out>/runs/seed-N/`, trained once and shared by every row:

    sft        the starting policy (`sft.run_sft`)
    cycles     `plan.cycles` iterative-RLHF cycles in process, the stages of `rlhfops.cycle` in the
               pipeline's order; a candidate the pre-deploy gate deploys is promoted at once (no
               simulated traffic: the online gate is benchmarked by `benchmarks/gate_aa.py`)
    draw       Best-of-N_max from the SFT policy on `best_of_n.n_prompts` test prompts
               (`evaluate_best_of_n`, its draws kept in a Best-of-N cache and read back), scored by
               every member of the last cycle's reward ensembles and by its PRM, judged by gold
    dense PRM  one PPO run with dense PRM step rewards, the twin of cycle 1's outcome-only PPO

Rows from those: iterative RLHF (gold after cycles 1..n vs SFT), multi-objective (Best-of-N under
each weight of a simplex grid: Pareto front and hypervolume vs the configured weighted sum),
process supervision (PRM- vs outcome-RM-reranked Best-of-N_max on solve accuracy; dense vs outcome
PPO), Best-of-N (gold vs N, adaptive N), ensembles (gold vs proxy as N grows, one member vs the
ensemble under mean / min / uwo), offline RL vs PPO (cycle 1's two candidates, same start and data).

Speed ratios, once per run on seed `seeds[0]`'s SFT policy: fused vs member-by-member ensemble
scoring, batched Best-of-N vs one `generate` per prompt, PPO vs TRL's RLOOTrainer, and the RM and
PPO update throughput as a fraction of this machine's matmul peak (`rlhfops.bench_speed`).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

from rlhfops.config import Config, load_config
from rlhfops.files import atomic_write_json
from rlhfops.workspace import Workspace

BENCH_JSON = "bench.json"
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchPlan:
    """How big each scenario is; `FULL` is `rlhfops bench`, `QUICK` is `--quick` (the test suite)."""

    config: str | None
    """YAML every run starts from (None: the embedded default, tiny.yaml)."""
    overrides: tuple[str, ...]
    """Config overrides applied before the command line's."""
    cycles: int
    """Iterative-RLHF cycles per seed."""
    grid_steps: int
    """Multi-objective weight grid: the simplex lattice with spacing 1 / grid_steps."""
    speed_prompts: int
    """Batched vs per-prompt Best-of-N: prompts, each with speed_n samples."""
    speed_n: int
    ppo_rloo_steps: int
    """PPO vs RLOOTrainer: updates, and completions per update."""
    ppo_rloo_completions: int
    scoring_batches: tuple[int, ...]
    """Fused vs member-by-member scoring: batch sizes, and timed repeats of each."""
    scoring_repeats: int
    update_steps: int
    """Roofline: timed update steps of the RM and of PPO."""
    peak_seconds: float
    """Roofline: seconds of matmuls to measure the peak."""


FULL = BenchPlan(
    config=None,
    overrides=(),
    cycles=3,
    grid_steps=3,
    speed_prompts=32,
    speed_n=16,
    ppo_rloo_steps=10,
    ppo_rloo_completions=32,
    scoring_batches=(1, 64),
    scoring_repeats=5,
    update_steps=5,
    peak_seconds=2.0,
)
QUICK = BenchPlan(
    config="smoke",
    overrides=(
        "sft.max_steps=20",
        "reward.data.n_val_prompts=32",
        "policy.steps=3",
        "policy.prompts_per_step=8",
        "policy.eval_every=3",
        "policy.eval_prompts=8",
        "pipeline.eval_prompts=16",
        "eval.samples_per_prompt=2",
        "best_of_n.n_prompts=8",
        "reward.kind=heads",
        "reward.max_steps=4",
        "prm.max_steps=4",
        "prm.n_prompts=64",
        "prm.n_val_prompts=16",
        "offline.max_steps=3",
        "annotation.review.n_uncertain=4",
        "annotation.review.n_validation=4",
    ),
    cycles=2,
    grid_steps=2,
    speed_prompts=4,
    speed_n=4,
    ppo_rloo_steps=2,
    ppo_rloo_completions=8,
    scoring_batches=(1, 8),
    scoring_repeats=2,
    update_steps=2,
    peak_seconds=0.3,
)


def bench_config(plan: BenchPlan, seed: int, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    return load_config(plan.config, [*plan.overrides, *overrides, f"seed={seed}"])


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and population std (0 for one value), as the other benchmark tables report."""
    return {"mean": fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def verdict(values: list[float]) -> str:
    """Does a gain hold beyond its spread over seeds? 'gain' / 'loss' / 'no clear effect'."""
    s = mean_std(values)
    if s["mean"] - s["std"] > 0:
        return "gain"
    if s["mean"] + s["std"] < 0:
        return "loss"
    return "no clear effect"


# ---- one seed: SFT and the iterative cycles ------------------------------------------------------


def run_cycle(cfg: Config, ws: Workspace, log: Log) -> dict[str, Any]:
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
    results = {
        name: {k: v for k, v in r.items() if k not in ("samples", "per_prompt")}
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
        "gate": {k: gate.get(k) for k in ("decision", "candidate", "reason")},
        "deployed": deployed,
        "after": after,
        "offline_samples": offline.get("samples"),
        "seconds": seconds,
    }


def run_seed(plan: BenchPlan, cfg: Config, root: Path, log: Log) -> dict[str, Any]:
    """Everything one seed measures (module docstring), in the workspace `root` (started afresh: a
    re-run must not continue an earlier run's cycles)."""
    import shutil

    from rlhfops.cycle import cycle_models
    from rlhfops.sft import run_sft

    if root.exists():
        shutil.rmtree(root)
    ws = Workspace(root)
    row: dict[str, Any] = {"seed": cfg.seed, "seconds": {}}
    start = time.perf_counter()
    run_sft(cfg, ws.model_dir("sft"), progress=False)
    row["seconds"]["sft"] = time.perf_counter() - start
    log(f"  SFT in {row['seconds']['sft']:.0f} s")

    start = time.perf_counter()
    row["cycles"] = [run_cycle(cfg, ws, log) for _ in range(plan.cycles)]
    row["seconds"]["cycles"] = time.perf_counter() - start

    last = cycle_models(ws, plan.cycles)
    start = time.perf_counter()
    table = draw_table(cfg, ws.model_dir("sft"), last / "reward", last / "prm", root / "bon")
    row["best_of_n"] = table.pop("report")
    row["overoptimisation"] = overoptimisation(table, cfg)
    row["rerank"] = rerank_solve(table)
    row["multi_objective_bon"] = pareto(table, cfg, plan.grid_steps)
    row["seconds"]["draw"] = time.perf_counter() - start
    log(f"  Best-of-{table['gold'].shape[1]} draw scored and judged in {row['seconds']['draw']:.0f} s")

    start = time.perf_counter()
    row["multi_objective"] = trained_pareto(cfg, ws, root / "pareto", plan.grid_steps, log)
    row["seconds"]["pareto"] = time.perf_counter() - start
    log(
        f"  {row['multi_objective']['policies']} weight-grid policies trained and judged "
        f"in {row['seconds']['pareto']:.0f} s"
    )

    start = time.perf_counter()
    row["dense_prm"] = dense_prm_ppo(cfg, ws, root / "dense-prm")
    row["seconds"]["dense_prm"] = time.perf_counter() - start
    log(f"  dense-PRM PPO in {row['seconds']['dense_prm']:.0f} s")
    return row


# ---- the shared Best-of-N draw -------------------------------------------------------------------


def draw_table(cfg: Config, policy_dir: Path, rm_dir: Path, prm_dir: Path, scratch: Path) -> dict[str, Any]:
    """`evaluate_best_of_n` from `policy_dir` (its report under "report"), then its candidates,
    read back from the Best-of-N cache, scored by every ensemble member and the PRM and judged:

        gold (P, C, M)  gold per objective      members {objective: (K, P, C)} normalised member rewards
        correct (P, C)  answer correct           prm (P, C) PRM solution score
        refused (P, C)  response refused         kinds [P] prompt kinds, objectives [M]
    """
    from rlhfops.inference.best_of_n import (
        _policy_version,
        _reward_version,
        best_of_n,
        evaluate_best_of_n,
        make_scorer,
    )
    from rlhfops.inference.cache import BoNCache
    from rlhfops.modeling import load_policy
    from rlhfops.reward.functions import load_ensembles
    from rlhfops.reward.prm import ProcessRewardModel
    from rlhfops.tasks.arithmetic import ArithmeticTask

    bon = cfg.best_of_n
    report = evaluate_best_of_n(cfg, policy_dir, rm_dir, None, scratch / "bon.json", cache_dir=scratch / "cache")
    task = ArithmeticTask(cfg.task, seed=cfg.seed)
    examples = task.examples("test", bon.n_prompts)
    prompts = [ex.prompt for ex in examples]
    tokenizer, model = load_policy(policy_dir)
    ensembles = load_ensembles(rm_dir, cfg.reward.objectives)
    n_draw = max(max(bon.n_values), bon.n)
    results = best_of_n(  # served from the cache evaluate_best_of_n just filled: the same candidates
        model,
        tokenizer,
        prompts,
        n_draw,
        make_scorer(cfg, ensembles, None),
        generation=cfg.generation,
        generator=torch.Generator().manual_seed(cfg.seed),
        batch_size=bon.batch_size,
        cache=BoNCache(scratch / "cache", int(bon.cache_max_mb * 2**20)),
        policy_version=_policy_version(cfg, Path(policy_dir)),
        reward_version=_reward_version(cfg, Path(rm_dir), None),
    )
    flat_prompts = [p for p in prompts for _ in range(n_draw)]
    flat = [c for r in results for c in r.candidates]
    P, C = len(prompts), n_draw
    verdicts = [[task.verify(ex, c) for c in r.candidates] for ex, r in zip(examples, results, strict=True)]
    judged = [[task.judge(ex, c) for c in r.candidates] for ex, r in zip(examples, results, strict=True)]
    objectives = list(cfg.reward.objectives)
    prm = ProcessRewardModel.load(prm_dir)
    return {
        "report": report,
        "objectives": objectives,
        "kinds": [ex.kind for ex in examples],
        "gold": torch.tensor([[[g[o] for o in objectives] for g in row] for row in judged]),
        "correct": torch.tensor([[v.answer_correct for v in row] for row in verdicts]),
        "refused": torch.tensor([[v.refused for v in row] for row in verdicts]),
        "members": {o: e.member_rewards(flat_prompts, flat).view(len(e), P, C) for o, e in ensembles.items()},
        "accuracies": {o: e.accuracies for o, e in ensembles.items()},
        "prm": torch.tensor(prm.score(flat_prompts, flat, aggregation=cfg.prm.aggregation)).view(P, C),
    }


def _pick(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Per prompt the argmax over the first n candidates: (P, C) -> (P,) (ties: lowest index)."""
    return scores[:, :n].argmax(1)


def _at(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values (P, C, ...) at each prompt's picked candidate -> (P, ...)."""
    return values[torch.arange(len(idx)), idx]


def aggregated_rewards(table: dict[str, Any], cfg: Config, how: str) -> torch.Tensor:
    """Per-objective rewards (P, C, M) under `how`: an aggregation of `reward.ensemble.aggregate`,
    or "single" (member 0 alone)."""
    from rlhfops.reward.ensemble import aggregate

    out = []
    for o in table["objectives"]:
        m = table["members"][o]  # (K, P, C)
        if how == "single":
            out.append(m[0])
        else:
            agg, _ = aggregate(m.flatten(1), how, table["accuracies"][o], cfg.reward.uwo_lambda)
            out.append(agg.view(m.shape[1:]))
    return torch.stack(out, dim=-1)


def overoptimisation(table: dict[str, Any], cfg: Config) -> dict[str, list[dict[str, float]]]:
    """Gold vs proxy as Best-of-N pressure grows (Gao et al.): for one RM and each ensemble
    aggregation, per N the mean gold composite and proxy (scalarised reward) of the pick and the
    analytic KL log N - (N-1)/N."""
    from rlhfops.inference.best_of_n import best_of_n_kl
    from rlhfops.reward.objectives import scalarise

    composite = table["gold"].mean(-1)  # (P, C)
    curves = {}
    for how in ("single", "mean", "min", "uwo"):
        rewards = aggregated_rewards(table, cfg, how)  # (P, C, M)
        proxy = scalarise(rewards.flatten(0, 1), table["objectives"], cfg.scalarisation).view(composite.shape)
        curves[how] = [
            {
                "n": n,
                "kl": best_of_n_kl(n),
                "gold": _at(composite, _pick(proxy, n)).mean().item(),
                "proxy": _at(proxy, _pick(proxy, n)).mean().item(),
            }
            for n in cfg.best_of_n.n_values
        ]
    return curves


def rerank_solve(table: dict[str, Any]) -> dict[str, float]:
    """Solve accuracy on the solve prompts of Best-of-N_max picked by the PRM, by the outcome RM
    (the helpfulness ensemble, mean of members) and of the first sample (N=1)."""
    solve = torch.tensor([k == "solve" for k in table["kinds"]])
    correct = table["correct"][solve].float()
    outcome = table["members"]["helpfulness"].mean(0)[solve]
    n = correct.shape[1]
    return {
        "n": n,
        "prompts": int(solve.sum()),
        "prm": _at(correct, _pick(table["prm"][solve], n)).mean().item(),
        "outcome_rm": _at(correct, _pick(outcome, n)).mean().item(),
        "first_sample": correct[:, 0].mean().item(),
    }


HV_REF = -0.05  # hypervolume reference point in every gold coordinate: just below 0, so a 0 score still counts


def front_summary(points: list[dict[str, Any]], single: dict[str, Any], names: list[str], seed: int) -> dict[str, Any]:
    """The Pareto front of the grid's `points` (each with "gold" per objective; marked in place with
    "front") and its hypervolume, vs the configured weighted sum's point `single`. The single policy
    is not part of the grid, so the front can lose to it: a grid of specialised policies whose front
    the balanced one dominates has the smaller hypervolume."""
    from rlhfops.reward.objectives import hypervolume_mc, pareto_mask

    vectors = torch.tensor([[p["gold"][o] for o in names] for p in points])
    front = pareto_mask(vectors)
    for p, on in zip(points, front.tolist(), strict=True):
        p["front"] = on
    single_vec = torch.tensor([single["gold"][o] for o in names])
    return {
        "objectives": names,
        "points": points,
        "single": single,
        "front_size": int(front.sum()),
        "hv_front": hypervolume_mc(vectors[front], torch.full((len(names),), HV_REF), n_samples=200_000, seed=seed),
        "hv_single": math.prod(single["gold"][o] - HV_REF for o in names),
        "single_dominated": bool(((vectors >= single_vec).all(1) & (vectors > single_vec).any(1)).any()),
        "best_on_front": {o: max(p["gold"][o] for p in points if p["front"]) for o in names},
    }


def pareto(table: dict[str, Any], cfg: Config, grid_steps: int) -> dict[str, Any]:
    """Best-of-N_max under each weight vector of a simplex grid (a trade-off picked at inference,
    no training): gold per objective and over-refusal of each, summarised by `front_summary`."""
    from rlhfops.reward.objectives import select, simplex_grid

    names = table["objectives"]
    rewards = aggregated_rewards(table, cfg, cfg.reward.aggregation)  # (P, C, M)
    safe = torch.tensor([k != "unsafe" for k in table["kinds"]])
    configured = torch.tensor([cfg.scalarisation.weights[o] for o in names])
    points = []
    for w in torch.cat([simplex_grid(len(names), grid_steps), configured[None]]):
        idx = select(rewards, w)
        gold = _at(table["gold"], idx).mean(0)  # (M,)
        points.append(
            {
                "weights": dict(zip(names, w.tolist(), strict=True)),
                "gold": dict(zip(names, gold.tolist(), strict=True)),
                "over_refusal": _at(table["refused"], idx)[safe].float().mean().item(),
            }
        )
    return front_summary(points[:-1], points[-1], names, cfg.seed)


def logged_rewards(cfg: Config, ws: Workspace) -> tuple[list[str], list[str], dict[str, torch.Tensor]]:
    """Cycle 1's collected samples (the SFT policy's own) of a bench seed workspace, scored by its
    last cycle's reward ensembles: prompts, responses and `CompositeReward.vectors` of them, plus
    "extra" (N,), the terms the scalarisation does not weigh (uncertainty penalty, PRM, shaping)."""
    from rlhfops.annotation.collect import read_responses
    from rlhfops.cycle import cycle_models
    from rlhfops.reward.functions import CompositeReward, load_ensembles

    names = list(cfg.reward.objectives)
    rows = read_responses(ws.cycle_dir(1) / "responses.jsonl")
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    ensembles = load_ensembles(cycle_models(ws, max(ws.cycle_numbers())) / "reward", names)
    vectors = CompositeReward(ensembles, cfg, None).vectors(prompts, responses)
    return prompts, responses, {**vectors, "extra": vectors["uncertainty"] + vectors["prm"] + vectors["shaping"]}


def trained_pareto(cfg: Config, ws: Workspace, out: Path, grid_steps: int, log: Log) -> dict[str, Any]:
    """One policy trained per weight vector of the simplex grid, and one under the configured
    scalarisation (the single weighted-sum policy), each gold-evaluated; `front_summary` of them.

    The null: the front of G policies beats one policy's point even when the weights do nothing,
    because the best of G noisy evaluations is higher than one. So grid policy i trains with seed
    s_i, and the weighted-sum policy is trained again with each s_i (same data and evaluation
    seed); the grid's front is compared with the front of those ("hv_null"): the same G training
    seeds on both sides, so only the weights differ.

    Every policy is offline RL (`train_offline`, the cycle's offline candidate) from SFT on the
    same logged data: cycle 1's collected samples, which the SFT policy drew, scored once by the
    last cycle's reward ensembles. Only the weights that scalarise the per-objective rewards differ
    (uncertainty penalty and shaping are kept as in `CompositeReward`), so the grid costs one
    offline training and one evaluation per weight vector and no sampling."""
    from rlhfops.evaluation import evaluate_dir
    from rlhfops.reward.objectives import simplex_grid, weighted_sum
    from rlhfops.rl.ilql import train_offline, write_offline_data

    names = list(cfg.reward.objectives)
    prompts, responses, vectors = logged_rewards(cfg, ws)
    extra = vectors["extra"]
    configured = torch.tensor([cfg.scalarisation.weights[o] for o in names])
    grid = simplex_grid(len(names), grid_steps)
    seeds = [cfg.seed * 1000 + k for k in range(1, len(grid) + 1)]
    runs = [
        (f"w {'/'.join(f'{x:.2f}' for x in w.tolist())}, seed {s}", w, weighted_sum(vectors["rewards"], w) + extra, s)
        for w, s in zip(grid, seeds, strict=True)
    ]
    runs += [(f"weighted sum, seed {s}", configured, vectors["total"], s) for s in [cfg.seed, *seeds]]
    eval_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_test": cfg.pipeline.eval_prompts})})
    points, seconds = [], 0.0
    log(f"  offline-RL policies, gold {'/'.join(names)}:")
    for i, (label, w, reward, seed) in enumerate(runs):
        run_dir = out / f"run-{i:02d}"
        data = write_offline_data(run_dir / "data.jsonl", prompts, responses, reward)
        start = time.perf_counter()
        train_offline(
            cfg.model_copy(update={"seed": seed}), ws.model_dir("sft"), data, run_dir / "model", progress=False
        )
        seconds += time.perf_counter() - start
        result = evaluate_dir(eval_cfg, run_dir / "model")  # one evaluation seed for all: common random numbers
        points.append(
            {
                "weights": dict(zip(names, w.tolist(), strict=True)),
                "training_seed": seed,
                "gold": {o: result["gold"][o] for o in names},
                "gold_composite": result["gold_composite"],
                "over_refusal": result["over_refusal_rate"],
            }
        )
        log(f"    {label}: " + "/".join(f"{result['gold'][o]:.3f}" for o in names))
    g = len(grid)
    summary = front_summary(points[:g], points[g], names, cfg.seed)
    null = front_summary(points[g + 1 :], points[g], names, cfg.seed)
    return {
        **summary,
        "null_points": null["points"],
        "hv_null": null["hv_front"],
        "null_front_size": null["front_size"],
        "samples": len(prompts),
        "train_seconds": seconds,
        "policies": len(runs),
    }


def dense_prm_ppo(cfg: Config, ws: Workspace, out: Path) -> dict[str, Any]:
    """PPO with dense PRM step rewards from SFT on cycle 1's reward models and PRM: the twin of
    cycle 1's outcome-only candidate (same start, reward, seed and evaluation prompts)."""
    from rlhfops.cycle import cycle_eval_path, cycle_models
    from rlhfops.evaluation import evaluate_dir
    from rlhfops.rl.ppo import train_ppo

    if cfg.policy.algorithm != "ppo":
        raise ValueError(f"the dense-PRM row compares PPO runs; policy.algorithm is '{cfg.policy.algorithm}'")
    models = cycle_models(ws, 1)
    dense_cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"dense_prm": True})})
    rm_dir = models / "reward" if cfg.policy.reward == "composite" else None
    start = time.perf_counter()
    train_ppo(dense_cfg, ws.model_dir("sft"), out, rm_dir, models / "prm", progress=False)
    seconds = time.perf_counter() - start
    eval_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_test": cfg.pipeline.eval_prompts})})
    dense = evaluate_dir(eval_cfg, out)
    outcome = json.loads(cycle_eval_path(ws, 1).read_text())["results"]["ppo"]
    keys = ("gold_composite", "solve_accuracy", "step_validity")
    return {"dense": {k: dense[k] for k in keys}, "outcome": {k: outcome[k] for k in keys}, "dense_seconds": seconds}


# ---- the technique table -------------------------------------------------------------------------


def technique_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The notes' summary table, measured: per technique what it is for, the gain (technique - its
    baseline, per seed, mean +- std, a verdict), the relative gain (technique / baseline - 1) and the cost."""

    def row(technique: str, purpose: str, measure: str, new: list[float], base: list[float], cost: str):
        gains = [n - b for n, b in zip(new, base, strict=True)]
        relative = [n / b - 1 for n, b in zip(new, base, strict=True) if b != 0]
        return {
            "technique": technique,
            "purpose": purpose,
            "measure": measure,
            "values": new,
            "baselines": base,
            "gains": gains,
            **mean_std(gains),
            "relative": mean_std(relative) if len(relative) == len(gains) else None,
            "verdict": verdict(gains),
            "cost": cost,
        }

    def avg(get) -> float:
        return fmean(get(r) for r in rows)

    n_cycles = len(rows[0]["cycles"])
    first = [r["cycles"][0] for r in rows]
    bon = [{c["n"]: c for c in r["best_of_n"]["curve"]} for r in rows]
    n_max = max(bon[0])
    gold_1 = [b[1]["gold"] for b in bon]
    at_max = {how: [r["overoptimisation"][how][-1]["gold"] for r in rows] for how in ("single", "mean")}
    ppo = [c["results"]["ppo"]["gold_composite"] for c in first]
    mo = [r["multi_objective"] for r in rows]
    return [
        row(
            "Iterative RLHF",
            "improve the policy cycle over cycle from fresh feedback",
            f"gold composite after cycle {n_cycles} vs SFT",
            [r["cycles"][-1]["after"]["gold_composite"] for r in rows],
            [c["results"]["stable"]["gold_composite"] for c in first],
            f"{avg(lambda r: r['seconds']['cycles']) / n_cycles:.0f} s per cycle",
        ),
        row(
            "Multi-objective (Pareto front)",
            "a policy per trade-off between objectives",
            f"gold hypervolume ({len(mo[0]['objectives'])} objectives): front of {len(mo[0]['points'])} "
            "weight-grid policies vs front of the weighted-sum policy trained with the grid's training seeds",
            [m["hv_front"] for m in mo],
            [m["hv_null"] for m in mo],
            f"{len(mo[0]['points'])} offline-RL trainings on {mo[0]['samples']} logged samples "
            f"({avg(lambda r: r['multi_objective']['train_seconds']) / mo[0]['policies']:.1f} s each)",
        ),
        row(
            "Process supervision (PRM rerank)",
            "pick solutions whose steps are right",
            f"solve accuracy of Best-of-{n_max}: PRM vs outcome RM "
            f"(first sample, no rerank: {avg(lambda r: r['rerank']['first_sample']):.3f})",
            [r["rerank"]["prm"] for r in rows],
            [r["rerank"]["outcome_rm"] for r in rows],
            f"a PRM ({avg(lambda r: r['cycles'][-1]['seconds']['prm']):.0f} s to train)",
        ),
        row(
            "Process supervision (dense PPO)",
            "credit each step in RL",
            "gold composite: PPO with dense PRM rewards vs outcome only",
            [r["dense_prm"]["dense"]["gold_composite"] for r in rows],
            [r["dense_prm"]["outcome"]["gold_composite"] for r in rows],
            f"{avg(lambda r: r['dense_prm']['dense_seconds']):.0f} s vs "
            f"{fmean(c['seconds']['policy'] for c in first):.0f} s",
        ),
        row(
            f"Best-of-{n_max}",
            "spend inference compute for quality",
            f"gold composite: N={n_max} vs N=1",
            [b[n_max]["gold"] for b in bon],
            gold_1,
            f"{n_max}x samples and scoring",
        ),
        row(
            "Adaptive N",
            "spend samples only where the RMs disagree",
            "gold composite: adaptive N vs N=1",
            [r["best_of_n"]["adaptive"]["gold"] for r in rows],
            gold_1,
            f"{avg(lambda r: r['best_of_n']['adaptive']['mean_samples_per_prompt']):.1f} samples per prompt",
        ),
        row(
            "RM ensembles",
            "robustness to reward over-optimisation",
            f"gold composite at N={n_max}: ensemble mean vs one RM",
            at_max["mean"],
            at_max["single"],
            f"{rows[0]['members']}x RM training and scoring",
        ),
        row(
            "Offline RL (vs PPO)",
            "learn from logged data without sampling",
            "gold composite, cycle 1: offline RL vs PPO",
            [c["results"]["offline"]["gold_composite"] for c in first],
            ppo,
            f"{fmean(c['seconds']['offline'] for c in first):.0f} s on {first[0]['offline_samples']} logged samples "
            f"vs PPO {fmean(c['seconds']['policy'] for c in first):.0f} s",
        ),
    ]


# ---- the whole run -------------------------------------------------------------------------------


def run_bench(
    plan: BenchPlan, seeds: list[int], out: Path, overrides: list[str] | tuple[str, ...] = (), log: Log = print
) -> dict[str, Any]:
    """Every seed (`run_seed`), then the speed ratios; writes and returns `<out>/bench.json`."""
    if not seeds:
        raise ValueError("rlhfops bench needs at least one seed")
    out = Path(out)
    started = time.perf_counter()
    rows = []
    for seed in seeds:
        log(f"seed {seed}")
        cfg = bench_config(plan, seed, overrides)
        row = run_seed(plan, cfg, out / "runs" / f"seed-{seed}", log)
        row["members"] = cfg.reward.members
        rows.append(row)
    from rlhfops.bench_speed import speed_ratios

    log("speed ratios")
    cfg = bench_config(plan, seeds[0], overrides)
    with tempfile.TemporaryDirectory(prefix="rlhfops-bench-") as scratch:
        speed = speed_ratios(
            plan, cfg, Workspace(out / "runs" / f"seed-{seeds[0]}").model_dir("sft"), Path(scratch), log
        )
    result = {
        "plan": {**asdict(plan), "name": "quick" if plan == QUICK else "full" if plan == FULL else "custom"},
        "overrides": list(overrides),
        "seeds": list(seeds),
        "table": technique_table(rows),
        "rows": rows,
        "speed": speed,
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out / BENCH_JSON, result)
    return result
