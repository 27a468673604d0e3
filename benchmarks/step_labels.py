"""Agreement of sparse and Monte-Carlo step labels with exact ones, on the policy's own solutions.

    python benchmarks/step_labels.py [--policy workspace/models/sft] [--prompts 60] [--every 2]
                                     [--rollouts 4] [--out workspace/bench/step_labels.json]

The policy answers `--prompts` validation solve prompts (one sample each); every working line is
labelled exactly (the task's verifier), sparsely (every `--every`-th line and the answer line, the
rest masked), and by Monte-Carlo rollouts in the Math-Shepherd manner (`--rollouts` completions
from each step prefix; a step is good if one of them reaches the right answer). Prints and writes
`annotation.steps.label_agreement` of each against the exact labels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rlhfops.annotation.steps import exact_step_labels, label_agreement, mc_step_labels, sparse_step_labels
from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.generation import sample_texts
from rlhfops.modeling import load_decoder
from rlhfops.tasks import make_task
from rlhfops.workspace import is_model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=Path("workspace/models/sft"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not is_model_dir(args.policy):
        raise SystemExit(f"error: no policy in '{args.policy}'; run `make demo` first")
    start = time.perf_counter()
    cfg = load_config(args.config)
    task = make_task(cfg.task, seed=cfg.seed)
    steps = task.steps
    tokenizer, model, hook = load_decoder(cfg, args.policy)
    examples = [ex for ex in task.examples("val", cfg.task.n_val) if ex.kind == "solve"][: args.prompts]
    responses = sample_texts(
        model, tokenizer, [ex.prompt for ex in examples], cfg.generation, cfg.seed, logits_hook=hook
    )
    kept = [(ex, r) for ex, r in zip(examples, responses, strict=True) if r]
    exact = [exact_step_labels(steps, ex, r) for ex, r in kept]
    sparse = [sparse_step_labels(steps, ex, r, args.every) for ex, r in kept]
    mc = mc_step_labels(steps, [ex for ex, _ in kept], [r for _, r in kept], model, tokenizer, cfg.generation,
                        args.rollouts, cfg.seed, hook)  # fmt: skip
    result = {
        "policy": str(args.policy),
        "responses": len(kept),
        "every": args.every,
        "rollouts": args.rollouts,
        "sparse": label_agreement(exact, sparse),
        "mc": label_agreement(exact, mc),
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
