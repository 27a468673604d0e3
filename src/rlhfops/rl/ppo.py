"""PPO for language models with dense process rewards, read top to bottom (cleanrl's order).

Config: `PolicyConfig` in `rlhfops/config.py` (`policy.*`, a description per field).

Roles: actor (the policy, a causal LM), critic (a value head on the actor's last hidden state,
or a separate value model from the policy: `policy.critic`), reference (a frozen copy of the
starting policy, only when the KL coefficient is above zero) and the reward callable
(`reward/functions.py`: the composite of the reward-model ensembles, or the exact gold judges).

One update:
  1. rollout: sample completions for a batch of prompts (`generation.generate`, KV cache); the
     sampling passes themselves give the old log-probs and, with a value head, the old values
     (`RolloutStates`), so the actor runs no second pass over the rollout;
  2. score: the reward callable on the texts, guarded (`RewardGuard`: optionally normalised by the
     first rollout's mean and std, then clipped); optional dense PRM step rewards; the reference's
     log-probs of the completion tokens (one pass, the LM head a chunk of positions at a time);
  3. per-token rewards: -kl_coef * (log pi - log pi_ref) on every token, the score on the last
     token, PRM step rewards on the tokens that end each line (`reward/prm.response_step_tokens`,
     from the sampled tokens' offsets as the PRM finds its separators; `rl/losses.py`);
  4. GAE (gamma, lambda) on the critic's values, whitened advantages;
  5. epochs x minibatches of clipped surrogate + clipped value loss - entropy bonus, gradient
     clipping, early stop on approximate KL; the adaptive KL controller moves kl_coef.

Against reward hacking (a learned reward is only right where its training data was): the KL
penalty to the reference; the reward models' own caution, set in `reward.*` (aggregation `min` /
`uwo`, `uncertainty_penalty` on the ensembles' spread); reward normalisation and clipping; and a
stop once the policy has gone further than the reward can be trusted: its sequence KL to the
reference past `policy.max_kl`, or the ensembles' mean spread on a rollout past
`policy.max_spread_growth` times the first rollout's. The run then ends there (no update on that
batch) and saves the last policy whose own rollout was within the bounds (a copy of its weights is
kept while a bound is set). `benchmarks/ppo_hacking.py` measures each.

Each update logs its phases' seconds (`time/rollout`, `time/forward`, ...; also as
`torch.profiler` ranges `ppo/<phase>`): `benchmarks/profile_ppo.py` prints them.

Runs under `accelerate` (DeepSpeed ZeRO on GPU nodes from `configs/accelerate/*.yaml`): actor,
critic and reference are float32 (`modeling.load_weights`) on the accelerator's device, the
generator and the scores too. A non-finite loss stops the run with a clear error; the last good
checkpoint stays in out_dir.
"""

from __future__ import annotations

import copy
import random
import time
from contextlib import contextmanager
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import extract_model_from_parallel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForTokenClassification

from rlhfops.config import Config
from rlhfops.generation import generate, sample_texts
from rlhfops.modeling import load_policy, load_weights, save_policy, token_log_probs
from rlhfops.reward.build import composite_reward, load_prm
from rlhfops.reward.build import reward_fn as build_reward_fn
from rlhfops.reward.prm import response_step_tokens
from rlhfops.rl.losses import (
    AdaptiveKLController,
    dense_step_rewards,
    explained_variance,
    gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from rlhfops.tasks import Task, gold_composite, make_task
from rlhfops.workspace import TRAIN_LOG, VALUE_HEAD

# ---- roles --------------------------------------------------------------------------------------


class Critic(nn.Module):
    """V(s_t) for every completion position: a linear head on the actor's hidden state, or a
    separate value model (token classification from the policy)."""

    def __init__(self, kind: str, hidden_size: int, policy_dir: Path):
        super().__init__()
        self.kind = kind
        if kind == "value_head":
            self.head = nn.Linear(hidden_size, 1)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        else:
            self.model = load_weights(AutoModelForTokenClassification, policy_dir, train=True, num_labels=1)

    def forward(self, hidden: torch.Tensor | None, ids, attn, pos, prompt_len: int) -> torch.Tensor:
        """Values (B, T) of the completion states: the head on the actor's hidden states of those
        states (B, T, H), or the value model on the token ids (B, P + T)."""
        if self.kind == "value_head":
            return self.head(hidden.float()).squeeze(-1)
        values = self.model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[..., 0].float()
        return values[:, prompt_len - 1 : -1]


def completion_states(model, ids, attn, pos, prompt_len: int) -> torch.Tensor:
    """The model's final hidden states (after its last norm: what the LM head reads) of the states
    before each completion token, (B, P + T) -> (B, T, H). Through the model's own forward (so a
    DDP / DeepSpeed wrapper sees it), with the LM head on one position only, never (B, L, V)."""
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1][:, prompt_len - 1 : -1]


