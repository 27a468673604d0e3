"""TRL GRPO / RLOO wrapper: reward callables and weights, and smoke-size runs that train for real."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rlhfops.config import CONFIG_FILENAME, load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.reward.functions import CompositeReward, EnsembleReward, GoldReward
from rlhfops.rl.trl_online import TRAIN_LOG, prompt_dataset, reward_functions, train_trl_online

WEIGHTS = "scalarisation.weights={helpfulness: 0.4, harmlessness: 0.3, honesty: 0.2, conciseness: 0.1}"


def test_gold_rewards_one_per_objective_with_weights_in_order():
    cfg = load_config("smoke", ["policy.reward=gold", "reward.objectives=[honesty, helpfulness]", WEIGHTS])
    funcs, weights = reward_functions(cfg, None)
    assert all(isinstance(f, GoldReward) for f in funcs)
    assert [f.__name__ for f in funcs] == ["gold_honesty", "gold_helpfulness"]
    assert weights == [0.2, 0.4]
    assert funcs[1](["q: 2+3?\n", "q: 2+3?\n"], ["2+3=5\nanswer: 5", "answer: 7"]) == [1.0, 0.0]


def test_gold_needs_a_weight_for_every_objective():
    cfg = load_config("smoke", ["policy.reward=gold", "scalarisation.weights={helpfulness: 1.0}"])
    with pytest.raises(ValueError, match="no weight for harmlessness, honesty, conciseness"):
        reward_functions(cfg, None)


@pytest.fixture
def fake_ensembles(monkeypatch):
    """`load_ensembles` stand-in: ensembles are only stored here, never scored."""

    class Ensemble:
        def __init__(self, objective):
            self.objective = objective

    def load(rm_dir, objectives):
        return {o: Ensemble(o) for o in objectives}

    monkeypatch.setattr("rlhfops.rl.trl_online.load_ensembles", load)


def test_composite_rewards_one_ensemble_per_objective(fake_ensembles):
    cfg = load_config("smoke", [WEIGHTS, "reward.aggregation=uwo", "reward.uwo_lambda=0.5"])
    funcs, weights = reward_functions(cfg, "rm")
    assert all(isinstance(f, EnsembleReward) for f in funcs)
    assert [f.__name__ for f in funcs] == ["rm_helpfulness", "rm_harmlessness", "rm_honesty", "rm_conciseness"]
    assert weights == [0.4, 0.3, 0.2, 0.1]
    assert {(f.how, f.lam) for f in funcs} == {("uwo", 0.5)}


@pytest.mark.parametrize(
    "override",
    ["scalarisation.method=hierarchical", "reward.uncertainty_penalty=0.5", "shaping.enabled=true"],
)
def test_composite_falls_back_to_one_callable(fake_ensembles, override):
    funcs, weights = reward_functions(load_config("smoke", [WEIGHTS, override]), "rm")
    assert len(funcs) == 1 and isinstance(funcs[0], CompositeReward)
    assert funcs[0].__name__ == "composite" and weights == [1.0]


def test_prm_term_needs_a_prm(fake_ensembles):
    with pytest.raises(ValueError, match="no process reward model"):
        reward_functions(load_config("smoke", ["reward.prm_weight=0.5"]), "rm")


def test_composite_needs_reward_models():
    with pytest.raises(ValueError, match="no reward-model directory"):
        reward_functions(load_config("smoke"), None)


def test_prompt_dataset_cycles_a_small_split():
    cfg = load_config("smoke", ["policy.steps=5", "policy.prompts_per_step=4", "task.n_train=7"])
    prompts = prompt_dataset(cfg)["prompt"]
    assert len(prompts) == 20 and len(set(prompts)) == 7 and prompts[7:14] == prompts[:7]


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
