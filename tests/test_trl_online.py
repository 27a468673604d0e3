"""TRL GRPO / RLOO wrapper: the prompt set and smoke-size runs that train for real (its rewards: test_reward_build)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rlhfops.config import CONFIG_FILENAME, load_config
from rlhfops.modeling import build_char_tokenizer, init_policy, save_policy
from rlhfops.rl.trl_online import TRAIN_LOG, prompt_dataset, train_trl_online


def test_prompt_dataset_cycles_a_small_split():
    cfg = load_config("smoke", ["policy.steps=5", "policy.prompts_per_step=4", "task.n_train=7"])
    prompts = prompt_dataset(cfg, build_char_tokenizer())["prompt"]
    assert len(prompts) == 20 and len(set(prompts)) == 7 and prompts[7:14] == prompts[:7]


def test_prompt_dataset_renders_for_a_chat_model_and_rewards_see_the_task_prompt():
    """TRL reads `prompt` (the chat template's text); reward callables get `task_prompt`."""
    from bpe_model import TOKENIZER_DIR

    from rlhfops.chat import render
    from rlhfops.modeling import load_tokenizer
    from rlhfops.rl.trl_online import TaskPromptReward

    tokenizer = load_tokenizer(TOKENIZER_DIR)
    cfg = load_config("smoke", ["policy.steps=2", "policy.prompts_per_step=3"])
    data = prompt_dataset(cfg, tokenizer)
    assert data["prompt"] == [render(tokenizer, p) for p in data["task_prompt"]]
    assert all(
        p.startswith("<|im_start|>") and not t.startswith("<|im_start|>")
        for p, t in zip(data["prompt"], data["task_prompt"], strict=True)
    )
    seen = []

    def gold_x(prompts, completions, **columns):
        seen.append(prompts)
        return [1.0] * len(prompts)

    wrapped = TaskPromptReward(gold_x)
    assert wrapped.__name__ == "gold_x"
    assert wrapped(data["prompt"], ["a"] * 6, task_prompt=data["task_prompt"]) == [1.0] * 6
    assert seen == [data["task_prompt"]]


def test_ppo_is_not_this_module(tmp_path):
    with pytest.raises(ValueError, match="PPO is rl/ppo.py"):
        train_trl_online(load_config("smoke", ["policy.algorithm=ppo"]), tmp_path, None, tmp_path / "out")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ws") / "models" / "sft"
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, path)
    return path


@pytest.mark.parametrize("algorithm, group_size", [("grpo", 4), ("rloo", 2)])
def test_smoke_run_trains_and_writes_the_policy(policy_dir, tmp_path, algorithm, group_size):
    steps = 3
    cfg = load_config(
        "smoke",
        [
            f"policy.algorithm={algorithm}",
            "policy.reward=gold",
            f"policy.steps={steps}",
            "policy.prompts_per_step=4",
            f"policy.group_size={group_size}",
            "policy.max_new_tokens=16",
            "policy.lr=1e-3",
        ],
    )
    out = train_trl_online(cfg, policy_dir, None, tmp_path / algorithm, progress=False)
    assert (out / "config.json").exists() and (out / CONFIG_FILENAME).exists()
    before, after = load_file(policy_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    log = json.loads((out / TRAIN_LOG).read_text())
    assert log[-1]["step"] == steps
    rewards = [row for row in log if "reward" in row]
    assert rewards and all(f"rewards/gold_{o}/mean" in rewards[0] for o in cfg.reward.objectives)
