import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfops.config import ScalarisationConfig
from rlhfops.reward.objectives import (
    fit_weight_model,
    grid_search,
    hierarchical,
    hypervolume,
    hypervolume_mc,
    pareto_mask,
    scalarise,
    select,
    simplex_grid,
    weighted_sum,
)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --- scalarisation ---------------------------------------------------------------------------


def test_weighted_sum_3x2():
    r = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    w = torch.tensor([0.5, 2.0])
    assert torch.equal(weighted_sum(r, w), torch.tensor([4.5, -2.0, 3.5]))


# columns: 0 harmlessness, 1 honesty, 2 helpfulness; priority harmless > honest > helpful
ORDER, MARKS = [0, 1, 2], [0.0, 0.0]


def test_hierarchical_failing_harmlessness_cannot_win_on_helpfulness():
    r = torch.tensor([[-0.1, 5.0, 100.0], [0.1, 0.2, -100.0]])
    s = hierarchical(r, ORDER, MARKS)
    assert s[1] > s[0]


def test_hierarchical_exact_values():
    r = torch.tensor(
        [
            [-0.5, 9.0, 9.0],  # fails harmlessness: L = 0, decided by harmlessness
            [0.3, -2.0, 9.0],  # passes harmlessness, fails honesty: L = 1, decided by honesty
            [0.0, 0.0, 1.5],  # passes both (>= is a pass): L = 2, decided by helpfulness
            [1.0, -0.1, 7.0],  # harmless, dishonest: L = 1 again
        ]
    )
    expected = torch.tensor([0 + sig(-0.5), 1 + sig(-2.0), 2 + sig(1.5), 1 + sig(-0.1)])
    torch.testing.assert_close(hierarchical(r, ORDER, MARKS), expected)


def test_hierarchical_within_level_the_current_objective_decides():
    # both fail honesty: the more honest wins, whatever harmlessness or helpfulness say
    r = torch.tensor([[5.0, -1.0, 50.0], [0.1, -0.5, -50.0]])
    s = hierarchical(r, ORDER, MARKS)
    assert s[1] > s[0]
    # both pass everything: helpfulness decides
    r = torch.tensor([[5.0, 5.0, 0.1], [0.0, 0.0, 0.2]])
    s = hierarchical(r, ORDER, MARKS)
    assert s[1] > s[0]
    assert ((s > 2) & (s < 3)).all()


def test_hierarchical_subset_order_and_single_objective():
    r = torch.tensor([[2.0, -3.0, 0.5]])
    # only helpfulness (col 2) behind harmlessness (col 0) with a pass mark of 1
    torch.testing.assert_close(hierarchical(r, [0, 2], [1.0]), torch.tensor([1 + sig(0.5)]))
    torch.testing.assert_close(hierarchical(r, [1], []), torch.tensor([sig(-3.0)]))
    with pytest.raises(ValueError, match="threshold"):
        hierarchical(r, [0, 1, 2], [0.0])


def test_scalarise_from_config():
    names = ["helpfulness", "harmlessness", "honesty", "conciseness"]
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, -1.0, 0.5, 0.0]])
    weighted = scalarise(r, names, ScalarisationConfig())
    torch.testing.assert_close(weighted, r.mean(dim=1))
    hier = scalarise(r, names, ScalarisationConfig(method="hierarchical"))
    torch.testing.assert_close(hier, torch.tensor([2 + sig(1.0), 0 + sig(-1.0)]))
    with pytest.raises(ValueError, match="no reward column"):
        scalarise(r[:, :3], names[:3], ScalarisationConfig())


# --- Pareto front and hypervolume ------------------------------------------------------------


def test_pareto_mask():
    pts = torch.tensor(
        [
            [1.0, 3.0],
            [2.0, 2.0],
            [1.0, 1.0],  # dominated by (2, 2)
            [2.0, 2.0],  # duplicate: both copies stay
            [1.0, 2.5],  # equal in x to (1, 3) but lower in y: dominated
            [3.0, 0.0],
        ]
    )
    assert pareto_mask(pts).tolist() == [True, True, False, True, False, True]


