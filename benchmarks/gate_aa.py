"""False-promotion rate of the gates on A/A traffic, and their power on a real difference.

Online canary gate (sequential, Bonferroni over `max_looks`): simulated thumbs up/down,
Bernoulli(p) for stable and p + effect for the canary; `superiority` (a false promotion: an equal
canary) and `non_inferiority` (a false promotion: a canary worse by `margin`). Offline pre-deploy gate: paired
per-prompt gold scores of two independent draws of one policy (A/A) or a better candidate.

The whole pre-deploy procedure of a cycle (`procedure`): stable and K candidates, all the same policy,
scored on the same prompts; the cycle's own code picks the best candidate and gates it, alpha split
over the K (`cycle.aa_deploy_rate`). Every deploy is false; the rate must stay at most
1 - gate.confidence. The rule "full alpha" is the procedure before the split, for comparison.

    python benchmarks/gate_aa.py --out workspace/bench/gate_aa.json
    python benchmarks/gate_aa.py --only procedure        # just the procedure, printed
"""

from __future__ import annotations

import argparse
import json
import random

from rlhfops.config import GateConfig, PipelineConfig
from rlhfops.cycle import aa_deploy_rate
from rlhfops.files import atomic_write_json
from rlhfops.serving.gate import aa_false_promotion_rate, compare_scores

OLD_RULE = "pick on the same scores, full alpha"
NEW_RULE = "pick on the same scores, alpha / K"


def offline_rate(cfg: GateConfig, trials: int, n: int, effect: float, seed: int) -> float:
    """Share of trials the pre-deploy gate deploys: stable ~ Bernoulli(0.5), candidate ~ Bernoulli(0.5 + effect)."""
    rng = random.Random(seed)
    deploys = 0
    for _ in range(trials):
        stable = [float(rng.random() < 0.5) for _ in range(n)]
        candidate = [float(rng.random() < 0.5 + effect) for _ in range(n)]
        deploys += compare_scores(stable, candidate, cfg).decision == "deploy"
    return deploys / trials


def procedure_rows(trials: int, seed: int) -> list[dict]:
    """The cycle's pick-then-gate on A/A candidates (`cycle.aa_deploy_rate`) at the default gate and
    evaluation size, with 2 and 3 candidates, before and after alpha was split over them."""
    cfg, n = GateConfig(), PipelineConfig().eval_prompts
    return [
        {"rule": NEW_RULE if split else OLD_RULE, **aa_deploy_rate(cfg, trials, n, k, seed, split_alpha=split)}
        for k in (2, 3)
        for split in (False, True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the JSON here (the README's gates block reads it)")
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--procedure-trials", type=int, default=2000)
    ap.add_argument("--only", choices=["procedure"], help="run only this part and print it")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    procedure = procedure_rows(args.procedure_trials, args.seed)
    for row in procedure:
        print(
            f"A/A deploy rate, {row['candidates']} candidates, {row['rule']}: {row['aa_deploy_rate']:.4f} "
            f"+- {row['standard_error']:.4f} (binomial se, {row['trials']} trials, {row['n_prompts']} prompts); "
            f"promised <= {row['bound']:g}"
        )
    if args.only == "procedure":
        if args.out:
            atomic_write_json(args.out, {"seed": args.seed, "procedure": procedure})
        return
    online = []
    for test in ("superiority", "non_inferiority"):
        for confidence in (0.9, 0.95, 0.99):
            for p in (0.3, 0.5, 0.8):
                cfg = GateConfig(confidence=confidence, online_test=test)
                # superiority: a false promotion is promoting an equal canary (A/A), power at +0.1;
                # non_inferiority: a false promotion is promoting one worse by the margin, power on A/A
                false_effect, true_effect = (0.0, 0.1) if test == "superiority" else (-cfg.margin, 0.0)
                false = aa_false_promotion_rate(cfg, args.trials, p=p, seed=args.seed, effect=false_effect)
                true = aa_false_promotion_rate(cfg, args.trials // 5, p=p, seed=args.seed + 1, effect=true_effect)
                online.append(
                    {
                        "online_test": test,
                        "confidence": confidence,
                        "alpha": round(1 - confidence, 6),
                        "p": p,
                        "min_samples": cfg.min_samples,
                        "max_looks": cfg.max_looks,
                        "false_effect": false_effect,
                        "false_promotion_rate": false["promote_rate"],
                        "true_effect": true_effect,
                        "promote_rate_at_true_effect": true["promote_rate"],
                    }
                )
    offline = []
    for method in ("paired_t", "bootstrap"):
        cfg = GateConfig(offline_method=method, bootstrap_samples=1000)
        trials = args.trials // 10 if method == "bootstrap" else args.trials
        offline.append(
            {
                "method": method,
                "alpha": round(1 - cfg.confidence, 6),
                "n_prompts": 128,
                "trials": trials,
                "aa_false_deploy_rate": offline_rate(cfg, trials, 128, 0.0, args.seed),
                "deploy_rate_at_effect_0.15": offline_rate(cfg, trials // 5, 128, 0.15, args.seed + 1),
            }
        )
    result = {"trials": args.trials, "seed": args.seed, "online": online, "offline": offline, "procedure": procedure}
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
