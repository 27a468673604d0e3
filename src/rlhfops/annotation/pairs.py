"""Preference pairs per objective, in TRL's `prompt` / `chosen` / `rejected` fields.

Each prompt gets k responses (noisy-teacher ones and, when a policy is given, the policy's own
samples); a judge scores every response per objective; per objective one pair is selected:

    max_min     chosen = the first best response, rejected = the first worst one
    max_random  chosen = the first best response, rejected = a random strictly worse one

Prompts whose k responses all score the same on an objective give no pair for it. Label noise
(an imperfect AI judge) swaps chosen and rejected with probability `label_noise`.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from rlhfops.config import Config
from rlhfops.files import atomic_write_json, read_jsonl, write_jsonl
from rlhfops.generation import sample_texts
from rlhfops.tasks import Example, Task, check_objectives, make_task, teacher_of
from rlhfops.workspace import PAIR_STATS

FIELDS = ("prompt", "chosen", "rejected")


def select_pair(scores: list[float], selection: str, rng: random.Random) -> tuple[int, int] | None:
    """Indices (chosen, rejected) among k scored responses, or None when all scores are equal.

    >>> select_pair([0.5, 1.0, 0.0, 1.0], "max_min", random.Random(0))
    (1, 2)
    """
    best, worst = max(scores), min(scores)
    if best == worst:
        return None
    chosen = scores.index(best)
    if selection == "max_min":
        return chosen, scores.index(worst)
    if selection == "max_random":
        return chosen, rng.choice([i for i, s in enumerate(scores) if s < best])
    raise ValueError(f"unknown pair selection '{selection}'; expected max_min or max_random")


def select_pairs(
    scores: list[float], texts: list[str], selection: str, limit: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Up to `limit` index pairs (chosen, rejected) among k scored responses: `select_pair`'s pair
    first, then further strictly ordered pairs in random order (right vs wrong among the policy's
    own samples, the reference vs a near miss), never two with the same pair of texts.

    >>> select_pairs([1.0, 0.0, 1.0, 0.0], ["a", "b", "c", "b"], "max_min", 3, random.Random(0))
    [(0, 1), (2, 1)]
    """
    first = select_pair(scores, selection, rng)
    if first is None:
        return []
    picked, seen = [first], {(texts[first[0]], texts[first[1]])}
    if limit > 1:
        ordered = [(i, j) for i in range(len(scores)) for j in range(len(scores)) if scores[i] > scores[j]]
        rng.shuffle(ordered)
        for i, j in ordered:
            if len(picked) == limit:
                break
            if (texts[i], texts[j]) not in seen:
                seen.add((texts[i], texts[j]))
                picked.append((i, j))
    return picked


def collect_responses(
    task: Task, examples: list[Example], k: int, seed: int, cfg: Config, policy=None
) -> list[list[str]]:
    """k responses per example: ceil(k/2) from the task's (noisy) teacher and the rest sampled from
    `policy` (a `modeling.Decoder`: tokenizer, model, logits hook); all k from the teacher when there
    is no policy, all k from the policy when the task has no teacher."""
    teacher = teacher_of(task)
    if teacher is None and policy is None:
        raise ValueError(f"task '{task.name}' has no teacher, so its responses must be sampled from a policy")
    rng = random.Random(seed)
    n_policy = 0 if policy is None else k if teacher is None else k // 2
    responses = [[teacher(ex, rng)[0] for _ in range(k - n_policy)] for ex in examples]
    if n_policy:
        tokenizer, model, hook = policy
        prompts = [ex.prompt for ex in examples for _ in range(n_policy)]
        sampled = sample_texts(model, tokenizer, prompts, cfg.generation, seed, logits_hook=hook)
        for i, row in enumerate(responses):
            row += sampled[i * n_policy : (i + 1) * n_policy]
    return responses


