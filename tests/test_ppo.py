"""Tiny real PPO runs: a synthetic reward is learned; the built-in task's reward rises with KL bounded."""

import json
from pathlib import Path

import pytest
import torch

from rlhfops.config import load_config
from rlhfops.modeling import init_policy, load_policy, save_policy
from rlhfops.reward.prm import response_step_tokens
from rlhfops.rl.ppo import TRAIN_LOG, VALUE_HEAD, RewardGuard, roles, train_ppo
from rlhfops.sft import run_sft

SYNTHETIC = [
    "policy.steps=30",
    "policy.prompts_per_step=32",
    "policy.max_new_tokens=8",
    "policy.lr=3e-3",
    "policy.eval_every=100",
    "policy.eval_prompts=16",
    "policy.kl_coef=0.0",
]


def ends_with_7(prompts, completions, **columns):
    return [float(c.endswith("7")) for c in completions]


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory) -> Path:
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    return save_policy(model, tokenizer, cfg, tmp_path_factory.mktemp("ppo") / "init")


def _log(out: Path) -> list[dict]:
    return json.loads((out / TRAIN_LOG).read_text())


def test_ppo_learns_a_synthetic_reward(init_dir, tmp_path):
    cfg = load_config("smoke", SYNTHETIC)
    out = train_ppo(cfg, init_dir, tmp_path / "ppo", progress=False, reward_fn=ends_with_7)
    rewards = [row["reward/mean"] for row in _log(out)]
    assert sum(rewards[:5]) / 5 < 0.1
    assert sum(rewards[-5:]) / 5 > 0.3
    assert (out / VALUE_HEAD).exists() and (out / "rlhfops_config.yaml").exists()
    row = _log(out)[-1]
    for key in (
        "reward/mean",
        "gold/composite",
        "kl/sequence",
        "policy/entropy",
        "policy/clip_frac",
        "losses/value",
        "value/explained_variance",
        "policy/approx_kl",
        "charts/tokens_per_s",
    ):
        assert key in row


def test_ppo_with_a_value_model_critic_runs(init_dir, tmp_path):
    cfg = load_config("smoke", [*SYNTHETIC, "policy.steps=3", "policy.critic=value_model"])
    out = train_ppo(cfg, init_dir, tmp_path / "ppo", progress=False, reward_fn=ends_with_7)
    assert len(_log(out)) == 3 and not (out / VALUE_HEAD).exists()


def test_ppo_raises_the_task_reward_with_kl_bounded(tmp_path):
    """From a smoke SFT policy, PPO on the gold composite: the reward rises, the KL stays bounded."""
    cfg = load_config("smoke", ["sft.max_steps=150", "task.n_train=2000"])
    sft = run_sft(cfg, tmp_path / "sft", progress=False)
    cfg = load_config(
        "smoke",
        [
            "policy.reward=gold",
            "policy.steps=25",
            "policy.prompts_per_step=32",
            "policy.max_new_tokens=24",
            "policy.lr=1e-3",
            "policy.eval_every=100",
            "policy.eval_prompts=16",
            "policy.kl_coef=0.05",
        ],
    )
    out = train_ppo(cfg, sft, tmp_path / "ppo", progress=False)
    log = _log(out)
    first = sum(r["reward/mean"] for r in log[:5]) / 5
    last = sum(r["reward/mean"] for r in log[-5:]) / 5
    assert last > first
    assert max(r["kl/sequence"] for r in log) < 10.0


def test_non_finite_loss_stops_with_a_clear_error(init_dir, tmp_path):
    cfg = load_config("smoke", [*SYNTHETIC, "policy.steps=2"])
    with pytest.raises(RuntimeError, match="loss is not finite"):
        train_ppo(cfg, init_dir, tmp_path / "ppo", progress=False, reward_fn=lambda p, c, **k: [float("nan")] * len(c))
    assert not (tmp_path / "ppo").exists()  # nothing half-written


