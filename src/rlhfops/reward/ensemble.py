"""Reward-model ensembles: K members per objective, their aggregation and their spread.

An ensemble directory holds `manifest.json` (objective, kind, members with their seeds, init,
validation accuracy and normalisation, validation summary), the resolved config, and either

    kind=full    member_0/ ... member_{K-1}/   whole sequence-classification models
    kind=heads   trunk/ + heads.safetensors    one frozen policy trunk, K linear heads (K, H)

Members' raw Bradley-Terry scores have arbitrary offsets, so each is normalised by the mean and
std of its scores on the validation responses before aggregating: otherwise the spread across
members would measure offsets, not disagreement. With `reward.likelihood` the manifest also holds
`likelihood` ({beta, mean, std}) and the directory `lm/`: every member's normalised score gets the
same beta * z(m), the response's lowest token log-prob under that LM, normalised
(`reward/likelihood.py`); the spread is unchanged by it.

An ensemble is loaded in its checkpoints' dtype on `modeling.default_device()` (the GPU when there
is one). Full members of one Llama shape are scored in one stacked pass (`reward/stacked.py`): on
a CPU it is faster than member by member at every batch size measured (1 to 64,
benchmarks/ensemble_scoring.py), and on a GPU. It copies every weight, so it is built the first
time a batch is scored, never at load time, and the members are then let go: the weights are held
once, apart from that one build. `fused="never"` keeps member-by-member scoring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from rlhfops.chat import scored_text
from rlhfops.modeling import default_device, load_tokenizer, load_weights
from rlhfops.reward.likelihood import LM_DIR, load_lm, shared_min_logprob
from rlhfops.reward.stacked import StackedLlamaScorer, can_stack
from rlhfops.workspace import RM_HEADS as HEADS
from rlhfops.workspace import RM_MANIFEST as MANIFEST

AGGREGATIONS = ("mean", "weighted", "min", "uwo")


def aggregate(
    rewards: torch.Tensor, how: str, weights: torch.Tensor | None = None, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Member rewards (K, N) -> (aggregate (N,), spread (N,)).

    mean      (1/K) sum_k r_k
    weighted  sum_k w_k r_k / sum_k w_k          (w: members' validation accuracies, (K,))
    min       min_k r_k                          (conservative)
    uwo       mean - lam * std                   (uncertainty-weighted optimisation)
    The spread is the population std over members, std = sqrt(mean_k (r_k - mean)^2).
    """
    mean = rewards.mean(0)
    std = rewards.std(0, correction=0)
    if how == "mean":
        agg = mean
    elif how == "weighted":
        if weights is None:
            raise ValueError("weighted aggregation needs member weights")
        w = weights.to(rewards) / weights.sum()
        agg = (w[:, None] * rewards).sum(0)
    elif how == "min":
        agg = rewards.min(0).values
    elif how == "uwo":
        agg = mean - lam * std
    else:
        raise ValueError(f"unknown aggregation '{how}'; expected one of {', '.join(AGGREGATIONS)}")
    return agg, std


