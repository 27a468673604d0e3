"""The bench's shared Best-of-N draw and the rows measured on it: over-optimisation (gold vs proxy
as N grows, one RM vs ensemble aggregations), PRM vs outcome-RM reranking, and the weight grid
applied at inference (a Pareto front of Best-of-N selections)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfops.bench.pareto import front_summary
from rlhfops.bench.records import BestOfNReport, Front, FrontPoint, OverOptimisationPoint, Rerank
from rlhfops.config import Config


@dataclass(frozen=True)
class BestOfNSamples:
    """Best-of-N_max candidates of P prompts (C per prompt), scored and judged:

    gold (P, C, M)  gold per objective            members {objective: (K, P, C)} normalised member rewards
    correct (P, C)  answer correct                 accuracies {objective: (K,)} members' validation accuracy
    refused (P, C)  response refused               prm (P, C) PRM solution score
    kinds [P]       prompt kinds                   objectives [M]
    """

    objectives: list[str]
    kinds: list[str]
    gold: torch.Tensor
    correct: torch.Tensor
    refused: torch.Tensor
    members: dict[str, torch.Tensor]
    accuracies: dict[str, torch.Tensor]
    prm: torch.Tensor


def draw_best_of_n_samples(
    cfg: Config, policy_dir: Path, rm_dir: Path, prm_dir: Path, scratch: Path
) -> tuple[BestOfNReport, BestOfNSamples]:
    """`evaluate_best_of_n` from `policy_dir` (its report), and its candidates, read back from the
    Best-of-N cache it filled, scored by every ensemble member and the PRM and judged by gold."""
    from rlhfops.inference.best_of_n import _policy_version, _reward_version, best_of_n, evaluate_best_of_n
    from rlhfops.inference.cache import BoNCache
    from rlhfops.modeling import load_decoder
    from rlhfops.reward.build import best_of_n_scorer
    from rlhfops.reward.functions import load_ensembles
    from rlhfops.reward.prm import ProcessRewardModel
    from rlhfops.tasks import make_task

    bon = cfg.best_of_n
    report = evaluate_best_of_n(cfg, policy_dir, rm_dir, None, scratch / "bon.json", cache_dir=scratch / "cache")
    task = make_task(cfg.task, seed=cfg.seed)
    examples = task.examples("test", bon.n_prompts)
    prompts = [ex.prompt for ex in examples]
    tokenizer, model, hook = load_decoder(cfg, policy_dir)
    ensembles = load_ensembles(rm_dir, cfg.reward.objectives)
    n_draw = max(max(bon.n_values), bon.n)
    results = best_of_n(  # served from the cache evaluate_best_of_n just filled: the same candidates
        model,
        tokenizer,
        prompts,
        n_draw,
        best_of_n_scorer(cfg, ensembles, None),
        generation=cfg.generation,
        generator=torch.Generator().manual_seed(cfg.seed),
        batch_size=bon.batch_size,
        cache=BoNCache(scratch / "cache", int(bon.cache_max_mb * 2**20)),
        policy_version=_policy_version(cfg, Path(policy_dir)),
        reward_version=_reward_version(cfg, Path(rm_dir), None),
        logits_hook=hook,
    )
    flat_prompts = [p for p in prompts for _ in range(n_draw)]
    flat = [c for r in results for c in r.candidates]
    P, C = len(prompts), n_draw
    verdicts = [[task.verify(ex, c) for c in r.candidates] for ex, r in zip(examples, results, strict=True)]
    judged = [[task.judge(ex, c) for c in r.candidates] for ex, r in zip(examples, results, strict=True)]
    objectives = list(cfg.reward.objectives)
    prm = ProcessRewardModel.load(prm_dir)
    samples = BestOfNSamples(
        objectives=objectives,
        kinds=[ex.kind for ex in examples],
        gold=torch.tensor([[[g[o] for o in objectives] for g in row] for row in judged]),
        correct=torch.tensor([[v.answer_correct for v in row] for row in verdicts]),
        refused=torch.tensor([[v.refused for v in row] for row in verdicts]),
        members={o: e.member_rewards(flat_prompts, flat).view(len(e), P, C) for o, e in ensembles.items()},
        accuracies={o: e.accuracies for o, e in ensembles.items()},
        prm=torch.tensor(prm.score(flat_prompts, flat, aggregation=cfg.prm.aggregation)).view(P, C),
    )
    return report, samples


def _pick(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Per prompt the argmax over the first n candidates: (P, C) -> (P,) (ties: lowest index)."""
    return scores[:, :n].argmax(1)


