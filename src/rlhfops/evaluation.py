"""Evaluation of a policy on the held-out test split.

Every score comes from the evaluation judges (`eval.judges`; by default the task's own judges,
`task.judge`, exact for the built-in task): the mean score per objective and per prompt kind,
their mean (the composite the gate compares, kept under the keys `gold` / `gold_composite`), the
mean response length, and whatever the task measures beside them (`task.metrics`: for the built-in
task solve accuracy, step validity, refusal precision / recall, undefined recall). A score a judge
left unlabelled (None) is left out of every mean and counted in `unlabelled`. `win_rate` compares
two policies' per-prompt composites. `evaluate` returns a JSON-ready dict; `eval_table` renders it
for a terminal.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

from rich.table import Table
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhfops.annotation.judges import Judge, VerifierJudge, eval_judges, labelled_mean
from rlhfops.config import Config
from rlhfops.generation import sample_texts
from rlhfops.serving.gate import paired
from rlhfops.tasks import Example, Task, make_task

N_SAMPLES_KEPT = 12
Row = tuple[Example, str, dict[str, float | None]]


def score_responses(
    task: Task, examples: list[Example], responses: list[str], judge: Judge | None = None
) -> dict[str, Any]:
    """Aggregate scores of `responses[i]` to `examples[i]` by `judge` (an `eval_judges`; None: the
    task's own judges, the default of `eval.judges`)."""
    if judge is None:
        judge = VerifierJudge(task, list(task.objectives))
    objectives = list(getattr(judge, "objectives", task.objectives))
    judged_by = getattr(judge, "kinds", None) or dict.fromkeys(objectives, "verifier")
    scores = judge([ex.prompt for ex in examples], responses)
    rows: list[Row] = list(zip(examples, responses, scores, strict=True))

    def gold_means(subset: list[Row]) -> dict[str, float | None]:
        return {obj: labelled_mean(r[2][obj] for r in subset) for obj in objectives}

    kinds = getattr(task, "kinds", None) or tuple(dict.fromkeys(ex.kind for ex in examples))
    by_kind = {}
    for kind in kinds:
        subset = [r for r in rows if r[0].kind == kind]
        by_kind[kind] = {"n": len(subset), "gold": gold_means(subset)}

    gold = gold_means(rows)
    metrics = getattr(task, "metrics", None)
    return {
        "n": len(rows),
        "n_prompts": len({r[0].prompt for r in rows}),
        "judges": dict(judged_by),
        "gold": gold,
        # = tasks.gold_composite (PPO's held-out slice) when the task's judges score, without judging twice
        "gold_composite": labelled_mean(gold.values()),
        "unlabelled": {obj: sum(r[2][obj] is None for r in rows) for obj in objectives},
        "by_kind": by_kind,
        **(metrics(examples, responses) if metrics is not None else {}),
        "mean_length": fmean(len(r[1]) for r in rows),
        "per_prompt": per_prompt_composite(rows),
        "samples": [
            {"prompt": r[0].prompt, "kind": r[0].kind, "response": r[1], "gold": r[2]} for r in rows[:N_SAMPLES_KEPT]
        ],
    }


def per_prompt_composite(rows: list[Row]) -> list[float | None]:
    """Per distinct prompt, in first-appearance order, the mean over its responses of each response's
    mean labelled score (None for a prompt with no labelled score): the paired scores the pre-deploy
    gate and `win_rate` compare."""
    by_prompt: dict[str, list[float]] = {}
    for ex, _, scores in rows:
        composite = labelled_mean(scores.values())
        by_prompt.setdefault(ex.prompt, [])
        if composite is not None:
            by_prompt[ex.prompt].append(composite)
    return [fmean(v) if v else None for v in by_prompt.values()]


def win_rate(stable: list[float | None], candidate: list[float | None]) -> float | None:
    """Share of the prompts (both labelled) where the candidate's per-prompt composite beats stable's,
    a tie counting half; None without such a prompt.

    >>> win_rate([0.2, 0.5, 0.9, None], [0.4, 0.5, 0.1, 0.7])
    0.5
    """
    s, c = paired(stable, candidate)
    if not s:
        return None
    return fmean(1.0 if b > a else 0.5 if b == a else 0.0 for a, b in zip(s, c, strict=True))


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    cfg: Config,
    logits_hook=None,
    judge: Judge | None = None,
) -> dict[str, Any]:
    """Decode the test split with the policy (greedy, or `samples_per_prompt` samples) and score it
    with `judge` (None: `eval_judges(cfg, task)`). `logits_hook` changes decoding (e.g. the offline
    policy's beta * (Q - V) shift)."""
    examples = task.examples("test", cfg.eval.n_test or cfg.task.n_test)
    examples = [ex for ex in examples for _ in range(1 if cfg.eval.greedy else cfg.eval.samples_per_prompt)]
    prompts = [ex.prompt for ex in examples]
    responses = sample_texts(
        model, tokenizer, prompts, cfg.generation, cfg.seed, greedy=cfg.eval.greedy, logits_hook=logits_hook
    )
    result = score_responses(task, examples, responses, judge or eval_judges(cfg, task))
    result["decoding"] = (
        "greedy"
        if cfg.eval.greedy
        else f"{cfg.eval.samples_per_prompt} samples per prompt at temperature {cfg.generation.temperature}"
    )
    return result


