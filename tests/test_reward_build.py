"""The one reward builder: what PPO, GRPO / RLOO, offline RL and Best-of-N optimise or select with."""

import pytest

from rlhfops.config import ConfigError, load_config
from rlhfops.reward.build import WeightedSum, best_of_n_scorer, build_reward, reward_fn, weighted_sum
from rlhfops.reward.functions import CompositeReward, EnsembleReward, GoldReward, ShapingReward

WEIGHTS = "scalarisation.weights={helpfulness: 0.4, harmlessness: 0.3, honesty: 0.2, conciseness: 0.1}"
PROMPT, WRONG, RIGHT = "q: 2+3*4?\n", "3*4=12\n2+12=15\nanswer: 15", "3*4=12\n2+12=14\nanswer: 14"


def test_gold_rewards_one_per_objective_with_weights_in_order():
    cfg = load_config("smoke", ["policy.reward=gold", "reward.objectives=[honesty, helpfulness]", WEIGHTS])
    funcs, weights = build_reward(cfg, "gold")
    assert all(isinstance(f, GoldReward) for f in funcs)
    assert [f.__name__ for f in funcs] == ["gold_honesty", "gold_helpfulness"]
    assert weights == [0.2, 0.4]
    assert funcs[1](["q: 2+3?\n", "q: 2+3?\n"], ["2+3=5\nanswer: 5", "answer: 7"]) == [1.0, 0.0]


def test_every_objective_needs_a_weight_for_every_source():
    cfg = load_config("smoke", ["scalarisation.weights={helpfulness: 1.0}"])
    for source in ("gold", "composite"):
        with pytest.raises(ValueError, match="no weight for harmlessness, honesty, conciseness"):
            build_reward(cfg, source, "rm")


def test_gold_reward_with_and_without_shaping():
    cfg = load_config("smoke")
    assert reward_fn(cfg, "gold")([PROMPT], [WRONG]) == [pytest.approx(0.75)]  # wrong but consistent: honest
    cfg.shaping.enabled = True
    shaped_wrong, shaped_right = reward_fn(cfg, "gold")([PROMPT, PROMPT], [WRONG, RIGHT])
    assert shaped_wrong == pytest.approx(0.75 + 0.25 * min(cfg.shaping.cap, 0.1 + 0.2 * 0.5 + 0.1))
    assert shaped_wrong < 1.0 <= shaped_right  # partial credit never outweighs the right answer


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_grpo_and_rloo_get_the_same_shaped_gold_reward_as_ppo(algorithm):
    """TRL sums `reward_funcs` with `reward_weights`; that sum is PPO's single reward, shaping included."""
    from rlhfops.rl import trl_online

    overrides = ["policy.reward=gold", "shaping.enabled=true", WEIGHTS]
    ppo = load_config("smoke", overrides)
    trl = load_config("smoke", [*overrides, f"policy.algorithm={algorithm}"])
    funcs, weights = trl_online.build_reward(trl, trl.policy.reward)
    assert any(isinstance(f, ShapingReward) for f in funcs)
    prompts, completions = [PROMPT, PROMPT, "q: 5/0?\n"], [WRONG, RIGHT, "answer: undefined"]
    per_func = [f(prompts, completions) for f in funcs]
    trl_total = [sum(w * col[i] for w, col in zip(weights, per_func, strict=True)) for i in range(len(prompts))]
    assert trl_total == pytest.approx(reward_fn(ppo, ppo.policy.reward)(prompts, completions))


@pytest.fixture
def fake_ensembles(monkeypatch):
    """`load_ensembles` stand-in: ensembles are only stored here, never scored."""

    class Ensemble:
        def __init__(self, objective):
            self.objective = objective

    def load(rm_dir, objectives):
        return {o: Ensemble(o) for o in objectives}

    monkeypatch.setattr("rlhfops.reward.build.load_ensembles", load)


def test_composite_rewards_one_ensemble_per_objective(fake_ensembles):
    cfg = load_config("smoke", [WEIGHTS, "reward.aggregation=uwo", "reward.uwo_lambda=0.5"])
    funcs, weights = build_reward(cfg, "composite", "rm")
    assert all(isinstance(f, EnsembleReward) for f in funcs)
    assert [f.__name__ for f in funcs] == ["rm_helpfulness", "rm_harmlessness", "rm_honesty", "rm_conciseness"]
    assert weights == [0.4, 0.3, 0.2, 0.1]
    assert {(f.how, f.lam) for f in funcs} == {("uwo", 0.5)}


@pytest.mark.parametrize(
    "override",
    ["scalarisation.method=hierarchical", "reward.uncertainty_penalty=0.5", "shaping.enabled=true"],
)
def test_composite_falls_back_to_one_callable(fake_ensembles, override):
    funcs, weights = build_reward(load_config("smoke", [WEIGHTS, override]), "composite", "rm")
    assert len(funcs) == 1 and isinstance(funcs[0], CompositeReward)
    assert funcs[0].__name__ == "composite" and weights == [1.0]


def test_prm_term_needs_a_prm(fake_ensembles, tmp_path):
    cfg = load_config("smoke", ["reward.prm_weight=0.5"])
    with pytest.raises(ValueError, match="reward.prm_weight above 0 needs a trained process reward model"):
        build_reward(cfg, "composite", "rm")
    with pytest.raises(ValueError, match=f"none in '{tmp_path}'"):
        build_reward(cfg, "composite", "rm", tmp_path)


def test_composite_needs_reward_models_and_a_known_source():
    with pytest.raises(ValueError, match="no directory was given"):
        build_reward(load_config("smoke"), "composite")
    with pytest.raises(ValueError, match="unknown reward source 'judge'"):
        build_reward(load_config("smoke"), "judge")


def test_weighted_sum_matches_trl_and_keeps_a_lone_unit_function():
    def a(p, c, **k):
        return [1.0] * len(c)

    def b(p, c, **k):
        return [float(len(x)) for x in c]

    assert weighted_sum([a], [1.0]) is a
    total = weighted_sum([a, b], [0.5, 2.0])
    assert isinstance(total, WeightedSum) and total.__name__ == "a+b"
    assert total(["p", "p"], ["x", "xyz"]) == [0.5 + 2.0, 0.5 + 6.0]
    with pytest.raises(ValueError, match="2 reward functions but 1 weights"):
        WeightedSum([a, b], [1.0])


def test_best_of_n_scorer_needs_a_prm_for_prm_scoring():
    cfg = load_config("smoke", ["best_of_n.scorer=prm"])
    with pytest.raises(ValueError, match="no process reward model was given"):
        best_of_n_scorer(cfg, {})


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["policy.algorithm=grpo", "policy.dense_prm=true"], "policy.dense_prm"),
        (["policy.algorithm=rloo", "policy.critic=value_model"], "policy.critic"),
        (["policy.algorithm=grpo", "policy.gamma=0.9"], "policy.gamma"),
        (["policy.algorithm=rloo", "policy.target_kl=null"], "policy.target_kl"),
        (["policy.group_size=8"], "policy.group_size"),
    ],
)
def test_a_key_the_algorithm_would_ignore_is_one_clear_error(overrides, key):
    with pytest.raises(ConfigError, match=rf": {key}=.* would be ignored: policy.algorithm is '\w+'"):
        load_config("smoke", overrides)


def test_keys_at_their_defaults_are_fine_for_every_algorithm():
    """tiny.yaml states every default, PPO's included: switching the algorithm must still load."""
    for algorithm in ("ppo", "grpo", "rloo"):
        assert load_config("tiny", [f"policy.algorithm={algorithm}"]).policy.algorithm == algorithm