def preference_pairs(
    task: Task,
    examples: list[Example],
    responses: list[list[str]],
    objectives: list[str],
    selection: str,
    label_noise: float,
    seed: int,
    pairs_per_prompt: int = 1,
) -> tuple[dict[str, list[dict[str, str]]], dict[str, int]]:
    """Up to `pairs_per_prompt` pairs per prompt and objective (`select_pairs`) judged by the task's
    gold judges, and how many labels the noise flipped."""
    rng = random.Random(seed)
    pairs: dict[str, list[dict[str, str]]] = {obj: [] for obj in objectives}
    flipped = dict.fromkeys(objectives, 0)
    for ex, candidates in zip(examples, responses, strict=True):
        judged = [task.judge(ex, r) for r in candidates]
        for obj in objectives:
            for c, r in select_pairs([j[obj] for j in judged], candidates, selection, pairs_per_prompt, rng):
                chosen, rejected = candidates[c], candidates[r]
                if rng.random() < label_noise:
                    chosen, rejected = rejected, chosen
                    flipped[obj] += 1
                pairs[obj].append({"prompt": ex.prompt, "chosen": chosen, "rejected": rejected})
    return pairs, flipped


def pair_id(objective: str, prompt: str, chosen: str, rejected: str) -> str:
    """A stable id of a pair, the same whichever response is chosen (so a human flip keeps it)."""
    a, b = sorted((chosen, rejected))
    return f"{objective}-" + hashlib.sha256("\x00".join((objective, prompt, a, b)).encode()).hexdigest()[:16]


def judged_pairs(
    groups: list[tuple[str, list[str], list[dict[str, float | None]]]],
    objectives: list[str],
    selection: str,
    seed: int,
) -> dict[str, list[dict[str, Any]]]:
    """Pairs per objective from judged responses: `groups` holds (prompt, distinct responses,
    judge scores per response). A response the judge left unlabelled (None) for an objective
    takes no part in that objective's pair. Records carry TRL's fields plus `id`, `objective`,
    `label_source` ("ai") and the two scores."""
    rng = random.Random(seed)
    pairs: dict[str, list[dict[str, Any]]] = {obj: [] for obj in objectives}
    for prompt, responses, scores in groups:
        for obj in objectives:
            labelled = [i for i, row in enumerate(scores) if row.get(obj) is not None]
            if len(labelled) < 2:
                continue
            picked = select_pair([scores[i][obj] for i in labelled], selection, rng)
            if picked is None:
                continue
            c, r = labelled[picked[0]], labelled[picked[1]]
            pairs[obj].append(
                {
                    "prompt": prompt,
                    "chosen": responses[c],
                    "rejected": responses[r],
                    "id": pair_id(obj, prompt, responses[c], responses[r]),
                    "objective": obj,
                    "label_source": "ai",
                    "chosen_score": scores[c][obj],
                    "rejected_score": scores[r][obj],
                }
            )
    return pairs


def check_pair(record: dict[str, Any]) -> str | None:
    for field in FIELDS:
        if not isinstance(record.get(field), str):
            return f"field '{field}' must be a string"
    if not record["prompt"].strip():
        return "field 'prompt' is empty"
    if record["chosen"] == record["rejected"]:
        return "chosen and rejected are the same response"
    return None


def read_pairs(path: str | Path) -> list[dict[str, str]]:
    return read_jsonl(path, check_pair)


def build_preference_data(
    cfg: Config, out_dir: str | Path, policy=None, splits: tuple[str, ...] = ("train", "val")
) -> Path:
    """Write `train/<objective>.jsonl` (noisy labels) and `val/<objective>.jsonl` (clean gold labels)
    plus `stats.json` into `out_dir`; `policy` is a (tokenizer, model) pair or None. `splits`
    limits which of the two are built."""
    out_dir = Path(out_dir)
    task = make_task(cfg.task, seed=cfg.seed)
    check_objectives(cfg.reward.objectives, task)
    data = cfg.reward.data
    stats: dict[str, Any] = {}
    for split, n, noise, per_prompt in (
        ("train", data.n_prompts, data.label_noise, data.pairs_per_prompt),
        ("val", data.n_val_prompts, 0.0, 1),
    ):
        if split not in splits:
            continue
        examples = task.examples(split, n)
        responses = collect_responses(task, examples, data.responses_per_prompt, cfg.seed, cfg, policy)
        pairs, flipped = preference_pairs(
            task, examples, responses, cfg.reward.objectives, data.selection, noise, cfg.seed, per_prompt
        )
        for obj, records in pairs.items():
            if not records:
                raise ValueError(f"no {split} preference pairs for '{obj}': every response scored the same")
            write_jsonl(out_dir / split / f"{obj}.jsonl", records)
        stats[split] = {obj: {"pairs": len(pairs[obj]), "flipped": flipped[obj]} for obj in pairs}
    stats["data"] = data.model_dump()
    atomic_write_json(out_dir / PAIR_STATS, stats)
    return out_dir
