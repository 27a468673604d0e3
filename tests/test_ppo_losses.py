import math

import pytest
import torch

from rlhfops.rl.losses import (
    AdaptiveKLController,
    dense_step_rewards,
    explained_variance,
    gae,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)


def test_gae_against_a_hand_computed_trajectory():
    # One sequence of 3 real tokens and one pad; gamma 0.9, lambda 0.5.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 9.0]])  # the pad's value must be ignored
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 1.0 + 0.9 * 0.0 - 0.3  # the value after the last token is 0
    d1 = 0.0 + 0.9 * 0.3 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.5
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.4, a2 + 0.3, 0.0]]))


def test_gae_with_lambda_one_and_gamma_one_is_return_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0]]))


def test_kl_penalty_on_every_token_and_score_on_the_last_real_one():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = token_rewards(torch.tensor([10.0, 20.0]), logp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -1.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 10.1], [-0.1, 20.0, 0.0]]))


def test_dense_prm_rewards_land_on_the_separator_tokens():
    dense = dense_step_rewards([[1.0, 0.0], [0.75]], [[2, 5], [1]], shape=(2, 6), coef=0.5)
    expected = torch.zeros(2, 6)
    expected[0, 2], expected[0, 5], expected[1, 1] = 0.5, -0.5, 0.25
    torch.testing.assert_close(dense, expected)
    rewards, _ = token_rewards(torch.tensor([1.0, 0.0]), torch.zeros(2, 6), None, torch.ones(2, 6), 0.0, dense)
    assert rewards[0, 2] == 0.5 and rewards[0, 5] == 0.5  # -0.5 step reward + 1.0 outcome at the last token
    assert dense_step_rewards([[1.0]], [[9]], shape=(1, 6), coef=1.0).abs().sum() == 0  # cut off: dropped


def test_clipped_surrogate_values():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    loss, info = policy_loss(new, old, adv, torch.ones(1, 3), clip=0.2)
    # per token: -min(1.5, 1.2) = -1.2; -min(-0.5, -0.8) = 0.8; -min(1.1, 1.1) = -1.1
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.1) / 3)
    assert info["clip_frac"] == pytest.approx(2 / 3)
    expected_kl = sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)) / 3
    assert info["approx_kl"] == pytest.approx(expected_kl, rel=1e-5)


def test_clipped_value_loss_values():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[2.0, 1.0]])
    loss, info = value_loss(new, old, ret, torch.ones(1, 2), clip=0.2)
    # token 0: max((1-2)^2, (0.2-2)^2) = 3.24; token 1: max((0.1-1)^2, (0.1-1)^2) = 0.81
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.81) / 2)
    assert info["value_clip_frac"] == 0.5


def test_adaptive_kl_controller_update():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert ctl.update(9.0, 100) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error clipped at +0.2
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    assert ctl.update(5.4, 500) == pytest.approx(0.1 * (1 - 0.1 * 0.5))


def test_whitening_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = masked_whiten(x, mask)
    assert w[0, 3] == 0 and abs(w[0, :3].mean().item()) < 1e-6
    assert explained_variance(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3)) == 1.0
