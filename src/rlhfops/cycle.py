"""One RLHF cycle's stages as library functions: what the KFP components (`rlhfops.pipeline`), the DVC
stages (`dvc.yaml`) and the tests call. No KFP imports here.

Each stage takes the config, the workspace and the cycle number, reads what earlier stages left in
the workspace and writes its own outputs there (atomically, so a re-run after a crash redoes it).
What each stage is (the order and what each needs is `CYCLE` below, the one declaration the KFP
graph, `dvc.yaml` and `run_in_process` follow):

    decide_canary      the canary the last cycle deployed: promote / rollback / wait (online gate)
    collect            <ws>/cycles/NNNN/responses.jsonl   (annotation.collect)
    annotate           <ws>/cycles/NNNN/pairs-*.jsonl, steps.jsonl, review.json   (annotation.annotate)
    version_data       git + DVC commit of cycles/NNNN, tag cycle-NNNN   (versioning)
    reward_member      a share of the reward ensembles' objective x members (trained on cycles 1..n)
    reward_finish      each objective's manifest, normalisation and validation from its members
    prm                the process reward model on every cycle's step labels so far
    policy             the configured optimiser (PPO / GRPO / RLOO) from the stable policy
    offline            offline RL on the most recent logged, composite-scored samples
    evaluate           gold evaluation (Best-of-N at `pipeline.eval_best_of_n`) of stable and each candidate
                       -> <ws>/eval/cycle-NNNN.json
    gate               the pre-deploy gate on paired per-prompt gold scores, alpha split over the
                       candidates the best was picked from: deploy | reject
                       -> <ws>/eval/cycle-NNNN-gate.json
    deploy_canary      registry: the chosen candidate becomes the canary (+ KServe patch in a cluster)
    record_failure     the ExitHandler's record of a failed cycle

Models of cycle n live in <ws>/models/cycle-NNNN/<name>/; the registry (`registry.json`) says
which directory is stable and which is the canary.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

from rlhfops.config import Config, GateConfig
from rlhfops.files import atomic_write_json, atomic_write_text
from rlhfops.registry import Registry
from rlhfops.workspace import OFFLINE_DATA, RESPONSES, RM_SUMMARY, RUN_LOCK, Workspace, is_model_dir

if TYPE_CHECKING:
    from rlhfops.serving.gate import GateDecision

# torch threads for a task that runs beside others (kfp.local runs two ParallelFor iterations at once)
PARALLEL_THREADS_ENV = "RLHFOPS_PARALLEL_TASK_THREADS"


def cycle_models(ws: Workspace, cycle: int) -> Path:
    return ws.model_dir(f"cycle-{cycle:04d}")


def cycle_eval_path(ws: Workspace, cycle: int) -> Path:
    return ws.eval_path(f"cycle-{cycle:04d}")


def cycle_gate_path(ws: Workspace, cycle: int) -> Path:
    return ws.eval_path(f"cycle-{cycle:04d}-gate")


def cycle_deployed(ws: Workspace, cycle: int) -> dict[str, Any] | None:
    """The registry version `deploy_canary` registered for `cycle`, or None."""
    return next((v for v in Registry(ws.root).list() if v.get("metrics", {}).get("cycle") == cycle), None)


def cycle_done(ws: Workspace, cycle: int) -> bool:
    """A cycle is done when its gate ran on its evaluation and, if the gate said deploy, its canary is
    registered; a cycle killed anywhere before that is not done, and is redone."""
    gate_path = cycle_gate_path(ws, cycle)
    if not (cycle_eval_path(ws, cycle).exists() and gate_path.exists()):
        return False
    try:
        decision = json.loads(gate_path.read_text()).get("decision")
    except (ValueError, AttributeError):
        return False  # not a gate file rlhfops wrote: the gate is redone
    return decision != "deploy" or cycle_deployed(ws, cycle) is not None


def next_cycle(ws: Workspace) -> int:
    """1 + the last cycle that is done (`cycle_done`), so an unfinished cycle is redone."""
    done = [n for n in ws.cycle_numbers() if cycle_done(ws, n)]
    return max(done, default=0) + 1


def cycles_done(ws: Workspace) -> int:
    """How many cycles the workspace has finished (`rlhfops run --cycles N` runs until this is N)."""
    return next_cycle(ws) - 1


# `rlhfops run` holds this lock (at the workspace root, which git ignores) for as long as it runs.


@contextmanager
def workspace_lock(ws: Workspace, command: str = "rlhfops run") -> Iterator[str | None]:
    """Hold the workspace's run lock (flock: the kernel releases it when its process dies, kill -9
    included). Yields a note when it took over the lock of a process that is gone, else None. A lock
    another live process holds is a RuntimeError naming it: pid, host and start time."""
    import fcntl
    import socket
    from datetime import datetime

    ws.root.mkdir(parents=True, exist_ok=True)
    path = ws.root / RUN_LOCK
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"workspace '{ws.root}' is in use: {_holder(path)}; wait for it to finish") from None
        handle.seek(0)
        previous = handle.read().strip()
        note = f"took over the workspace lock of a run that is gone ({_holder(path, previous)})" if previous else None
        handle.seek(0)
        handle.truncate()
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command}
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        try:
            yield note
        finally:
            handle.seek(0)
            handle.truncate()  # released cleanly: nothing to take over
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _holder(path: Path, text: str | None = None) -> str:
    """Who holds (held) the run lock at `path`, as the lock file says."""
    try:
        info = json.loads(path.read_text() if text is None else text)
        return f"`{info['command']}` pid {info['pid']} on host {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"an rlhfops process holds '{path}'"


def stable_or_register_sft(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """The registry's stable version; on the first cycle (none yet) the SFT policy is registered as it."""
    registry = Registry(ws.root)
    stable = registry.stable()
    if stable is not None:
        return stable
    sft = ws.model_dir("sft")
    if not is_model_dir(sft):
        raise FileNotFoundError(f"no stable model in the registry and no SFT policy in '{sft}'; run `rlhfops sft`")
    metrics = {}
    if ws.eval_path("sft").exists():
        metrics = _headline(json.loads(ws.eval_path("sft").read_text()))
    registry.register(sft, metrics=metrics, config=cfg.model_dump(mode="json"), stage="stable", name="sft")
    return registry.stable()


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    """A model's evaluation as registry metrics: the gold composite, the task's own metrics, the
    win rate against the stable model it was compared with (candidates), and the per-objective means."""
    from rlhfops.evaluation import task_metric_keys

    keys = ["gold_composite", *task_metric_keys(result), *(["win_rate"] if "win_rate" in result else [])]
    return {**{k: result.get(k) for k in keys}, **{f"gold/{k}": v for k, v in result.get("gold", {}).items()}}


