"""Human review: a queue in Label Studio's import JSON, human labels imported back, agreement.

The queue (`review.json`) is a list of Label Studio tasks, each `{"data": {...}}` with

    id          the pair id (`pairs.pair_id`) or a study item id
    kind        "pair": which of two responses is better for `objective` (the AI already chose)
                "study": which of two responses from policies trained with different objective
                weights a person prefers overall (the weight-preference study)
    objective   the objective asked about ("overall" for the study)
    prompt, response_a, response_b     shown to the reviewer; sides are shuffled (seeded)
    reason      "uncertain" (high ensemble disagreement), "validation" (random AI label), "study"

and the labelling interface is `LABEL_CONFIG` (a Choices tag `preference` over A / B). What the
reviewer is not shown stays in our own `review-queue.jsonl`: the AI's choice per pair and the
objective vectors of study responses. Label Studio's JSON export is read back by `read_export`:
per task the last annotation that was not cancelled; its choice A or B.

Human labels override the AI's (`apply_human_labels`: the pair is flipped when the person
disagrees, and marked `label_source: human` either way); Cohen's kappa measures the AI-human
agreement on the reviewed pairs; study choices fit the objective weights (`fit_study_weights`,
a grid search over the simplex with `reward.objectives.grid_search`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from rlhfops.config import cut
from rlhfops.files import read_json_file, read_jsonl
from rlhfops.reward.objectives import grid_search, simplex_grid
from rlhfops.workspace import REVIEW_IMPORTED as IMPORTED
from rlhfops.workspace import REVIEW_INTERFACE as INTERFACE
from rlhfops.workspace import REVIEW_QUEUE as QUEUE
from rlhfops.workspace import REVIEW_QUEUE_PRIVATE as QUEUE_PRIVATE
from rlhfops.workspace import pairs_file

CHOICES = ("A", "B")
LABEL_CONFIG = """<View>
  <Header value="$objective"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Response A"/>
  <Text name="response_a" value="$response_a"/>
  <Header value="Response B"/>
  <Text name="response_b" value="$response_b"/>
  <Choices name="preference" toName="prompt" choice="single" required="true">
    <Choice value="A"/>
    <Choice value="B"/>
  </Choices>
</View>
"""


def pair_items(
    pairs: dict[str, list[dict[str, Any]]],
    uncertainty: dict[str, float] | None,
    n_uncertain: int,
    n_validation: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Queue items for AI-labelled pairs: the `n_uncertain` with the highest `uncertainty` (by pair
    id; none without it) and a random `n_validation` of the rest. Sides are shuffled."""
    rng = random.Random(seed)
    every = [p for obj in pairs for p in pairs[obj]]
    chosen_ids: list[tuple[str, str]] = []
    if uncertainty:
        ranked = sorted((p for p in every if p["id"] in uncertainty), key=lambda p: -uncertainty[p["id"]])
        chosen_ids = [(p["id"], "uncertain") for p in ranked[:n_uncertain]]
    taken = {i for i, _ in chosen_ids}
    rest = [p["id"] for p in every if p["id"] not in taken]
    chosen_ids += [(i, "validation") for i in rng.sample(rest, min(n_validation, len(rest)))]
    by_id = {p["id"]: p for p in every}
    items = []
    for pid, reason in chosen_ids:
        p = by_id[pid]
        ai_is_a = rng.random() < 0.5
        a, b = (p["chosen"], p["rejected"]) if ai_is_a else (p["rejected"], p["chosen"])
        items.append(
            {
                "id": pid,
                "kind": "pair",
                "objective": p["objective"],
                "prompt": p["prompt"],
                "response_a": a,
                "response_b": b,
                "reason": reason,
                "ai_choice": "A" if ai_is_a else "B",
            }
        )
    return items


def study_items(
    prompts: list[str],
    responses: dict[str, list[str]],
    vectors: dict[str, list[list[float]]],
    seed: int,
) -> list[dict[str, Any]]:
    """Weight-preference study items: for each prompt, each pair of policies (named by the keys of
    `responses`, e.g. their weights) whose responses differ. `vectors[name][i]` is the objective
    vector of `responses[name][i]` (gold or reward-model scores), kept off the reviewer's screen."""
    rng = random.Random(seed)
    names = list(responses)
    items = []
    for i, prompt in enumerate(prompts):
        for x in range(len(names)):
            for y in range(x + 1, len(names)):
                p, q = names[x], names[y]
                if responses[p][i] == responses[q][i]:
                    continue
                if rng.random() < 0.5:
                    p, q = q, p
                items.append(
                    {
                        "id": f"study-{i}-{p}-{q}",
                        "kind": "study",
                        "objective": "overall",
                        "prompt": prompt,
                        "response_a": responses[p][i],
                        "response_b": responses[q][i],
                        "reason": "study",
                        "policies": [p, q],
                        "vectors": [vectors[p][i], vectors[q][i]],
                    }
                )
    return items


