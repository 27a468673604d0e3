"""The policy's own doubt as a reward feature, for reward ensembles (the PRM's likelihood kind reads
it line by line: `reward/prm.py`).

A Bradley-Terry reward model at this scale learns format and refusals, not arithmetic: one bit
per pair does not teach it that `9*4=48` is wrong (README, *Reward models*). The model the members
start from knows: a wrong token it sampled is one it found unlikely. So an ensemble may add one
shared term to every member's normalised score,

    r_k(x, y) = (s_k(x, y) - mu_k) / sd_k + beta * (m(x, y) - mu_m) / sd_m

where m is the lowest log-prob the LM gives a token of the response or its end (the eos after
it), as the members read it (`chat.scored_text`), floored at LOGPROB_FLOOR; mu_m, sd_m are its
mean and std on the validation responses, and beta is fitted by Bradley-Terry on the training
pairs with the members' mean held at weight 1 (`fit_weight`). The term is the same for every
member, so the spread across members, what uwo, active learning and human review read, is
unchanged. An objective the term does not help gets a beta near 0 by the same fit. The LM is the
policy the members started from, kept in the ensemble's `lm/` (hard links where the file system
allows).
"""

from __future__ import annotations

import math
import os
import shutil
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from rlhfops.chat import render, scored_text
from rlhfops.modeling import final_hidden, load_weights, model_device, token_log_probs

LM_DIR = "lm"  # an ensemble's copy of the LM its likelihood term reads
LOGPROB_FLOOR = -30.0  # log-probs below this count as this: one impossible token does not dominate a fit
RIDGE = 1e-4  # on fitted weights: finite when the pairs are separable
BATCH_SIZE = 64


# The LMs loaded in this process, by weights file and device: the ensembles of one workspace link the
# same policy into each lm/, and hold one copy of it between them, not one per objective.
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


# Per shared LM, its last m batch: a composite reward scores one batch with every objective's
# ensemble in turn, and they read one LM; the first pays, the others reuse it.
_LAST_M: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_min_logprob(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    completions: list[str],
    max_length: int,
) -> torch.Tensor:
    """`response_min_logprob`, remembered for the last batch per model: the same numbers, computed
    once when several ensembles share the LM (`load_lm`) and score the same batch."""
    key = (tuple(prompts), tuple(completions), max_length)
    last = _LAST_M.get(model)
    if last is None or last[0] != key:
        last = (key, response_min_logprob(model, tokenizer, prompts, completions, max_length))
        _LAST_M[model] = last
    return last[1].clone()


def load_lm(path: str | Path, device: torch.device) -> PreTrainedModel:
    """The causal LM in `path` for scoring (checkpoint dtype, eval), shared with every other caller
    in this process whose directory holds the same weights file (a hard link of it) on `device`."""
    weights = Path(path) / "model.safetensors"
    key = (weights.stat().st_dev, weights.stat().st_ino, str(device)) if weights.exists() else (str(path), str(device))
    model = _LOADED.get(key)
    if model is None:
        model = load_weights(AutoModelForCausalLM, path, train=False, device=device).eval()
        _LOADED[key] = model
    return model


@torch.no_grad()
def next_token_logprobs(model: PreTrainedModel, rows: list[list[int]], pad_token_id: int) -> list[list[float]]:
    """Per token-id row, log p(token t | tokens < t) at index t - 1, floored at LOGPROB_FLOOR: one
    right-padded forward of the causal LM `model` for all rows (log-probs from hidden states, a chunk
    at a time)."""
    width = max(len(r) for r in rows)
    device = model_device(model)
    ids = torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    logp = token_log_probs(model, final_hidden(model, ids, mask)[:, :-1], ids[:, 1:]).clamp(min=LOGPROB_FLOOR)
    return [row[: len(r) - 1] for row, r in zip(logp.tolist(), rows, strict=True)]


@torch.no_grad()
def response_min_logprob(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    completions: list[str],
    max_length: int,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """m (module docstring) of each (prompt, completion), (N,) float: the lowest log p(token | all
    before it) over the tokens from the completion's first character through the eos, of
    `chat.scored_text` cut at `max_length` tokens; LOGPROB_FLOOR when none of them is left."""
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        rows, starts = [], []
        for p, c in zip(prompts[i : i + batch_size], completions[i : i + batch_size], strict=True):
            enc = tokenizer(scored_text(tokenizer, p, c), return_offsets_mapping=True)
            start = len(render(tokenizer, p))
            ids = enc["input_ids"][:max_length]
            rows.append(ids)
            # the first token that holds a character of the completion (or the eos after it)
            first = next((t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > start), len(ids))
            starts.append(max(first, 1))
        for row, first, lp in zip(rows, starts, next_token_logprobs(model, rows, tokenizer.pad_token_id), strict=True):
            # lp[t - 1] is log p(token t | tokens < t)
            out.append(min(lp[first - 1 :]) if first < len(row) else LOGPROB_FLOOR)
    return torch.tensor(out)


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, offset: torch.Tensor | None = None, bias: bool = True
) -> tuple[list[float], float, float]:
    """Logistic regression of y (N,) in {0, 1} on x (N, D), with a fixed `offset` (N,) added to the
    logit and an optional bias: float64 L-BFGS, RIDGE on the weights (not the bias). Returns
    (weights, bias (0.0 without), mean BCE at the fit)."""
    x, y = x.double(), y.double()
    offset = torch.zeros(len(y), dtype=torch.float64) if offset is None else offset.double()
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def logits() -> torch.Tensor:
        return offset + x @ w[:-1] + (w[-1] if bias else 0.0)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits(), y) + RIDGE * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss = F.binary_cross_entropy_with_logits(logits(), y).item()
    weights = w.detach().tolist()
    if not all(math.isfinite(v) for v in weights):
        raise ValueError("the logistic fit did not converge")
    return weights[:-1], weights[-1] if bias else 0.0, loss


def fit_weight(
    base_chosen: torch.Tensor, base_rejected: torch.Tensor, z_chosen: torch.Tensor, z_rejected: torch.Tensor
) -> float:
    """beta maximising sum log sigmoid((base_c - base_r) + beta (z_c - z_r)) - RIDGE beta^2: a
    Bradley-Terry fit of the one extra term with the base score's weight held at 1."""
    dz = (z_chosen - z_rejected)[:, None]
    weights, _, _ = fit_logistic(dz, torch.ones(len(dz)), offset=base_chosen - base_rejected, bias=False)
    return weights[0]


def link_model_dir(src: str | Path, dest: str | Path) -> Path:
    """A copy of the model directory `src` at `dest`, each file a hard link where the file system
    allows (the same weights are not written twice), else copied."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link_or_copy)
    return Path(dest)
