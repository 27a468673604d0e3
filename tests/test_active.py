import pytest

from rlhfops.annotation.active import prompt_uncertainty, select_prompts


def test_uncertainty_is_the_mean_spread_over_responses_and_objectives():
    spreads = [{"a": 0.2, "b": 0.4}, {"a": 0.6, "b": 0.0}, {"a": 1.0, "b": 1.0}]
    assert prompt_uncertainty(spreads, [[0, 1], [2]]) == pytest.approx([0.3, 1.0])


def test_most_uncertain_first_within_the_budget():
    assert select_prompts([0.1, 0.9, 0.5, 0.9], 4, 3, "uncertainty", 0) == [1, 3, 2]
    assert select_prompts([0.1, 0.9, 0.5], 3, None, "uncertainty", 0) == [1, 2, 0]
    assert select_prompts([0.1, 0.9], 2, 10, "uncertainty", 0) == [1, 0]


def test_random_or_no_ensemble_is_a_seeded_sample():
    a = select_prompts(None, 50, 10, "uncertainty", 3)
    assert a == select_prompts([0.0] * 50, 50, 10, "random", 3) and len(set(a)) == 10
    assert a != select_prompts(None, 50, 10, "uncertainty", 4)
    with pytest.raises(ValueError, match="strategy"):
        select_prompts(None, 3, 1, "greedy", 0)
