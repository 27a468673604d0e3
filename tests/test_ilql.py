"""ILQL: exact losses on hand-built tensors, then a tiny real offline run on logged samples."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rlhfops.config import load_config
from rlhfops.generation import generate
from rlhfops.modeling import (
    ILQLHeads,
    ilql_decoding_shift,
    init_policy,
    load_decoder,
    load_policy,
    polyak_update,
    save_policy,
)
from rlhfops.reward.build import reward_fn
from rlhfops.rl.ilql import (
    build_offline_data,
    distill_kl,
    method_coefficients,
    read_offline_data,
    train_offline,
    trunk_forward,
)
from rlhfops.rl.losses import (
    awac_weights,
    cql_loss,
    expectile_loss,
    q_loss,
    terminal_rewards,
    weighted_lm_loss,
)
from rlhfops.workspace import ILQL_HEADS, TRAIN_LOG

# ---- exact losses -------------------------------------------------------------------------------


def test_expectile_loss_is_asymmetric():
    assert expectile_loss(torch.tensor([2.0]), 0.7).item() == pytest.approx(0.7 * 4)
    assert expectile_loss(torch.tensor([-2.0]), 0.7).item() == pytest.approx(0.3 * 4)
    # masked mean over both sides
    loss = expectile_loss(torch.tensor([[1.0, -3.0, 100.0]]), 0.9, torch.tensor([[1.0, 1.0, 0.0]]))
    assert loss.item() == pytest.approx((0.9 * 1 + 0.1 * 9) / 2)


def test_terminal_rewards_and_q_loss_target():
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    rewards, dones = terminal_rewards(torch.tensor([2.0, -1.0]), mask)
    assert rewards.tolist() == [[0, 0, 0, 2.0], [0, 0, -1.0, 0]]
    assert dones.tolist() == [[0, 0, 0, 1.0], [0, 0, 1.0, 0]]

    gamma = 0.5
    next_v = torch.tensor([[10.0, 4.0, 6.0, 99.0], [10.0, 8.0, 99.0, 99.0]], requires_grad=True)
    q = torch.zeros(2, 4, requires_grad=True)
    loss, info = q_loss((q, q), rewards, next_v, dones, mask, gamma)
    # targets on the masked positions: gamma * V(s') before the end, the reward at it (no bootstrap)
    targets = [0.5 * 4.0, 0.5 * 6.0, 2.0, 0.5 * 8.0, -1.0]
    expected = 2 * sum(t**2 for t in targets) / 5
    assert loss.item() == pytest.approx(expected)
    assert info["q_mean"] == 0.0
    loss.backward()
    assert next_v.grad is None  # V(s') is detached
    # dQ at position (0, 1): 2 heads * 2 * (0 - 2.0) / 5
    assert q.grad[0, 1].item() == pytest.approx(2 * 2 * (0 - 2.0) / 5)


def test_cql_loss_value():
    q = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # (1, 2, 3)
    actions = torch.tensor([[2, 0]])
    mask = torch.tensor([[1.0, 1.0]])
    lse = math.log(math.e + math.e**2 + math.e**3)
    per_head = ((lse - 3.0) + (math.log(3.0) - 0.0)) / 2
    assert cql_loss((q,), actions, mask).item() == pytest.approx(per_head)
    assert cql_loss((q, q), actions, mask).item() == pytest.approx(2 * per_head)
    assert cql_loss((q,), actions, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(lse - 3.0)


def test_awac_weights_and_clip():
    qhat, v = torch.tensor([[1.0, 0.0, 5.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    w = awac_weights(qhat, v, beta=1.0, max_weight=20.0)
    assert w[0].tolist() == pytest.approx([math.e, math.exp(-1), 20.0])
    assert torch.equal(awac_weights(qhat, v, beta=0.0, max_weight=20.0), torch.ones(1, 3))
    assert not awac_weights(qhat.requires_grad_(), v, 1.0, 20.0).requires_grad
    # beta 0: the weighted LM loss is the plain masked cross-entropy
    logits = torch.randn(2, 3, 5)
    actions = torch.randint(0, 5, (2, 3))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    ce = torch.nn.functional.cross_entropy(logits[mask.bool()], actions[mask.bool()])
    assert weighted_lm_loss(logits, actions, torch.ones(2, 3), mask).item() == pytest.approx(ce.item(), rel=1e-6)


def test_polyak_update():
    target, source = nn.Linear(2, 2), nn.Linear(2, 2)
    nn.init.constant_(target.weight, 1.0)
    nn.init.constant_(target.bias, 0.0)
    nn.init.constant_(source.weight, 3.0)
    nn.init.constant_(source.bias, 10.0)
    polyak_update(target, source, 0.25)
    assert torch.allclose(target.weight, torch.full((2, 2), 0.75 * 1 + 0.25 * 3))
    assert torch.allclose(target.bias, torch.full((2,), 2.5))
    assert torch.allclose(source.weight, torch.full((2, 2), 3.0))


def test_decoding_shift():
    logits = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    qhat = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    v = torch.tensor([1.0, 2.0])
    out = ilql_decoding_shift(logits, qhat, v, beta=0.5)
    log_half = math.log(0.5)
    assert out.flatten().tolist() == pytest.approx([log_half + 0.0, log_half + 1.0, log_half - 1.0, log_half + 0.0])
    assert torch.allclose(ilql_decoding_shift(logits, qhat, v, 0.0), torch.log_softmax(logits, -1))


def test_method_switch():
    assert method_coefficients(load_config(None, ["offline.method=iql", "offline.tau=0.8"])) == (0.8, 0.0)
    assert method_coefficients(load_config(None, ["offline.method=cql", "offline.cql_alpha=0.3"])) == (0.5, 0.3)
    assert method_coefficients(load_config(None, ["offline.method=ilql", "offline.tau=0.8"])) == (0.8, 0.1)


# ---- data ---------------------------------------------------------------------------------------


def test_bad_record_names_file_and_line(tmp_path):
    path = tmp_path / "offline.jsonl"
    good = {"prompt": "solve: 1+1", "response": "2", "reward": 1.0}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "reward": "high"}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: 'reward'"):
        read_offline_data(path)
    path.write_text(json.dumps({**good, "response": None}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:1: 'response'"):
        read_offline_data(path)
    path.write_text(json.dumps(good) + "\n" + '{"prompt": "x", "response": "y", "reward": NaN}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: .*NaN"):
        read_offline_data(path)
    for bad in ("null", "1e999"):  # missing, and a number JSON parses as infinity
        path.write_text(json.dumps(good) + "\n" + f'{{"prompt": "x", "response": "y", "reward": {bad}}}\n')
        with pytest.raises(ValueError, match=rf"{path}:2: 'reward' must be a finite number"):
            read_offline_data(path)


# ---- tiny real run ------------------------------------------------------------------------------

SMOKE = [
    "offline.n_prompts=24",
    "offline.samples_per_prompt=2",
    "offline.max_steps=40",
    "offline.batch_size=16",
    "offline.lr=3e-3",
    "offline.polyak=0.1",
    "generation.max_new_tokens=16",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(start policy, logged data, extracted LM, shifted decoder)."""
    cfg = load_config("smoke", SMOKE)
    root = tmp_path_factory.mktemp("ilql")
    tokenizer, model = init_policy(cfg)
    init_dir = save_policy(model, tokenizer, cfg, root / "init")
    data = build_offline_data(cfg, init_dir, root / "offline.jsonl", reward_fn(cfg, "gold"))
    out = train_offline(cfg, init_dir, data, root / "ilql", progress=False, shifted_dir=root / "shifted")
    return init_dir, data, out, root / "shifted"