# ---- canary ---------------------------------------------------------------------------------------


def begin(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """The first task of a cycle: a stable model exists (SFT on the first cycle), the last cycle's
    canary is decided, and the cycle number is fixed for every later task."""
    stable_or_register_sft(cfg, ws)
    canary = decide_canary(cfg, ws)
    return {"cycle": next_cycle(ws), "canary": canary}


def online_verdict(cfg: Config, ws: Workspace) -> tuple[dict[str, Any], GateDecision] | None:
    """The online gate's verdict on the registry's canary from the interactions logged so far, and
    the canary; None without one. Nothing is recorded (`decide_canary` acts on it)."""
    from rlhfops.serving.gate import decide
    from rlhfops.serving.store import InteractionStore

    registry = Registry(ws.root)
    canary, stable = registry.canary(), registry.stable()
    if canary is None or stable is None:
        return None
    return canary, decide(InteractionStore.for_workspace(ws.root), stable["id"], canary["id"], cfg.gate)


def decide_canary(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Promote, roll back or keep waiting on the canary from its logged interactions; "none" when
    there is no canary. The decision and its statistics are recorded in the registry."""
    verdict = online_verdict(cfg, ws)
    if verdict is None:
        return {"decision": "none", "reason": "no canary deployed"}
    canary, result = verdict
    registry = Registry(ws.root)
    registry.record_decision(canary["id"], result.decision, result.stats)
    if result.decision == "promote":
        registry.promote_canary()
    elif result.decision == "rollback":
        registry.rollback_canary()
    if cfg.pipeline.kserve and result.decision in ("promote", "rollback"):
        from rlhfops.serving import kserve

        kserve.apply(cfg, result.decision, canary)
    return {"decision": result.decision, "reason": result.reason, "version": canary["id"]}


# ---- data -----------------------------------------------------------------------------------------


def collect(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    from rlhfops.annotation.collect import collect as collect_responses

    policy = Path(stable_or_register_sft(cfg, ws)["path"])
    return collect_responses(cfg, ws, policy, ws.cycle_dir(cycle), cycle=cycle)


def annotate(cfg: Config, ws: Workspace, cycle: int, responses_path: str | Path | None = None) -> dict[str, Any]:
    from rlhfops.annotation.annotate import annotate as annotate_responses

    out = ws.cycle_dir(cycle)
    responses = Path(responses_path) if responses_path else out / RESPONSES
    return annotate_responses(cfg, ws, responses, out, rm_dir=_latest_reward_dir(ws, cycle))


def _latest_reward_dir(ws: Workspace, cycle: int) -> Path | None:
    """The newest earlier cycle's reward ensembles (active learning and the RM judge use them)."""
    for n in range(cycle - 1, 0, -1):
        path = cycle_models(ws, n) / "reward"
        if (path / RM_SUMMARY).exists():
            return path
    return None


def version_data(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    from rlhfops.versioning import commit_cycle

    return {"tag": commit_cycle(ws, cycle, [ws.cycle_dir(cycle)])}


# ---- reward side ----------------------------------------------------------------------------------


def reward_plan(cfg: Config, ws: Workspace, cycle: int) -> list[str]:
    """Prepare the reward-model training pairs (the union of cycles 1..n) once, then the fan-out:
    `reward_specs`, one spec per training task."""
    from rlhfops.reward.train import likelihood_lm_dir, prepare_preference_data

    policy = Path(stable_or_register_sft(cfg, ws)["path"])
    if cfg.reward.likelihood:
        likelihood_lm_dir(cfg, policy)  # before any member trains, as `train_reward_models` checks it
    prepare_preference_data(cfg, ws, ws.data_dir("preferences"), policy)
    return reward_specs(cfg, cycle)


def reward_units(cfg: Config) -> list[tuple[str, int]]:
    """Every (objective, member) the reward ensembles train, in the one order the tasks deal them
    out: objective by objective, member by member (`kind: heads`: member -1, all heads in one unit)."""
    members = range(cfg.reward.members) if cfg.reward.kind == "full" else [-1]
    return [(o, k) for o in cfg.reward.objectives for k in members]


def reward_specs(cfg: Config, cycle: int) -> list[str]:
    """One spec per reward training task, "<cycle>/<objective>/<member>[,<objective>/<member>...]":
    the units dealt round-robin over `reward.train_tasks` tasks (their counts differ by at most one);
    0, or more tasks than units, gives one task per unit, so no task is empty."""
    units = reward_units(cfg)
    n = min(cfg.reward.train_tasks or len(units), len(units))
    # The cycle rides in the item: kfp.local 2.17 hands a loop item to the wrong parameter when a
    # task inside ParallelFor also takes an upstream task's output.
    return [f"{cycle}/" + ",".join(f"{o}/{k}" for o, k in units[i::n]) for i in range(n)]


def parse_spec(spec: str) -> tuple[int, list[tuple[str, int]]]:
    """The cycle and the (objective, member) units of a `reward_specs` spec."""
    spec_cycle, _, units = spec.partition("/")
    pairs = [unit.split("/") for unit in units.split(",")]
    if not spec_cycle.isdigit() or any(len(p) != 2 or not p[1].lstrip("-").isdigit() for p in pairs):
        raise ValueError(f"reward spec '{spec}' is not '<cycle>/<objective>/<member>[,<objective>/<member>...]'")
    return int(spec_cycle), [(o, int(k)) for o, k in pairs]


def spec_units(spec: str, cycle: int) -> list[tuple[str, int]]:
    """The (objective, member) units of a `reward_specs` spec, which must belong to `cycle`."""
    spec_cycle, units = parse_spec(spec)
    if spec_cycle != cycle:
        raise ValueError(f"reward spec '{spec}' belongs to cycle {spec_cycle}, not {cycle}")
    return units


def reward_member(cfg: Config, ws: Workspace, cycle: int, spec: str) -> dict[str, Any]:
    """One item of `reward_plan`: its units trained one after another in this process, each into
    `<models>/reward/<objective>.parts/` (`train_ensemble_member`). Returns {"spec", "units":
    {"<objective>/<member>": {"n_train", "seconds"}} in training order} (numbers the run logs per unit)."""
    from rlhfops.reward.train import train_ensemble_member

    units = spec_units(spec, cycle)
    if threads := os.environ.get(PARALLEL_THREADS_ENV):  # set by the local run: two tasks train at once
        import torch

        torch.set_num_threads(int(threads))
    policy = Path(stable_or_register_sft(cfg, ws)["path"])
    out = cycle_models(ws, cycle) / "reward"
    trained = {}
    for objective, member in units:
        start = time.perf_counter()
        result = train_ensemble_member(cfg, objective, member, ws.data_dir("preferences"), policy, out)
        trained[f"{objective}/{member}"] = {"n_train": result["n_train"], "seconds": time.perf_counter() - start}
    return {"spec": spec, "units": trained}


def reward_finish(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    from rlhfops.reward.train import finish_reward_models

    out = cycle_models(ws, cycle) / "reward"
    policy = Path(stable_or_register_sft(cfg, ws)["path"])
    return {"path": str(out), **finish_reward_models(cfg, ws.data_dir("preferences"), policy, out)}


def prm(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    from rlhfops.reward.prm import train_prm_on_task

    policy = Path(stable_or_register_sft(cfg, ws)["path"])
    out = cycle_models(ws, cycle) / "prm"
    return {"path": str(out), **train_prm_on_task(cfg, policy, ws.data_dir("steps"), out, progress=False, workspace=ws)}


# ---- policy side ----------------------------------------------------------------------------------


def policy(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    """The configured optimiser from the stable policy, on the cycle's reward models (and PRM)."""
    start = Path(stable_or_register_sft(cfg, ws)["path"])
    models = cycle_models(ws, cycle)
    out = models / cfg.policy.algorithm
    if cfg.pipeline.trainer_job:
        return _policy_trainjob(cfg, ws, cycle, out, start)
    from rlhfops.rl.train import train_policy

    train_policy(cfg, start, out, models / "reward", models / "prm", progress=False)
    return {"path": str(out), "algorithm": cfg.policy.algorithm, "start": str(start)}


def _policy_trainjob(cfg: Config, ws: Workspace, cycle: int, out: Path, start: Path) -> dict[str, Any]:
    """The policy step on `trainer_job.nodes` nodes: a Kubeflow Trainer TrainJob runs this same stage
    (`rlhfops stage policy`, with `pipeline.trainer_job=false`) under accelerate + DeepSpeed on every
    node, from the resolved config written next to the cycle's models; this task waits for it."""
    from rlhfops.trainer_job import job_name, run_trainjob

    models = cycle_models(ws, cycle)
    models.mkdir(parents=True, exist_ok=True)
    config = cfg.save(models)
    args = ["stage", "policy", "--config", str(config), "--workspace", str(ws.root), "--cycle", str(cycle)]
    args += ["--set", "pipeline.trainer_job=false"]
    job = run_trainjob(cfg, args, name=job_name("policy", cycle))
    return {"path": str(out), "algorithm": cfg.policy.algorithm, "start": str(start), "trainjob": job}


def offline(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    """Offline RL from the stable policy on the most recent collected samples (`recent_window`,
    `offline.max_samples`), scored by `offline.reward` (this cycle's reward models by default). The
    candidate is the shifted policy extracted into a plain causal LM (`rl/ilql.py`): what is
    evaluated, served, collected from and, once deployed, the next cycle's start; its last
    distillation KL to the shifted policy is reported."""
    from rlhfops.annotation.collect import read_responses
    from rlhfops.reward.build import reward_fn
    from rlhfops.rl.ilql import train_offline, write_offline_data
    from rlhfops.workspace import TRAIN_LOG

    if not cfg.pipeline.offline:
        return {"skipped": True}
    start = Path(stable_or_register_sft(cfg, ws)["path"])
    models = cycle_models(ws, cycle)
    newest_first = (
        read_responses(ws.cycle_dir(n) / RESPONSES)
        for n in reversed(ws.cycle_numbers())
        if n <= cycle and (ws.cycle_dir(n) / RESPONSES).exists()
    )
    rows = recent_window(newest_first, cfg.offline.max_samples, random.Random(cfg.seed + cycle))
    if not rows:
        raise ValueError(f"no collected responses in '{ws.root / 'cycles'}' up to cycle {cycle}")
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    rewards = reward_fn(cfg, cfg.offline.reward, models / "reward", models / "prm")(prompts, responses)
    data = write_offline_data(models / OFFLINE_DATA, prompts, responses, rewards)
    out = train_offline(cfg, start, data, models / "offline", progress=False)
    extract = [r for r in json.loads((out / TRAIN_LOG).read_text()) if r["phase"] == "extract"]
    return {"path": str(out), "samples": len(rows), "start": str(start), "distill_kl": extract[-1]["losses/distill_kl"]}


def recent_window(by_cycle: Iterable[list[dict[str, Any]]], limit: int, rng: random.Random) -> list[dict[str, Any]]:
    """The rows of the newest cycles (`by_cycle` newest first, read only as far as needed) up to
    `limit` rows (0: all): whole cycles while they fit, then a seeded random subset of the cycle that
    crosses the bound, in its order. Offline RL learns best from what the policies it starts from
    produce, and its cost grows with the rows, not with the cycles so far.

    >>> recent_window([[1, 2], [3, 4, 5]], 3, random.Random(0))
    [1, 2, 4]
    """
    rows: list[dict[str, Any]] = []
    for cycle_rows in by_cycle:
        room = limit - len(rows) if limit > 0 else len(cycle_rows)
        if room < len(cycle_rows):
            cycle_rows = [cycle_rows[i] for i in sorted(rng.sample(range(len(cycle_rows)), room))]
        rows += cycle_rows
        if limit > 0 and len(rows) >= limit:
            break
    return rows


def candidates(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Path]:
    models = cycle_models(ws, cycle)
    found = {cfg.policy.algorithm: models / cfg.policy.algorithm}
    if cfg.pipeline.offline:
        found["offline"] = models / "offline"
    return {name: path for name, path in found.items() if is_model_dir(path)}


# ---- evaluation and gate --------------------------------------------------------------------------


def cycle_eval_config(cfg: Config) -> Config:
    """How a cycle gold-evaluates a policy: on `pipeline.eval_prompts` test prompts with the run's
    seed (the bench evaluates the policies it trains beside the cycle the same way)."""
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_test": cfg.pipeline.eval_prompts})})


def evaluate(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    """Evaluation of the stable policy and each candidate on the same test prompts by the evaluation
    judges (`eval.judges`), decoding Best-of-N (`pipeline.eval_best_of_n`, picked by this cycle's
    reward ensembles) when N > 1: per objective the mean score, per prompt the composite (the gate's
    paired scores), and per candidate its win rate against stable on those prompts. Written to
    <ws>/eval/cycle-NNNN.json."""
    from rlhfops.annotation.judges import eval_judges
    from rlhfops.evaluation import evaluate_dir, win_rate
    from rlhfops.tasks import make_task

    stable = stable_or_register_sft(cfg, ws)
    eval_cfg = cycle_eval_config(cfg)
    judge = eval_judges(eval_cfg, make_task(eval_cfg.task, seed=eval_cfg.seed))
    models = {"stable": Path(stable["path"]), **candidates(cfg, ws, cycle)}
    results = {}
    for name, path in models.items():
        if cfg.pipeline.eval_best_of_n > 1:
            results[name] = _evaluate_bon(eval_cfg, path, cycle_models(ws, cycle) / "reward", judge)
        else:
            results[name] = evaluate_dir(eval_cfg, path, judge)
    for name in models:
        if name != "stable":
            results[name]["win_rate"] = win_rate(results["stable"]["per_prompt"], results[name]["per_prompt"])
    summary = {
        "cycle": cycle,
        "stable_version": stable["id"],
        "best_candidate": best_candidate(results),
        "models": {n: str(p) for n, p in models.items()},
        "results": results,
    }
    cycle_gate_path(ws, cycle).unlink(missing_ok=True)  # an earlier attempt's gate is not this evaluation's
    atomic_write_json(cycle_eval_path(ws, cycle), summary)
    return summary


def best_candidate(results: dict[str, dict[str, Any]]) -> str | None:
    """The candidate (every evaluated model but "stable") with the highest gold composite, the first
    of equal ones; a composite that is None or NaN never wins. None when no candidate has a number."""
    scored = {
        name: r["gold_composite"]
        for name, r in results.items()
        if name != "stable" and r["gold_composite"] is not None and not math.isnan(r["gold_composite"])
    }
    return max(scored, key=scored.__getitem__, default=None)


def gate_candidate(cfg: GateConfig, results: dict[str, dict[str, Any]], best: str) -> GateDecision:
    """The pre-deploy gate on `best` against stable: the per-prompt composites both have a labelled
    score for, alpha split over every candidate evaluated (`serving.gate`: the pick is the best of
    them on these same scores)."""
    from rlhfops.serving.gate import compare_scores, paired  # no torch: the gate is arithmetic on two lists

    stable, candidate = paired(results["stable"]["per_prompt"], results[best]["per_prompt"])
    return compare_scores(stable, candidate, cfg, candidates=sum(name != "stable" for name in results))


def aa_deploy_rate(
    cfg: GateConfig, trials: int, n_prompts: int, candidates: int, seed: int = 0, split_alpha: bool = True
) -> dict[str, Any]:
    """Simulate the pick-then-gate of a cycle on A/A candidates: stable and `candidates` candidates of
    one policy, each scoring Bernoulli(0.5) per prompt on the same `n_prompts` prompts; the best is
    picked (`best_candidate`) and gated (`gate_candidate`). Every deploy is false, so the rate must
    stay at most 1 - cfg.confidence. `split_alpha` False gates the pick as if it were the only
    candidate (the full alpha: the rule before the split)."""
    import random

    rng = random.Random(seed)
    names = ["stable", *(f"candidate-{k}" for k in range(candidates))]
    deploys = 0
    for _ in range(trials):
        results = {}
        for name in names:
            scores = [float(rng.random() < 0.5) for _ in range(n_prompts)]
            results[name] = {"per_prompt": scores, "gold_composite": fmean(scores)}
        best = best_candidate(results)
        tested = results if split_alpha else {"stable": results["stable"], best: results[best]}
        deploys += gate_candidate(cfg, tested, best).decision == "deploy"
    rate = deploys / trials
    return {
        "candidates": candidates,
        "split_alpha": split_alpha,
        "n_prompts": n_prompts,
        "trials": trials,
        "aa_deploy_rate": rate,
        "standard_error": math.sqrt(rate * (1 - rate) / trials),
        "bound": round(1 - cfg.confidence, 12),
    }


def _evaluate_bon(cfg: Config, policy_dir: Path, rm_dir: Path, judge) -> dict[str, Any]:
    import torch

    from rlhfops.evaluation import score_responses
    from rlhfops.inference.best_of_n import best_of_n
    from rlhfops.modeling import load_decoder
    from rlhfops.reward.build import best_of_n_scorer
    from rlhfops.reward.functions import load_ensembles
    from rlhfops.tasks import make_task

    task = make_task(cfg.task, seed=cfg.seed)
    examples = task.examples("test", cfg.eval.n_test)
    tokenizer, model, hook = load_decoder(cfg, policy_dir)  # as it decodes everywhere: an offline policy's shift
    scorer = best_of_n_scorer(cfg, load_ensembles(rm_dir, cfg.reward.objectives))
    picks = best_of_n(
        model,
        tokenizer,
        [ex.prompt for ex in examples],
        cfg.pipeline.eval_best_of_n,
        scorer,
        generation=cfg.generation,
        generator=torch.Generator().manual_seed(cfg.seed),
        batch_size=cfg.best_of_n.batch_size,
        logits_hook=hook,
    )
    result = score_responses(task, examples, [r.best for r in picks], judge)
    result["decoding"] = f"Best-of-{cfg.pipeline.eval_best_of_n} (reward ensembles of the cycle)"
    return {"model": str(policy_dir), **result}


def gate(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    """deploy | reject the best candidate against stable (`gate_candidate`)."""
    summary = json.loads(cycle_eval_path(ws, cycle).read_text())
    best = summary["best_candidate"]
    if best is None:
        reason = "no candidate was trained" if len(summary["results"]) == 1 else "no candidate has a gold composite"
        out = {"decision": "reject", "reason": reason, "candidate": None}
        atomic_write_json(cycle_gate_path(ws, cycle), out)
        return out
    result = gate_candidate(cfg.gate, summary["results"], best)
    out = {"decision": result.decision, "reason": result.reason, "candidate": best, "stats": result.stats}
    atomic_write_json(cycle_gate_path(ws, cycle), out)
    return out


def deploy_canary(cfg: Config, ws: Workspace, cycle: int) -> dict[str, Any]:
    """Register the gated candidate as the canary (archiving an undecided older canary). Re-entrant: a
    cycle whose canary is registered already (a run killed after registering) is not registered twice."""
    summary = json.loads(cycle_eval_path(ws, cycle).read_text())
    best = summary["best_candidate"]
    registry = Registry(ws.root)
    stable = stable_or_register_sft(cfg, ws)
    done = cycle_deployed(ws, cycle)
    if done is not None:
        if cfg.pipeline.kserve and done["stage"] == "canary":
            from rlhfops.serving import kserve

            kserve.apply(cfg, "canary", done, stable=stable)
        return {"version": done["id"], "candidate": best}
    gate_path = cycle_gate_path(ws, cycle)
    gate_stats = json.loads(gate_path.read_text()).get("stats") if gate_path.exists() else None
    metrics = {**_headline(summary["results"][best]), "cycle": cycle, "gate": gate_stats}
    version = registry.register(
        summary["models"][best],
        parent=stable["id"],
        metrics=metrics,
        config=cfg.model_dump(mode="json"),
        stage="canary",
        name=f"cycle-{cycle:04d}-{best}",
    )
    if cfg.pipeline.kserve:  # in a cluster: the same change on the InferenceService
        from rlhfops.serving import kserve

        kserve.apply(cfg, "canary", registry.get(version), stable=stable)
    return {"version": version, "candidate": best}


def record_failure(ws: Workspace, cycle: int, message: str) -> None:
    Registry(ws.root).record_failure(cycle, message)


# ---- the entry point of every component and DVC stage -----------------------------------------------


def open_stage(workspace: str, config: str, overrides: list[str]) -> tuple[Config, Workspace]:
    from rlhfops.config import load_config

    return load_config(config or None, overrides), Workspace(workspace)


def scalars(result: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers in a (nested) stage result, flattened to `a/b` keys, for W&B and KFP Metrics."""
    out: dict[str, float] = {}
    if isinstance(result, dict):
        for key, value in result.items():
            out.update(scalars(value, f"{prefix}{key}/"))
    elif isinstance(result, bool) or isinstance(result, int | float) and math.isfinite(result):
        out[prefix.rstrip("/")] = float(result)
    return out


def run_stage(name: str, workspace: str, config: str, overrides: list[str], cycle: int, group: str, **kwargs) -> Any:
    """Load the config and workspace, run stage `name` inside its W&B run (job_type = name, group =
    the pipeline run) and log its numbers. In a task of `rlhfops run` (kfp.local) the stage runs in a
    process forked from the run's warm server, which has the libraries imported (`pipeline.warm`)."""
    from rlhfops.pipeline.warm import Unavailable, active, call

    if server := active():
        try:
            return call(server, "rlhfops.cycle:run_stage", name, workspace, config, overrides, cycle, group, **kwargs)
        except Unavailable as e:  # the server is gone (killed, out of memory): this task imports cold
            print(f"rlhfops: {e}; running stage {name} in this process", file=sys.stderr)
    from rlhfops.tracking import start_run

    cfg, ws = open_stage(workspace, config, overrides)
    with start_run(cfg, name, group=group, cycle=cycle, workspace=ws.root) as run:
        result = STAGES[name](cfg, ws, cycle, **kwargs)
        numbers = scalars(result) if isinstance(result, dict) else {}
        if numbers:
            run.log_metrics(numbers)
        if name == "evaluate":
            run.log_samples(evaluation_samples(result))
    return result


def export_artifact(workspace: str, cycle: int, name: str, dest: str, exclude: tuple[str, ...] = ()) -> None:
    """Copy a cycle's data file (or, for name "", its whole directory) to a KFP artifact path."""
    import shutil

    src = Workspace(workspace).cycle_dir(cycle) / name
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*exclude, ".*"), dirs_exist_ok=True)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def write_pointer(artifact: Any, result: dict[str, Any]) -> None:
    """A KFP Model artifact for a model that lives in the workspace: a JSON pointer (where it is and
    what made it) at the artifact path, the same in its metadata. The weights stay on the workspace
    volume instead of being copied into the pipeline root."""
    atomic_write_text(artifact.path, json.dumps(result, indent=2, default=str))
    artifact.metadata.update({k: v for k, v in scalars(result).items()})
    if "path" in result:
        artifact.metadata["workspace_path"] = str(result["path"])


def log_metrics(metrics: Any, result: dict[str, Any]) -> None:
    """A stage result's numbers on a KFP Metrics artifact (shown in the run's visualisations)."""
    for key, value in scalars(result).items():
        metrics.log_metric(key, value)


def evaluation_html(summary: dict[str, Any]) -> str:
    """The evaluation as an HTML table (the KFP UI renders HTML artifacts)."""
    import html

    results = summary["results"]
    objectives = list(next(iter(results.values()))["gold"])
    head = "".join(f"<th>{html.escape(o)}</th>" for o in ["model", "gold composite", *objectives, "solve acc"])
    rows = []
    for name, r in results.items():
        cells = [name, f"{r['gold_composite']:.3f}", *(f"{r['gold'][o]:.3f}" for o in objectives)]
        cells.append(f"{r['solve_accuracy']:.3f}" if r.get("solve_accuracy") is not None else "-")
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    title = f"cycle {summary['cycle']}: stable {summary['stable_version']} vs candidates"
    return (
        f"<html><body><h3>{html.escape(title)}</h3><table border='1' cellpadding='4'>"
        f"<tr>{head}</tr>{''.join(rows)}</table>"
        f"<p>best candidate: {html.escape(str(summary['best_candidate']))}</p></body></html>"
    )


def finish_cycle(workspace: str, group: str, state: str, error: str) -> None:
    """The ExitHandler: a cycle that did not succeed is recorded in the registry (its cycle is the
    newest one with data)."""
    if state == "SUCCEEDED":
        return
    ws = Workspace(workspace)
    cycle = max(ws.cycle_numbers(), default=next_cycle(ws))
    record_failure(ws, cycle, f"pipeline run {group}: {state}: {error}".strip())


def evaluation_samples(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per kept sample response of every evaluated model (W&B table)."""
    return [
        {
            "model": name,
            "prompt": s["prompt"],
            "kind": s["kind"],
            "response": s["response"],
            "gold": fmean(s["gold"].values()),
        }
        for name, result in summary["results"].items()
        for s in result.get("samples", [])
    ]


# ---- the cycle's order, declared once ---------------------------------------------------------------

# Every stage in the order a cycle runs it, with the stages whose outputs it reads; `begin` (the last
# canary decided, the cycle number fixed) comes before all of them. `run_in_process` runs this table;
# the KFP graph (rlhfops.pipeline.graph) and dvc.yaml follow it, and tests/test_pipeline.py and
# tests/test_dvc_stages.py compare their dependencies with it.
CYCLE: tuple[tuple[str, Callable[..., Any], tuple[str, ...]], ...] = (
    ("collect", collect, ()),
    ("annotate", annotate, ("collect",)),
    ("version_data", version_data, ("annotate",)),
    ("reward_plan", reward_plan, ("version_data",)),
    ("reward_member", reward_member, ("reward_plan",)),
    ("reward_finish", reward_finish, ("reward_member",)),
    ("prm", prm, ("version_data",)),
    ("policy", policy, ("reward_finish", "prm")),
    ("offline", offline, ("reward_finish",)),
    ("evaluate", evaluate, ("policy", "offline")),
    ("gate", gate, ("evaluate",)),
    ("deploy_canary", deploy_canary, ("gate",)),  # only when the gate says "deploy" (KFP: dsl.If)
)
STAGES: dict[str, Callable[..., Any]] = {name: fn for name, fn, _ in CYCLE}
NEEDS: dict[str, tuple[str, ...]] = {name: needs for name, _, needs in CYCLE}
# a stage that runs once per item of another stage's list, the item as `spec` (KFP: dsl.ParallelFor)
FAN_OUT = {"reward_member": "reward_plan"}


def run_in_process(cfg: Config, ws: Workspace, on_stage: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """One cycle in this process, what one run of the KFP graph does: `begin`, then every stage in
    the declared order, one fanned-out call per item of its plan, deploy_canary only when the gate
    says "deploy". `on_stage(name, seconds)` after each call. Returns {"cycle": n, "results":
    {stage: result}}, a fanned-out stage's result being the list of its calls' results."""

    def timed(name: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if on_stage is not None:
            on_stage(name, time.perf_counter() - start)
        return result

    results = {"begin": timed("begin", begin, cfg, ws)}
    n = results["begin"]["cycle"]
    for name in STAGES:
        if name == "deploy_canary" and results["gate"]["decision"] != "deploy":
            continue
        if name in FAN_OUT:
            results[name] = [timed(name, STAGES[name], cfg, ws, n, spec=item) for item in results[FAN_OUT[name]]]
        else:
            results[name] = timed(name, STAGES[name], cfg, ws, n)
    return {"cycle": n, "results": results}
