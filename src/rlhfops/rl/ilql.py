"""Token-level implicit Q-learning (IQL / CQL / ILQL) on logged (prompt, response, reward) tuples.

Config: `OfflineConfig` in `rlhfops/config.py` (`offline.*`, a description per field).

Model: the causal LM (trunk + LM head) with `ILQLHeads` (`modeling.py`) on its last hidden state (B, T, H): two
Q heads (H -> V: Q(s, a) for every token a), their two frozen Polyak-averaged target copies, and
a V head (H -> 1). Every token of a response is an action; the state is the prefix before it.
The reward is 0 except the normalised sequence reward at the last response token, where the
episode ends (`rl/losses.py`: `terminal_rewards`).

One step on a batch of logged sequences (right-padded):
  1. forward: LM logits, Q_1, Q_2 (B, T, V), V (B, T); target Qhat = min(Q'_1, Q'_2) at a_t;
  2. Q loss: (Q_i(s_t, a_t) - [r_t + gamma * V(s_{t+1}) * (1 - done_t)])^2 per head;
  3. V loss: expectile(Qhat - V, tau);
  4. conservative term (CQL): logsumexp_a Q_i(s_t, a) - Q_i(s_t, a_t);
  5. behaviour: LM cross-entropy on the response weighted by exp(beta * (Qhat - V)) (AWAC);
  6. AdamW on trunk + heads, then the Polyak update of the target heads.
`offline.method`: iql -> no conservative term; cql -> tau 0.5 + conservative; ilql -> both.

The shifted policy pi_beta(. | s) = softmax(log_softmax(logits) + beta * (Qhat(s, .) - V(s))) needs
the heads at every decoding step, which no Hugging Face runtime (vLLM, KServe's server) applies.
So the policy is extracted into the LM weights (`extract_policy`). The Q heads are linear in the
same final hidden state the LM head reads, and log_softmax and V(s) move every token's logit at a
state by the same amount, so an output layer W_lm + beta * W_Q decodes the shift exactly but for
min(Q'_1, Q'_2) and the heads' biases (`linear_extraction`: W_Q the mean target head, the layer
untied from the input embeddings); that layer alone is then fitted to pi_beta's full next-token
distributions, KL(pi_beta || pi_LM) per response token, on the states of the logged responses and
of pi_beta's own samples on the logged prompts, the trunk unchanged. (Measured: the first step
alone takes the smoke test's KL from 0.081 to 0.0012 nats per token; distilling the whole LM from
W_lm instead kept at most 25% of the gold gain on tiny, seed 0: README, Offline RL.) The candidate written to
`out_dir` is that plain causal LM (no heads: `modeling.load_decoder` decodes it plainly, like any
policy); the shifted decoder itself (LM + `ILQL_HEADS`) is written only where asked (`shifted_dir`),
an evaluation-only variant `load_decoder` decodes with its shift (`offline.decode_beta`).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file

from rlhfops.chat import render
from rlhfops.config import Config
from rlhfops.files import atomic_directory, read_jsonl, write_jsonl
from rlhfops.generation import sample_texts
from rlhfops.modeling import (
    ILQLHeads,
    default_device,
    final_hidden,
    ilql_decoding_shift,
    ilql_shift_hook,
    load_decoder,
    load_policy,
    map_chunks,
    output_logits,
    positions_per_chunk,
    save_policy,
)
from rlhfops.rl.losses import (
    awac_weights,
    cql_loss,
    expectile_loss,
    masked_mean,
    q_loss,
    terminal_rewards,
    weighted_lm_loss,
)
from rlhfops.tasks import make_task
from rlhfops.workspace import ILQL_HEADS, TRAIN_LOG

# ---- data ---------------------------------------------------------------------------------------


def build_offline_data(cfg: Config, policy_dir: str | Path, out_path: str | Path, reward_fn) -> Path:
    """`offline.n_prompts` train prompts x `offline.samples_per_prompt` policy samples (seeded,
    `generation.*` decoding), scored by `reward_fn` (a TRL-style callable), as JSONL records
    {"prompt", "response", "reward"}."""
    oc = cfg.offline
    task = make_task(cfg.task, seed=cfg.seed)
    prompts = [ex.prompt for ex in task.examples("train", oc.n_prompts) for _ in range(oc.samples_per_prompt)]
    responses = _policy_samples(cfg, policy_dir, prompts)
    rewards = reward_fn(prompts, responses)  # the policy is freed by now
    for i, r in enumerate(rewards):
        if r is None or not math.isfinite(r):
            raise ValueError(f"the reward function gave {r!r} for sample {i} (prompt {prompts[i]!r})")
    return write_offline_data(out_path, prompts, responses, rewards)


def _policy_samples(cfg: Config, policy_dir: str | Path, prompts: list[str]) -> list[str]:
    """One seeded sample per prompt from the policy in `policy_dir`, loaded here and freed on return."""
    tokenizer, model, hook = load_decoder(cfg, policy_dir)
    return sample_texts(model, tokenizer, prompts, cfg.generation, cfg.seed, logits_hook=hook)


def write_offline_data(path: str | Path, prompts: list[str], responses: list[str], rewards) -> Path:
    """Logged samples as JSONL records {"prompt", "response", "reward"} (`read_offline_data` reads them)."""
    records = [
        {"prompt": p, "response": c, "reward": float(r)} for p, c, r in zip(prompts, responses, rewards, strict=True)
    ]
    return write_jsonl(path, records)


def _check_record(record: dict[str, Any]) -> str | None:
    for key in ("prompt", "response"):
        if not isinstance(record.get(key), str):
            return f"'{key}' must be a string, got {record.get(key)!r}"
    reward = record.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        return f"'reward' must be a finite number, got {reward!r}"
    return None


def read_offline_data(path: str | Path) -> list[dict[str, Any]]:
    """The logged records; a malformed one is a ValueError naming file:line."""
    return read_jsonl(path, _check_record)


def encode(tokenizer, records: list[dict[str, Any]], max_length: int) -> list[tuple[list[int], int]]:
    """Per record: ids of the rendered prompt (`chat.render`, as sampling conditions on it) + response
    + eos cut to max_length, and the prompt length."""
    rows = []
    for r in records:
        prompt = tokenizer(render(tokenizer, r["prompt"]))["input_ids"]
        response = tokenizer(r["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(((prompt + response)[:max_length], len(prompt)))
    return rows


def collate(rows: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and attention (B, L); `mask` (B, L-1) is 1 where the action at position
    t (the token at t + 1) is a response token."""
    L = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), L), dtype=torch.long)
    mask = torch.zeros((len(rows), L - 1))
    for b, (row, prompt_len) in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        attn[b, : len(row)] = 1
        mask[b, prompt_len - 1 : len(row) - 1] = 1
    return {"ids": ids, "attn": attn, "mask": mask}