def test_offline_data_records(trained):
    _, data, _, _ = trained
    records = read_offline_data(data)
    assert len(records) == 24 * 2
    assert len({r["reward"] for r in records}) > 1  # the gold judges tell samples apart


def test_offline_training_learns_and_saves(trained):
    init_dir, _, out, shifted = trained
    log = json.loads((out / TRAIN_LOG).read_text())
    heads_log = [r for r in log if r["phase"] == "heads"]
    assert len(heads_log) == 40
    first = sum(r["losses/total"] for r in heads_log[:5]) / 5
    last = sum(r["losses/total"] for r in heads_log[-5:]) / 5
    assert last < first
    for key in ("losses/q", "losses/v", "losses/cql", "losses/lm", "losses/total"):
        assert all(math.isfinite(r[key]) for r in heads_log)
    # the deployable candidate is a plain causal LM; the heads live only in the shifted decoder
    assert not (out / ILQL_HEADS).exists() and (out / "rlhfops_config.yaml").exists()
    assert (shifted / ILQL_HEADS).exists()
    _, trunk = load_policy(shifted)  # frozen by default (lm_coef 0, heads on a detached trunk)
    _, start = load_policy(init_dir)
    assert all(torch.equal(a, b) for a, b in zip(trunk.parameters(), start.parameters(), strict=True))
    _, extracted = load_policy(out)  # the shift in its own output layer, the trunk as it was
    assert not extracted.config.tie_word_embeddings
    assert not torch.equal(extracted.lm_head.weight, start.lm_head.weight)
    kept = dict(start.model.named_parameters())
    assert all(torch.equal(p, kept[name]) for name, p in extracted.model.named_parameters())


