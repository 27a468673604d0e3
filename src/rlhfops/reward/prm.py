"""Process reward model (PRM): a probability per step, fitted to exact step labels.

Two kinds (`prm.kind`), one interface (`ProcessRewardModel`: line probabilities, solution scores,
a TRL-style reward function):

likelihood (the default) reads a causal LM (`prm.init`, default the policy) and turns each line's
    token log-probs under it into a probability with a logistic calibration fitted to the labels:

        m_i   = min over line i's tokens of log p_LM(token | everything before it)
        r_i   = min(m_1, ..., m_{i-1})  (0 for the first line): the weakest earlier line
        P(line i good) = sigmoid(w_m * m_i + w_r * r_i + b)

    A wrong step the model sampled is a token it found unlikely (`9*4=48`), and a step built on an
    earlier wrong one inherits that line's doubt through r_i, which is what the sound step rule's
    labels say (a wrong value carried forward stays wrong). The fit is three numbers (L-BFGS,
    seconds); the directory holds the LM and `likelihood.json`. Measured on the tiny model
    (benchmarks/reward_accuracy.py): recall of bad lines at 0.90 of good ones about 0.89, where the
    head kind below reaches 0.56-0.61; Best-of-16 by it is far above the first sample.

head trains `AutoModelForTokenClassification` with one output, initialised from a policy
directory (the policy's trunk, a new linear head `score`) or from any Hugging Face model path, with
binary cross-entropy. Data is stepwise records (`rlhfops.annotation.steps`). A record is tokenized as

    text   = render(prompt) + completions[0] + "\\n" + ... + completions[-1] + "\\n"
    labels = 1.0 (good) / 0.0 (bad) on the token holding the last character of line i (of an
             empty line: the "\\n" after it); -100 elsewhere

(`render` is `chat.render`: the prompt as the policy reads it, an instruct model's chat template).
The label sits on the line's own last token, not on the separator after it: a causal model's state
at the separator is about what comes next, and on the tiny model a PRM labelled there learned
to ignore the line (the same probability for `3*2=6` and `3*2=9`; benchmarks/reward_accuracy.py
measures both). Label tokens are found from the tokenizer's character offsets, which works for
any fast tokenizer, not just one token per character; if a tokenizer puts two lines' label
characters in one token, that token carries the later line's label. Sequences are cut at
`prm.max_length` tokens and labels that fall off are dropped.

Training: AdamW without weight decay, linear warmup over the first 5% of steps then cosine decay
to zero, gradient norm clipped at 1; the loss is BCE-with-logits over labelled tokens only.
Scoring: a line's score is sigmoid(logit) at its label token.

Either kind: a solution's score aggregates the line scores (`aggregate_steps`: min, product or
last); a line cut off by `prm.max_length` is not scored.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_cosine_schedule_with_warmup,
)

from rlhfops.annotation.steps import read_step_data
from rlhfops.chat import render
from rlhfops.config import CONFIG_FILENAME, Config, load_config
from rlhfops.generation import token_offsets
from rlhfops.modeling import (
    default_device,
    load_decoder,
    load_tokenizer,
    load_weights,
    model_device,
    save_policy,
)
from rlhfops.reward.likelihood import fit_logistic, next_token_logprobs
from rlhfops.tasks import STEP_SEPARATOR, Example, Task, make_task, steps_of
from rlhfops.workspace import PRM_METRICS as METRICS
from rlhfops.workspace import STEPS, TRAIN_LOG

IGNORE = -100  # label of a token that carries no line's label
WARMUP_RATIO = 0.05
GRAD_CLIP = 1.0
LOG_POINTS = 50  # about this many rows in train_log.json
SCORE_BATCH_SIZE = 64
AGGREGATIONS = ("min", "product", "last")
TASK_TRAIN = "task-train.jsonl"  # step labels built from the task once (train-prm's data dir)
LIKELIHOOD = "likelihood.json"  # a likelihood PRM's calibration; its presence makes a directory one
FEATURES = ("line_min_logprob", "earlier_min_logprob")  # m_i and r_i (module docstring)


# ---- tokenization ------------------------------------------------------------------------------


def separator_chars(lines: list[str], start: int = 0) -> list[int]:
    """The character index of the separator after each line of `line + "\\n"` pieces written from
    character `start` on."""
    chars, at = [], start
    for line in lines:
        at += len(line)
        chars.append(at)
        at += len(STEP_SEPARATOR)
    return chars


def covering_tokens(offsets: Sequence[tuple[int, int]], chars: list[int]) -> list[int | None]:
    """Per character index, the first token whose (start, end) span covers it; None when none does.
    A token holding two separators ("\\n\\n") covers both: two steps end on it."""
    owner: dict[int, int] = {}
    for token, (start, end) in enumerate(offsets):
        for char in range(start, end):
            owner.setdefault(char, token)
    return [owner.get(char) for char in chars]


def label_chars(lines: list[str], start: int = 0) -> list[int]:
    """The character index that carries each line's label in `line + "\\n"` pieces written from
    character `start` on: the line's last character, or its separator when the line is empty."""
    return [at - 1 if line else at for at, line in zip(separator_chars(lines, start), lines, strict=True)]