def test_hypervolume_2d_staircase():
    ref = torch.zeros(2)
    stair = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(stair, ref) == 6.0
    with_dominated = torch.cat([stair, torch.tensor([[1.5, 1.5], [2.0, 2.0]])])
    assert hypervolume(with_dominated, ref) == 6.0
    assert hypervolume(stair, torch.tensor([1.0, 1.0])) == 1.0  # (1, 3), (3, 1) sit on the ref: only (2, 2) counts


def test_hypervolume_points_not_above_ref_add_nothing():
    ref = torch.tensor([1.0, 1.0])
    assert hypervolume(torch.tensor([[0.5, 5.0], [3.0, 1.0]]), ref) == 0.0
    assert hypervolume(torch.tensor([[0.5, 5.0], [3.0, 2.0]]), ref) == 2.0
    assert hypervolume(torch.empty(0, 2), ref) == 0.0


def test_hypervolume_1d_and_3d():
    assert hypervolume(torch.tensor([[2.0], [5.0], [-1.0]]), torch.tensor([1.0])) == 4.0
    ref = torch.zeros(3)
    assert hypervolume(torch.tensor([[2.0, 3.0, 4.0]]), ref) == 24.0
    # two boxes: 2*2*2 + 1*1*4 - overlap 1*1*2
    two = torch.tensor([[2.0, 2.0, 2.0], [1.0, 1.0, 4.0]])
    assert hypervolume(two, ref) == 8 + 4 - 2
    # three boxes of 12; every pairwise and the triple intersection is the 2x2x2 cube
    three = torch.tensor([[3.0, 2.0, 2.0], [2.0, 3.0, 2.0], [2.0, 2.0, 3.0]])
    assert hypervolume(three, ref) == 3 * 12 - 3 * 8 + 8
    # from ref (1, 1, 1): boxes of 2, intersections the unit cube
    assert hypervolume(three, torch.ones(3)) == 3 * 2 - 3 * 1 + 1


def test_hypervolume_many_objectives_points_to_monte_carlo():
    with pytest.raises(ValueError, match=r"up to 3 objectives.*hypervolume_mc\(points, ref, n_samples, seed\)"):
        hypervolume(torch.ones(2, 4), torch.zeros(4))


def test_hypervolume_mc_close_to_exact():
    pts = torch.tensor([[3.0, 2.0, 2.0], [2.0, 3.0, 2.0], [2.0, 2.0, 3.0], [1.0, 1.0, 3.5]])
    exact = hypervolume(pts, torch.zeros(3))
    est = hypervolume_mc(pts, torch.zeros(3), n_samples=50_000, seed=0)
    assert abs(est - exact) / exact < 0.05
    assert est == hypervolume_mc(pts, torch.zeros(3), n_samples=50_000, seed=0)
    # 4-D: one box, all samples hit
    assert hypervolume_mc(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.zeros(4), n_samples=1000) == 24.0


coord = st.integers(min_value=0, max_value=4)
point_sets = st.integers(min_value=1, max_value=3).flatmap(
    lambda m: st.lists(st.lists(coord, min_size=m, max_size=m), min_size=1, max_size=7)
)


@settings(max_examples=150, deadline=None)
@given(point_sets)
def test_hypervolume_counts_unit_cells(rows):
    # integer points, ref 0: the volume is the number of unit cells below some point
    pts = torch.tensor(rows, dtype=torch.float64)
    m = pts.shape[1]
    cells = sum(
        any(all(p[i] >= c[i] + 1 for i in range(m)) for p in rows) for c in itertools.product(range(4), repeat=m)
    )
    assert hypervolume(pts, torch.zeros(m)) == cells


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=3).flatmap(
        lambda m: st.tuples(
            st.lists(st.lists(st.floats(-1, 10), min_size=m, max_size=m), min_size=1, max_size=8),
            st.lists(st.floats(-1, 10), min_size=m, max_size=m),
        )
    )
)
def test_hypervolume_monotone_and_front_only(data):
    rows, extra = data
    pts = torch.tensor(rows, dtype=torch.float64)
    ref = torch.zeros(pts.shape[1], dtype=torch.float64)
    hv = hypervolume(pts, ref)
    more = hypervolume(torch.cat([pts, torch.tensor([extra], dtype=torch.float64)]), ref)
    assert more >= hv - 1e-9 * max(1.0, hv)
    assert hypervolume(pts[pareto_mask(pts)], ref) == pytest.approx(hv, rel=1e-9, abs=1e-12)