def forward(
    actor, critic: Critic, ids, attn, pos, prompt_len: int, temperature: float, entropy: bool = False
) -> dict[str, torch.Tensor]:
    """Log-probs (B, T) of the completion tokens under logits / temperature, values (B, T), and
    optionally the entropy (B, T), from one pass of the actor (the value head reads the same hidden
    states). Position t's state is the prefix before completion token t. Log-probs and entropy come
    from the hidden states a chunk of positions at a time (`modeling.token_log_probs`)."""
    hidden = completion_states(actor, ids, attn, pos, prompt_len)  # (B, T, H)
    tokens = ids[:, prompt_len:]
    lm = extract_model_from_parallel(actor)
    out = token_log_probs(lm, hidden, tokens, temperature=temperature, entropy=entropy)
    result = {"logprobs": out[0] if entropy else out, "values": critic(hidden, ids, attn, pos, prompt_len)}
    if entropy:
        result["entropy"] = out[1]
    return result


class RolloutStates:
    """A `generation.generate` logits hook that keeps the final hidden state (B, H) of every
    sampling step and changes nothing: step t's state is the one before completion token t, so the
    value head reads V(s_t) off the rollout's own forward passes (no second pass of the actor)."""

    needs_hidden = True

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        self.states.append(last)
        return logits

    def stacked(self, steps: int) -> torch.Tensor:
        """(B, steps, H): the first `steps` states (generate may stop before max_new_tokens)."""
        return torch.stack(self.states[:steps], 1)


def roles(cfg: Config, policy_dir: Path, device: torch.device):
    """Tokenizer, actor, reference (None when kl_coef is 0) and critic, float32 on `device`; the
    reference is a frozen copy of the starting actor."""
    tokenizer, actor = load_policy(policy_dir, train=True, device=device)
    reference = copy.deepcopy(actor).eval().requires_grad_(False) if cfg.policy.kl_coef > 0 else None
    critic = Critic(cfg.policy.critic, actor.config.hidden_size, policy_dir).to(device)
    return tokenizer, actor, reference, critic


# ---- evaluation ---------------------------------------------------------------------------------


def gold_on_slice(actor, tokenizer, task: Task, cfg: Config, seed: int) -> float:
    """Mean gold composite of one sampled response per held-out (validation) prompt."""
    examples = task.examples("val", cfg.policy.eval_prompts)
    prompts = [ex.prompt for ex in examples]
    texts = sample_texts(
        actor,
        tokenizer,
        prompts,
        cfg.generation,
        seed,
        max_new_tokens=cfg.policy.max_new_tokens,
        temperature=cfg.policy.temperature,
        top_k=0,
    )
    return gold_composite(task, examples, texts)


def _save(actor, critic: Critic, tokenizer, cfg: Config, out_dir: Path, log: list[dict]) -> None:
    extras = {TRAIN_LOG: log}
    path = save_policy(actor, tokenizer, cfg, out_dir, extras)
    if critic.kind == "value_head":
        save_file({k: v.detach().contiguous() for k, v in critic.head.state_dict().items()}, path / VALUE_HEAD)


# ---- training -----------------------------------------------------------------------------------