def _line_tokens(
    tokenizer: PreTrainedTokenizerBase, prompt: str, lines: list[str], max_length: int
) -> tuple[list[int], list[int | None], list[int | None]]:
    """One encoding of `render(prompt) + lines[0] + "\\n" + ... + lines[-1] + "\\n"`: its token ids cut
    at `max_length`, per line its label token (`label_chars`; None when cut off) and the token
    covering its first character."""
    rendered = render(tokenizer, prompt)
    text = rendered + "".join(line + STEP_SEPARATOR for line in lines)
    enc = tokenizer(text, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_length]
    positions: list[int | None] = []
    chars = label_chars(lines, len(rendered))
    for at, token in zip(chars, covering_tokens(enc["offset_mapping"], chars), strict=True):
        if token is None:
            raise ValueError(f"the tokenizer keeps no token for the step label at character {at} of {text!r}")
        positions.append(token if token < max_length else None)
    starts = [at - len(line) for at, line in zip(separator_chars(lines, len(rendered)), lines, strict=True)]
    return ids, positions, covering_tokens(enc["offset_mapping"], starts)


def label_positions(
    tokenizer: PreTrainedTokenizerBase, prompt: str, lines: list[str], max_length: int
) -> tuple[list[int], list[int | None]]:
    """Token ids of `render(prompt) + lines[0] + "\\n" + ... + lines[-1] + "\\n"`, cut at `max_length`, and
    per line the index of the token holding its label character (`label_chars`; None when it was
    cut off)."""
    ids, positions, _ = _line_tokens(tokenizer, prompt, lines, max_length)
    return ids, positions


def line_token_spans(
    tokenizer: PreTrainedTokenizerBase, prompt: str, lines: list[str], max_length: int
) -> tuple[list[int], list[range | None]]:
    """`label_positions`' token ids, and per line the tokens that hold its characters: from the
    token covering its first character through its label token (a token the line shares with the
    separator before it counts; an empty line has none); None when the label token was cut off."""
    ids, positions, firsts = _line_tokens(tokenizer, prompt, lines, max_length)
    spans = [
        None if last is None else range(first, last + 1) if line else range(0)
        for line, first, last in zip(lines, firsts, positions, strict=True)
    ]
    return ids, spans


def response_step_tokens(
    tokenizer: PreTrainedTokenizerBase, completion_ids: torch.Tensor, completion_mask: torch.Tensor, texts: list[str]
) -> list[list[int]]:
    """Where each line of a sampled response ends among its completion tokens, one index per line
    `ProcessRewardModel.step_scores` scores (`text.split("\\n")`, none for an empty text): the token
    covering the newline after the line (by `generation.token_offsets`, the sampled tokens' offset
    mapping), and for the last line the last completion token. The PRM reads its own score of a line
    at the line's last token (`label_positions`); PPO pays it once the line is complete.

    completion_ids, completion_mask (B, T) as `generate` returns them, texts its B texts."""
    rows = []
    for ids, mask, text in zip(completion_ids.tolist(), completion_mask.tolist(), texts, strict=True):
        kept = [t for t, m in zip(ids, mask, strict=True) if m]
        if not text:
            rows.append([])
            continue
        lines = text.split(STEP_SEPARATOR)
        chars = separator_chars(lines[:-1])
        tokens = covering_tokens(token_offsets(tokenizer, kept), chars)
        if None in tokens:
            raise ValueError(f"the sampled tokens do not decode to the response {text!r}: no token holds a newline")
        rows.append([*tokens, len(kept) - 1])
    return rows