# ---- forward ------------------------------------------------------------------------------------


def trunk_forward(model, ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LM logits (B, L, V) and last hidden state (B, L, H), float32 (for checks on small batches;
    training reads `modeling.final_hidden` and the vocabulary a chunk at a time)."""
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=True)
    return out.logits.float(), out.hidden_states[-1].float()


@torch.no_grad()
def hidden_norm(model, batch: dict[str, torch.Tensor]) -> float:
    """The mean L2 norm of the trunk's last hidden state over a batch's real tokens (the scale the
    untrained Q heads are initialised against, `ILQLHeads`)."""
    hidden = final_hidden(model, batch["ids"], batch["attn"]).float()
    return hidden[batch["attn"].bool()].norm(dim=-1).mean().item()


def response_states(hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The states and actions of a batch's response tokens only, packed: hidden (B, L, H), ids (B, L),
    mask (B, L-1) -> states (N, H), actions (N,) with N = mask.sum(). Everything over the vocabulary
    is computed on these N rows (a chunk at a time), not on all B x (L-1) positions."""
    at = mask.bool()
    return hidden[:, :-1][at], ids[:, 1:][at]


def unpack(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) values of the response positions back to (B, L-1), 0 elsewhere (differentiable)."""
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask.bool(), values)


def method_coefficients(cfg: Config) -> tuple[float, float]:
    """(tau, cql alpha) for `offline.method`."""
    oc = cfg.offline
    if oc.method == "iql":
        return oc.tau, 0.0
    elif oc.method == "cql":
        return 0.5, oc.cql_alpha
    elif oc.method == "ilql":
        return oc.tau, oc.cql_alpha
    raise ValueError(f"offline.method must be iql, cql or ilql, got {oc.method!r}")


# ---- training -----------------------------------------------------------------------------------


def ilql_losses(model, heads: ILQLHeads, batch: dict[str, torch.Tensor], scores: torch.Tensor, cfg: Config):
    """The total loss and its parts for one batch; `scores` (B,) are normalised rewards."""
    oc = cfg.offline
    tau, alpha = method_coefficients(cfg)
    ids, mask = batch["ids"], batch["mask"]
    hidden = final_hidden(model, ids, batch["attn"]).float()  # (B, L, H); no (B, L, V) logits
    # Measured on tiny (benchmarks/offline_vs_ppo.py, composite-scored SFT samples, seed 0): every
    # setting that trained the trunk (heads' gradients and/or the LM term on the policy's own samples)
    # lost gold score against SFT (0.80-0.83 vs 0.845); heads on the frozen trunk, lm_coef 0, targets
    # that track (polyak 0.2) and a beta-2 decoding shift gained (0.873). That is the default.
    trunk = hidden if oc.heads_train_trunk else hidden.detach()
    states, actions = response_states(trunk, ids, mask)  # (N, H), (N,): s_t and a_t of response tokens
    q_taken = tuple(unpack(ILQLHeads.at(q, states, actions), mask) for q in (heads.q1, heads.q2))  # (B, L-1)
    qhat = unpack(heads.qhat_at(states, actions), mask)  # (B, L-1), no grad
    values = heads.v(trunk).squeeze(-1)  # (B, L)
    v, v_next = values[:, :-1], values[:, 1:]

    rewards, dones = terminal_rewards(scores, mask)
    lq, qinfo = q_loss(q_taken, rewards, v_next, dones, mask, oc.gamma)
    lv = expectile_loss(qhat - v, tau, mask)
    n, chunk = len(actions), positions_per_chunk(model)
    ones = torch.ones(1, 1, device=ids.device)

    def cql_sum(h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:  # (n, H), (n,) -> (1,): n x the chunk's mean
        return (cql_loss((heads.q1(h)[None], heads.q2(h)[None]), a[None], ones.expand(1, len(a))) * len(a))[None]

    lcql = torch.zeros((), device=ids.device)
    if alpha > 0 and n:
        lcql = map_chunks(cql_sum, states, actions, chunk=chunk).sum() / n
    weights = awac_weights(qhat, v, oc.awac_beta, oc.awac_max_weight)
    lm_states, _ = response_states(hidden, ids, mask)  # not detached: the LM term trains the trunk

    def lm_sum(h: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (weighted_lm_loss(output_logits(model, h)[None], a[None], w[None], ones.expand(1, len(a))) * len(a))[
            None
        ]

    with torch.set_grad_enabled(torch.is_grad_enabled() and oc.lm_coef > 0):  # else a logged number only
        w = weights[mask.bool()]
        llm = (
            map_chunks(lm_sum, lm_states, actions, w, chunk=chunk).sum() / n
            if n
            else torch.zeros((), device=ids.device)
        )
    total = lq + lv + alpha * lcql + oc.lm_coef * llm
    stats = {
        "losses/q": lq.item(),
        "losses/v": lv.item(),
        "losses/cql": lcql.item(),
        "losses/lm": llm.item(),
        "losses/total": total.item(),
        "values/q": qinfo["q_mean"],
        "values/v": masked_mean(v, mask).item(),
        "awac/weight": masked_mean(weights, mask).item(),
    }
    return total, stats


def save_shifted(model, heads: ILQLHeads, tokenizer, cfg: Config, out_dir: Path, log: list[dict]) -> Path:
    """The shifted decoder: the causal LM the heads were trained on, with `ILQL_HEADS` beside it in
    one atomic directory (`modeling.load_decoder` decodes it with the beta * (Q - V) shift)."""
    with atomic_directory(out_dir) as tmp:
        save_policy(model, tokenizer, cfg, tmp, {TRAIN_LOG: log})
        save_file({k: v.detach().contiguous() for k, v in heads.state_dict().items()}, tmp / ILQL_HEADS)
    return out_dir


def _progress(disable: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, disable=disable)


def train_offline(
    cfg: Config,
    policy_dir: str | Path,
    data_path: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    shifted_dir: str | Path | None = None,
) -> Path:
    """IQL / CQL / ILQL (`offline.method`) from the policy in `policy_dir` on the logged data, then
    the shifted policy extracted into the LM (`extract_policy`): writes that plain causal LM and
    `train_log.json` (both phases' rows, `phase` "heads" / "extract") to `out_dir`, and, when
    `shifted_dir` is given, the shifted decoder (the heads' LM + `ilql_heads.safetensors`) there."""
    oc = cfg.offline
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    records = read_offline_data(data_path)
    if not records:
        raise ValueError(f"offline data '{data_path}' holds no records")
    device = default_device()
    tokenizer, model = load_policy(policy_dir, train=True, device=device)
    rows = encode(tokenizer, records, oc.max_length)
    first = {k: v.to(device) for k, v in collate(rows[: oc.batch_size], tokenizer.pad_token_id).items()}
    heads = ILQLHeads(
        model.config.hidden_size, model.get_output_embeddings().weight.shape[0], hidden_norm(model, first)
    )
    heads.to(device)
    rewards = torch.tensor([r["reward"] for r in records], dtype=torch.float, device=device)
    std = rewards.std() if len(rewards) > 1 else torch.tensor(0.0)
    scores = (rewards - rewards.mean()) / (std if std > 1e-8 else 1.0)  # (N,)

    n = len(rows)
    steps = oc.max_steps if oc.max_steps > 0 else max(1, math.ceil(oc.epochs * n / oc.batch_size))
    if oc.lm_coef == 0 and not oc.heads_train_trunk:
        model.requires_grad_(False)  # nothing trains the LM: keep it out of the optimiser (and its weight decay)
    optimizer = torch.optim.AdamW([p for p in [*model.parameters(), *heads.parameters()] if p.requires_grad], lr=oc.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    model.train()

    log: list[dict[str, Any]] = []
    order: list[int] = []
    with _progress(not progress) as bar:
        bar_task = bar.add_task(oc.method.upper(), total=steps)
        for step in range(1, steps + 1):
            start = time.perf_counter()
            if len(order) < min(oc.batch_size, n):  # a fresh shuffled epoch
                order = torch.randperm(n, generator=generator).tolist()
            idx, order = order[: oc.batch_size], order[oc.batch_size :]
            batch = {k: v.to(device) for k, v in collate([rows[i] for i in idx], tokenizer.pad_token_id).items()}
            loss, stats = ilql_losses(model, heads, batch, scores[idx], cfg)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{oc.method} stopped at step {step}: the loss is not finite ({stats})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            heads.update_targets(oc.polyak)
            row = {
                "phase": "heads",
                "step": step,
                **stats,
                "charts/tokens_per_s": batch["mask"].sum().item() / (time.perf_counter() - start),
            }
            log.append(row)
            bar.update(bar_task, advance=1, description=f"{oc.method.upper()} loss {stats['losses/total']:.3f}")
    del optimizer  # the heads' AdamW moments (2 x 2 H V floats) are not needed to extract
    heads.zero_grad(set_to_none=True)
    model.eval()
    heads.eval()
    if shifted_dir is not None:
        save_shifted(model, heads, tokenizer, cfg, Path(shifted_dir), log)
    prompts = list(dict.fromkeys(r["prompt"] for r in records))
    student, distill_log = extract_policy(cfg, model, heads, tokenizer, prompts, rows, progress)
    return save_policy(student, tokenizer, cfg, out_dir, {TRAIN_LOG: log + distill_log})


# ---- extraction ---------------------------------------------------------------------------------


@torch.no_grad()
def shifted_states_log_probs(model, heads: ILQLHeads, states: torch.Tensor, beta: float) -> torch.Tensor:
    """log pi_beta(. | s) at states given by their final hidden states, (N, H) -> (N, V): the
    decoding shift (`modeling.ilql_decoding_shift`), normalised."""
    shifted = ilql_decoding_shift(output_logits(model, states), heads.qhat(states), heads.v(states), beta)
    return torch.log_softmax(shifted, -1)


def shifted_log_probs(model, heads: ILQLHeads, batch: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    """log pi_beta(. | s_t) at every state s_t of a batch, (B, L-1, V) (for tests and small batches:
    training reads `shifted_states_log_probs` a chunk of response states at a time)."""
    with torch.no_grad():
        hidden = final_hidden(model, batch["ids"], batch["attn"])[:, :-1]  # (B, L-1, H)
        flat = shifted_states_log_probs(model, heads, hidden.reshape(-1, hidden.shape[-1]), beta)
        return flat.reshape(*hidden.shape[:2], -1)


def distill_kl(student_logits: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) per state, summed over the vocabulary, masked mean over states.

    student_logits, teacher_logp (B, T, V); mask (B, T) -> scalar."""
    student_logp = torch.log_softmax(student_logits.float(), -1)
    kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)  # (B, T)
    return masked_mean(kl, mask)


def linear_extraction(model, heads: ILQLHeads, beta: float):
    """A copy of `model` whose output layer is W_lm + beta * (W_q1' + W_q2') / 2, its own (untied
    from the input embeddings, a plain `tie_word_embeddings: false` LM), the rest frozen.

    Since log_softmax and V(s) only move every token's logit at a state by the same amount, this
    decodes softmax(logits + beta * Q'(s, .)) with Q' the mean target head without its bias: the
    shift up to min(Q'_1, Q'_2) vs their mean and the biases, which `extract_policy` then fits.

    The copy shares `model`'s parameter tensors (its trunk is `model`'s, unchanged; a second 135M
    trunk would be 0.5 GB more): only the new output layer is its own."""
    student = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
    lm = student.get_output_embeddings()
    with torch.no_grad():
        q = (heads.target_q1.weight + heads.target_q2.weight) / 2  # (V, H)
        weight = lm.weight.detach().float() + beta * q.to(lm.weight.device)
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=lm.bias is not None, device=weight.device)
    head.weight = torch.nn.Parameter(weight.to(lm.weight.dtype))
    if lm.bias is not None:  # an output bias some architectures have (a Llama's has none)
        head.bias = torch.nn.Parameter(lm.bias.detach().clone())
    student.config.tie_word_embeddings = False
    student.set_output_embeddings(head)
    return student


def extract_policy(
    cfg: Config,
    model,
    heads: ILQLHeads,
    tokenizer,
    prompts: list[str],
    logged: list[tuple[list[int], int]],
    progress: bool = False,
) -> tuple[Any, list[dict[str, Any]]]:
    """A copy of `model` whose own next-token distribution is the shifted policy's,
    pi_beta = softmax(log_softmax(logits) + beta * (Qhat - V)) (beta `offline.decode_beta`): its
    output layer starts at `linear_extraction` and is fitted by KL(pi_beta || pi_LM) on every
    response state of the `logged` rows (`encode`) and of `offline.distill_samples_per_prompt`
    samples of pi_beta per prompt (`generation.*` decoding, seeded), for `offline.distill_epochs`
    passes at `offline.distill_lr`. `model` and `heads` stay as they are (the teacher). Returns the
    extracted LM (eval mode) and its log rows."""
    oc = cfg.offline
    device = next(model.parameters()).device
    rows = list(logged)
    if oc.distill_samples_per_prompt > 0 and prompts:
        repeated = [p for p in prompts for _ in range(oc.distill_samples_per_prompt)]
        hook = ilql_shift_hook(heads, oc.decode_beta)
        samples = sample_texts(model, tokenizer, repeated, cfg.generation, cfg.seed, logits_hook=hook)
        records = [{"prompt": p, "response": c} for p, c in zip(repeated, samples, strict=True)]
        rows += encode(tokenizer, records, oc.max_length)

    student = linear_extraction(model, heads, oc.decode_beta)
    student.train()
    optimizer = torch.optim.AdamW(student.get_output_embeddings().parameters(), lr=oc.distill_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed)
    n = len(rows)
    steps = max(1, math.ceil(oc.distill_epochs * n / oc.batch_size))

    def kl_sum(h: torch.Tensor) -> torch.Tensor:  # (n, H) -> (1,): n x the chunk's mean KL
        teacher_logp = shifted_states_log_probs(model, heads, h, oc.decode_beta)[None]  # (1, n, V)
        return (
            distill_kl(output_logits(student, h)[None], teacher_logp, torch.ones(1, len(h), device=h.device)) * len(h)
        )[None]

    log: list[dict[str, Any]] = []
    order: list[int] = []
    with _progress(not progress) as bar:
        bar_task = bar.add_task("extract", total=steps)
        for step in range(1, steps + 1):
            start = time.perf_counter()
            if len(order) < min(oc.batch_size, n):
                order = torch.randperm(n, generator=generator).tolist()
            idx, order = order[: oc.batch_size], order[oc.batch_size :]
            batch = {k: v.to(device) for k, v in collate([rows[i] for i in idx], tokenizer.pad_token_id).items()}
            # The student's trunk is the teacher's, frozen: one trunk pass gives both their states.
            with torch.no_grad():
                states, _ = response_states(
                    final_hidden(model, batch["ids"], batch["attn"]), batch["ids"], batch["mask"]
                )
            loss = map_chunks(kl_sum, states, chunk=positions_per_chunk(model)).sum() / max(len(states), 1)
            if not torch.isfinite(loss):
                raise RuntimeError(f"policy extraction stopped at step {step}: the KL is not finite ({loss.item()})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            log.append(
                {
                    "phase": "extract",
                    "step": step,
                    "losses/distill_kl": loss.item(),
                    "charts/tokens_per_s": batch["mask"].sum().item() / (time.perf_counter() - start),
                }
            )
            bar.update(bar_task, advance=1, description=f"extract KL {loss.item():.4f}")
    student.eval()
    return student, log
