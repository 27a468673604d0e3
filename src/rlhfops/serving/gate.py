"""Gates: the online canary gate on logged user feedback, and the offline pre-deploy gate on
paired gold scores.

Online (`decide`), stateless, reading the interaction store:

    error rate  canary's share of failed requests > max_error_rate (after min_samples requests)
                -> rollback
    looks       k = min(floor(min(n_stable, n_canary) / min_samples), max_looks) feedback samples
                per arm decide; each arm is cut to its first k * min_samples scores, so there are
                at most max_looks distinct looks however often the gate is called
    test        diff = mean_canary - mean_stable, se = sqrt(var_c / n_c + var_s / n_s) (Welch),
                bound = z_{1 - alpha / max_looks} * se with alpha = 1 - confidence: Bonferroni over
                the looks keeps P(promote | A/A) <= alpha (union bound)
    latency     canary median latency > max_latency_ratio x stable's -> rollback
    decision    online_test superiority: diff - bound > min_improvement -> promote; diff + bound < 0
                -> rollback; last look without either -> rollback (no evidence it is better); else wait.
                online_test non_inferiority (default): diff - bound > -margin -> promote; diff + bound <
                -margin -> rollback; last look without either -> rollback; else wait. The canary got
                there through the pre-deploy gate, which already requires it to be significantly
                better on paired gold scores (P(deploy | A/A) <= alpha), so the whole procedure still
                promotes an A/A candidate with probability <= alpha; online, the canary only has to
                show it does not regress on real traffic.

Offline (`compare_scores`), per-prompt gold scores of stable and candidate on the same prompts:
d = candidate - stable, one-sided lower confidence bound on mean(d) by a paired t-test or a
percentile bootstrap; deploy when it is above min_improvement, else reject.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from statistics import NormalDist, fmean, median
from typing import Any

import numpy as np

from rlhfops.config import GateConfig
from rlhfops.serving.store import InteractionStore


@dataclass
class GateDecision:
    decision: str  # online: promote | rollback | wait; offline: deploy | reject
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile from the normal one by the Cornish-Fisher expansion (Abramowitz & Stegun
    26.7.5); within 1e-3 of the exact value for df >= 5, the normal quantile as df -> inf."""
    z = NormalDist().inv_cdf(p)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def _var(x: list[float]) -> float:
    return float(np.var(x, ddof=1)) if len(x) > 1 else 0.0


# ---- online ---------------------------------------------------------------------------------------