def _at(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values (P, C, ...) at each prompt's picked candidate -> (P, ...)."""
    return values[torch.arange(len(idx)), idx]


def aggregated_rewards(samples: BestOfNSamples, cfg: Config, how: str) -> torch.Tensor:
    """Per-objective rewards (P, C, M) under `how`: an aggregation of `reward.ensemble.aggregate`,
    or "single" (member 0 alone)."""
    from rlhfops.reward.ensemble import aggregate

    out = []
    for o in samples.objectives:
        m = samples.members[o]  # (K, P, C)
        if how == "single":
            out.append(m[0])
        else:
            agg, _ = aggregate(m.flatten(1), how, samples.accuracies[o], cfg.reward.uwo_lambda)
            out.append(agg.view(m.shape[1:]))
    return torch.stack(out, dim=-1)


def overoptimisation(samples: BestOfNSamples, cfg: Config) -> dict[str, list[OverOptimisationPoint]]:
    """Gold vs proxy as Best-of-N pressure grows (Gao et al.): for one RM and each ensemble
    aggregation, per N the mean gold composite and proxy (scalarised reward) of the pick and the
    analytic KL log N - (N-1)/N."""
    from rlhfops.inference.best_of_n import best_of_n_kl
    from rlhfops.reward.objectives import scalarise

    composite = samples.gold.mean(-1)  # (P, C)
    curves = {}
    for how in ("single", "mean", "min", "uwo"):
        rewards = aggregated_rewards(samples, cfg, how)  # (P, C, M)
        proxy = scalarise(rewards.flatten(0, 1), samples.objectives, cfg.scalarisation).view(composite.shape)
        curves[how] = [
            OverOptimisationPoint(
                n=n,
                kl=best_of_n_kl(n),
                gold=_at(composite, _pick(proxy, n)).mean().item(),
                proxy=_at(proxy, _pick(proxy, n)).mean().item(),
            )
            for n in cfg.best_of_n.n_values
        ]
    return curves


def rerank_solve(samples: BestOfNSamples) -> Rerank:
    """Solve accuracy on the solve prompts of Best-of-N_max picked by the PRM, by the outcome RM
    (the helpfulness ensemble, mean of members) and of the first sample (N=1)."""
    solve = torch.tensor([k == "solve" for k in samples.kinds])
    correct = samples.correct[solve].float()
    outcome = samples.members["helpfulness"].mean(0)[solve]
    n = correct.shape[1]
    return {
        "n": n,
        "prompts": int(solve.sum()),
        "prm": _at(correct, _pick(samples.prm[solve], n)).mean().item(),
        "outcome_rm": _at(correct, _pick(outcome, n)).mean().item(),
        "first_sample": correct[:, 0].mean().item(),
    }


def pareto(samples: BestOfNSamples, cfg: Config, grid_steps: int) -> Front:
    """Best-of-N_max under each weight vector of a simplex grid (a trade-off picked at inference,
    no training): gold per objective and over-refusal of each, summarised by `front_summary`."""
    from rlhfops.reward.objectives import select, simplex_grid

    names = samples.objectives
    rewards = aggregated_rewards(samples, cfg, cfg.reward.aggregation)  # (P, C, M)
    safe = torch.tensor([k != "unsafe" for k in samples.kinds])
    configured = torch.tensor([cfg.scalarisation.weights[o] for o in names])
    points: list[FrontPoint] = []
    for w in torch.cat([simplex_grid(len(names), grid_steps), configured[None]]):
        idx = select(rewards, w)
        gold = _at(samples.gold, idx).mean(0)  # (M,)
        points.append(
            {
                "weights": dict(zip(names, w.tolist(), strict=True)),
                "gold": dict(zip(names, gold.tolist(), strict=True)),
                "over_refusal": _at(samples.refused, idx)[safe].float().mean().item(),
            }
        )
    return front_summary(points[:-1], points[-1], names, cfg.seed)
