"""PPO on the reward models' composite, with and without each guard against reward hacking.

    python benchmarks/ppo_hacking.py --workspace WS [--cycle 1] [--seeds 0 1 2] [--steps 60]
                                     [--variants baseline no_kl ...] [--out results.json]

From the workspace's SFT policy (`models/sft`) and one cycle's reward-model ensembles
(`models/cycle-000N/reward`), runs PPO (`rl/ppo.py`) once per variant and seed and prints, by update,
the proxy (the composite PPO optimises, mean over the rollout) and the gold composite of one sample
per held-out prompt (`ppo.gold_on_slice`, `policy.eval_prompts` validation prompts), mean and spread
over seeds, against the start policy's gold on the same prompts. A variant is a list of config
overrides (`VARIANTS`): the guards are the KL penalty, the ensembles' conservative aggregations
(`reward.aggregation` min / uwo), the uncertainty penalty (`reward.uncertainty_penalty`), reward
normalisation (`policy.normalize_reward`), and the stops on reward-model disagreement
(`policy.max_spread_growth`) and on KL to the reference (`policy.max_kl`). `--set policy.lr=3e-4`
is the over-optimisation scenario: ten times the step size, where the proxy climbs and gold falls.
The last lines say, per variant, the worst final gold change over seeds: the target is that none
ends below its start.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from statistics import fmean, pstdev

import torch

from rlhfops.config import load_config
from rlhfops.files import atomic_write_json
from rlhfops.modeling import load_policy
from rlhfops.rl.ppo import TRAIN_LOG, gold_on_slice, train_ppo
from rlhfops.tasks import make_task
from rlhfops.workspace import Workspace, is_model_dir

VARIANTS = {
    "baseline": [],  # the defaults: adaptive KL penalty, mean aggregation, clip only
    "no_kl": ["policy.kl_coef=0.0"],
    "fixed_kl": ["policy.target_kl=null", "policy.kl_coef=0.1"],
    "min": ["reward.aggregation=min"],
    "uwo": ["reward.aggregation=uwo"],
    "penalty": ["reward.uncertainty_penalty=1.0"],
    "normalize": ["policy.normalize_reward=true", "policy.reward_clip=3.0"],
    "spread_stop": ["policy.max_spread_growth=1.25"],
    "kl_stop": ["policy.max_kl=1.0"],
    "kl_stop_tight": ["policy.max_kl=0.5"],
}


def start_gold(cfg, policy_dir: Path) -> float:
    """The start policy's gold composite on the held-out slice PPO evaluates on."""
    tokenizer, model = load_policy(policy_dir, train=False)
    return gold_on_slice(model.eval(), tokenizer, make_task(cfg.task, seed=cfg.seed), cfg, cfg.seed)


def run(policy: Path, rm_dir: Path, variant: list[str], seed: int, common: list[str], scratch: Path) -> dict:
    cfg = load_config(None, [*common, *variant, f"seed={seed}"])
    torch.manual_seed(seed)
    out = train_ppo(cfg, policy, scratch / f"ppo-{seed}", rm_dir=rm_dir, progress=False)
    log = json.loads((out / TRAIN_LOG).read_text())
    return {
        "start_gold": start_gold(cfg, policy),
        "gold": {r["update"]: r["gold/composite"] for r in log if "gold/composite" in r},
        "proxy": {r["update"]: r["reward/mean"] for r in log},
        "spread": {r["update"]: r["reward/spread"] for r in log if "reward/spread" in r},
        "kl": {r["update"]: r["kl/sequence"] for r in log},
        "stopped": next((r["update"] for r in log if "stopped" in r), None),
    }


def summary(runs: list[dict]) -> str:
    """One line per evaluated update: gold change from the start and proxy, mean +- spread over seeds."""
    lines = []
    for u in sorted({u for r in runs for u in r["gold"]}):
        have = [r for r in runs if u in r["gold"]]
        gold = [r["gold"][u] - r["start_gold"] for r in have]
        proxy = [r["proxy"][u] for r in have]
        spread = [r["spread"].get(u, float("nan")) for r in have]
        lines.append(
            f"    update {u:3d} ({len(have)} seeds)  gold {fmean(gold):+.3f} +- {pstdev(gold):.3f}  "
            f"proxy {fmean(proxy):+.3f} +- {pstdev(proxy):.3f}  spread {fmean(spread):.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("workspace"))
    ap.add_argument("--cycle", type=int, default=1, help="whose reward models")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=15)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every run")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    policy, rm_dir = ws.model_dir("sft"), args.workspace / "models" / f"cycle-{args.cycle:04d}" / "reward"
    if not is_model_dir(policy) or not rm_dir.is_dir():
        raise SystemExit(f"error: '{args.workspace}' needs models/sft and {rm_dir}; run `rlhfops run --cycles 1`")
    common = ["policy.algorithm=ppo", "policy.reward=composite", f"policy.steps={args.steps}"]
    common += [f"policy.eval_every={args.eval_every}", *args.overrides]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="rlhfops-ppo-hacking-") as scratch:
        for name in args.variants:
            results[name] = []
            for seed in args.seeds:
                r = run(policy, rm_dir, VARIANTS[name], seed, common, Path(scratch) / name)
                results[name].append(r)
                final = r["gold"][max(r["gold"])]
                stop = f", stopped at update {r['stopped']}" if r["stopped"] else ""
                print(f"{name:12s} seed {seed}: gold {r['start_gold']:.3f} -> {final:.3f}{stop}", flush=True)
            print(summary(results[name]), flush=True)
            if args.out:
                atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, **results})
    print(f"\n{args.steps} updates, seeds {args.seeds}; final gold - start gold (worst seed, mean +- spread):")
    for name, runs in results.items():
        deltas = [r["gold"][max(r["gold"])] - r["start_gold"] for r in runs]
        verdict = "never below start" if min(deltas) >= 0 else "BELOW START"
        print(f"  {name:12s} worst {min(deltas):+.3f}  mean {fmean(deltas):+.3f} +- {pstdev(deltas):.3f}  {verdict}")


if __name__ == "__main__":
    main()