def evaluate_dir(cfg: Config, model_dir: str | Path, judge: Judge | None = None) -> dict[str, Any]:
    """`evaluate` of a saved policy directory, decoding as `modeling.load_decoder` says."""
    from rlhfops.modeling import load_decoder

    tokenizer, model, hook = load_decoder(cfg, model_dir)
    task = make_task(cfg.task, seed=cfg.seed)
    return {"model": str(model_dir), **evaluate(model, tokenizer, task, cfg, hook, judge)}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


GENERIC_KEYS = {
    "n",
    "n_prompts",
    "judges",
    "gold",
    "gold_composite",
    "unlabelled",
    "by_kind",
    "mean_length",
    "per_prompt",
    "samples",
    "win_rate",
}


def task_metric_keys(result: dict[str, Any]) -> list[str]:
    """The numbers a task measures beside the gold scores (`task.metrics`), in its order."""
    return [k for k, v in result.items() if k not in GENERIC_KEYS and (v is None or isinstance(v, int | float))]


def eval_table(
    results: dict[str, dict[str, Any]], title: str = "gold evaluation (test split)", versus: str = "stable"
) -> Table:
    """One column per evaluated policy (name -> `evaluate` result), one row per metric; `win_rate`
    is labelled as against `versus`."""
    table = Table(title=title)
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    first = next(iter(results.values()))
    rows: list[tuple[str, list[str]]] = []
    for obj in first["gold"]:
        rows.append((f"gold {obj}", [_fmt(r["gold"][obj]) for r in results.values()]))
    rows.append(("gold composite", [_fmt(r["gold_composite"]) for r in results.values()]))
    for kind in first["by_kind"]:
        for obj in first["gold"]:
            rows.append((f"  {kind}: {obj}", [_fmt(r["by_kind"][kind]["gold"][obj]) for r in results.values()]))
    for key in task_metric_keys(first):
        rows.append((key.replace("_", " "), [_fmt(r.get(key)) for r in results.values()]))
    if any(r.get("win_rate") is not None for r in results.values()):
        rows.append((f"win rate vs {versus}", [_fmt(r.get("win_rate")) for r in results.values()]))
    if any(sum(r.get("unlabelled", {}).values()) for r in results.values()):
        rows.append(("unlabelled scores", [str(sum(r.get("unlabelled", {}).values())) for r in results.values()]))
    rows.append(("mean length (chars)", [f"{r['mean_length']:.1f}" for r in results.values()]))
    rows.append(("prompts x samples", [f"{r['n_prompts']} x {r['n'] // r['n_prompts']}" for r in results.values()]))
    for label, values in rows:
        table.add_row(label, *values)
    return table