def test_extraction_moves_the_lm_to_the_shifted_policy(trained):
    """KL(pi_beta || pi) on the logged states falls: the extracted LM is nearer the shifted policy
    than the start LM is, and its log shows the distillation KL falling."""
    from rlhfops.rl.ilql import collate, encode, shifted_log_probs

    _, data, out, shifted = trained
    cfg = load_config("smoke", SMOKE)
    tokenizer, trunk, hook = load_decoder(cfg, shifted, device=torch.device("cpu"))
    _, extracted = load_policy(out, train=False)
    batch = collate(encode(tokenizer, read_offline_data(data), cfg.offline.max_length), tokenizer.pad_token_id)
    teacher = shifted_log_probs(trunk, hook.heads, batch, cfg.offline.decode_beta)
    with torch.no_grad():
        before = distill_kl(trunk_forward(trunk, batch["ids"], batch["attn"])[0][:, :-1], teacher, batch["mask"])
        after = distill_kl(trunk_forward(extracted, batch["ids"], batch["attn"])[0][:, :-1], teacher, batch["mask"])
    assert after.item() < 0.05 * before.item(), (before.item(), after.item())
    kls = [r["losses/distill_kl"] for r in json.loads((out / TRAIN_LOG).read_text()) if r["phase"] == "extract"]
    assert kls and kls[-1] < kls[0]


def test_distill_kl_value():
    teacher = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))  # (1, 2, 2)
    student_logits = torch.log(torch.tensor([[[0.25, 0.75], [0.9, 0.1]]]))
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert distill_kl(student_logits, teacher, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(kl0 / 2)
    assert distill_kl(student_logits, teacher, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(0.0, abs=1e-7)


def test_trunk_trains_when_asked(trained, tmp_path):
    init_dir, data, _, _ = trained
    cfg = load_config("smoke", [*SMOKE, "offline.max_steps=3", "offline.heads_train_trunk=true", "offline.lm_coef=1"])
    kwargs = {"progress": False, "shifted_dir": tmp_path / "shifted"}
    train_offline(cfg, init_dir, data, tmp_path / "ilql", **kwargs)
    _, model = load_policy(tmp_path / "shifted")
    _, start = load_policy(init_dir)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), start.parameters(), strict=True))


def test_ilql_decoding_shift_changes_samples(trained):
    _, _, _, out = trained
    prompts = ["solve: 3+4", "solve: 2*5-1", "what is 7/0?"]

    def sample(beta):
        tokenizer, model, hook = load_decoder(load_config("smoke", [*SMOKE, f"offline.decode_beta={beta}"]), out)
        return generate(model, tokenizer, prompts, 12, logits_hook=hook, generator=torch.Generator().manual_seed(0))

    plain, shifted = sample(0.0), sample(8.0)
    assert torch.equal(plain.completion_ids, sample(0.0).completion_ids)  # seeded
    assert plain.texts != shifted.texts