# --- weight tuning ---------------------------------------------------------------------------


def test_simplex_grid():
    g = simplex_grid(3, 4)
    assert g.shape == (15, 3)
    torch.testing.assert_close(g.sum(dim=1), torch.ones(15))
    assert torch.equal(g * 4, (g * 4).round())
    assert len({tuple(row) for row in (g * 4).round().long().tolist()}) == 15
    assert g[0].tolist() == [0.0, 0.0, 1.0] and g[-1].tolist() == [1.0, 0.0, 0.0]
    assert simplex_grid(4, 10).shape == (math.comb(13, 3), 4)
    assert simplex_grid(1, 3).tolist() == [[1.0]]


def test_select_ties_go_to_lowest_index():
    r = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]])  # (1, 3, 2)
    assert select(r, torch.tensor([0.5, 0.5])).tolist() == [0]  # all three tie at 0.5
    assert select(r, torch.tensor([1.0, 0.0])).tolist() == [2]
    per_prompt = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert select(r.expand(2, 3, 2), per_prompt).tolist() == [1, 2]


def test_grid_search_finds_the_informative_objective():
    gen = torch.Generator().manual_seed(0)
    signal = torch.randn(40, 6, generator=gen)
    noise = torch.randn(40, 6, generator=gen)
    rewards = torch.stack([signal, noise], dim=-1)  # (P, C, 2): objective 0 predicts utility
    grid = simplex_grid(2, 4)
    res = grid_search(rewards, signal, grid)
    assert res.weights.tolist() == [1.0, 0.0]
    assert res.score == pytest.approx(signal.max(dim=1).values.mean().item())
    assert res.scores.shape == (5,) and res.scores.argmax().item() == 4
    assert res.per_prompt_best.shape == (40, 5) and res.per_prompt_best[:, 4].all()


def test_grid_search_ties_go_to_first_grid_vector():
    rewards = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # candidate 0 wins under every weight
    res = grid_search(rewards, torch.tensor([[1.0, 0.0]]), simplex_grid(2, 2))
    assert res.weights.tolist() == [0.0, 1.0] and res.per_prompt_best.all()


def test_fit_weight_model_learns_per_prompt_weights():
    gen = torch.Generator().manual_seed(0)
    p, c = 64, 8
    kind = torch.arange(p) % 2  # kind 0: utility follows objective 0; kind 1: objective 1
    rewards = torch.randn(p, c, 2, generator=gen)
    utility = rewards.gather(2, kind.view(p, 1, 1).expand(p, c, 1)).squeeze(2)  # (P, C)
    features = torch.nn.functional.one_hot(kind, 2).float()
    grid = simplex_grid(2, 10)

    global_best = grid_search(rewards, utility, grid).score
    model = fit_weight_model(features, rewards, utility, grid, epochs=200, lr=0.05, seed=0)
    w = model(features)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(p))
    assert (w[kind == 0, 0] > 0.5).all() and (w[kind == 1, 1] > 0.5).all()
    chosen = select(rewards, w)
    learned = utility.gather(1, chosen[:, None]).mean().item()
    assert learned > global_best + 0.2
    assert model.train_losses[-1] < model.train_losses[0]

    again = fit_weight_model(features, rewards, utility, grid, epochs=200, lr=0.05, seed=0)
    assert torch.equal(again(features), w)
    hidden = fit_weight_model(features, rewards, utility, grid, seed=1, hidden=8)
    torch.testing.assert_close(hidden(features).sum(dim=1), torch.ones(p))
