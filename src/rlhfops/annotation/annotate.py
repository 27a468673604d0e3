"""The `annotate` stage: collected responses -> judged, paired, step-labelled, queued for review.

    responses.jsonl  --(active learning picks prompts within the budget)-->
    judges (annotation.judges, else annotation.judge.kind) -> judgements.jsonl
    pairs per objective (reward.data.selection) -> pairs-<objective>.jsonl
    step labels (annotation.steps.method) -> steps.jsonl
    review queue (uncertain + validation) -> review.json (Label Studio), review-queue.jsonl, review-config.xml
    counts                               -> annotate.json

With a reward-model directory, its ensembles score every collected response first: the spread
ranks prompts for active learning and pairs for review. Without one (cycle 1) prompts are
picked at random and the review queue holds only the random validation sample.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

from rlhfops.annotation.active import prompt_uncertainty, select_prompts
from rlhfops.annotation.collect import read_responses
from rlhfops.annotation.judges import Judges, RewardModelJudge, Scores, annotation_judges
from rlhfops.annotation.pairs import judged_pairs
from rlhfops.annotation.review import (
    INTERFACE,
    LABEL_CONFIG,
    QUEUE,
    QUEUE_PRIVATE,
    label_studio_tasks,
    pair_items,
)
from rlhfops.annotation.steps import exact_step_labels, mc_step_labels, sparse_step_labels, write_step_data
from rlhfops.config import Config
from rlhfops.files import atomic_write_json, atomic_write_text, write_jsonl
from rlhfops.tasks import Example, Task, check_objectives, make_task, steps_of
from rlhfops.workspace import ANNOTATE_SUMMARY, JUDGEMENTS, STEPS, Workspace, pairs_file


def pairs_path(out_dir: str | Path, objective: str) -> Path:
    return Path(out_dir) / pairs_file(objective)


def group_by_prompt(records: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(prompt, distinct responses) in order of first appearance."""
    groups: dict[str, dict[str, None]] = {}
    for r in records:
        groups.setdefault(r["prompt"], {})[r["response"]] = None
    return [(p, list(rs)) for p, rs in groups.items()]


def task_example(task: Task, prompt: str) -> Example | None:
    """The task's example for `prompt`, or None for a prompt the task cannot read (free text)."""
    try:
        return task.example(prompt)
    except ValueError:
        return None


def step_records(
    cfg: Config, task: Task, groups: list[tuple[str, list[str]]], policy_dir: str | Path | None
) -> list[dict[str, Any]]:
    """Step labels for every response to a task prompt, by `annotation.steps.method`; none for a
    task without step structure (its summary says so)."""
    sc = cfg.annotation.steps
    steps = steps_of(task)
    if steps is None:
        return []
    items = [(ex, r) for p, rs in groups if (ex := task_example(task, p)) is not None for r in rs]
    if sc.method == "exact":
        records = [exact_step_labels(steps, ex, r) for ex, r in items]
    elif sc.method == "sparse":
        records = [sparse_step_labels(steps, ex, r, sc.sparse_every) for ex, r in items]
    elif sc.method == "mc":
        if policy_dir is None:
            raise ValueError("annotation.steps.method is mc, which needs the policy (policy_dir) to roll out from")
        from rlhfops.modeling import load_decoder

        tokenizer, model, hook = load_decoder(cfg, policy_dir)
        examples, responses = [ex for ex, _ in items], [r for _, r in items]
        records = mc_step_labels(
            steps, examples, responses, model, tokenizer, cfg.generation, sc.mc_rollouts, cfg.seed, hook
        )
    else:
        raise ValueError(f"unknown step-label method '{sc.method}'")
    return [r for r in records if r is not None and any(label is not None for label in r["labels"])]


def check_labelled_share(judge: Judges, scores: Scores, objectives: list[str], min_share: float) -> None:
    """A RuntimeError, one sentence with the reasons counted (unparsable replies, failed requests, the
    HTTP status, the deadline), when the judges labelled less than `min_share` of the (response,
    objective) pairs: a judge that labels nothing must not pass as an annotation with no pairs."""
    total = len(scores) * len(objectives)
    labelled = sum(s.get(o) is not None for s in scores for o in objectives)
    if total == 0 or labelled >= min_share * total and labelled > 0:
        return
    stats, errors = judge.stats, judge.errors
    reasons = [
        f"{stats[key]} {what}"
        for key, what in (
            ("unparsable", "unparsable replies"),
            ("failed", "failed requests"),
            ("past_deadline", "not done by the deadline"),
        )
        if stats[key]
    ]
    reasons += [errors[key] for key in ("status", "transport") if key in errors]
    why = "; ".join(reasons) or f"judges: {', '.join(sorted(set(judge.kinds.values())))}"
    raise RuntimeError(
        f"the judges labelled {labelled} of {total} (response, objective) pairs, less than "
        f"annotation.min_labelled_share={min_share:g} ({why})"
    )


