"""Multi-objective rewards: scalarisation, Pareto fronts, hypervolume and weight tuning.

A reward vector per sample is a float tensor `rewards: (N, M)`, one column per objective in a
known order (`names`, e.g. `reward.objectives`). Everything here maximises.

- `weighted_sum` and `hierarchical` turn the vector into one number; `scalarise` picks one from
  a `ScalarisationConfig` (a flat if/elif on `method`).
- `pareto_mask`, `hypervolume` (exact for M <= 3) and `hypervolume_mc` (any M) describe a front.
- `simplex_grid`, `select` and `grid_search` tune weights on a validation set whose candidates
  have a true utility; `fit_weight_model` learns per-prompt weights from prompt features.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from rlhfops.config import ScalarisationConfig

# ---------------------------------------------------------------------------------------------
# scalarisation


def weighted_sum(rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear scalarisation `s_n = sum_m w_m r_{n,m}`.

    rewards (N, M), weights (M,) -> (N,).

    >>> weighted_sum(torch.tensor([[1.0, 2.0]]), torch.tensor([0.5, 0.25]))
    tensor([1.])
    """
    if rewards.ndim != 2 or weights.shape != rewards.shape[-1:]:
        raise ValueError(
            f"weighted_sum needs rewards (N, M) and weights (M,), got {tuple(rewards.shape)} and {tuple(weights.shape)}"
        )
    return rewards @ weights.to(rewards.dtype)


def hierarchical(rewards: torch.Tensor, order: list[int], thresholds: list[float]) -> torch.Tensor:
    """Priority-order (lexicographic with pass marks) scalarisation.

    rewards (N, M); `order` = K objective columns from highest priority to lowest (any subset of
    the M columns); `thresholds[i]` is the pass mark of column `order[i]` for i < K - 1 (the last
    objective has none, so len(thresholds) == K - 1). -> (N,).

        pass_i = [r_{order[i]} >= thresholds[i]]           i = 0 .. K-2
        L      = sum_i prod_{j <= i} pass_j                  leading passes, 0 .. K-1
        s      = L + sigmoid(r_{order[L]})

    L counts the thresholds passed in priority order, stopping at the first failure; the
    objective being worked on at that level, `order[L]`, decides within the level through a
    sigmoid in (0, 1). So s lies in (L, L + 1): a response that passes more leading thresholds
    beats every response that passes fewer, whatever its other values. With harmlessness >
    honesty > helpfulness, a response below the harmlessness pass mark is ranked by its
    harmlessness alone and cannot win on helpfulness; helpfulness only counts once
    harmlessness and honesty both pass. (Rewards should be on a normalised scale: float32
    sigmoid rounds to exactly 0 or 1 beyond |r| of about 17, where levels could tie.)

    >>> hierarchical(torch.tensor([[-1.0, 5.0], [1.0, 0.0]]), order=[0, 1], thresholds=[0.0])
    tensor([0.2689, 1.5000])
    """
    k = len(order)
    if k == 0:
        raise ValueError("hierarchical needs at least one objective in `order`")
    if len(thresholds) != k - 1:
        raise ValueError(
            f"hierarchical needs one threshold per objective but the last: {k} objectives in "
            f"`order` need {k - 1} thresholds, got {len(thresholds)}"
        )
    if rewards.ndim != 2 or not all(0 <= c < rewards.shape[1] for c in order):
        raise ValueError(f"`order` {order} must index the columns of rewards (N, M), got {tuple(rewards.shape)}")
    ordered = rewards[:, order]  # (N, K)
    passes = ordered[:, :-1] >= torch.tensor(thresholds, dtype=rewards.dtype)  # (N, K-1)
    level = passes.long().cumprod(dim=1).sum(dim=1)  # (N,) in 0 .. K-1
    current = ordered.gather(1, level[:, None]).squeeze(1)  # (N,) r_{order[L]}
    return level.to(rewards.dtype) + torch.sigmoid(current)


