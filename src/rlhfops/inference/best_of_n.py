"""Best-of-N: N samples per prompt, scored by a reward callable, the argmax returned.

    candidates  prompts repeated N times, `batch_size` sequences per `generate` call
    scores      score_fn(prompts, completions) -> list[float], any TRL-style reward callable
    best        argmax over a prompt's N scores; ties go to the lowest candidate index

Adaptive N spends samples where the first one looks bad: one sample per prompt, and a hard
prompt (`hardness`, `best_of_n.adaptive_signal`) gets N samples, the first one among them; the
others keep that sample (N=1). Hard is either the reward ensembles disagreeing on the first sample
(`spread`: mean over objectives of the ensemble std, `CompositeReward.vectors(...)["spreads"]`,
above `adaptive_spread`) or the scorer that selects rating it low (`score`: below `adaptive_score`).

`evaluate_best_of_n` is the `bon` stage: on test prompts of the built-in task it draws N_max
candidates once per prompt and reads every smaller N off the first N of them (nested curves),
reporting gold and proxy scores of the selected responses against the analytic Best-of-N KL
log N - (N-1)/N, and what adaptive N reaches with how many samples.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhfops.annotation.judges import eval_judges, labelled_mean
from rlhfops.config import BestOfNConfig, Config, GenerationConfig
from rlhfops.files import atomic_write_json
from rlhfops.generation import generate
from rlhfops.inference.cache import BoNCache, cache_key, directory_version
from rlhfops.modeling import is_offline_policy, load_decoder
from rlhfops.reward.build import best_of_n_scorer, composite_reward
from rlhfops.reward.functions import CompositeReward, load_ensembles
from rlhfops.reward.prm import ProcessRewardModel
from rlhfops.tasks import make_task

ScoreFn = Callable[..., list[float]]  # (prompts, completions, **columns) -> one score per completion


@dataclass
class BoNResult:
    prompt: str
    best: str  # candidates[best_index]
    best_index: int
    candidates: list[str]  # in sampling order
    scores: list[float]  # score_fn's value of each candidate


def best_of_n_kl(n: int) -> float:
    """Analytic KL(best-of-n || policy) = log n - (n - 1) / n (0 at n=1, log 2 - 1/2 at n=2)."""
    return math.log(n) - (n - 1) / n


def select(prompt: str, candidates: list[str], scores: list[float]) -> BoNResult:
    """The argmax candidate over the scores that are not NaN (a NaN never wins); `max` keeps the
    first of equal scores, so ties go to the lowest index. Every score NaN is a ValueError: the
    scorer ranked nothing."""
    if len(candidates) != len(scores) or not candidates:
        raise ValueError(f"Best-of-N needs one score per candidate, got {len(scores)} for {len(candidates)}")
    ranked = [j for j in range(len(candidates)) if not math.isnan(scores[j])]
    if not ranked:
        raise ValueError(f"every one of the {len(scores)} Best-of-N scores is NaN for prompt {prompt[:80]!r}")
    best_index = max(ranked, key=lambda j: scores[j])
    return BoNResult(prompt, candidates[best_index], best_index, list(candidates), list(scores))


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    *,
    generation: GenerationConfig,
    generator: torch.Generator | None,
    batch_size: int,
    logits_hook=None,
    template: bool = True,
) -> list[list[str]]:
    """n completions per prompt: rows of the repeated prompt list [p0 x n, p1 x n, ...], one
    `generate` call per `batch_size` rows. Returns (len(prompts), n) texts. `logits_hook` changes
    decoding (an offline-RL policy's Q - V shift); `template=False` takes prompts as raw text."""
    repeated = [p for p in prompts for _ in range(n)]
    texts: list[str] = []
    for i in range(0, len(repeated), batch_size):
        texts += generate(
            model,
            tokenizer,
            repeated[i : i + batch_size],
            generation.max_new_tokens,
            temperature=generation.temperature,
            top_k=generation.top_k,
            stop=generation.stop,
            generator=generator,
            logits_hook=logits_hook,
            template=template,
        ).texts
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def score_candidates(score_fn: ScoreFn, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
    """One score_fn call over every (prompt, candidate) pair; scores shaped like `candidates`."""
    flat_prompts = [p for p, cs in zip(prompts, candidates, strict=True) for _ in cs]
    flat = [c for cs in candidates for c in cs]
    scores = score_fn(flat_prompts, flat)
    if len(scores) != len(flat) or any(s is None for s in scores):
        raise ValueError(f"the score function must return a number for each of the {len(flat)} completions")
    out, at = [], 0
    for cs in candidates:
        out.append([float(s) for s in scores[at : at + len(cs)]])
        at += len(cs)
    return out


def best_of_n(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    score_fn: ScoreFn,
    *,
    generation: GenerationConfig,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    cache: BoNCache | None = None,
    policy_version: str = "",
    reward_version: str = "",
    logits_hook=None,
    template: bool = True,
) -> list[BoNResult]:
    """The best of n samples for every prompt, in prompt order. With a `cache`, a prompt already
    stored under (prompt, policy_version, reward_version, n) is served from it, not regenerated.
    `template=False` samples from prompts as raw text (`/v1/completions`)."""
    results, keys = cached(prompts, n, cache, policy_version, reward_version)
    uncached = [i for i, r in enumerate(results) if r is None]
    if uncached:
        kwargs = {"generation": generation, "generator": generator, "batch_size": batch_size}
        candidates = sample(
            model, tokenizer, [prompts[i] for i in uncached], n, **kwargs, logits_hook=logits_hook, template=template
        )
        rank(results, keys, prompts, uncached, candidates, score_fn, cache)
    return results  # type: ignore[return-value]  # every slot is filled by rank


def cached(
    prompts: list[str], n: int, cache: BoNCache | None, policy_version: str, reward_version: str
) -> tuple[list[BoNResult | None], list[str]]:
    """Per prompt its stored result under (prompt, policy_version, reward_version, n), None where
    there is none (or no cache), and the keys (empty without a cache)."""
    if n < 1:
        raise ValueError(f"Best-of-N needs n >= 1, got {n}")
    if cache is not None and not (policy_version and reward_version):
        raise ValueError("a Best-of-N cache needs both a policy_version and a reward_version to key its entries")
    results: list[BoNResult | None] = [None] * len(prompts)
    keys = [cache_key(p, policy_version, reward_version, n) for p in prompts] if cache is not None else []
    for i, key in enumerate(keys):
        hit = cache.get(key)
        if hit is not None:
            results[i] = BoNResult(**hit)
    return results, keys


def rank(
    results: list[BoNResult | None],
    keys: list[str],
    prompts: list[str],
    uncached: list[int],
    candidates: list[list[str]],
    score_fn: ScoreFn,
    cache: BoNCache | None,
) -> None:
    """Score the candidates drawn for prompts[i], i in `uncached`, fill results[i] with the best,
    and store each in the cache (when there is one)."""
    uncached_prompts = [prompts[i] for i in uncached]
    scores = score_candidates(score_fn, uncached_prompts, candidates)
    for i, prompt, cs, ss in zip(uncached, uncached_prompts, candidates, scores, strict=True):
        results[i] = select(prompt, cs, ss)
        if cache is not None:
            cache.put(keys[i], asdict(results[i]))


# ---- adaptive N ----------------------------------------------------------------------------------


def adaptive_counts(hard: list[bool], n: int) -> list[int]:
    """Samples per prompt: n for a hard prompt, 1 for the others."""
    return [n if h else 1 for h in hard]


def first_sample_spreads(composite: CompositeReward, prompts: list[str], completions: list[str]) -> list[float]:
    """Per prompt the mean over objectives of the ensemble std of its completion: (N, M) -> (N,)."""
    return composite.vectors(prompts, completions)["spreads"].mean(1).tolist()


HardFn = Callable[[list[str], list[str]], list[bool]]


def hardness(bon: BestOfNConfig, composite: CompositeReward, score_fn: ScoreFn) -> HardFn:
    """Which prompts are hard from their first samples (`best_of_n.adaptive_signal`): the reward
    ensembles disagree on it (mean spread above `adaptive_spread`), or the scorer that selects rates
    it low (below `adaptive_score`)."""

    def hard(prompts: list[str], firsts: list[str]) -> list[bool]:
        if bon.adaptive_signal == "spread":
            return [s > bon.adaptive_threshold for s in first_sample_spreads(composite, prompts, firsts)]
        return [float(s) < bon.adaptive_threshold for s in score_fn(prompts, firsts)]

    return hard


def adaptive_best_of_n(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    score_fn: ScoreFn,
    hard_fn: HardFn,
    *,
    generation: GenerationConfig,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> tuple[list[BoNResult], list[int]]:
    """Best-of-N with N chosen per prompt from a first sample (`hard_fn`, e.g. `hardness`): n - 1
    more for the hard prompts. Returns the results and the samples each prompt used (1 or n)."""
    kwargs = {"generation": generation, "generator": generator, "batch_size": batch_size}
    candidates = sample(model, tokenizer, prompts, 1, **kwargs)
    counts = adaptive_counts(hard_fn(prompts, [cs[0] for cs in candidates]), n)
    hard = [i for i, k in enumerate(counts) if k > 1]
    if hard:
        more = sample(model, tokenizer, [prompts[i] for i in hard], n - 1, **kwargs)
        for i, extra in zip(hard, more, strict=True):
            candidates[i] += extra
    scores = score_candidates(score_fn, prompts, candidates)
    results = [select(p, cs, ss) for p, cs, ss in zip(prompts, candidates, scores, strict=True)]
    return results, counts


# ---- the `bon` stage -----------------------------------------------------------------------------


def _reward_version(cfg: Config, rm_dir: Path, prm_dir: Path | None) -> str:
    """Everything the scorer's numbers depend on: weights of every ensemble and the PRM, and the
    config that combines them."""
    parts = {
        "scorer": cfg.best_of_n.scorer,
        "ensembles": {o: directory_version(rm_dir / o) for o in cfg.reward.objectives},
        "prm": directory_version(prm_dir) if prm_dir is not None else None,
        "reward": cfg.reward.model_dump(mode="json", exclude={"data", "lr", "epochs", "max_steps", "batch_size"}),
        "scalarisation": cfg.scalarisation.model_dump(mode="json"),
        "shaping": cfg.shaping.model_dump(mode="json"),
        "prm_aggregation": cfg.prm.aggregation,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _policy_version(cfg: Config, policy_dir: Path) -> str:
    """The policy's weights and the decoding settings its samples were drawn with."""
    parts = {"weights": directory_version(policy_dir), "generation": cfg.generation.model_dump(mode="json")}
    if is_offline_policy(policy_dir):  # decoded with the offline-RL shift: its beta is part of the samples
        parts["decode_beta"] = cfg.offline.decode_beta
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _draw(cfg: Config, policy_dir: str | Path, prompts: list[str], n: int) -> list[list[str]]:
    """n candidates per prompt from the policy in `policy_dir` (loaded here and freed on return),
    seeded by `cfg.seed`, as `sample` draws them."""
    tokenizer, model, hook = load_decoder(cfg, policy_dir)
    kwargs = {"generation": cfg.generation, "generator": torch.Generator().manual_seed(cfg.seed)}
    return sample(model, tokenizer, prompts, n, **kwargs, batch_size=cfg.best_of_n.batch_size, logits_hook=hook)


def evaluate_best_of_n(
    cfg: Config,
    policy_dir: str | Path,
    rm_dir: str | Path,
    prm_dir: str | Path | None,
    out_path: str | Path,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Best-of-N curves and adaptive N on `best_of_n.n_prompts` test prompts; writes `out_path`.

    Returns (and writes as JSON)
        curve     per N in n_values: gold (mean gold composite of the selected responses: the
                  mean of the task's judge objectives), proxy (mean scorer value), samples_per_prompt,
                  samples (total), kl (log N - (N-1)/N)
        adaptive  gold, proxy, samples, mean_samples_per_prompt, hard_prompts, share_of_gain
                  ((gold_adaptive - gold_1) / (gold_max - gold_1), None when gold_max == gold_1),
                  share_of_samples (its samples / N_max's)
    """
    bon = cfg.best_of_n
    rm_dir, prm_dir = Path(rm_dir), (Path(prm_dir) if prm_dir is not None else None)
    task = make_task(cfg.task, seed=cfg.seed)
    examples = task.examples("test", bon.n_prompts)
    prompts = [ex.prompt for ex in examples]
    n_max = max(bon.n_values)
    n_draw = max(n_max, bon.n)  # adaptive N reads its candidates off the same draws
    cache = BoNCache(cache_dir, int(bon.cache_max_mb * 2**20)) if cache_dir is not None else None
    versions = (
        (_policy_version(cfg, Path(policy_dir)), _reward_version(cfg, rm_dir, prm_dir))
        if cache is not None
        else ("", "")
    )
    results, keys = cached(prompts, n_draw, cache, *versions)
    uncached = [i for i, r in enumerate(results) if r is None]
    candidates = _draw(cfg, policy_dir, [prompts[i] for i in uncached], n_draw) if uncached else []
    # the reward models load once the policy is gone: the two are never in memory together
    ensembles = load_ensembles(rm_dir, cfg.reward.objectives)
    prm = ProcessRewardModel.load(prm_dir) if prm_dir is not None else None
    scorer = best_of_n_scorer(cfg, ensembles, prm)
    composite = composite_reward(cfg, ensembles=ensembles, prm=prm, prm_dir=prm_dir)
    if uncached:
        rank(results, keys, prompts, uncached, candidates, scorer, cache)
    # graded by the evaluation judges (`eval.judges`), as evaluation and the gate grade
    flat_prompts = [r.prompt for r in results for _ in r.candidates]
    judged = eval_judges(cfg, task)(flat_prompts, [c for r in results for c in r.candidates])
    composites = iter(labelled_mean(scores.values()) for scores in judged)
    gold = [[next(composites) for _ in r.candidates] for r in results]

    def selected(counts: list[int]) -> tuple[float | None, float]:
        """(mean gold, mean proxy) of the argmax over each prompt's first counts[i] candidates; a pick
        no judge labelled is left out of the gold mean."""
        picks = [
            select(r.prompt, r.candidates[:k], r.scores[:k]).best_index for r, k in zip(results, counts, strict=True)
        ]
        return (
            labelled_mean(g[j] for g, j in zip(gold, picks, strict=True)),
            fmean(r.scores[j] for r, j in zip(results, picks, strict=True)),
        )

    curve = []
    for n in bon.n_values:
        gold_n, proxy_n = selected([n] * len(prompts))
        curve.append(
            {
                "n": n,
                "gold": gold_n,
                "proxy": proxy_n,
                "samples_per_prompt": n,
                "samples": n * len(prompts),
                "kl": best_of_n_kl(n),
            }
        )

    firsts = [r.scores[0] for r in results]  # the scorer's values of the first samples: already computed
    hard = hardness(bon, composite, lambda _prompts, _completions: firsts)
    counts = adaptive_counts(hard(prompts, [r.candidates[0] for r in results]), bon.n)
    gold_adaptive, proxy_adaptive = selected(counts)
    gold_1, _ = selected([1] * len(prompts))
    gold_max, _ = selected([n_max] * len(prompts))
    gain = gold_max - gold_1
    adaptive = {
        "n": bon.n,
        "signal": bon.adaptive_signal,
        "threshold": bon.adaptive_threshold,
        "gold": gold_adaptive,
        "proxy": proxy_adaptive,
        "samples": sum(counts),
        "mean_samples_per_prompt": sum(counts) / len(prompts),
        "hard_prompts": sum(k > 1 for k in counts),
        "share_of_gain": (gold_adaptive - gold_1) / gain if gain != 0 else None,
        "share_of_samples": sum(counts) / (n_max * len(prompts)),
    }
    report = {
        "n_prompts": len(prompts),
        "scorer": bon.scorer,
        "n_max": n_max,
        "curve": curve,
        "adaptive": adaptive,
    }
    atomic_write_json(out_path, report)
    return report