def annotate(
    cfg: Config,
    ws: Workspace,
    responses_path: str | Path,
    out_dir: str | Path,
    *,
    rm_dir: str | Path | None = None,
    policy_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the stage (see the module docstring); returns the counts also written to `annotate.json`.

    `rm_dir`: the current reward ensembles (active learning, review ranking, the reward_model
    judge); `policy_dir`: the policy Monte-Carlo step labels roll out from."""
    out_dir = Path(out_dir)
    task = make_task(cfg.task, seed=cfg.seed)
    objectives = check_objectives(cfg.reward.objectives, task)
    records = read_responses(responses_path)
    if not records:
        raise ValueError(f"'{responses_path}' holds no responses to annotate")
    groups = group_by_prompt(records)

    ensemble = None
    if rm_dir is not None and all((Path(rm_dir) / o / "manifest.json").exists() for o in objectives):
        ensemble = RewardModelJudge.of_cycle(cfg, rm_dir, objectives)
    uncertainty = None
    spreads: dict[tuple[str, str], dict[str, float]] = {}
    if ensemble is not None:
        flat = [(p, r) for p, rs in groups for r in rs]
        ensemble([p for p, _ in flat], [r for _, r in flat])
        spreads = dict(zip(flat, ensemble.last_spreads, strict=True))
        index, at = [], 0
        for _, rs in groups:
            index.append(list(range(at, at + len(rs))))
            at += len(rs)
        uncertainty = prompt_uncertainty(ensemble.last_spreads, index)

    ac = cfg.annotation.active
    n_collected = len(groups)
    picked = select_prompts(uncertainty, n_collected, ac.budget, ac.strategy, cfg.seed)
    groups = [groups[i] for i in picked]

    judge = annotation_judges(cfg, task, rm_dir, ensemble)
    prompts = [p for p, rs in groups for _ in rs]
    responses = [r for _, rs in groups for r in rs]
    scores = judge(prompts, responses)
    check_labelled_share(judge, scores, objectives, cfg.annotation.min_labelled_share)
    judgements = [{"prompt": p, "response": r, "scores": s} for p, r, s in zip(prompts, responses, scores, strict=True)]
    at, judged = 0, []
    for p, rs in groups:
        judged.append((p, rs, scores[at : at + len(rs)]))
        at += len(rs)
    pairs = judged_pairs(judged, objectives, cfg.reward.data.selection, cfg.seed)
    steps = step_records(cfg, task, groups, policy_dir)

    pair_uncertainty = None
    if spreads:
        pair_uncertainty = {
            p["id"]: fmean((spreads[(p["prompt"], p["chosen"])][o], spreads[(p["prompt"], p["rejected"])][o]))
            for o in objectives
            for p in pairs[o]
        }
    rc = cfg.annotation.review
    queue = pair_items(pairs, pair_uncertainty, rc.n_uncertain, rc.n_validation, cfg.seed)

    write_jsonl(out_dir / JUDGEMENTS, judgements)
    for obj in objectives:
        write_jsonl(pairs_path(out_dir, obj), pairs[obj])
    write_step_data(steps, out_dir / STEPS)
    write_jsonl(out_dir / QUEUE_PRIVATE, queue)
    atomic_write_json(out_dir / QUEUE, label_studio_tasks(queue))
    atomic_write_text(out_dir / INTERFACE, LABEL_CONFIG)
    unlabelled = sum(s.get(o) is None for s in scores for o in objectives)
    summary = {
        "judges": judge.kinds,
        "prompts_collected": n_collected,
        "prompts_annotated": len(groups),
        "responses_judged": len(responses),
        "labels": len(responses) * len(objectives) - unlabelled,
        "unlabelled": unlabelled,
        "pairs": {o: len(pairs[o]) for o in objectives},
        "step_records": len(steps),
        "step_method": cfg.annotation.steps.method
        if steps_of(task) is not None
        else f"none (task '{task.name}' has no steps)",
        "review_items": len(queue),
        "active_learning": "uncertainty" if uncertainty is not None and ac.strategy == "uncertainty" else "random",
        "judge_stats": dict(judge.stats),
    }
    atomic_write_json(out_dir / ANNOTATE_SUMMARY, summary)
    return summary
