"""PPO losses and estimators: pure functions over tensors, each returning its diagnostics.

Shapes: B sequences, T completion tokens (right-padded); `mask` (B, T) is 1 on real completion
tokens (eos included). Every function ignores masked positions.
"""

from __future__ import annotations

import math

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * mask) / sum(mask), over `dim` or everything."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (mean added back when shift_mean is False);
    masked positions come out 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, as a reversed loop (cleanrl).

        delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t

    rewards, values, mask (B, T) -> advantages (B, T), returns (B, T); zero where mask is 0. The
    value after the last real token is 0 (the episode ends at eos or the length bound).
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    kl_coef: float,
    dense: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * (log pi - log pi_ref) on every token, the sequence score on
    the last real token, plus `dense` (B, T) step rewards (e.g. PRM) where given.

    scores (B,), logprobs / ref_logprobs / mask (B, T) -> rewards (B, T), per-token KL (B, T), on
    the rollout's device (logprobs'): scores and dense rewards are moved there.
    """
    mask = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask if ref_logprobs is not None else torch.zeros_like(logprobs)
    rewards = -kl_coef * kl
    last = (mask.sum(1) - 1).clamp_min(0).long()  # (B,) index of the last real token
    rewards[torch.arange(len(scores), device=rewards.device), last] += scores.to(rewards)
    if dense is not None:
        rewards = rewards + dense.to(rewards) * mask
    return rewards * mask, kl


def dense_step_rewards(
    step_scores: list[list[float]], positions: list[list[int]], shape: tuple[int, int], coef: float
) -> torch.Tensor:
    """Process rewards at the step-separator tokens: coef * (2p - 1) at positions[b][i] for step
    probability p = step_scores[b][i] (a good step earns up to +coef, a bad one down to -coef).
    Positions at or past T are dropped. -> (B, T)."""
    out = torch.zeros(shape)
    for b, (scores, pos) in enumerate(zip(step_scores, positions, strict=True)):
        for p, t in zip(scores, pos, strict=True):
            if 0 <= t < shape[1]:
                out[b, t] += coef * (2 * p - 1)
    return out


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A), ratio = exp(log pi - log pi_old).

    (B, T) each -> loss (scalar), {clip_frac, approx_kl}; approx_kl = E[(ratio - 1) - log ratio] (k3).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).float(), mask).item()
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask).item()
    return loss, {"clip_frac": clip_frac, "approx_kl": approx_kl}


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2).

    (B, T) each -> loss (scalar), {value_clip_frac}.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        frac = masked_mean((clipped > unclipped).float(), mask).item()
    return loss, {"value_clip_frac": frac}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over masked entries (nan when Var[R] is 0)."""
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    diff = returns - values
    var_d = masked_mean((diff - masked_mean(diff, mask)) ** 2, mask)
    return (1 - var_d / var_r).item() if var_r > 0 else math.nan


class AdaptiveKLController:
    """Ziegler et al. (2019): kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon,
    where KL is the mean sequence KL of the last batch and n its number of samples."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_coef, target, horizon

    def update(self, current_kl: float, n_samples: int) -> float:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_samples / self.horizon
        return self.value


# ---- offline RL (IQL / CQL / ILQL, `rl/ilql.py`) ------------------------------------------------
# Shapes: B sequences, T token positions, V vocabulary. Position t holds the state s_t (the prefix
# up to t) and the action a_t (the next token); `mask` (B, T) is 1 where a_t is a response token.


def terminal_rewards(scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequence score as the reward of the last masked position, 0 elsewhere; done there.

    scores (B,), mask (B, T) -> rewards (B, T), dones (B, T) (1.0 at the last masked position).
    A row with an empty mask gets neither.
    """
    mask = mask.float()
    T = mask.shape[1]
    last = T - 1 - mask.flip(1).argmax(1)  # (B,) index of the last 1 in each row
    dones = torch.zeros_like(mask)
    dones[torch.arange(len(scores)), last] = 1.0
    dones = dones * mask
    return dones * scores.float()[:, None], dones


def q_loss(
    q_taken: tuple[torch.Tensor, ...],
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """TD regression of each Q head on the V of the next state:

        y_t  = r_t + gamma * V(s_{t+1}) * (1 - done_t)        (V detached)
        loss = sum_heads masked_mean((Q_i(s_t, a_t) - y_t)^2)

    q_taken: one (B, T) tensor per head; rewards, next_values, dones, mask (B, T) -> loss, {q_mean}.
    """
    target = (rewards + gamma * next_values.detach() * (1 - dones)).detach()
    loss = sum(masked_mean((q - target) ** 2, mask) for q in q_taken)
    with torch.no_grad():
        q_mean = masked_mean(torch.stack(q_taken).mean(0), mask).item()
    return loss, {"q_mean": q_mean}


def expectile_loss(diff: torch.Tensor, tau: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Asymmetric square of diff = Qhat - V: tau * diff^2 where diff >= 0, (1 - tau) * diff^2 where
    diff < 0. With tau > 0.5, V is pulled toward an upper expectile of Qhat (IQL).

    diff (B, T), mask (B, T) or None (mean over everything) -> scalar.
    """
    weight = torch.where(diff >= 0, torch.full_like(diff, tau), torch.full_like(diff, 1 - tau))
    loss = weight * diff**2
    return loss.mean() if mask is None else masked_mean(loss, mask)


def cql_loss(q_all: tuple[torch.Tensor, ...], actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Conservative term: push Q down on every token, up on the logged one, per head:

        sum_heads masked_mean(logsumexp_a' Q_i(s_t, a') - Q_i(s_t, a_t))

    q_all: one (B, T, V) tensor per head; actions (B, T) long; mask (B, T) -> scalar (>= 0).
    """
    total = 0.0
    for q in q_all:
        taken = q.gather(-1, actions[..., None]).squeeze(-1)
        total = total + masked_mean(torch.logsumexp(q, -1) - taken, mask)
    return total


def awac_weights(qhat: torch.Tensor, v: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """Advantage weights min(exp(beta * (Qhat - V)), max_weight), detached; beta 0 -> all ones.

    qhat, v (B, T) -> (B, T).
    """
    return torch.exp(beta * (qhat - v)).clamp(max=max_weight).detach()


def weighted_lm_loss(
    logits: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Behaviour cloning weighted per token: masked_mean(-w_t * log pi(a_t | s_t)).

    logits (B, T, V), actions (B, T) long, weights, mask (B, T) -> scalar.
    """
    logp = torch.log_softmax(logits.float(), -1).gather(-1, actions[..., None]).squeeze(-1)
    return masked_mean(-weights * logp, mask)