def label_studio_tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label Studio import JSON: only what the reviewer should see goes into `data`."""
    shown = ("id", "kind", "objective", "prompt", "response_a", "response_b", "reason")
    return [{"data": {k: item[k] for k in shown}} for item in items]


def check_item(record: dict[str, Any]) -> str | None:
    for field in ("id", "kind", "objective", "prompt", "response_a", "response_b"):
        if not isinstance(record.get(field), str) or not record[field]:
            return f"field '{field}' must be a non-empty string"
    if record["kind"] == "pair" and record.get("ai_choice") not in CHOICES:
        return "a pair item needs 'ai_choice' A or B"
    if record["kind"] == "study" and not (isinstance(record.get("vectors"), list) and len(record["vectors"]) == 2):
        return "a study item needs 'vectors': the objective vectors of its two responses"
    return None


def read_queue(path: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(path, check_item)


def read_export(path: str | Path) -> dict[str, str]:
    """Item id -> "A" | "B" from a Label Studio JSON export; a malformed task raises ValueError
    naming the file and the task's position. Tasks without a usable annotation are left out."""
    path = Path(path)
    tasks = read_json_file(path, "review export")
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio JSON export is a list of tasks")
    labels: dict[str, str] = {}
    labelled_at: dict[str, int] = {}  # item id -> the task that labelled it
    for n, task in enumerate(tasks, start=1):
        where = f"{path}: task {n}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ValueError(f"{where}: no 'data' object")
        item_id = task["data"].get("id")
        if not isinstance(item_id, str):
            raise ValueError(f"{where}: 'data.id' must be the queue item's id (a string)")
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not done:
            continue
        results = done[-1].get("result")
        results = results if isinstance(results, list) else []
        values = [r.get("value") for r in results if isinstance(r, dict) and r.get("from_name") == "preference"]
        lists = [v["choices"] for v in values if isinstance(v, dict) and isinstance(v.get("choices"), list)]
        choices = [c for chosen in lists for c in chosen]
        if len(choices) != 1 or choices[0] not in CHOICES:
            raise ValueError(
                f"{where}: the 'preference' result must be exactly one of A or B, got {cut(repr(choices), 80)}"
            )
        if item_id in labels and labels[item_id] != choices[0]:
            raise ValueError(
                f"{where}: item '{cut(item_id, 80)}' is labelled {choices[0]} here but {labels[item_id]} in task "
                f"{labelled_at[item_id]}; keep one label per item"
            )
        labels[item_id], labelled_at[item_id] = choices[0], n
    return labels


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e); None for no items;
    1.0 when both always give the same single category.

    >>> cohen_kappa(["A", "A", "B", "B"], ["A", "A", "B", "A"])
    0.5
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs labels for the same items, got {len(a)} and {len(b)}")
    if not a:
        return None
    cats = set(a) | set(b)
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    p_e = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
    if p_e == 1.0:
        return 1.0
    return (p_o - p_e) / (1 - p_e)


