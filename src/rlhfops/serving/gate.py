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
d = candidate - stable, one-sided lower confidence bound on mean(d) by a paired t-test (the exact
t quantile, `t_quantile`) or a percentile bootstrap; deploy when it is above min_improvement, else
reject (also when any score is not finite).

The cycle evaluates K candidates (`cycle.candidates`: the policy optimiser's and, with
`pipeline.offline`, the offline-RL one) on the same test prompts, picks the one with the best gold
composite and gates it on those same per-prompt scores. Picking the best of K makes its test
optimistic: tested at alpha = 0.05, an A/A candidate was deployed 7.7% of the time with K = 2 and
11.4% with K = 3. So alpha is split over the candidates (Bonferroni): the gate tests the pick at
alpha / K, and P(deploy | every candidate A/A) <= sum_k P(candidate k passes at alpha / K) <= alpha
whichever rule picks (union bound); simulated, 4.0% with K = 2 and 4.1% with K = 3 (each +- 0.4%;
2000 simulated cycles of 256 prompts, `python benchmarks/gate_aa.py --only procedure`, seed 0,
through `cycle.aa_deploy_rate`). Chosen over selecting on a separate prompt split because it needs
no second evaluation of every candidate, and over halving the test prompts because at K = 2 a
threshold of t_{1 - alpha/2} on n prompts is tighter than t_{1 - alpha} on n / 2.
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


def paired(stable: list[float | None], candidate: list[float | None]) -> tuple[list[float], list[float]]:
    """The per-prompt composites of two policies on the same prompts, keeping the prompts both have."""
    if len(stable) != len(candidate):
        raise ValueError(f"paired scores need the same prompts, got {len(stable)} and {len(candidate)}")
    kept = [(s, c) for s, c in zip(stable, candidate, strict=True) if s is not None and c is not None]
    return [s for s, _ in kept], [c for _, c in kept]


def _betainc_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta I_x(a, b) (modified Lentz; Numerical
    Recipes 6.4), converging fast for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom: I_x(df / 2, 1 / 2) / 2 with x = df / (df + t^2)
    for t >= 0 (symmetry for t < 0), the incomplete beta by its continued fraction, to ~1e-15."""
    if t < 0:
        return 1.0 - t_sf(-t, df)
    a, b = df / 2, 0.5
    x, one_minus_x = df / (df + t * t), t * t / (df + t * t)  # 1 - x without cancellation
    if x == 0.0:
        return 0.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(one_minus_x)
        if one_minus_x > 0
        else -math.inf
    )
    if x < (a + 1) / (a + b + 2):
        return 0.5 * front * _betainc_cf(a, b, x) / a
    return 0.5 * (1.0 - front * _betainc_cf(b, a, one_minus_x) / b)


def _t_pdf(t: float, df: float) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))


def t_quantile(p: float, df: float) -> float:
    """The exact Student-t quantile: the t with P(T <= t) = p, by Newton's method on `t_sf` inside a
    bisection bracket (a step that would leave the bracket bisects), to ~1e-12 relative, for any
    df > 0 (tested against tan(pi (p - 1/2)) at df 1, the closed form at df 2, and mpmath up to df 1000).

    >>> round(t_quantile(0.975, 1), 9), round(t_quantile(0.975, 5), 9)
    (12.706204736, 2.570581836)
    """
    if not 0 < p < 1:
        raise ValueError(f"a t quantile needs 0 < p < 1, got {p}")
    if not df > 0:
        raise ValueError(f"a t quantile needs df > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    q = 1 - p  # the upper tail to hit; t_sf decreases from 0.5 at t = 0
    if q == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > q:
        lo, hi = hi, 2 * hi
    t = 0.5 * (lo + hi)
    for _ in range(200):
        f = t_sf(t, df) - q
        if f > 0:
            lo = t
        else:
            hi = t
        step = f / _t_pdf(t, df)
        nxt = t + step if lo < t + step < hi else 0.5 * (lo + hi)
        if abs(nxt - t) <= 1e-14 * max(1.0, t):
            return nxt
        t = nxt
    return t


def _var(x: list[float]) -> float:
    return float(np.var(x, ddof=1)) if len(x) > 1 else 0.0


# ---- online ---------------------------------------------------------------------------------------


def compare_feedback(stable: list[float], canary: list[float], cfg: GateConfig) -> GateDecision:
    """The sequential test on feedback scores in arrival order (module docstring). A score that is not
    finite (a row stored before the server refused such feedback) is left out and counted."""
    dropped = sum(not math.isfinite(x) for x in (*stable, *canary))
    stable, canary = [x for x in stable if math.isfinite(x)], [x for x in canary if math.isfinite(x)]
    m = cfg.min_samples
    look = min(len(stable) // m, len(canary) // m, cfg.max_looks)
    stats: dict[str, Any] = {"look": look, "max_looks": cfg.max_looks, "feedback_seen": [len(stable), len(canary)]}
    if dropped:
        stats["non_finite_feedback"] = dropped
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
    scores = [r["feedback"] for r in rows if r["feedback"] is not None and math.isfinite(r["feedback"])]
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


def compare_scores(stable: list[float], candidate: list[float], cfg: GateConfig, candidates: int = 1) -> GateDecision:
    """deploy | reject the candidate from paired per-prompt gold scores (module docstring), the best
    of `candidates` evaluated on these same scores: each is tested at alpha / candidates."""
    if len(stable) != len(candidate):
        raise ValueError(f"paired scores need equal lengths, got {len(stable)} stable and {len(candidate)} candidate")
    if len(stable) < 2:
        raise ValueError(f"the pre-deploy gate needs at least 2 paired scores, got {len(stable)}")
    if candidates < 1:
        raise ValueError(f"the pre-deploy gate needs at least 1 candidate to split alpha over, got {candidates}")
    alpha = (1 - cfg.confidence) / candidates
    stats: dict[str, Any] = {
        "method": cfg.offline_method,
        "n": len(stable),
        "confidence": cfg.confidence,
        "candidates": candidates,
        "alpha": alpha,
    }
    bad = sum(not math.isfinite(x) for x in (*stable, *candidate))
    if bad:  # a NaN would make every bound NaN; say so rather than let a comparison decide
        return GateDecision("reject", f"{bad} of the {2 * len(stable)} paired scores are not finite", stats)
    d = [c - s for s, c in zip(stable, candidate, strict=True)]
    n, mean = len(d), fmean(d)
    stats.update(mean_stable=fmean(stable), mean_candidate=fmean(candidate), diff=mean)
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