def encode_record(tokenizer: PreTrainedTokenizerBase, record: dict[str, Any], max_length: int) -> dict[str, list]:
    """A stepwise record -> {"input_ids": list[int], "labels": list[float]} of equal length (<= max_length)."""
    ids, positions = label_positions(tokenizer, record["prompt"], record["completions"], max_length)
    labels: list[float] = [IGNORE] * len(ids)
    for position, good in zip(positions, record["labels"], strict=True):
        if position is not None and good is not None:  # None: a masked (sparse) label
            labels[position] = float(good)
    return {"input_ids": ids, "labels": labels}


def pad_right(rows: list[list], value: float, dtype: torch.dtype) -> torch.Tensor:
    """Ragged rows -> (B, T) tensor, padded on the right with `value`."""
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=dtype)


def collate(features: list[dict[str, list]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Encoded records -> input_ids (B, T) long, attention_mask (B, T) long, labels (B, T) float."""
    ids = [f["input_ids"] for f in features]
    return {
        "input_ids": pad_right(ids, pad_token_id, torch.long),
        "attention_mask": pad_right([[1] * len(row) for row in ids], 0, torch.long),
        "labels": pad_right([f["labels"] for f in features], IGNORE, torch.float),
    }


# ---- loss and aggregation ----------------------------------------------------------------------


def step_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over labelled tokens. logits (B, T), labels (B, T) in {0, 1, -100}."""
    mask = labels != IGNORE
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask])


def aggregate_steps(probs: list[float], how: str) -> float:
    """Step probabilities -> solution score: `min`, `product` or `last`; no steps score 0.0.

    >>> aggregate_steps([0.9, 0.5, 0.8], "min"), aggregate_steps([0.5, 0.5], "product")
    (0.5, 0.25)
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown step aggregation '{how}'; expected one of {', '.join(AGGREGATIONS)}")
    if not probs:
        return 0.0
    if how == "min":
        return min(probs)
    if how == "product":
        return math.prod(probs)
    return probs[-1]


# ---- the model ---------------------------------------------------------------------------------


def _load_for_prm(name_or_path: str | Path, auto_class, **kwargs) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    name = str(name_or_path)
    if not Path(name).is_dir() and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise FileNotFoundError(f"cannot load model '{name}' as a PRM: the directory does not exist")
    try:
        return load_tokenizer(name), load_weights(auto_class, name, **kwargs)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot load model '{name}' as a PRM: {str(e).splitlines()[0]}") from None


def init_prm(name_or_path: str | Path, seed: int) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """A one-output token classifier on the trunk of `name_or_path` (a policy directory or any HF model)."""
    torch.manual_seed(seed)  # the new head's initial weights
    tokenizer, model = _load_for_prm(name_or_path, AutoModelForTokenClassification, train=True, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def init_likelihood_prm(name_or_path: str | Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The causal LM a likelihood PRM reads (a policy directory or any HF causal LM), for scoring."""
    tokenizer, model = _load_for_prm(name_or_path, AutoModelForCausalLM, train=False, device=default_device())
    return tokenizer, model.eval()


# ---- the likelihood kind: features and their calibration ----------------------------------------


@torch.no_grad()
def line_features(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    lines: list[list[str]],
    max_length: int,
    batch_size: int = SCORE_BATCH_SIZE,
) -> list[list[tuple[float, float] | None]]:
    """(m_i, r_i) of every line of every response (module docstring): the lowest log-prob the
    causal LM `model` gives a token of line i (floored at LOGPROB_FLOOR; 0.0 for an empty line), and
    the lowest m of the lines before it (0.0 for the first). None for a line cut off by max_length."""
    model.eval()
    out: list[list[tuple[float, float] | None]] = []
    for i in range(0, len(prompts), batch_size):
        encoded = [
            line_token_spans(tokenizer, p, ls, max_length)
            for p, ls in zip(prompts[i : i + batch_size], lines[i : i + batch_size], strict=True)
        ]
        # row[t - 1]: log p(token t | tokens < t)
        logp = next_token_logprobs(model, [e[0] for e in encoded], tokenizer.pad_token_id)
        for row, (_, spans) in zip(logp, encoded, strict=True):
            features: list[tuple[float, float] | None] = []
            earlier = 0.0
            for span in spans:
                if span is None:
                    features.append(None)
                    continue
                m = min((row[t - 1] for t in span if t > 0), default=0.0)
                features.append((m, earlier))
                earlier = min(earlier, m)
            out.append(features)
    return out


