"""How many step labels the rewrite rule changes against the set rule it replaced, on SFT-like data.

    python benchmarks/step_rule.py [--config tiny] [--prompts 2000] [--set task.max_ops=4 ...]

The task's noisy teacher answers the first `--prompts` train prompts exactly as SFT data is drawn
(one `random.Random(seed)` over the prompts). Every step line is labelled by the old rule (right
arithmetic, both operands among the prompt's numbers and earlier results, as a set) and by the
task's verifier (a valid rewrite of the expression, tasks/arithmetic.py). Prints the lines whose
label changed, by teacher corruption, and the responses whose answer follows from their steps and is
wrong although every step is valid, under each rule.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter

from rlhfops.config import load_config
from rlhfops.tasks import make_task
from rlhfops.tasks.arithmetic import compute, parse_response, prompt_body, verify


def set_rule(prompt: str, response: str) -> list[bool]:
    """The step rule before issue 17, one entry per step line: operands drawn from a set of numbers."""
    available = {int(n) for n in re.findall(r"\d+", prompt_body(prompt))}
    valid = []
    for s in parse_response(response).steps:
        valid.append(compute(s.a, s.op, s.b) == s.result and {s.a, s.b} <= available)
        available.add(s.result)
    return valid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="a config override, key=value")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    task = make_task(cfg.task, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    changed, lines, by_corruption = Counter(), Counter(), Counter()
    all_valid_wrong = Counter()
    seconds = 0.0
    for example in task.examples("train", args.prompts):
        response, corruption = task.teacher(example, rng)
        start = time.perf_counter()
        verdict = verify(example, response)
        seconds += time.perf_counter() - start
        kinds = parse_response(response).kinds
        working = [k for k in kinds if k != "answer"]  # one per verdict.step_valid entry
        new = [ok for kind, ok in zip(working, verdict.step_valid, strict=True) if kind == "step"]
        old = set_rule(example.prompt, response)
        lines[corruption] += len(new)
        for o, n in zip(old, new, strict=True):
            if o != n:
                changed[f"{'valid' if o else 'invalid'} -> {'valid' if n else 'invalid'}"] += 1
                by_corruption[corruption] += 1
        if example.kind == "solve" and new and verdict.answer_consistent and not verdict.answer_correct:
            all_valid_wrong["set rule"] += all(old)
            all_valid_wrong["rewrite rule"] += all(new)
    result = {
        "config": args.config or "defaults",
        "overrides": args.overrides,
        "prompts": args.prompts,
        "step_lines": sum(lines.values()),
        "changed": sum(changed.values()),
        "changed_by_direction": dict(changed),
        "changed_by_corruption": {c: f"{by_corruption[c]} of {lines[c]}" for c in sorted(lines) if lines[c]},
        "wrong_consistent_answers_with_every_step_valid": dict(all_valid_wrong),
        "verify_us_per_response": round(1e6 * seconds / args.prompts, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