def scalarise(rewards: torch.Tensor, names: list[str], cfg: ScalarisationConfig) -> torch.Tensor:
    """One number per sample from the objective vector, as `cfg.method` says.

    rewards (N, M) with columns named `names` -> (N,). `weighted`: `weighted_sum` with
    `cfg.weights[name]` per column. `hierarchical`: `hierarchical` over `cfg.priority` with
    `cfg.thresholds` (every priority objective but the last needs a threshold).
    """
    if rewards.ndim != 2 or rewards.shape[1] != len(names):
        raise ValueError(f"rewards {tuple(rewards.shape)} must have one column per objective {names}")
    if cfg.method == "weighted":
        missing = [n for n in names if n not in cfg.weights]
        if missing:
            raise ValueError(f"scalarisation.weights has no weight for objective(s) {missing}")
        unscored = [n for n, w in cfg.weights.items() if n not in names and w != 0]
        if unscored:
            raise ValueError(
                f"scalarisation.weights gives non-zero weight to {unscored}, which have no reward "
                f"column (objectives scored: {names}); set them to 0 or add the objectives"
            )
        weights = torch.tensor([cfg.weights[n] for n in names], dtype=rewards.dtype)
        return weighted_sum(rewards, weights)
    elif cfg.method == "hierarchical":
        unknown = [n for n in cfg.priority if n not in names]
        if unknown:
            raise ValueError(
                f"scalarisation.priority names {unknown}, which have no reward column (objectives scored: {names})"
            )
        no_mark = [n for n in cfg.priority[:-1] if n not in cfg.thresholds]
        if no_mark:
            raise ValueError(
                f"scalarisation.thresholds needs a pass mark for {no_mark} (every priority objective but the last)"
            )
        order = [names.index(n) for n in cfg.priority]
        return hierarchical(rewards, order, [cfg.thresholds[n] for n in cfg.priority[:-1]])
    else:
        raise ValueError(f"unknown scalarisation.method '{cfg.method}' (weighted, hierarchical)")


# ---------------------------------------------------------------------------------------------
# Pareto front and hypervolume


def pareto_mask(points: torch.Tensor) -> torch.Tensor:
    """Non-dominated points. q dominates p if q >= p in every coordinate and q > p in one.

    points (N, M) -> bool (N,), True where no other point dominates. Equal points do not
    dominate each other, so duplicates on the front are all kept. O(N^2 M) memory.
    """
    if points.ndim != 2:
        raise ValueError(f"pareto_mask needs points (N, M), got {tuple(points.shape)}")
    p = points[:, None, :]  # (N, 1, M) the point tested
    q = points[None, :, :]  # (1, N, M) every other point
    dominated_by = (q >= p).all(-1) & (q > p).any(-1)  # (N, N): [i, j] = j dominates i
    return ~dominated_by.any(dim=1)