def test_load_heads_without_heads_is_a_clear_error(trained):
    init_dir, _, out, _ = trained
    with pytest.raises(FileNotFoundError, match="ilql_heads"):
        ILQLHeads.load(init_dir)
    assert load_decoder(load_config("smoke"), init_dir).hook is None  # a plain policy decodes plainly
    assert load_decoder(load_config("smoke"), out).hook is None  # so does the extracted offline candidate


def test_decoding_shift_uses_the_cached_hidden_state_exactly(trained):
    """The hook gets generate's last hidden state (KV cache); a full forward pass over the same
    prefix gives the same shifted logits at every step."""
    _, _, _, out = trained
    tokenizer, model, hook = load_decoder(load_config("smoke", [*SMOKE, "offline.decode_beta=2"]), out)
    seen = []

    def recording(ids, logits, last):
        seen.append((ids.clone(), logits.clone(), hook(ids, logits, last)))
        return seen[-1][2]

    recording.needs_hidden = True
    generate(
        model,
        tokenizer,
        ["solve: 3+4", "what is 7/0?"],
        6,
        logits_hook=recording,
        generator=torch.Generator().manual_seed(0),
    )
    pad = tokenizer.pad_token_id
    for ids, logits, shifted in seen:
        attn = ((ids != pad).cumsum(-1) > 0).long()
        _, hidden = trunk_forward(model, ids, attn)
        heads = hook.heads
        expected = ilql_decoding_shift(logits, heads.qhat(hidden[:, -1]), heads.v(hidden[:, -1]).squeeze(-1), 2.0)
        torch.testing.assert_close(shifted, expected, atol=1e-4, rtol=1e-4)


def test_best_of_n_samples_an_offline_policy_with_its_shift(trained):
    from rlhfops.inference.best_of_n import _policy_version, sample

    _, _, _, out = trained
    cfg = load_config("smoke", [*SMOKE, "offline.decode_beta=8"])
    tokenizer, model, hook = load_decoder(cfg, out)
    assert hook is not None and hook.needs_hidden

    def draw(logits_hook):
        gen = torch.Generator().manual_seed(0)
        kwargs = {"generation": cfg.generation, "generator": gen, "batch_size": 8, "logits_hook": logits_hook}
        return sample(model, tokenizer, ["solve: 3+4", "what is 7/0?"], 3, **kwargs)

    assert draw(hook) != draw(None)
    # cached Best-of-N candidates are keyed by the decoding shift too
    assert _policy_version(cfg, out) != _policy_version(load_config("smoke", [*SMOKE, "offline.decode_beta=1"]), out)


def test_untrained_heads_barely_shift_a_bpe_models_next_token_distribution(tmp_path):
    """The heads start scaled to the trunk's hidden-state norm, so before training the decoding
    shift beta * (Qhat - V) at beta 2 moves the policy's next-token distribution by a tiny KL on a
    49,152-token vocabulary (issue 20: 0.284 nats per token on SmolLM2 with a fixed weight std)."""
    from bpe_model import tiny_bpe_policy

    from rlhfops.rl.ilql import collate, encode, hidden_norm

    cfg = load_config("smoke")
    tokenizer, model = load_policy(tiny_bpe_policy(tmp_path / "bpe"))
    records = [{"prompt": f"q: {a}+{a}?", "response": f"{a}+{a}={2 * a}\nanswer: {2 * a}"} for a in range(8)]
    batch = collate(encode(tokenizer, records, 128), tokenizer.pad_token_id)
    torch.manual_seed(0)
    heads = ILQLHeads(model.config.hidden_size, len(tokenizer), hidden_norm(model, batch))
    with torch.no_grad():
        logits, hidden = trunk_forward(model, batch["ids"], batch["attn"])
        real = batch["attn"].bool()
        shifted = ilql_decoding_shift(logits[real], heads.qhat(hidden[real]), heads.v(hidden[real]), beta=2.0)
        base = torch.log_softmax(logits[real], -1)
        kl = (shifted.log_softmax(-1).exp() * (shifted.log_softmax(-1) - base)).sum(-1).mean().item()
    assert cfg.offline.decode_beta == 2.0 and kl < 1e-4, kl