def test_step_tokens_end_each_line(init_dir):
    tokenizer, _ = load_policy(init_dir)
    ids = tokenizer(["1+2=3\nanswer: 3<eos>"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert response_step_tokens(tokenizer, ids, torch.ones_like(ids), ["1+2=3\nanswer: 3"]) == [[5, 15]]
    assert response_step_tokens(tokenizer, ids, torch.zeros_like(ids), [""]) == [[]]  # an empty response: no step


@pytest.mark.parametrize("kl_coef, critic", [(0.05, "value_head"), (0.0, "value_model")])
def test_every_role_is_on_the_device_asked(init_dir, kl_coef, critic):
    """Actor, reference and critic all go where the rollout runs (here `meta`, a device other than
    the CPU the checkpoint loads on): a role left behind would fail this."""
    cfg = load_config("smoke", [f"policy.kl_coef={kl_coef}", f"policy.critic={critic}"])
    _, actor, reference, critic_model = roles(cfg, init_dir, torch.device("meta"))
    models = [actor, critic_model] + ([reference] if reference is not None else [])
    assert (reference is not None) == (kl_coef > 0)
    assert {p.device.type for m in models for p in m.parameters()} == {"meta"}
    assert {p.dtype for m in models for p in m.parameters()} == {torch.float32}


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_shipped_accelerate_configs_load(configs_dir, name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(configs_dir / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type == "DEEPSPEED"
    assert config.deepspeed_config["zero_stage"] == int(name[-1])


def test_ppo_with_dense_prm_rewards_runs(init_dir, tmp_path):
    """The process-supervision path: PRM step rewards on the separators are logged and trained on."""
    from rlhfops.reward.prm import train_prm_on_task

    cfg = load_config("smoke", ["prm.max_steps=5", "prm.n_prompts=40", "prm.n_val_prompts=20"])
    prm = tmp_path / "prm"
    train_prm_on_task(cfg, init_dir, tmp_path / "steps", prm, progress=False)
    cfg = load_config("smoke", [*SYNTHETIC, "policy.steps=2", "policy.dense_prm=true", "policy.max_new_tokens=16"])
    out = train_ppo(cfg, init_dir, tmp_path / "ppo", prm_dir=prm, progress=False, reward_fn=ends_with_7)
    assert all("reward/dense_prm" in row for row in _log(out))
    with pytest.raises(ValueError, match="needs a trained process reward model"):
        train_ppo(cfg, init_dir, tmp_path / "ppo2", progress=False, reward_fn=ends_with_7)


def test_reward_guard_normalises_by_the_first_rollout_then_clips():
    guard = RewardGuard(normalize=True, clip=1.5, max_spread_growth=None)
    first = guard(torch.tensor([1.0, 3.0]))  # mean 2, std 1
    torch.testing.assert_close(first, torch.tensor([-1.0, 1.0]))
    later = guard(torch.tensor([2.0, 6.0, -2.0]))  # the first rollout's statistics, then the clip
    torch.testing.assert_close(later, torch.tensor([0.0, 1.5, -1.5]))
    assert guard.mean == 2.0 and guard.std == 1.0
    raw = RewardGuard(normalize=False, clip=10.0, max_spread_growth=None)
    torch.testing.assert_close(raw(torch.tensor([0.5, 20.0])), torch.tensor([0.5, 10.0]))


def test_reward_guard_stops_on_spread_growth_from_the_first_rollout_or_on_kl():
    guard = RewardGuard(normalize=False, clip=10.0, max_spread_growth=1.5, max_kl=2.0)
    assert guard.spread_growth(None) is None and guard.stop_reason(None, 0.5) is None
    assert guard.spread_growth(torch.tensor([0.1, 0.3])) == pytest.approx(1.0)
    assert guard.stop_reason(guard.spread_growth(torch.tensor([0.2, 0.3])), 0.5) is None  # 1.25x: within
    assert "spread 2.00x" in guard.stop_reason(guard.spread_growth(torch.tensor([0.4, 0.4])), 0.5)
    assert "KL to the reference 2.50 > 2.0" in guard.stop_reason(1.0, 2.5)
    assert RewardGuard(False, 10.0, None, None).stop_reason(100.0, 100.0) is None  # no bounds: never


class GrowingDisagreement:
    """A composite-like reward (`vectors`): scores reward ending in 7; the ensembles' spread doubles
    from the third call on, as if the policy had left what the reward models agree on."""

    def __init__(self):
        self.calls = 0

    def vectors(self, prompts, completions):
        self.calls += 1
        spread = 0.1 if self.calls < 3 else 0.2
        return {
            "total": torch.tensor(ends_with_7(prompts, completions)),
            "spreads": torch.full((len(completions), 2), spread),
        }


def test_ppo_stops_when_the_reward_models_disagree_past_the_bound(init_dir, tmp_path):
    cfg = load_config("smoke", [*SYNTHETIC, "policy.steps=6", "policy.max_spread_growth=1.5"])
    reward = GrowingDisagreement()
    out = train_ppo(cfg, init_dir, tmp_path / "ppo", progress=False, reward_fn=reward)
    log = _log(out)
    assert [row["update"] for row in log] == [1, 2, 3] and reward.calls == 3
    assert "stopped" in log[-1] and "stopped" not in log[-2]
    assert log[-1]["reward/spread_growth"] == pytest.approx(2.0)
    assert "losses/policy" not in log[-1] and "gold/composite" in log[-1]  # no update on that batch, evaluated
    # the KL bound: a synthetic reward at this step size leaves the reference fast
    cfg = load_config("smoke", [*SYNTHETIC, "policy.steps=30", "policy.kl_coef=0.05", "policy.max_kl=0.5"])
    log = _log(train_ppo(cfg, init_dir, tmp_path / "kl", progress=False, reward_fn=ends_with_7))
    assert len(log) < 30 and "KL to the reference" in log[-1]["stopped"] and log[-1]["kl/sequence"] > 0.5
    assert f"kept the policy of update {len(log) - 1}" in log[-1]["stopped"]
    assert all(row["kl/sequence"] <= 0.5 for row in log[:-1])
    # without the bounds the same reward trains every update
    cfg = load_config("smoke", [*SYNTHETIC, "policy.steps=4"])
    assert len(_log(train_ppo(cfg, init_dir, tmp_path / "all", progress=False, reward_fn=GrowingDisagreement()))) == 4