def compare_feedback(stable: list[float], canary: list[float], cfg: GateConfig) -> GateDecision:
    """The sequential test on feedback scores in arrival order (module docstring)."""
    m = cfg.min_samples
    look = min(len(stable) // m, len(canary) // m, cfg.max_looks)
    stats: dict[str, Any] = {"look": look, "max_looks": cfg.max_looks, "feedback_seen": [len(stable), len(canary)]}
    if look == 0:
        return GateDecision("wait", f"fewer than {m} feedback scores on an arm", stats)
    s, c = stable[: look * m], canary[: look * m]
    alpha = (1 - cfg.confidence) / cfg.max_looks
    diff = fmean(c) - fmean(s)
    se = math.sqrt(_var(c) / len(c) + _var(s) / len(s))
    z = NormalDist().inv_cdf(1 - alpha)
    p_value = 1 - NormalDist().cdf(diff / se) if se > 0 else float(diff <= 0)
    stats.update(
        n_stable=len(s),
        n_canary=len(c),
        mean_stable=fmean(s),
        mean_canary=fmean(c),
        diff=diff,
        se=se,
        alpha_per_look=alpha,
        lower=diff - z * se,
        upper=diff + z * se,
        p_value_better=p_value,
    )
    lower, upper = diff - z * se, diff + z * se
    if cfg.online_test == "non_inferiority":
        stats["margin"] = cfg.margin
        if lower > -cfg.margin:
            return GateDecision("promote", f"canary not worse than -{cfg.margin} (lower bound {lower:.3f})", stats)
        if upper < -cfg.margin:
            return GateDecision("rollback", f"canary worse by more than {cfg.margin} (upper bound {upper:.3f})", stats)
        if look == cfg.max_looks:
            return GateDecision("rollback", f"not shown within {cfg.margin} of stable after {look * m} scores", stats)
        return GateDecision(
            "wait", f"look {look}/{cfg.max_looks}: lower bound {lower:.3f} not above -{cfg.margin}", stats
        )
    if lower > cfg.min_improvement:
        return GateDecision("promote", f"canary better by {diff:.3f} (lower bound {lower:.3f})", stats)
    if upper < 0:
        return GateDecision("rollback", f"canary worse by {-diff:.3f} (upper bound {upper:.3f})", stats)
    if look == cfg.max_looks:
        return GateDecision("rollback", f"no significant improvement after {look * m} scores per arm", stats)
    return GateDecision("wait", f"look {look}/{cfg.max_looks}: difference {diff:.3f} not significant yet", stats)


def arm_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Served requests (ok + error), error rate, feedback count and mean, median latency of one version."""
    ok = [r for r in rows if r["status"] == "ok"]
    errors = sum(r["status"] == "error" for r in rows)  # `rejected` (a bad request) is not the version's fault
    scores = [r["feedback"] for r in rows if r["feedback"] is not None]
    return {
        "requests": len(ok) + errors,
        "errors": errors,
        "error_rate": errors / (len(ok) + errors) if ok or errors else 0.0,
        "feedback": len(scores),
        "mean_feedback": fmean(scores) if scores else None,
        "latency_p50_ms": median(r["latency_ms"] for r in ok) if ok else None,
    }


def decide(
    store: InteractionStore, stable_version: str, canary_version: str, cfg: GateConfig, since: float | None = None
) -> GateDecision:
    """promote | rollback | wait for the canary, from its and stable's logged interactions."""
    rows_s = store.interactions(since=since, version=stable_version)
    rows_c = store.interactions(since=since, version=canary_version)
    arms = {"stable": arm_stats(rows_s), "canary": arm_stats(rows_c)}
    base = {"stable_version": stable_version, "canary_version": canary_version, "arms": arms}
    c, s = arms["canary"], arms["stable"]
    if c["requests"] >= cfg.min_samples and c["error_rate"] > cfg.max_error_rate:
        reason = f"canary error rate {c['error_rate']:.3f} is above {cfg.max_error_rate}"
        return GateDecision("rollback", reason, base)
    if (
        c["requests"] >= cfg.min_samples
        and s["latency_p50_ms"]
        and c["latency_p50_ms"]
        and c["latency_p50_ms"] > cfg.max_latency_ratio * s["latency_p50_ms"]
    ):
        reason = f"canary median latency {c['latency_p50_ms']:.1f} ms is over {cfg.max_latency_ratio}x stable's"
        return GateDecision("rollback", reason, base)
    fb_s = [r["feedback"] for r in rows_s if r["feedback"] is not None]
    fb_c = [r["feedback"] for r in rows_c if r["feedback"] is not None]
    result = compare_feedback(fb_s, fb_c, cfg)
    return GateDecision(result.decision, result.reason, {**base, **result.stats})


def aa_false_promotion_rate(
    cfg: GateConfig, trials: int, p: float = 0.5, seed: int = 0, effect: float = 0.0
) -> dict[str, float]:
    """Run the sequential gate on simulated thumbs up/down (Bernoulli(p) stable, Bernoulli(p +
    effect) canary) until it decides; effect 0 is A/A traffic, where every promotion is false."""
    rng = np.random.default_rng(seed)
    n = cfg.min_samples * cfg.max_looks
    counts = {"promote": 0, "rollback": 0, "wait": 0}
    for _ in range(trials):
        s = (rng.random(n) < p).astype(float).tolist()
        c = (rng.random(n) < p + effect).astype(float).tolist()
        decision = "wait"
        for look in range(1, cfg.max_looks + 1):
            decision = compare_feedback(s[: look * cfg.min_samples], c[: look * cfg.min_samples], cfg).decision
            if decision != "wait":
                break
        counts[decision] += 1
    return {"trials": trials, "alpha": 1 - cfg.confidence, **{f"{k}_rate": v / trials for k, v in counts.items()}}


# ---- offline --------------------------------------------------------------------------------------


def compare_scores(stable: list[float], candidate: list[float], cfg: GateConfig) -> GateDecision:
    """deploy | reject the candidate from paired per-prompt gold scores (module docstring)."""
    if len(stable) != len(candidate):
        raise ValueError(f"paired scores need equal lengths, got {len(stable)} stable and {len(candidate)} candidate")
    if len(stable) < 2:
        raise ValueError(f"the pre-deploy gate needs at least 2 paired scores, got {len(stable)}")
    d = [c - s for s, c in zip(stable, candidate, strict=True)]
    n, mean = len(d), fmean(d)
    alpha = 1 - cfg.confidence
    stats: dict[str, Any] = {
        "method": cfg.offline_method,
        "n": n,
        "mean_stable": fmean(stable),
        "mean_candidate": fmean(candidate),
        "diff": mean,
        "confidence": cfg.confidence,
    }
    if cfg.offline_method == "paired_t":
        se = math.sqrt(_var(d) / n)
        lower = mean - t_quantile(1 - alpha, n - 1) * se
        stats.update(se=se, t=mean / se if se > 0 else None)
    elif cfg.offline_method == "bootstrap":
        rng = random.Random(cfg.seed)
        means = sorted(fmean(rng.choices(d, k=n)) for _ in range(cfg.bootstrap_samples))
        lower = means[int(math.floor(alpha * len(means)))]
    else:
        raise ValueError(f"unknown gate.offline_method '{cfg.offline_method}'")
    stats["lower"] = lower
    if lower > cfg.min_improvement:
        return GateDecision("deploy", f"candidate better by {mean:.3f} (lower bound {lower:.3f})", stats)
    return GateDecision("reject", f"no significant improvement: {mean:.3f} (lower bound {lower:.3f})", stats)
