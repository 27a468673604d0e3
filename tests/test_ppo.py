"""Tiny real PPO runs: a synthetic reward is learned; the built-in task's reward rises with KL bounded."""

import json
from pathlib import Path

import pytest
import torch

from rlhfops.config import load_config
from rlhfops.modeling import init_policy, load_policy, save_policy
from rlhfops.reward.prm import response_step_tokens
from rlhfops.rl.ppo import TRAIN_LOG, VALUE_HEAD, roles, train_ppo
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