def fit_calibration(features: list[tuple[float, ...]], good: list[bool]) -> dict[str, Any]:
    """Logistic regression of `good` on `features` (float64 L-BFGS, a small ridge on the weights):
    {"features", "weights", "bias", "loss" (mean BCE at the fit), "n_lines", "n_bad_lines"}.
    Labels of one class only (a policy that gets every line wrong) have no slope to fit: the
    weights are 0 and the bias the smoothed rate, logit((n_good + 0.5) / (n + 1))."""
    if not good:
        raise ValueError("a likelihood PRM is fitted to labelled lines, and there are none")
    x, y = torch.tensor(features, dtype=torch.float64), torch.tensor(good, dtype=torch.float64)
    if all(good) or not any(good):
        weights, bias = [0.0] * x.shape[1], math.log((sum(good) + 0.5) / (len(good) - sum(good) + 0.5))
        loss = F.binary_cross_entropy_with_logits(torch.full_like(y, bias), y).item()
    else:
        weights, bias, loss = fit_logistic(x, y)
    return {
        "features": list(FEATURES[: x.shape[1]]),
        "weights": weights,
        "bias": bias,
        "loss": loss,
        "n_lines": len(good),
        "n_bad_lines": good.count(False),
    }


def calibrated(features: tuple[float, ...], calibration: dict[str, Any]) -> float:
    """sigmoid(weights . features + bias)."""
    z = calibration["bias"] + sum(w * f for w, f in zip(calibration["weights"], features, strict=True))
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def read_calibration(path: Path) -> dict[str, Any]:
    """A likelihood PRM's `likelihood.json`, checked: its features are this version's."""
    try:
        calibration = json.loads(path.read_text())
        ok = calibration["features"] == list(FEATURES) and len(calibration["weights"]) == len(FEATURES)
        float(calibration["bias"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a likelihood PRM calibration ({e})") from None
    if not ok:
        raise ValueError(f"{path}: features {calibration['features']} are not this version's {list(FEATURES)}")
    return calibration


class ProcessRewardModel:
    """A trained PRM: scores each line of a response, and whole responses by aggregating them.

    `model` is a token classifier (the head kind), or a causal LM read through `calibration`
    (the likelihood kind: `fit_calibration`'s result). Also a TRL-style reward function:
    `prm(prompts, completions) -> list[float]` scores with the aggregation it was configured with.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        aggregation: str = "min",
        batch_size: int = SCORE_BATCH_SIZE,
        calibration: dict[str, Any] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.aggregation = aggregation
        self.batch_size = batch_size
        self.calibration = calibration

    @property
    def kind(self) -> str:
        return "head" if self.calibration is None else "likelihood"

    @classmethod
    def load(
        cls, path: str | Path, batch_size: int = SCORE_BATCH_SIZE, device: torch.device | None = None
    ) -> ProcessRewardModel:
        """Load a directory written by `train_prm`, in its checkpoint's dtype on `device` (None:
        `modeling.default_device()`); max_length and aggregation come from its config."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"PRM directory '{path}' does not exist")
        calibration = read_calibration(path / LIKELIHOOD) if (path / LIKELIHOOD).exists() else None
        tokenizer = load_tokenizer(path)
        auto_class = AutoModelForTokenClassification if calibration is None else AutoModelForCausalLM
        model = load_weights(auto_class, path, train=False, device=device or default_device()).eval()
        if (path / CONFIG_FILENAME).exists():
            prm_cfg = load_config(path / CONFIG_FILENAME).prm
            return cls(model, tokenizer, prm_cfg.max_length, prm_cfg.aggregation, batch_size, calibration)
        return cls(model, tokenizer, tokenizer.model_max_length, batch_size=batch_size, calibration=calibration)

    @torch.no_grad()
    def line_probs(self, prompts: list[str], lines: list[list[str]]) -> list[list[float | None]]:
        """P(line is good) for every line of every response; None for a line cut off by max_length."""
        if self.calibration is not None:
            rows = line_features(self.model, self.tokenizer, prompts, lines, self.max_length, self.batch_size)
            return [[None if f is None else calibrated(f, self.calibration) for f in row] for row in rows]
        self.model.eval()
        device = model_device(self.model)
        out: list[list[float | None]] = []
        for i in range(0, len(prompts), self.batch_size):
            encoded = [
                label_positions(self.tokenizer, p, ls, self.max_length)
                for p, ls in zip(prompts[i : i + self.batch_size], lines[i : i + self.batch_size], strict=True)
            ]
            ids = pad_right([e[0] for e in encoded], self.tokenizer.pad_token_id, torch.long).to(device)
            mask = pad_right([[1] * len(e[0]) for e in encoded], 0, torch.long).to(device)
            probs = torch.sigmoid(self.model(input_ids=ids, attention_mask=mask).logits[..., 0].float())  # (B, T)
            for row, (_, positions) in zip(probs.tolist(), encoded, strict=True):
                out.append([None if pos is None else row[pos] for pos in positions])
        return out

    def step_scores(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """One probability per line of each response (split on "\\n"; an empty response has none).

        A line whose separator falls past max_length cannot be scored and gets 0.0: an over-long
        response earns no credit for what the PRM did not see.
        """
        lines = [c.split(STEP_SEPARATOR) if c else [] for c in completions]
        return [[0.0 if p is None else p for p in row] for row in self.line_probs(prompts, lines)]

    def score(self, prompts: list[str], completions: list[str], aggregation: str | None = None) -> list[float]:
        """One solution score per response: its step scores aggregated by `aggregation`
        (`min` | `product` | `last`; None: the configured one). An empty response scores 0.0."""
        how = aggregation or self.aggregation
        return [aggregate_steps(probs, how) for probs in self.step_scores(prompts, completions)]

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        return self.score(prompts, completions)


# ---- evaluation --------------------------------------------------------------------------------


def step_accuracy(prm: ProcessRewardModel, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy at threshold 0.5 over all labelled lines, over bad lines and over good lines.

    Lines cut off by max_length are not scored and are counted in `n_unscored_steps`.
    """
    probs = prm.line_probs([r["prompt"] for r in records], [r["completions"] for r in records])
    hits = {True: [], False: []}  # label -> [prediction right?]
    unscored = 0
    for row, record in zip(probs, records, strict=True):
        for p, good in zip(row, record["labels"], strict=True):
            if good is None:  # masked (sparse) label
                continue
            if p is None:
                unscored += 1
            else:
                hits[good].append((p >= 0.5) == good)
    every = hits[True] + hits[False]
    return {
        "step_accuracy": fmean(every) if every else None,
        "bad_step_accuracy": fmean(hits[False]) if hits[False] else None,
        "good_step_accuracy": fmean(hits[True]) if hits[True] else None,
        "n_steps": len(every),
        "n_bad_steps": len(hits[False]),
        "n_good_steps": len(hits[True]),
        "n_unscored_steps": unscored,
    }


def corruption_ranking_rate(
    prm: ProcessRewardModel,
    task: Task,
    examples: list[Example],
    rng: random.Random,
    aggregation: str = "min",
) -> dict[str, Any]:
    """Share of solve examples whose reference the PRM scores strictly above the same solution with
    one wrong step (the task's `steps.wrong_step`); examples that cannot be corrupted are skipped.

    Returns {"rate": float, "n": number of pairs compared}.
    """
    steps = steps_of(task)
    if steps is None:
        raise ValueError(f"task '{task.name}' has no step structure: its solutions cannot be corrupted step-wise")
    pairs = []
    for example in examples:
        if example.kind == "solve":
            wrong = steps.wrong_step(example, rng)
            if wrong is not None:
                pairs.append((example, wrong))
    if not pairs:
        raise ValueError("corruption_ranking_rate needs solve examples that a wrong step can corrupt, and got none")
    n = len(pairs)
    prompts = [ex.prompt for ex, _ in pairs] * 2
    scores = prm.score(prompts, [ex.reference for ex, _ in pairs] + [wrong for _, wrong in pairs], aggregation)
    return {"rate": sum(scores[i] > scores[n + i] for i in range(n)) / n, "n": n}


# ---- training ----------------------------------------------------------------------------------


def train_prm(
    cfg: Config,
    train_path: str | Path,
    val_path: str | Path,
    init_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
) -> Path:
    """Train a PRM from `init_dir` on stepwise JSONL `train_path`; write it to `out_dir`.

    `out_dir` gets the model (safetensors), tokenizer, resolved config, `train_log.json`
    ([{"step", "loss", "lr"}], loss averaged since the previous row) and `metrics.json`
    (`step_accuracy` on `val_path` and the training sizes).
    """
    p = cfg.prm
    train_records = read_step_data(train_path)
    val_records = read_step_data(val_path)
    if p.kind == "likelihood":
        return fit_likelihood_prm(cfg, train_records, val_records, init_dir, out_dir, train_path)
    tokenizer, model = init_prm(init_dir, cfg.seed)
    device = default_device()
    model.to(device).train()

    features = [encode_record(tokenizer, r, p.max_length) for r in train_records]
    features = [f for f in features if any(label != IGNORE for label in f["labels"])]
    if not features:
        raise ValueError(f"no step label in '{train_path}' fits within prm.max_length={p.max_length} tokens")
    steps_per_epoch = math.ceil(len(features) / p.batch_size)
    total_steps = p.max_steps if p.max_steps > 0 else max(1, math.ceil(p.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(WARMUP_RATIO * total_steps), total_steps)
    log_every = max(1, total_steps // LOG_POINTS)
    shuffle = torch.Generator().manual_seed(cfg.seed)

    log: list[dict[str, float]] = []
    window: list[float] = []  # losses since the last log row
    step = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        bar_task = bar.add_task("PRM", total=total_steps)
        while step < total_steps:
            order = torch.randperm(len(features), generator=shuffle).tolist()
            for start in range(0, len(order), p.batch_size):
                batch = collate([features[j] for j in order[start : start + p.batch_size]], tokenizer.pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., 0]
                loss = step_loss(logits, batch["labels"])  # logits (B, T)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                optimizer.step()
                scheduler.step()
                step += 1
                window.append(loss.item())
                if step % log_every == 0 or step == total_steps:
                    log.append({"step": step, "loss": fmean(window), "lr": scheduler.get_last_lr()[0]})
                    window = []
                    bar.update(bar_task, description=f"PRM loss {log[-1]['loss']:.4f}")
                bar.advance(bar_task)
                if step == total_steps:
                    break

    prm = ProcessRewardModel(model, tokenizer, p.max_length, p.aggregation)
    metrics = fit_metrics(prm, val_records, train_steps=total_steps, n_train_records=len(features))
    return save_policy(model, tokenizer, cfg, out_dir, extras={TRAIN_LOG: log, METRICS: metrics})


def fit_metrics(prm: ProcessRewardModel, val_records: list[dict[str, Any]], **sizes: Any) -> dict[str, Any]:
    """A fitted PRM's `metrics.json`: `step_accuracy` on the validation records, its kind, `sizes`."""
    return {**step_accuracy(prm, val_records), "kind": prm.kind, **sizes, "n_val_records": len(val_records)}


def fit_likelihood_prm(
    cfg: Config,
    train_records: list[dict[str, Any]],
    val_records: list[dict[str, Any]],
    init_dir: str | Path,
    out_dir: str | Path,
    train_path: str | Path,
) -> Path:
    """The likelihood kind of `train_prm`: the LM in `init_dir`, its line features on the training
    records, the calibration fitted to their labels; `out_dir` gets the LM, `likelihood.json` and
    `metrics.json` (as `train_prm`'s, with the calibration)."""
    p = cfg.prm
    tokenizer, model = init_likelihood_prm(init_dir)
    rows = line_features(
        model, tokenizer, [r["prompt"] for r in train_records], [r["completions"] for r in train_records], p.max_length
    )
    features, good = [], []
    for row, record in zip(rows, train_records, strict=True):
        for f, label in zip(row, record["labels"], strict=True):
            if f is not None and label is not None:
                features.append(f)
                good.append(bool(label))
    if not features:
        raise ValueError(f"no step label in '{train_path}' fits within prm.max_length={p.max_length} tokens")
    calibration = fit_calibration(features, good)
    prm = ProcessRewardModel(model, tokenizer, p.max_length, p.aggregation, calibration=calibration)
    metrics = fit_metrics(prm, val_records, calibration=calibration, n_train_records=len(train_records))
    return save_policy(model, tokenizer, cfg, out_dir, extras={LIKELIHOOD: calibration, METRICS: metrics})


def union_cycle_steps(workspace) -> tuple[list[dict[str, Any]], list[int]]:
    """The step labels of every cycle in the workspace (TRL stepwise fields), and their cycles."""

    records, cycles = [], []
    for cycle in workspace.cycle_numbers():
        path = workspace.cycle_dir(cycle) / STEPS
        if path.exists():
            records += [{k: r[k] for k in ("prompt", "completions", "labels")} for r in read_step_data(path)]
            cycles.append(cycle)
    return records, cycles


def train_prm_on_task(
    cfg: Config,
    policy_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    *,
    workspace=None,
) -> dict[str, Any]:
    """The `train-prm` stage on the built-in task: exact step labels for noisy-teacher responses
    (at `prm.wrong_step_rate` / `prm.skipped_step_rate`) and policy samples to `prm.n_prompts`
    train prompts (built into `<data_dir>/task-train.jsonl` unless already there), a PRM from the
    policy (or from `prm.init`), and its validation metrics including how often it ranks a reference above the same
    solution with one wrong step. Returns the metrics written to `<out_dir>/metrics.json`.

    With a `workspace` (`rlhfops.workspace.Workspace`) that has cycle step labels, the training
    records are the union of its cycles 1..n (`<data_dir>/train.jsonl`, rewritten each time), and
    with `prm.join_cycles` the task records as well (exact labels cost only sampling); validation
    is built from the task as above."""
    from rlhfops.annotation.steps import build_step_data, write_step_data
    from rlhfops.files import atomic_write_json

    task = make_task(cfg.task, seed=cfg.seed)
    if steps_of(task) is None:  # nothing to supervise step by step: no PRM, and no model directory
        return {"skipped": f"task '{task.name}' has no step structure, so there is no process reward model to train"}
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    union, cycles = union_cycle_steps(workspace) if workspace is not None else ([], [])
    if cycles and not union:
        raise ValueError(f"the workspace's cycles {cycles} hold no step labels")
    # The teacher writes more wrong and skipped steps for PRM data than for SFT data: the PRM
    # learns what a bad step looks like from them (measured: ranking rate 0.52 -> 0.60 on tiny).
    noise = cfg.task.noise.model_copy(
        update={"wrong_step": cfg.prm.wrong_step_rate, "skipped_step": cfg.prm.skipped_step_rate}
    )
    data_task = make_task(cfg.task.model_copy(update={"noise": noise}), seed=cfg.seed)
    policy = None
    built = {"train": data_dir / TASK_TRAIN, "val": data_dir / "val.jsonl"}
    from_task = not cycles or cfg.prm.join_cycles
    for split, n, seed in (("train", cfg.prm.n_prompts, cfg.seed), ("val", cfg.prm.n_val_prompts, cfg.seed + 1)):
        if (split == "val" or from_task) and not built[split].exists():
            policy = policy or load_decoder(cfg, policy_dir)
            records = build_step_data(data_task, policy, split, n, seed, generation=cfg.generation)
            write_step_data(records, built[split])
    write_step_data(union + (read_step_data(built["train"]) if from_task else []), data_dir / "train.jsonl")
    init = cfg.prm.init or policy_dir
    out = train_prm(cfg, data_dir / "train.jsonl", data_dir / "val.jsonl", init, out_dir, progress)
    metrics = json.loads((out / METRICS).read_text())
    prm = ProcessRewardModel.load(out)
    examples = task.examples("val", cfg.prm.n_val_prompts)
    metrics["ranking"] = {
        how: corruption_ranking_rate(prm, task, examples, random.Random(cfg.seed), how) for how in AGGREGATIONS
    }
    atomic_write_json(out / METRICS, metrics)
    return metrics