class Phases:
    """Seconds per phase of one update (`time/<phase>` in the log): where an update's time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        with torch.profiler.record_function(f"ppo/{name}"):
            yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def score(reward_fn, prompts: list[str], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores (B,) and, for the reward models' composite, their disagreement: the ensembles' spread
    averaged over objectives (B,); None for a reward without ensembles (gold, a plain callable)."""
    if hasattr(reward_fn, "vectors"):
        parts = reward_fn.vectors(prompts, texts)
        return parts["total"].float(), parts["spreads"].float().mean(1)
    return torch.tensor(reward_fn(prompts, texts), dtype=torch.float), None


class RewardGuard:
    """What keeps PPO from hacking a learned reward, besides the KL penalty (module docstring):
    scores normalised by the first rollout's mean and std (`policy.normalize_reward`), then clipped
    (`policy.reward_clip`); and a stop once the policy has moved too far for the reward to be
    trusted: its sequence KL to the reference past `policy.max_kl`, or the reward ensembles
    disagreeing on its samples more than `policy.max_spread_growth` times as much as on the first
    rollout's."""

    def __init__(self, normalize: bool, clip: float, max_spread_growth: float | None, max_kl: float | None = None):
        self.normalize, self.clip, self.max_growth, self.max_kl = normalize, clip, max_spread_growth, max_kl
        self.mean = self.std = self.start_spread = None
        self.bounded = max_spread_growth is not None or max_kl is not None

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """Raw scores (B,) -> the scores PPO optimises (B,)."""
        if self.normalize:
            if self.mean is None:
                self.mean, self.std = scores.mean().item(), scores.std(correction=0).item()
            scores = (scores - self.mean) / max(self.std, 1e-6)
        return scores.clamp(-self.clip, self.clip)

    def spread_growth(self, spread: torch.Tensor | None) -> float | None:
        """This rollout's mean spread over the first rollout's (None without ensembles)."""
        if spread is None:
            return None
        mean = spread.mean().item()
        if self.start_spread is None:
            self.start_spread = mean
        return mean / max(self.start_spread, 1e-12)

    def stop_reason(self, growth: float | None, kl: float) -> str | None:
        """Why this rollout's policy is as far as PPO may go (None: it may go on)."""
        if self.max_kl is not None and kl > self.max_kl:
            return f"sequence KL to the reference {kl:.2f} > {self.max_kl}"
        if self.max_growth is not None and growth is not None and growth > self.max_growth:
            return f"reward-model spread {growth:.2f}x the first rollout's > {self.max_growth}"
        return None