def _dominating(points: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The points strictly better than `ref` in every coordinate, as float64. (N, M) -> (N', M)."""
    if points.ndim != 2 or ref.shape != points.shape[-1:]:
        raise ValueError(
            f"hypervolume needs points (N, M) and ref (M,), got {tuple(points.shape)} and {tuple(ref.shape)}"
        )
    points, ref = points.double(), ref.double()
    return points[(points > ref).all(dim=1)]


def _hv2d(points: list[tuple[float, float]], rx: float, ry: float) -> float:
    """2-D sweep: by x descending, each point adds (x - rx) * (y - best y so far) if it rises."""
    hv, top = 0.0, ry
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > top:
            hv += (x - rx) * (y - top)
            top = y
    return hv


def hypervolume(points: torch.Tensor, ref: torch.Tensor) -> float:
    """Exact volume dominated by `points` and bounded below by `ref`, for M <= 3 objectives.

    points (N, M), ref (M,) -> float. HV = vol( union_n [ref, p_n] ), the union of the boxes
    from `ref` up to each point; points not strictly above `ref` in every coordinate add nothing.

    - M = 1: max_n p_n - ref.
    - M = 2: sort by x descending and sweep: HV = sum_n (x_n - rx) * max(0, y_n - max_{k<n} y_k).
    - M = 3: slice along z. With points sorted by z descending, z_1 >= ... >= z_N and
      z_{N+1} = rz, HV = sum_k (z_k - z_{k+1}) * HV2D({(x_j, y_j) : j <= k}). O(N^2 log N).

    For M > 3 use `hypervolume_mc`.
    """
    m = points.shape[-1]
    if m > 3:
        raise ValueError(
            f"exact hypervolume is for up to 3 objectives, got {m}; use "
            f"hypervolume_mc(points, ref, n_samples, seed) for a Monte Carlo estimate"
        )
    pts = _dominating(points, ref)
    if len(pts) == 0:
        return 0.0
    r = ref.double().tolist()
    if m == 1:
        return pts[:, 0].max().item() - r[0]
    if m == 2:
        return _hv2d([(x, y) for x, y in pts.tolist()], r[0], r[1])
    by_z = sorted(pts.tolist(), key=lambda p: -p[2])
    hv = 0.0
    for k, (_, _, z) in enumerate(by_z):
        z_below = by_z[k + 1][2] if k + 1 < len(by_z) else r[2]
        if z > z_below:
            hv += (z - z_below) * _hv2d([(x, y) for x, y, _ in by_z[: k + 1]], r[0], r[1])
    return hv


def hypervolume_mc(points: torch.Tensor, ref: torch.Tensor, n_samples: int = 100_000, seed: int = 0) -> float:
    """Monte Carlo hypervolume for any M: uniform samples u in the box [ref, max_n p_n].

    points (N, M), ref (M,) -> float. HV ~= vol(box) * mean_s [ exists n: p_n >= u_s ]; the
    standard error is vol(box) * sqrt(f (1 - f) / n_samples) for a hit fraction f. Seeded.
    """
    pts = _dominating(points, ref)  # (N', M)
    if len(pts) == 0:
        return 0.0
    lo = ref.double()
    hi = pts.max(dim=0).values
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, 2**22 // pts.numel())  # bound the (chunk, N', M) comparison
    hits = 0
    for start in range(0, n_samples, chunk):
        u = lo + (hi - lo) * torch.rand(
            min(chunk, n_samples - start), pts.shape[1], generator=gen, dtype=torch.float64
        )  # (S, M)
        hits += (pts[None] >= u[:, None]).all(-1).any(-1).sum().item()
    return torch.prod(hi - lo).item() * hits / n_samples


# ---------------------------------------------------------------------------------------------
# weight tuning


def simplex_grid(m: int, steps: int) -> torch.Tensor:
    """All weight vectors on the simplex lattice with spacing 1/steps.

    -> (G, m) with entries in {0, 1/steps, ..., 1} and rows summing to 1, G = C(steps + m - 1,
    m - 1). Rows are in ascending lexicographic order of their integer counts, so the first is
    (0, ..., 0, 1) and the last (1, 0, ..., 0).
    """
    if m < 1 or steps < 1:
        raise ValueError(f"simplex_grid needs m >= 1 objectives and steps >= 1, got m={m}, steps={steps}")
    rows = []
    # stars and bars: m - 1 bars among steps + m - 1 slots; counts are the gaps between bars
    for bars in itertools.combinations(range(steps + m - 1), m - 1):
        edges = (-1, *bars, steps + m - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(m)])
    return torch.tensor(rows, dtype=torch.get_default_dtype()) / steps


def select(rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per prompt, the candidate with the highest weighted reward.

    rewards (P, C, M), weights (M,) shared or (P, M) per prompt -> long (P,),
    `argmax_c sum_m w_{p,m} r_{p,c,m}`; ties go to the lowest candidate index.
    """
    if rewards.ndim != 3 or weights.shape not in (rewards.shape[-1:], rewards.shape[::2]):
        raise ValueError(
            f"select needs rewards (P, C, M) and weights (M,) or (P, M), got {tuple(rewards.shape)} "
            f"and {tuple(weights.shape)}"
        )
    w = weights.to(rewards.dtype).expand(rewards.shape[0], rewards.shape[2])  # (P, M)
    scores = (rewards * w[:, None, :]).sum(-1)  # (P, C)
    return scores.argmax(dim=1)  # torch returns the first maximal index


@dataclass(frozen=True)
class GridResult:
    """Outcome of `grid_search` over G weight vectors on P validation prompts."""

    weights: torch.Tensor
    """(M,) the best weight vector (ties: the first in grid order)."""
    score: float
    """Mean utility of the candidates the best vector selects."""
    scores: torch.Tensor
    """(G,) mean selected utility of every grid vector."""
    per_prompt_best: torch.Tensor
    """bool (P, G): grid vector g selects a candidate with prompt p's best selected utility."""


def grid_search(rewards: torch.Tensor, utility: torch.Tensor, grid: torch.Tensor) -> GridResult:
    """Tune scalarisation weights on a validation set with a true utility.

    rewards (P, C, M) proxy reward vectors of C candidates per prompt, utility (P, C) their true
    utility (e.g. gold score), grid (G, M) candidate weight vectors.

        c_{g,p}   = select(rewards, grid[g])_p                 (G, P)
        scores_g  = mean_p utility[p, c_{g,p}]                  (G,)
        best_{p,g} = utility[p, c_{g,p}] == max_g' utility[p, c_{g',p}]   (P, G)
    """
    if rewards.ndim != 3 or utility.shape != rewards.shape[:2] or grid.ndim != 2 or grid.shape[1] != rewards.shape[2]:
        raise ValueError(
            f"grid_search needs rewards (P, C, M), utility (P, C) and grid (G, M), got "
            f"{tuple(rewards.shape)}, {tuple(utility.shape)} and {tuple(grid.shape)}"
        )
    chosen = torch.stack([select(rewards, w) for w in grid])  # (G, P)
    picked = utility.T.gather(0, chosen)  # (G, P) utility[p, c_{g,p}]
    scores = picked.mean(dim=1)  # (G,)
    best = int(scores.argmax())  # first maximal index
    per_prompt_best = (picked == picked.max(dim=0, keepdim=True).values).T  # (P, G)
    return GridResult(weights=grid[best], score=scores[best].item(), scores=scores, per_prompt_best=per_prompt_best)


class WeightModel(nn.Module):
    """Prompt features -> objective weights on the simplex: `softmax(net(x))`, (P, F) -> (P, M).

    `net` is a linear layer F -> M, or F -> hidden -> M with a tanh when `hidden` > 0.
    """

    def __init__(self, n_features: int, n_objectives: int, hidden: int = 0):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_objectives))
        else:
            self.net = nn.Linear(n_features, n_objectives)
        self.train_losses: list[float] = []  # filled by fit_weight_model, one per epoch

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)  # (P, M)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).softmax(dim=-1)  # (P, M), rows sum to 1