def apply_human_labels(
    pairs: dict[str, list[dict[str, Any]]], queue: list[dict[str, Any]], human: dict[str, str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Pairs with human labels in force, and the agreement report.

    A reviewed pair whose person picked the AI's rejected response is flipped; every reviewed
    pair gets `label_source: human`. Kappa and raw agreement are over the reviewed pair items,
    overall and for the `validation` sample alone (the unbiased estimate of AI label quality)."""
    items = {item["id"]: item for item in queue}
    unknown = sorted(set(human) - set(items))
    if unknown:
        raise ValueError(f"the review export has labels for {len(unknown)} item(s) not in the queue, e.g. {unknown[0]}")
    out: dict[str, list[dict[str, Any]]] = {}
    flipped = 0
    for obj, records in pairs.items():
        out[obj] = []
        for p in records:
            choice = human.get(p["id"])
            item = items.get(p["id"])
            if choice is None or item is None or item["kind"] != "pair":
                out[obj].append(p)
                continue
            human_prefers = item["response_a"] if choice == "A" else item["response_b"]
            p = dict(p, label_source="human")
            if human_prefers != p["chosen"]:
                p["chosen"], p["rejected"] = p["rejected"], p["chosen"]
                p["chosen_score"], p["rejected_score"] = p.get("rejected_score"), p.get("chosen_score")
                flipped += 1
            out[obj].append(p)
    report: dict[str, Any] = {"reviewed_pairs": 0, "flipped": flipped}
    for subset in ("all", "validation", "uncertain"):
        ids = [
            i
            for i, item in items.items()
            if item["kind"] == "pair" and i in human and (subset == "all" or item["reason"] == subset)
        ]
        ai, people = [items[i]["ai_choice"] for i in ids], [human[i] for i in ids]
        report[subset] = {
            "n": len(ids),
            "agreement": sum(x == y for x, y in zip(ai, people, strict=True)) / len(ids) if ids else None,
            "kappa": cohen_kappa(ai, people),
        }
    report["reviewed_pairs"] = report["all"]["n"]
    return out, report


def fit_study_weights(
    queue: list[dict[str, Any]], human: dict[str, str], objectives: list[str], steps: int = 10
) -> dict[str, Any] | None:
    """Objective weights that best explain people's study choices: the simplex-grid vector whose
    weighted sum picks the chosen response most often (`grid_search` with utility 1 for the
    chosen side). None when no study item was answered."""
    answered = [item for item in queue if item["kind"] == "study" and item["id"] in human]
    if not answered:
        return None
    rewards = torch.tensor([item["vectors"] for item in answered], dtype=torch.float64)  # (P, 2, M)
    if rewards.shape[2] != len(objectives):
        raise ValueError(f"study vectors have {rewards.shape[2]} objectives, expected {len(objectives)}")
    utility = torch.tensor([[1.0, 0.0] if human[item["id"]] == "A" else [0.0, 1.0] for item in answered])
    result = grid_search(rewards, utility.double(), simplex_grid(len(objectives), steps).double())
    return {
        "weights": dict(zip(objectives, [round(w, 6) for w in result.weights.tolist()], strict=True)),
        "choices_explained": result.score,
        "n": len(answered),
    }


# ---- the stage's file side (`rlhfops review export | import`) ----------------------------------


def write_queue(cycle_dir: Path, items: list[dict[str, Any]]) -> None:
    from rlhfops.files import atomic_write_json, atomic_write_text, write_jsonl

    write_jsonl(cycle_dir / QUEUE_PRIVATE, items)
    atomic_write_json(cycle_dir / QUEUE, label_studio_tasks(items))
    atomic_write_text(cycle_dir / INTERFACE, LABEL_CONFIG)


def export_queue(cycle_dir: str | Path, out: str | Path) -> int:
    """Write the cycle's queue as Label Studio import JSON to `out`; returns the number of tasks."""
    from rlhfops.files import atomic_write_json

    items = read_queue(Path(cycle_dir) / QUEUE_PRIVATE)
    atomic_write_json(out, label_studio_tasks(items))
    return len(items)


def add_study(cfg, cycle_dir: str | Path, policy_dirs: list[str | Path], n_prompts: int) -> int:
    """Add weight-preference study items to the cycle's queue: one sample per validation prompt from
    each policy (e.g. trained with different objective weights), objective vectors from the task's
    gold judges. Earlier study items are replaced. Returns the number of study items."""
    from rlhfops.generation import sample_texts
    from rlhfops.modeling import load_decoder
    from rlhfops.tasks import make_task

    cycle_dir = Path(cycle_dir)
    if len(policy_dirs) < 2:
        raise ValueError("a weight-preference study compares at least two policies")
    task = make_task(cfg.task, seed=cfg.seed)
    examples = task.examples("val", n_prompts)
    prompts = [ex.prompt for ex in examples]
    responses, vectors = {}, {}
    for k, policy in enumerate(policy_dirs):
        name = f"{k}:{Path(policy).name}"
        tokenizer, model, hook = load_decoder(cfg, policy)
        responses[name] = sample_texts(model, tokenizer, prompts, cfg.generation, cfg.seed + k, logits_hook=hook)
        vectors[name] = [
            [task.judge(ex, r)[o] for o in cfg.reward.objectives]
            for ex, r in zip(examples, responses[name], strict=True)
        ]
    items = [i for i in read_queue(cycle_dir / QUEUE_PRIVATE) if i["kind"] != "study"]
    study = study_items(prompts, responses, vectors, cfg.seed)
    write_queue(cycle_dir, items + study)
    return len(study)


def import_review(cfg, cycle_dir: str | Path, export: str | Path) -> dict[str, Any]:
    """Apply a Label Studio export to the cycle: human labels override the pairs files; write
    `review-import.json` (labels, kappa, study weights); return that report."""
    from rlhfops.annotation.pairs import read_pairs
    from rlhfops.files import atomic_write_json, write_jsonl

    cycle_dir = Path(cycle_dir)
    queue = read_queue(cycle_dir / QUEUE_PRIVATE)
    human = read_export(export)
    objectives = list(cfg.reward.objectives)
    pairs = {o: read_pairs(cycle_dir / pairs_file(o)) for o in objectives if (cycle_dir / pairs_file(o)).exists()}
    updated, report = apply_human_labels(pairs, queue, human)
    report["study"] = fit_study_weights(queue, human, objectives)
    report["labels"] = human
    for obj, records in updated.items():
        write_jsonl(cycle_dir / pairs_file(obj), records)
    atomic_write_json(cycle_dir / IMPORTED, report)
    return {k: v for k, v in report.items() if k != "labels"}
