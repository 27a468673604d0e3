"""Alignment: every per-position quantity PPO and ILQL read off one batched forward pass (log-probs,
values, Q(s_t, a_t), V(s_{t+1}), TD targets, the action mask) equals what a forward pass over that one
prefix alone gives; whitening equals a reference that never sees the padding.

A quantity read one position early or late is still a tensor of the right shape, and the training
runs in test_ppo.py / test_ilql.py still learn a little with it, so only a position-by-position
recomputation catches it.
"""

import pytest
import torch

from rlhfops.config import load_config
from rlhfops.generation import generate
from rlhfops.modeling import ILQLHeads, init_policy, save_policy
from rlhfops.rl.ilql import collate, encode, ilql_losses
from rlhfops.rl.losses import masked_whiten
from rlhfops.rl.ppo import Critic, RolloutStates
from rlhfops.rl.ppo import forward as ppo_forward

ATOL = 2e-5


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny random Llama and the directory it is saved in (the value-model critic loads from it)."""
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    path = save_policy(model, tokenizer, cfg, tmp_path_factory.mktemp("alignment") / "policy")
    return tokenizer, model.eval(), path


def _last(model, prefix: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (V,) and last hidden state (H,) at the last position of one unpadded prefix."""
    out = model(input_ids=torch.tensor([prefix]), output_hidden_states=True)
    return out.logits[0, -1].float(), out.hidden_states[-1][0, -1].float()


# ---- whitening ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_value", [0.0, 50.0])
@pytest.mark.parametrize("shift_mean", [True, False])
def test_whitening_ignores_padding(pad_value, shift_mean):
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.float)
    x = torch.randn(3, 6, generator=g) * 2 + 1
    x = torch.where(mask.bool(), x, torch.full_like(x, pad_value))  # PPO whitens masked tensors (pads 0)
    real = x[mask.bool()]  # the reference sees only the real entries
    mean, var = real.mean(), real.var(unbiased=False)
    expected = (x - mean) / torch.sqrt(var + 1e-8) + (0 if shift_mean else mean)
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean), expected * mask)
    # the same row padded more is whitened the same
    wider = torch.cat([x, torch.full((3, 4), pad_value)], 1)
    wider_mask = torch.cat([mask, torch.zeros(3, 4)], 1)
    torch.testing.assert_close(masked_whiten(wider, wider_mask, shift_mean)[:, :6], expected * mask)


# ---- PPO ----------------------------------------------------------------------------------------


def _ppo_batch(tokenizer) -> dict:
    """Prompts of different lengths left-padded to P, completions right-padded to T, as the rollout
    builds them (`generation.generate`)."""
    prompts = [tokenizer(p)["input_ids"] for p in ("q: 12+7=", "q: 3*4-1=", "q: 5=")]
    completions = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in ("19", "11\n12", "5 ok")]
    completions = [c + [tokenizer.eos_token_id] for c in completions]
    P, T = max(map(len, prompts)), max(map(len, completions))
    pad = tokenizer.pad_token_id
    rows, attn, mask = [], [], []
    for p, c in zip(prompts, completions, strict=True):
        rows.append([pad] * (P - len(p)) + p + c + [pad] * (T - len(c)))
        attn.append([0] * (P - len(p)) + [1] * (len(p) + len(c)) + [0] * (T - len(c)))
        mask.append([1.0] * len(c) + [0.0] * (T - len(c)))
    attn = torch.tensor(attn)
    return {
        "ids": torch.tensor(rows),
        "attn": attn,
        "pos": (attn.cumsum(-1) - 1).clamp(min=0),
        "mask": torch.tensor(mask),
        "prompts": prompts,
        "completions": completions,
        "P": P,
    }