def fit_weight_model(
    features: torch.Tensor,
    rewards: torch.Tensor,
    utility: torch.Tensor,
    grid: torch.Tensor,
    epochs: int = 200,
    lr: float = 0.05,
    seed: int = 0,
    hidden: int = 0,
) -> WeightModel:
    """Learn per-prompt scalarisation weights from prompt features.

    features (P, F), rewards (P, C, M), utility (P, C), grid (G, M). The target of prompt p is
    the mean of the grid vectors that reach its best selected utility (`per_prompt_best` of
    `grid_search`): `t_p = sum_g b_{p,g} grid_g / sum_g b_{p,g}`, (P, M). The model is trained
    full batch with Adam on soft-target cross-entropy `-mean_p sum_m t_{p,m} log w_{p,m}`;
    initialisation is seeded without touching the global RNG. Use `select(rewards, model(x))`
    to pick candidates with the learned weights.
    """
    if features.ndim != 2 or features.shape[0] != rewards.shape[0]:
        raise ValueError(f"features must be (P, F) with P = {rewards.shape[0]} prompts, got {tuple(features.shape)}")
    best = grid_search(rewards, utility, grid).per_prompt_best.to(grid.dtype)  # (P, G)
    targets = (best @ grid / best.sum(dim=1, keepdim=True)).float()  # (P, M)
    x = features.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WeightModel(x.shape[1], grid.shape[1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        loss = -(targets * model.logits(x).log_softmax(dim=-1)).sum(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.train_losses.append(loss.item())
    return model.eval()