def pooled_last_token(hidden: torch.Tensor, input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """(B, T, H) -> (B, H) at the rightmost non-pad token, as HF sequence classifiers pool."""
    idx = torch.arange(input_ids.shape[1], device=input_ids.device)
    last = (idx * (input_ids != pad_token_id)).argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class RewardEnsemble:
    """Scores (prompt, completion) pairs with every member; see the module docstring."""

    def __init__(self, path: str | Path, fused: str = "auto", device: torch.device | None = None):
        self.path = Path(path)
        self.device = device or default_device()
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"'{self.path}' is not a reward ensemble (no {MANIFEST})")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        self.objective: str = self.manifest["objective"]
        self.kind: str = self.manifest["kind"]
        self.max_length: int = self.manifest["max_length"]
        members = self.manifest["members"]
        self.names = [m["name"] for m in members]
        self.accuracies = torch.tensor([m.get("val_accuracy") or 1.0 for m in members])
        self.offsets = torch.tensor([m.get("reward_mean", 0.0) for m in members])[:, None]
        self.scales = torch.tensor([m.get("reward_std", 1.0) for m in members])[:, None]
        self.stacked: StackedLlamaScorer | None = None  # built by the first batch scored
        if self.kind == "full":
            self.models = [
                load_weights(AutoModelForSequenceClassification, self.path / n, train=False, device=self.device).eval()
                for n in self.names
            ]
            self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(self.path / self.names[0])
            self.stackable = fused != "never" and can_stack(self.models)
        elif self.kind == "heads":
            self.trunk = load_weights(AutoModel, self.path / "trunk", train=False, device=self.device).eval()
            self.tokenizer = load_tokenizer(self.path / "trunk")
            heads = load_file(self.path / HEADS, device=str(self.device))
            self.head_weight, self.head_bias = heads["weight"], heads["bias"]  # (K, H), (K,)
            self.stackable = False
        else:
            raise ValueError(f"unknown ensemble kind '{self.kind}' in {manifest_path}")
        self.likelihood: dict[str, float] | None = self.manifest.get("likelihood")
        self.lm = self.lm_tokenizer = None
        if self.likelihood is not None:
            if not (self.path / LM_DIR).is_dir():
                raise FileNotFoundError(f"{manifest_path} has a likelihood term but '{self.path / LM_DIR}' is missing")
            self.lm = load_lm(self.path / LM_DIR, self.device)
            self.lm_tokenizer = load_tokenizer(self.path / LM_DIR)

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, prompts: list[str], completions: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded ids of `chat.scored_text` (rendered prompt + completion + eos), as trl's
        RewardTrainer trained on them."""
        self.tokenizer.padding_side = "right"
        texts = [scored_text(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    @torch.no_grad()
    def raw_rewards(self, prompts: list[str], completions: list[str], batch_size: int = 64) -> torch.Tensor:
        """Un-normalised member scores (K, N)."""
        out = []
        for i in range(0, len(prompts), batch_size):
            enc = self.encode(prompts[i : i + batch_size], completions[i : i + batch_size]).to(self.device)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            if self.kind == "heads":
                hidden = self.trunk(input_ids=ids, attention_mask=mask).last_hidden_state
                pooled = pooled_last_token(hidden, ids, self.tokenizer.pad_token_id)  # (B, H)
                out.append(self.head_weight.to(pooled) @ pooled.T + self.head_bias.to(pooled)[:, None])
            elif self.stackable:
                out.append(self._stacked()(ids, mask))
            else:
                out.append(torch.stack([m(input_ids=ids, attention_mask=mask).logits[:, 0] for m in self.models]))
        return torch.cat(out, dim=1).float().cpu()

    def _stacked(self) -> StackedLlamaScorer:
        """The stacked scorer, built on first use; it replaces the members, so the weights are held once."""
        if self.stacked is None:
            self.stacked = StackedLlamaScorer(self.models).to(self.device)
            self.models = []
        return self.stacked

    def min_logprob(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """m of each response under the ensemble's LM, (N,) (`likelihood.shared_min_logprob`)."""
        if self.lm is None:
            raise ValueError(f"reward ensemble '{self.path}' has no likelihood term")
        return shared_min_logprob(self.lm, self.lm_tokenizer, prompts, completions, self.max_length)

    def likelihood_term(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """beta * z(m) per response (N,); zeros without a likelihood term."""
        if self.likelihood is None:
            return torch.zeros(len(prompts))
        z = (self.min_logprob(prompts, completions) - self.likelihood["mean"]) / self.likelihood["std"]
        return self.likelihood["beta"] * z

    def member_rewards(self, prompts: list[str], completions: list[str], batch_size: int = 64) -> torch.Tensor:
        """Normalised member scores (K, N), each plus the likelihood term where the ensemble has one."""
        normalised = (self.raw_rewards(prompts, completions, batch_size) - self.offsets) / self.scales
        return normalised + self.likelihood_term(prompts, completions)

    def score(
        self, prompts: list[str], completions: list[str], how: str = "mean", lam: float = 1.0, batch_size: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(aggregate (N,), spread (N,)) under `how`; see `aggregate`."""
        return aggregate(self.member_rewards(prompts, completions, batch_size), how, self.accuracies, lam)
