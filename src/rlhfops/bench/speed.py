"""The speed ratios of `rlhfops bench`, each measured side by side in one run on this machine:

    ensemble_scoring_speed    fused (stacked) vs member-by-member reward-ensemble scoring (and trunk + heads)
    best_of_n_batching_speed  batched Best-of-N sampling vs one `generate` call per prompt
    ppo_vs_rloo               PPO (rl/ppo.py) vs TRL's RLOOTrainer, completions per second
    update_throughput         RM and PPO update FLOP/s (6 x params x tokens) against `matmul_peak`

`benchmarks/ensemble_scoring.py` and `benchmarks/ppo_vs_rloo.py` print the first and third alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rlhfops.bench.plan import BenchPlan
from rlhfops.bench.records import BatchingSpeed, PPOvsRLOO, ScoringRow, SpeedRatios, UpdateThroughput
from rlhfops.config import Config, load_config


def ensemble_scoring_speed(cfg: Config, members: int, batches: tuple[int, ...], repeats: int) -> list[ScoringRow]:
    """Seconds per call of K random-weight reward models of the configured architecture (the tiny
    Llama of `model.*`, or `model.name_or_path`'s config) scoring the same batch member by member,
    stacked (`reward/stacked.py`) and as one trunk + K heads. The three take turns, one call each
    per repeat after a warm-up, so that a loaded machine slows all three alike; medians of repeats."""
    from transformers import AutoConfig, LlamaForSequenceClassification, LlamaModel

    from rlhfops.modeling import build_char_tokenizer, load_tokenizer, tiny_llama_config
    from rlhfops.reward.ensemble import pooled_last_token
    from rlhfops.reward.stacked import StackedLlamaScorer
    from rlhfops.tasks import make_task

    if cfg.model.name_or_path:
        tok = load_tokenizer(cfg.model.name_or_path)
        llama = AutoConfig.from_pretrained(cfg.model.name_or_path, num_labels=1, pad_token_id=tok.pad_token_id)
    else:
        tok = build_char_tokenizer()
        llama = tiny_llama_config(cfg.model, tok, num_labels=1)
    tok.padding_side = "right"
    torch.manual_seed(0)
    models = [LlamaForSequenceClassification(llama).eval() for _ in range(members)]
    trunk = LlamaModel(llama).eval()
    heads = torch.randn(members, llama.hidden_size)
    examples = make_task(cfg.task).examples("test", max(batches))
    texts = [ex.prompt + ex.reference + tok.eos_token for ex in examples]
    stacked = StackedLlamaScorer(models)

    def member_by_member(ids, mask):
        return [m(input_ids=ids, attention_mask=mask).logits for m in models]

    def shared_trunk(ids, mask):
        hidden = trunk(input_ids=ids, attention_mask=mask).last_hidden_state
        return heads @ pooled_last_token(hidden, ids, tok.pad_token_id).T

    ways = {"member_by_member_s": member_by_member, "stacked_s": stacked, "heads_s": shared_trunk}
    rows: list[ScoringRow] = []
    with torch.no_grad():
        for b in batches:
            enc = tok(texts[:b], padding=True, return_tensors="pt")
            args = enc["input_ids"], enc["attention_mask"]
            times: dict[str, list[float]] = {key: [] for key in ways}
            for fn in ways.values():
                fn(*args)  # warm-up
            for _ in range(repeats):
                for key, fn in ways.items():
                    start = time.perf_counter()
                    fn(*args)
                    times[key].append(time.perf_counter() - start)
            seq, fused, shared = (statistics.median(times[key]) for key in ways)
            rows.append({"batch": b, "member_by_member_s": seq, "stacked_s": fused, "heads_s": shared})
    return rows


def best_of_n_batching_speed(cfg: Config, policy_dir: Path, n_prompts: int, n: int) -> BatchingSpeed:
    """Seconds to draw n samples for each of n_prompts test prompts in `best_of_n.batch_size`
    batches vs one `generate` call per prompt (batch = its n samples)."""
    from rlhfops.inference.best_of_n import sample
    from rlhfops.modeling import load_decoder
    from rlhfops.tasks import make_task

    tokenizer, model, hook = load_decoder(cfg, policy_dir)
    prompts = [ex.prompt for ex in make_task(cfg.task, seed=cfg.seed).examples("test", n_prompts)]

    def draw(batch_size: int) -> float:
        gen = torch.Generator().manual_seed(cfg.seed)
        start = time.perf_counter()
        sample(
            model,
            tokenizer,
            prompts,
            n,
            generation=cfg.generation,
            generator=gen,
            batch_size=batch_size,
            logits_hook=hook,
        )
        return time.perf_counter() - start

    warm_up = prompts[:1]
    sample(model, tokenizer, warm_up, n, generation=cfg.generation, generator=None, batch_size=n, logits_hook=hook)
    batched, looped = draw(cfg.best_of_n.batch_size), draw(n)
    return {"prompts": n_prompts, "n": n, "batched_s": batched, "per_prompt_s": looped, "ratio": looped / batched}


def ppo_vs_rloo(
    policy_dir: Path,
    steps: int,
    completions: int,
    scratch: Path,
    config: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    group: int = 4,
) -> PPOvsRLOO:
    """Completions per second of PPO (`rl/ppo.py`) and TRL's RLOOTrainer from the same policy on
    the gold reward, the same completions per update (RLOO: completions / group prompts x group)
    and length; wall clock of the whole training call (loading and the final save in both). Both
    go through `train_policy`, which builds each side's arguments."""
    from rlhfops.rl.train import train_policy

    def completions_per_second(algorithm: str, prompts_per_step: int, group_size: int) -> float:
        cfg = load_config(
            config,
            [
                *overrides,
                "policy.reward=gold",
                f"policy.steps={steps}",
                f"policy.algorithm={algorithm}",
                f"policy.prompts_per_step={prompts_per_step}",
                # PPO's in-training evaluation kept to one prompt; RLOO has none, and group_size is RLOO's alone
                *(["policy.eval_prompts=1"] if algorithm == "ppo" else [f"policy.group_size={group_size}"]),
            ],
        )
        start = time.perf_counter()
        train_policy(cfg, policy_dir, scratch / algorithm, progress=False)
        return steps * completions / (time.perf_counter() - start)

    ppo = completions_per_second("ppo", completions, 1)
    rloo = completions_per_second("rloo", completions // group, group)
    return {"steps": steps, "completions": completions, "ppo": ppo, "rloo": rloo, "ratio": ppo / rloo}


def matmul_peak(seconds: float, size: int = 1024) -> float:
    """FLOP/s of float32 size x size matmuls (2 size^3 each) run back to back for `seconds`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / elapsed


def _update_rate(step: Callable[[], None], steps: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def update_throughput(cfg: Config, policy_dir: Path, steps: int) -> dict[str, UpdateThroughput]:
    """FLOP/s of a reward-model update (Bradley-Terry loss on reward.batch_size pairs) and of a PPO
    minibatch update (`rl/ppo.py`'s forward, clipped policy and value losses on a sampled batch),
    each forward + backward + AdamW step; FLOPs = 6 x parameters x tokens of the padded batch
    (attention's own FLOPs left out)."""
    import torch.nn.functional as F
    from transformers import LlamaForSequenceClassification

    from rlhfops.generation import generate
    from rlhfops.modeling import load_policy, tiny_llama_config
    from rlhfops.rl.losses import policy_loss, value_loss
    from rlhfops.rl.ppo import Critic, forward
    from rlhfops.tasks import make_task

    torch.manual_seed(cfg.seed)
    tokenizer, actor = load_policy(policy_dir)
    task = make_task(cfg.task, seed=cfg.seed)
    out: dict[str, UpdateThroughput] = {}

    # RM: chosen = prompt + reference, rejected = prompt + another example's reference
    b = cfg.reward.batch_size
    ex = task.examples("train", b + 1)
    texts = [e.prompt + e.reference for e in ex[:b]] + [
        e.prompt + o.reference for e, o in zip(ex[:b], ex[1 : b + 1], strict=True)
    ]
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, padding=True, truncation=True, max_length=cfg.reward.max_length, return_tensors="pt")
    rm = LlamaForSequenceClassification(tiny_llama_config(cfg.model, tokenizer, num_labels=1)).train()
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.reward.lr)

    def rm_step() -> None:
        r = rm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0]
        loss = -F.logsigmoid(r[:b] - r[b:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    params = sum(p.numel() for p in rm.parameters())
    tokens = enc["input_ids"].numel()
    out["rm"] = {
        "params": params,
        "tokens_per_step": tokens,
        "flops_per_s": 6 * params * tokens * _update_rate(rm_step, steps),
    }

    # PPO: one minibatch of prompts_per_step / minibatches sampled sequences
    pc = cfg.policy
    mb = max(1, pc.prompts_per_step // pc.minibatches)
    prompts = [e.prompt for e in task.examples("train", mb)]
    gen = generate(actor, tokenizer, prompts, pc.max_new_tokens, temperature=pc.temperature)
    ids = torch.cat([gen.prompt_ids, gen.completion_ids], 1)
    attn = torch.cat([gen.prompt_mask, gen.completion_mask], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    mask, P = gen.completion_mask.float(), gen.prompt_ids.shape[1]
    critic = Critic(pc.critic, actor.config.hidden_size, Path(policy_dir))
    actor.train()
    with torch.no_grad():
        old = forward(actor, critic, ids, attn, pos, P, pc.temperature)
    advantages, returns = torch.randn_like(mask), torch.randn_like(mask)
    opt = torch.optim.AdamW([*actor.parameters(), *critic.parameters()], lr=pc.lr)

    def ppo_step() -> None:
        new = forward(actor, critic, ids, attn, pos, P, pc.temperature, entropy=True)
        pl, _ = policy_loss(new["logprobs"], old["logprobs"], advantages, mask, pc.clip_range)
        vl, _ = value_loss(new["values"], old["values"], returns, mask, pc.clip_range_value)
        opt.zero_grad(set_to_none=True)
        (pl + pc.value_coef * vl).backward()
        torch.nn.utils.clip_grad_norm_([*actor.parameters(), *critic.parameters()], pc.max_grad_norm)
        opt.step()

    params = sum(p.numel() for p in actor.parameters()) + sum(p.numel() for p in critic.parameters())
    tokens = ids.numel()
    out["ppo"] = {
        "params": params,
        "tokens_per_step": tokens,
        "flops_per_s": 6 * params * tokens * _update_rate(ppo_step, steps),
    }
    return out


def speed_ratios(
    plan: BenchPlan, cfg: Config, policy_dir: Path, scratch: Path, log: Callable[[str], None]
) -> SpeedRatios:
    """Every ratio, sized by the plan, on the policy in `policy_dir`."""
    scoring = ensemble_scoring_speed(cfg, cfg.reward.members, plan.scoring_batches, plan.scoring_repeats)
    log(
        "  fused vs member-by-member scoring: "
        + ", ".join(f"batch {r['batch']} {r['member_by_member_s'] / r['stacked_s']:.2f}x" for r in scoring)
    )
    batching = best_of_n_batching_speed(cfg, policy_dir, plan.speed_prompts, plan.speed_n)
    log(f"  batched Best-of-{plan.speed_n} vs a generate per prompt: {batching['ratio']:.2f}x")
    overrides = [o for o in plan.overrides if o.startswith(("task.", "model.", "generation."))]
    rloo = ppo_vs_rloo(policy_dir, plan.ppo_rloo_steps, plan.ppo_rloo_completions, scratch, plan.config, overrides)
    log(f"  PPO vs TRL RLOOTrainer: {rloo['ratio']:.2f}x completions/s")
    peak = matmul_peak(plan.peak_seconds)
    updates = update_throughput(cfg, policy_dir, plan.update_steps)
    for u in updates.values():
        u["fraction_of_peak"] = u["flops_per_s"] / peak
    log(
        f"  matmul peak {peak / 1e9:.1f} GFLOP/s; RM update {updates['rm']['fraction_of_peak']:.1%}, "
        f"PPO update {updates['ppo']['fraction_of_peak']:.1%} of it"
    )
    return {
        "ensemble_scoring": {"members": cfg.reward.members, "rows": scoring},
        "best_of_n_batching": batching,
        "ppo_vs_rloo": rloo,
        "roofline": {"matmul_peak_flops_per_s": peak, "threads": torch.get_num_threads(), **updates},
    }
