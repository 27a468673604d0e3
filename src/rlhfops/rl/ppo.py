"""PPO for language models with dense process rewards, read top to bottom (cleanrl's order).

Config: `PolicyConfig` in `rlhfops/config.py` (`policy.*`, a description per field).

Roles: actor (the policy, a causal LM), critic (a value head on the actor's last hidden state,
or a separate value model from the policy: `policy.critic`), reference (a frozen copy of the
starting policy, only when the KL coefficient is above zero) and the reward callable
(`reward/functions.py`: the composite of the reward-model ensembles, or the exact gold judges).

One update:
  1. rollout: sample completions for a batch of prompts (`generation.generate`, KV cache);
  2. score: the reward callable on the texts (clipped); optional dense PRM step rewards;
  3. per-token rewards: -kl_coef * (log pi - log pi_ref) on every token, the score on the last
     token, PRM step rewards on the tokens that end each line (`reward/prm.response_step_tokens`,
     from the sampled tokens' offsets as the PRM finds its separators; `rl/losses.py`);
  4. GAE (gamma, lambda) on the critic's values, whitened advantages;
  5. epochs x minibatches of clipped surrogate + clipped value loss - entropy bonus, gradient
     clipping, early stop on approximate KL; the adaptive KL controller moves kl_coef.
Runs under `accelerate` (DeepSpeed ZeRO on GPU nodes from `configs/accelerate/*.yaml`): actor,
critic and reference are float32 (`modeling.load_weights`) on the accelerator's device, the
generator and the scores too. A non-finite loss stops the run with a clear error; the last good
checkpoint stays in out_dir.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from accelerate import Accelerator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForTokenClassification

from rlhfops.config import Config
from rlhfops.generation import generate, sample_texts
from rlhfops.modeling import load_policy, load_weights, save_policy
from rlhfops.reward.build import load_prm
from rlhfops.reward.build import reward_fn as build_reward_fn
from rlhfops.reward.prm import response_step_tokens
from rlhfops.rl.losses import (
    AdaptiveKLController,
    dense_step_rewards,
    entropy_from_logits,
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

    def forward(self, hidden: torch.Tensor | None, ids, attn, pos) -> torch.Tensor:
        """Values (B, L) at every position: the head on the actor's last hidden state (B, L, H), or
        the value model on the token ids."""
        if self.kind == "value_head":
            return self.head(hidden.float()).squeeze(-1)
        return self.model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[..., 0].float()


def forward(
    actor, critic: Critic, ids, attn, pos, prompt_len: int, temperature: float, entropy: bool = False
) -> dict[str, torch.Tensor]:
    """Log-probs (B, T) of the completion tokens under logits / temperature, values (B, T), and
    optionally the entropy (B, T). Position t's state is the prefix before completion token t."""
    out = actor(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=critic.kind == "value_head")
    logits = out.logits[:, prompt_len - 1 : -1].float() / temperature  # (B, T, V)
    tokens = ids[:, prompt_len:]
    result = {"logprobs": torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)}
    hidden = out.hidden_states[-1] if critic.kind == "value_head" else None
    result["values"] = critic(hidden, ids, attn, pos)[:, prompt_len - 1 : -1]
    if entropy:
        result["entropy"] = entropy_from_logits(logits)
    return result


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
        reward_fn = build_reward_fn(cfg, pc.reward, rm_dir, prm_dir, prm=prm)  # the dense PRM, loaded once
    # The critic gets its own learning rate: a value head that lags the returns gives advantages
    # that are mostly prompt-type noise (explained variance near 0), and the policy drifts.
    optimizer = torch.optim.AdamW(
        [{"params": list(actor.parameters()), "lr": pc.lr}, {"params": list(critic.parameters()), "lr": pc.critic_lr}],
        eps=1e-5,
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
            start = time.perf_counter()
            prompts = rng.sample(prompts_pool, min(pc.prompts_per_step, len(prompts_pool)))

            # 1. rollout
            unwrapped = accelerator.unwrap_model(actor)
            gen = generate(
                unwrapped, tokenizer, prompts, pc.max_new_tokens, temperature=pc.temperature, generator=generator
            )
            ids = torch.cat([gen.prompt_ids, gen.completion_ids], 1)
            attn = torch.cat([gen.prompt_mask, gen.completion_mask], 1)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            mask = gen.completion_mask.float()
            P = gen.prompt_ids.shape[1]

            # 2-4. score, per-token rewards, advantages
            with torch.no_grad():
                scores = torch.tensor(reward_fn(prompts, gen.texts), dtype=torch.float, device=device)
                scores = scores.clamp(-pc.reward_clip, pc.reward_clip)
                old = forward(actor, critic, ids, attn, pos, P, pc.temperature)
                ref_logprobs = None
                if reference is not None:
                    ref_out = reference(input_ids=ids, attention_mask=attn, position_ids=pos)
                    ref_logits = ref_out.logits[:, P - 1 : -1].float() / pc.temperature
                    ref_logprobs = torch.log_softmax(ref_logits, -1).gather(-1, ids[:, P:, None]).squeeze(-1)
                dense = None
                if pc.dense_prm:
                    steps = prm.step_scores(prompts, gen.texts)
                    positions = response_step_tokens(tokenizer, gen.completion_ids, gen.completion_mask, gen.texts)
                    dense = dense_step_rewards(steps, positions, tuple(mask.shape), pc.prm_step_coef).to(device)
                rewards, kl = token_rewards(scores, old["logprobs"], ref_logprobs, mask, kl_coef, dense)
                if pc.whiten_rewards:
                    rewards = masked_whiten(rewards, mask, shift_mean=False)
                advantages, returns = gae(rewards, old["values"] * mask, mask, pc.gamma, pc.lam)
                advantages = masked_whiten(advantages, mask)

            # 5. epochs x minibatches
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
            for _epoch in range(pc.ppo_epochs):
                epoch_kl = []
                for idx in torch.randperm(batch).split(mb_size):
                    new = forward(actor, critic, ids[idx], attn[idx], pos[idx], P, pc.temperature, entropy=True)
                    m = mask[idx]
                    pl, pinfo = policy_loss(new["logprobs"], old["logprobs"][idx], advantages[idx], m, pc.clip_range)
                    vl, vinfo = value_loss(new["values"], old["values"][idx], returns[idx], m, pc.clip_range_value)
                    ent = masked_mean(new["entropy"], m)
                    loss = pl + pc.value_coef * vl - pc.entropy_coef * ent
                    if not torch.isfinite(loss):
                        raise RuntimeError(
                            f"PPO stopped at update {update}: the loss is not finite (policy {pl.item()}, value "
                            f"{vl.item()}); the last good checkpoint is in '{out_dir}'"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    accelerator.backward(loss)
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

            seq_kl = kl.sum(1).mean().item()
            if kl_ctl is not None:
                kl_coef = kl_ctl.update(seq_kl, batch)
            seconds = time.perf_counter() - start
            row = {
                "update": update,
                "reward/mean": scores.mean().item(),
                "kl/sequence": seq_kl,
                "kl/coef": kl_coef,
                "policy/entropy": fmean(stats["entropy"]),
                "policy/clip_frac": fmean(stats["clip_frac"]),
                "policy/approx_kl": fmean(stats["approx_kl"]),
                "losses/policy": fmean(stats["policy_loss"]),
                "losses/value": fmean(stats["value_loss"]),
                "value/explained_variance": explained_variance(old["values"], returns, mask),
                "charts/tokens_per_s": mask.sum().item() / seconds,
                "charts/length": mask.sum(1).mean().item(),
            }
            if dense is not None:
                row["reward/dense_prm"] = dense.sum(1).mean().item()
            if update % pc.eval_every == 0 or update == pc.steps:
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
    return out_dir