@pytest.mark.parametrize("kind", ["value_head", "value_model"])
def test_ppo_logprobs_and_values_match_one_prefix_at_a_time(policy, kind):
    tokenizer, actor, path = policy
    torch.manual_seed(0)
    critic = Critic(kind, actor.config.hidden_size, path).eval()
    if kind == "value_head":  # it starts at zero, which would hide a shifted read
        torch.nn.init.normal_(critic.head.weight, std=1.0)
        torch.nn.init.normal_(critic.head.bias, std=1.0)
    b = _ppo_batch(tokenizer)
    temperature = 0.7
    with torch.no_grad():
        out = ppo_forward(actor, critic, b["ids"], b["attn"], b["pos"], b["P"], temperature)
        T = b["mask"].shape[1]
        assert out["logprobs"].shape == out["values"].shape == (3, T)
        checked = 0
        for i, (prompt, completion) in enumerate(zip(b["prompts"], b["completions"], strict=True)):
            for t, token in enumerate(completion):
                # state of completion token t: the prompt and the completion tokens before it
                prefix = prompt + completion[:t]
                logits, hidden = _last(actor, prefix)
                logprob = torch.log_softmax(logits / temperature, -1)[token]
                if kind == "value_head":
                    value = critic.head(hidden)[0]
                else:
                    value = critic.model(input_ids=torch.tensor([prefix])).logits[0, -1, 0].float()
                torch.testing.assert_close(out["logprobs"][i, t], logprob, atol=ATOL, rtol=1e-4)
                torch.testing.assert_close(out["values"][i, t], value, atol=ATOL, rtol=1e-4)
                checked += 1
        assert checked == int(b["mask"].sum())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_and_values_are_the_forward_pass_ones(policy, temperature):
    """PPO takes the old log-probs and (value head) values off the rollout's own sampling passes
    (`RolloutStates`), not a second pass: they must equal `forward` on the sampled sequences."""
    tokenizer, actor, path = policy
    torch.manual_seed(0)
    critic = Critic("value_head", actor.config.hidden_size, path).eval()
    torch.nn.init.normal_(critic.head.weight, std=1.0)
    states = RolloutStates()
    prompts = ["q: 12+7?", "q: 3*4-1?", "q: 5/0?"]
    gen = generate(actor, tokenizer, prompts, 12, temperature=temperature, generator=torch.Generator().manual_seed(1),
                   logits_hook=states)  # fmt: skip
    ids = torch.cat([gen.prompt_ids, gen.completion_ids], 1)
    attn = torch.cat([gen.prompt_mask, gen.completion_mask], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    P, T = gen.prompt_ids.shape[1], gen.completion_ids.shape[1]
    mask = gen.completion_mask.bool()
    with torch.no_grad():
        out = ppo_forward(actor, critic, ids, attn, pos, P, temperature)
        rollout_values = critic(states.stacked(T), ids, attn, pos, P)
    torch.testing.assert_close(gen.logprobs[mask], out["logprobs"][mask], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rollout_values[mask], out["values"][mask], atol=1e-4, rtol=1e-4)


# ---- ILQL ---------------------------------------------------------------------------------------

RECORDS = [
    {"prompt": "q: 12+7=", "response": "19", "reward": 1.0},
    {"prompt": "q: 3*4-1=", "response": "11\n12", "reward": 0.0},
    {"prompt": "q: 5=", "response": "5 ok", "reward": 0.5},
]


def test_ilql_action_mask_covers_exactly_the_response_tokens(policy):
    tokenizer, _, _ = policy
    rows = encode(tokenizer, RECORDS, max_length=64)
    batch = collate(rows, tokenizer.pad_token_id)
    for i, (ids, prompt_len) in enumerate(rows):
        response = tokenizer(RECORDS[i]["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert ids[prompt_len:] == response
        # position t acts with token t + 1: a response action exactly when t + 1 is a response position
        expected = [float(prompt_len <= t + 1 < len(ids)) for t in range(batch["mask"].shape[1])]
        assert batch["mask"][i].tolist() == expected
        assert batch["mask"][i].sum() == len(response)  # the first response token and eos included


def test_ilql_losses_match_one_prefix_at_a_time(policy):
    tokenizer, model, _ = policy
    cfg = load_config("smoke", ["offline.method=ilql", "offline.gamma=0.9", "offline.awac_beta=1.0"])
    oc = cfg.offline
    torch.manual_seed(0)
    heads = ILQLHeads(model.config.hidden_size, model.get_output_embeddings().weight.shape[0])
    for layer in (heads.q1, heads.q2, heads.target_q1, heads.target_q2, heads.v):
        torch.nn.init.normal_(layer.weight, std=0.5)  # distinct, not near zero: a shifted read shows
        torch.nn.init.normal_(layer.bias, std=0.5)
    rows = encode(tokenizer, RECORDS, max_length=64)
    batch = collate(rows, tokenizer.pad_token_id)
    scores = torch.tensor([1.5, -0.7, 0.3])
    with torch.no_grad():
        _, stats = ilql_losses(model, heads, batch, scores, cfg)

    # per response action: the state is the prefix before it, the next state the prefix through it
    q_terms, v_terms, cql_terms, lm_terms, weights = [], [], [], [], []
    with torch.no_grad():
        for (ids, prompt_len), score in zip(rows, scores, strict=True):
            for t in range(prompt_len - 1, len(ids) - 1):
                action, last = ids[t + 1], t + 1 == len(ids) - 1
                logits, h = _last(model, ids[: t + 1])
                _, h_next = _last(model, ids[: t + 2])
                v, v_next = heads.v(h)[0], heads.v(h_next)[0]
                target = (score if last else 0.0) + oc.gamma * v_next * (0.0 if last else 1.0)
                q1, q2 = heads.q1(h), heads.q2(h)
                q_terms.append((q1[action] - target) ** 2 + (q2[action] - target) ** 2)
                qhat = torch.minimum(heads.target_q1(h), heads.target_q2(h))[action]
                diff = qhat - v
                v_terms.append((oc.tau if diff >= 0 else 1 - oc.tau) * diff**2)
                cql_terms.append(torch.logsumexp(q1, -1) - q1[action] + torch.logsumexp(q2, -1) - q2[action])
                w = torch.exp(oc.awac_beta * diff).clamp(max=oc.awac_max_weight)
                weights.append(w)
                lm_terms.append(-w * torch.log_softmax(logits, -1)[action])
    n = len(q_terms)
    assert n == int(batch["mask"].sum())
    assert stats["losses/q"] == pytest.approx((sum(q_terms) / n).item(), rel=1e-4, abs=ATOL)
    assert stats["losses/v"] == pytest.approx((sum(v_terms) / n).item(), rel=1e-4, abs=ATOL)
    assert stats["losses/cql"] == pytest.approx((sum(cql_terms) / n).item(), rel=1e-4, abs=ATOL)
    assert stats["losses/lm"] == pytest.approx((sum(lm_terms) / n).item(), rel=1e-4, abs=ATOL)
    assert stats["awac/weight"] == pytest.approx((sum(weights) / n).item(), rel=1e-4, abs=ATOL)
