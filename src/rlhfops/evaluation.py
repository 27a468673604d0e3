"""Gold evaluation of a policy on the held-out test split.

Every number comes from the task's own judges (`task.judge`, exact for the built-in task): the
mean gold score per objective and per prompt kind, their mean (the gold composite the gate
compares), the mean response length, and whatever the task measures beside them
(`task.metrics`: for the built-in task solve accuracy, step validity, refusal precision / recall,
undefined recall). `evaluate` returns a JSON-ready dict; `eval_table` renders it for a terminal.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

from rich.table import Table
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhfops.config import Config
from rlhfops.generation import sample_texts
from rlhfops.tasks import Example, Task, make_task

N_SAMPLES_KEPT = 12


def score_responses(task: Task, examples: list[Example], responses: list[str]) -> dict[str, Any]:
    """Aggregate gold metrics of `responses[i]` to `examples[i]`."""
    rows = [(ex, resp, task.judge(ex, resp)) for ex, resp in zip(examples, responses, strict=True)]

    def gold_means(subset) -> dict[str, float | None]:
        return {obj: (fmean(r[2][obj] for r in subset) if subset else None) for obj in task.objectives}

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
        "gold": gold,
        "gold_composite": fmean(gold.values()),  # = tasks.gold_composite (PPO's held-out slice), without judging twice
        "by_kind": by_kind,
        **(metrics(examples, responses) if metrics is not None else {}),
        "mean_length": fmean(len(r[1]) for r in rows),
        "per_prompt": per_prompt_composite(rows),
        "samples": [
            {"prompt": r[0].prompt, "kind": r[0].kind, "response": r[1], "gold": r[2]} for r in rows[:N_SAMPLES_KEPT]
        ],
    }


def per_prompt_composite(rows) -> list[float]:
    """Mean gold composite of each distinct prompt's responses, in first-appearance order: the
    paired scores the pre-deploy gate compares."""
    by_prompt: dict[str, list[float]] = {}
    for ex, _, gold in rows:
        by_prompt.setdefault(ex.prompt, []).append(fmean(gold.values()))
    return [fmean(v) for v in by_prompt.values()]


def evaluate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task, cfg: Config, logits_hook=None
) -> dict[str, Any]:
    """Decode the test split with the policy (greedy, or `samples_per_prompt` samples) and score it.
    `logits_hook` changes decoding (e.g. the offline policy's beta * (Q - V) shift)."""
    examples = task.examples("test", cfg.eval.n_test or cfg.task.n_test)
    examples = [ex for ex in examples for _ in range(1 if cfg.eval.greedy else cfg.eval.samples_per_prompt)]
    prompts = [ex.prompt for ex in examples]
    responses = sample_texts(
        model, tokenizer, prompts, cfg.generation, cfg.seed, greedy=cfg.eval.greedy, logits_hook=logits_hook
    )
    result = score_responses(task, examples, responses)
    result["decoding"] = (
        "greedy"
        if cfg.eval.greedy
        else f"{cfg.eval.samples_per_prompt} samples per prompt at temperature {cfg.generation.temperature}"
    )
    return result


def evaluate_dir(cfg: Config, model_dir: str | Path) -> dict[str, Any]:
    """`evaluate` of a saved policy directory, decoding as `modeling.load_decoder` says."""
    from rlhfops.modeling import load_decoder

    tokenizer, model, hook = load_decoder(cfg, model_dir)
    return {"model": str(model_dir), **evaluate(model, tokenizer, make_task(cfg.task, seed=cfg.seed), cfg, hook)}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


GENERIC_KEYS = {"n", "n_prompts", "gold", "gold_composite", "by_kind", "mean_length", "per_prompt", "samples"}


def task_metric_keys(result: dict[str, Any]) -> list[str]:
    """The numbers a task measures beside the gold scores (`task.metrics`), in its order."""
    return [k for k, v in result.items() if k not in GENERIC_KEYS and (v is None or isinstance(v, int | float))]


def eval_table(results: dict[str, dict[str, Any]], title: str = "gold evaluation (test split)") -> Table:
    """One column per evaluated policy (name -> `evaluate` result), one row per metric."""
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
    rows.append(("mean length (chars)", [f"{r['mean_length']:.1f}" for r in results.values()]))
    rows.append(("prompts x samples", [f"{r['n_prompts']} x {r['n'] // r['n_prompts']}" for r in results.values()]))
    for label, values in rows:
        table.add_row(label, *values)
    return table