def train_ppo(
    cfg: Config,
    policy_dir: str | Path,
    out_dir: str | Path,
    rm_dir: str | Path | None = None,
    prm_dir: str | Path | None = None,
    progress: bool = True,
    reward_fn=None,
) -> Path:
    """PPO from the policy in `policy_dir`; writes the policy (and value head) to `out_dir`.

    `reward_fn` (a TRL-style callable) replaces the configured reward, e.g. for a synthetic task."""
    pc = cfg.policy
    policy_dir, out_dir = Path(policy_dir), Path(out_dir)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    task = make_task(cfg.task, seed=cfg.seed)
    prompts_pool = [ex.prompt for ex in task.examples("train", min(cfg.task.n_train, pc.steps * pc.prompts_per_step))]

    device = accelerator.device
    tokenizer, actor, reference, critic = roles(cfg, policy_dir, device)
    prm = load_prm(prm_dir, "policy.dense_prm") if pc.dense_prm else None
    if reward_fn is None:
        # The composite as one object: its `vectors` give the ensembles' spread the guard watches.
        reward_fn = (
            composite_reward(cfg, rm_dir, prm_dir, prm=prm)
            if pc.reward == "composite"
            else build_reward_fn(cfg, pc.reward, rm_dir, prm_dir, prm=prm)  # the dense PRM, loaded once
        )
    guard = RewardGuard(pc.normalize_reward, pc.reward_clip, pc.max_spread_growth, pc.max_kl)
    kept = None  # with a bound: (actor, critic) weights of the last policy whose rollout was within it
    # The critic gets its own learning rate: a value head that lags the returns gives advantages
    # that are mostly prompt-type noise (explained variance near 0), and the policy drifts.
    optimizer = torch.optim.AdamW(
        [{"params": list(actor.parameters()), "lr": pc.lr}, {"params": list(critic.parameters()), "lr": pc.critic_lr}],
        eps=1e-5,
        fused=device.type in ("cpu", "cuda"),  # one kernel over every tensor: 4x faster steps on the tiny model
    )
    actor, critic, optimizer = accelerator.prepare(actor, critic, optimizer)
    kl_ctl = AdaptiveKLController(pc.kl_coef, pc.target_kl, pc.kl_horizon) if pc.target_kl else None
    kl_coef = pc.kl_coef
    generator = torch.Generator(device=device).manual_seed(cfg.seed)

    log: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        bar_task = bar.add_task("PPO", total=pc.steps)
        for update in range(1, pc.steps + 1):
            start, phase = time.perf_counter(), Phases()
            prompts = rng.sample(prompts_pool, min(pc.prompts_per_step, len(prompts_pool)))

            # 1. rollout: its own passes give the old log-probs and, with a value head, the old values
            unwrapped = accelerator.unwrap_model(actor)
            with phase("rollout"):
                states = RolloutStates() if critic.kind == "value_head" else None
                gen = generate(
                    unwrapped,
                    tokenizer,
                    prompts,
                    pc.max_new_tokens,
                    temperature=pc.temperature,
                    generator=generator,
                    logits_hook=states,
                )
            ids = torch.cat([gen.prompt_ids, gen.completion_ids], 1)
            attn = torch.cat([gen.prompt_mask, gen.completion_mask], 1)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            mask = gen.completion_mask.float()
            P, T = gen.prompt_ids.shape[1], gen.completion_ids.shape[1]

            # 2-4. score, per-token rewards, advantages
            with torch.no_grad():
                with phase("score"):
                    raw, spread = score(reward_fn, prompts, gen.texts)
                    scores = guard(raw).to(device)
                with phase("values"):
                    old_values = critic(
                        states.stacked(T) if states is not None else None, ids, attn, pos, P
                    )  # fmt: skip
                    old_logprobs = gen.logprobs.float()
                ref_logprobs = None
                if reference is not None:
                    with phase("reference"):
                        ref_hidden = completion_states(reference, ids, attn, pos, P)
                        ref_logprobs = token_log_probs(reference, ref_hidden, ids[:, P:], temperature=pc.temperature)
                dense = None
                if pc.dense_prm:
                    with phase("prm"):
                        steps = prm.step_scores(prompts, gen.texts)
                        positions = response_step_tokens(tokenizer, gen.completion_ids, gen.completion_mask, gen.texts)
                        dense = dense_step_rewards(steps, positions, tuple(mask.shape), pc.prm_step_coef).to(device)
                with phase("advantages"):
                    rewards, kl = token_rewards(scores, old_logprobs, ref_logprobs, mask, kl_coef, dense)
                    if pc.whiten_rewards:
                        rewards = masked_whiten(rewards, mask, shift_mean=False)
                    advantages, returns = gae(rewards, old_values * mask, mask, pc.gamma, pc.lam)
                    advantages = masked_whiten(advantages, mask)
            seq_kl = kl.sum(1).mean().item()
            growth = guard.spread_growth(spread)
            stopped = guard.stop_reason(growth, seq_kl)
            if stopped and kept is not None:  # back to the last policy whose own rollout was within bounds
                unwrapped.load_state_dict(kept[0])
                accelerator.unwrap_model(critic).load_state_dict(kept[1])
            elif guard.bounded:  # this rollout's policy is within bounds: the one to go back to
                kept = tuple(
                    {k: v.detach().clone() for k, v in accelerator.unwrap_model(m).state_dict().items()}
                    for m in (actor, critic)
                )

            # 5. epochs x minibatches (none once the policy is past the guard's bounds)
            stats: dict[str, list[float]] = {
                "policy_loss": [],
                "value_loss": [],
                "entropy": [],
                "clip_frac": [],
                "approx_kl": [],
                "value_clip_frac": [],
            }
            batch = len(prompts)
            mb_size = max(1, batch // pc.minibatches)
            for _epoch in range(0 if stopped else pc.ppo_epochs):
                epoch_kl = []
                for idx in torch.randperm(batch).split(mb_size):
                    with phase("forward"):
                        new = forward(actor, critic, ids[idx], attn[idx], pos[idx], P, pc.temperature, entropy=True)
                        m = mask[idx]
                        pl, pinfo = policy_loss(new["logprobs"], old_logprobs[idx], advantages[idx], m, pc.clip_range)
                        vl, vinfo = value_loss(new["values"], old_values[idx], returns[idx], m, pc.clip_range_value)
                        ent = masked_mean(new["entropy"], m)
                        loss = pl + pc.value_coef * vl
                        if pc.entropy_coef > 0:  # else the entropy is only logged: no backward through it
                            loss = loss - pc.entropy_coef * ent
                    if not torch.isfinite(loss):
                        raise RuntimeError(
                            f"PPO stopped at update {update}: the loss is not finite (policy {pl.item()}, value "
                            f"{vl.item()}); the last good checkpoint is in '{out_dir}'"
                        )
                    with phase("backward"):
                        optimizer.zero_grad(set_to_none=True)
                        accelerator.backward(loss)
                    with phase("optimizer"):
                        accelerator.clip_grad_norm_([*actor.parameters(), *critic.parameters()], pc.max_grad_norm)
                        optimizer.step()
                    for key, value in (
                        ("policy_loss", pl.item()),
                        ("value_loss", vl.item()),
                        ("entropy", ent.item()),
                        *pinfo.items(),
                        *vinfo.items(),
                    ):
                        stats[key].append(value)
                    epoch_kl.append(pinfo["approx_kl"])
                if pc.early_stop_kl is not None and fmean(epoch_kl) > pc.early_stop_kl:
                    break

            if kl_ctl is not None and not stopped:
                kl_coef = kl_ctl.update(seq_kl, batch)
            seconds = time.perf_counter() - start
            row = {
                "update": update,
                "reward/mean": raw.mean().item(),
                "kl/sequence": seq_kl,
                "kl/coef": kl_coef,
                "value/explained_variance": explained_variance(old_values, returns, mask),
                "charts/tokens_per_s": mask.sum().item() / seconds,
                "charts/update_s": seconds,
                "charts/length": mask.sum(1).mean().item(),
                **{f"time/{name}": s for name, s in phase.seconds.items()},
            }
            if stats["policy_loss"]:
                row |= {
                    "policy/entropy": fmean(stats["entropy"]),
                    "policy/clip_frac": fmean(stats["clip_frac"]),
                    "policy/approx_kl": fmean(stats["approx_kl"]),
                    "losses/policy": fmean(stats["policy_loss"]),
                    "losses/value": fmean(stats["value_loss"]),
                }
            if growth is not None:
                row["reward/spread"] = spread.mean().item()
                row["reward/spread_growth"] = growth
            if stopped:
                row["stopped"] = f"{stopped}; kept the policy of update {update - 1}'s rollout"
            if dense is not None:
                row["reward/dense_prm"] = dense.sum(1).mean().item()
            if update % pc.eval_every == 0 or update == pc.steps or stopped:
                row["gold/composite"] = gold_on_slice(accelerator.unwrap_model(actor), tokenizer, task, cfg, cfg.seed)
                _save(
                    accelerator.unwrap_model(actor),
                    accelerator.unwrap_model(critic),
                    tokenizer,
                    cfg,
                    out_dir,
                    [*log, row],
                )
            log.append(row)
            bar.update(bar_task, advance=1, description=f"PPO reward {row['reward/mean']:+.3f} kl {seq_kl:.2f}")
            if stopped:
                break
    return out_dir
