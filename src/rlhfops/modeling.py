"""Tokenizer and policy models.

The embedded default is a character-level tokenizer and a tiny Llama built from `ModelConfig`;
any Hugging Face causal LM directory or hub id loads through the same `load_policy`, so a real
model drops in by setting `model.name_or_path`. Weights are safetensors only and remote code is
never trusted.

Everything that samples from a saved policy (evaluation, Best-of-N, collection, serving, the
bench) loads it with `load_decoder`, which also decides how it decodes. Every candidate a cycle
may deploy (PPO, GRPO / RLOO, and offline RL's extracted policy, `rl/ilql.py`) is a plain causal
LM and decodes plainly, so what is evaluated at the gate is what any Hugging Face runtime serves;
only the evaluation-only shifted decoder of offline RL (a directory with ILQL heads) shifts its
logits by beta * (Q - V).

Devices and dtypes are decided here, once (`load_weights`): a model loaded to train is float32
(hub checkpoints are mostly stored in bf16, and AdamW on bf16 weights loses small updates; mixed
precision keeps these fp32 master weights), a model loaded to decode keeps the checkpoint's dtype
and goes to `default_device()` (the CUDA device when there is one). Trainers place what they train
(`accelerate`, the HF Trainer); everything else asks `model_device(model)` where a model is.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from rlhfops.config import Config, ModelConfig
from rlhfops.files import atomic_directory, atomic_write_json
from rlhfops.workspace import ILQL_HEADS

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
# Every character the built-in task can produce, plus lower-case letters for prompts and refusals.
CHARACTERS = "0123456789+-*/=()?:.,' \n" + "abcdefghijklmnopqrstuvwxyz"


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; `<bos>` is prepended on encode, `<eos>` ends a response."""
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=1024,
    )


def tiny_llama_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, **extra) -> LlamaConfig:
    """The Llama config `model.*` describes, for this tokenizer (`extra`: e.g. num_labels=1)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def build_tiny_llama(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(cfg, tokenizer))


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    if tokenizer.pad_token is None:  # most causal LMs ship without one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


# The dtype of weights an optimiser updates: one AdamW step at lr 1e-6 changes 0.2% of a bf16
# checkpoint's weights left in bf16 (issue 20); float32 keeps every update.
TRAIN_DTYPE = torch.float32


def default_device() -> torch.device:
    """Where a model runs outside a trainer: the CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: nn.Module) -> torch.device:
    """The device a model's weights are on (inputs, generators and scores go there)."""
    return next(model.parameters()).device


def load_weights(auto_class, name_or_path: str | Path, *, train: bool, device: torch.device | None = None, **kwargs):
    """`auto_class.from_pretrained` as every model here is loaded: safetensors only, no remote code,
    float32 when `train` (`TRAIN_DTYPE`) else the checkpoint's own dtype, moved to `device` (None:
    left on the CPU for a trainer to place). `kwargs` go to `from_pretrained` (e.g. num_labels=1)."""
    model = auto_class.from_pretrained(
        str(name_or_path),
        trust_remote_code=False,
        use_safetensors=True,
        dtype=TRAIN_DTYPE if train else "auto",
        **kwargs,
    )
    return model if device is None else model.to(device)


def load_policy(
    name_or_path: str | Path, *, train: bool = True, device: torch.device | None = None
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load a causal LM and its tokenizer from a local directory or a hub id; `train` and `device`
    as in `load_weights` (the default: float32 on the CPU, to be trained)."""
    name = str(name_or_path)
    if not Path(name).is_dir() and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise FileNotFoundError(f"model directory '{name}' does not exist")
    try:
        tokenizer = load_tokenizer(name)
        model = load_weights(AutoModelForCausalLM, name, train=train, device=device)
    except OSError as e:
        raise FileNotFoundError(f"cannot load model '{name}': {str(e).splitlines()[0]}") from None
    return tokenizer, model


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> list[int]:
    """Every token id that ends a turn: the tokenizer's eos and each eos id of the model's
    `generation_config` (Llama-3-Instruct and Gemma-it end a turn with a token that is not the
    tokenizer's eos), first the tokenizer's."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in [configured] if isinstance(configured, int) else configured or []:
        if i not in ids:
            ids.append(i)
    return ids


def init_policy(cfg: Config) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The starting policy: `model.name_or_path` if set, else a fresh tiny Llama."""
    if cfg.model.name_or_path:
        return load_policy(cfg.model.name_or_path)
    tokenizer = build_char_tokenizer()
    return tokenizer, build_tiny_llama(cfg.model, tokenizer, cfg.seed)


def save_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: Config,
    out_dir: str | Path,
    extras: dict[str, Any] | None = None,
) -> Path:
    """Write model (safetensors), tokenizer, the resolved config and `extras` (file name -> JSON
    data) into `out_dir`, atomically: the directory appears complete or not at all."""
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        cfg.save(tmp)
        for name, data in (extras or {}).items():
            atomic_write_json(tmp / name, data)
    return Path(out_dir)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- log-probs from hidden states, a chunk of positions at a time --------------------------------

# Elements of one (positions, V) float32 block: 64 MiB, 341 positions of SmolLM2's 49,152-token
# vocabulary. A whole (B, L, V) tensor is what made Best-of-N and offline RL on a 135M model peak
# at 10-11 GB (issue 19); a chunk of it is alive at a time instead, forward and backward.
CHUNK_ELEMENTS = 1 << 24


def final_hidden(model: PreTrainedModel, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The trunk's last hidden state (after its final norm: what the LM head reads), (B, L) -> (B, L, H),
    without the LM head's (B, L, V) logits; positions count real tokens only (left or right padding)."""
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return model.base_model(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state


def output_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on hidden states as the model's forward applies it, float32: (..., H) -> (..., V)
    (with Gemma-style final logit soft-capping where the config has it)."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def positions_per_chunk(model: PreTrainedModel) -> int:
    """How many positions' full-vocabulary rows make one `CHUNK_ELEMENTS` block."""
    return max(1, CHUNK_ELEMENTS // model.get_output_embeddings().weight.shape[0])


def map_chunks(fn, *tensors: torch.Tensor, chunk: int):
    """`fn` over slices of `chunk` rows of `tensors` (dim 0), outputs (a tensor or a tuple of them)
    concatenated on dim 0. Under autograd each slice is checkpointed (recomputed in backward), so
    only one slice's intermediates, e.g. its (chunk, V) logits, are alive at a time either way."""
    outs = []
    for i in range(0, tensors[0].shape[0], chunk):
        parts = [t[i : i + chunk] for t in tensors]
        if torch.is_grad_enabled():
            outs.append(checkpoint(fn, *parts, use_reentrant=False, preserve_rng_state=False))
        else:
            outs.append(fn(*parts))
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)


def token_log_probs(
    model: PreTrainedModel,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk: int | None = None,
    entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits / temperature)[target] at every position, from the trunk's hidden states
    (`final_hidden`) through the model's LM head, `chunk` positions at a time (None:
    `positions_per_chunk`), never the whole (..., V) tensor; differentiable (chunks checkpointed).

    hidden (..., H), targets (...) long -> log-probs (...) float32, and with `entropy` the entropy
    of each position's distribution (...) as well.
    """
    shape = targets.shape
    flat_h, flat_t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    if flat_t.numel() == 0:
        empty = torch.zeros(shape, device=hidden.device)
        return (empty, empty.clone()) if entropy else empty

    def per_chunk(h: torch.Tensor, t: torch.Tensor):
        logp_all = torch.log_softmax(output_logits(model, h) / temperature, -1)  # (n, V)
        logp = logp_all.gather(-1, t[:, None]).squeeze(-1)
        return (logp, -(logp_all.exp() * logp_all).sum(-1)) if entropy else logp

    out = map_chunks(per_chunk, flat_h, flat_t, chunk=chunk or positions_per_chunk(model))
    return tuple(o.reshape(shape) for o in out) if entropy else out.reshape(shape)


# ---- decoding a saved policy --------------------------------------------------------------------


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, polyak: float) -> None:
    """theta' <- (1 - polyak) * theta' + polyak * theta, parameter by parameter, in place."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(1 - polyak).add_(s.detach(), alpha=polyak)


# The spread of an untrained Q head's values over the vocabulary at one state: the decoding shift
# beta * (Qhat - V) starts near 0 whatever the model's hidden-state scale (SmolLM2's final hidden
# states are ~100x the tiny model's, and a fixed weight std shifted its next-token distribution by
# 0.284 nats per token at beta 2), yet the two heads differ.
Q_INIT_SPREAD = 1e-3


class ILQLHeads(nn.Module):
    """Q_1, Q_2 (H -> V), frozen Polyak targets of both, V (H -> 1) on the trunk's hidden state.
    Trained by `rl/ilql.py`; saved beside the causal LM as `ILQL_HEADS` only in the shifted
    decoder's directory, never in a deployable candidate (4 H V floats: 454 MB on a 135M model).

    `hidden_norm` is the typical L2 norm of the trunk's last hidden state (`rl/ilql.py` measures it
    on the data): Q weights start at std Q_INIT_SPREAD / hidden_norm, so Q(s, .) starts with that
    spread on any model; V starts at 0."""

    def __init__(self, hidden_size: int, vocab_size: int, hidden_norm: float = 1.0):
        super().__init__()
        self.q1, self.q2 = nn.Linear(hidden_size, vocab_size), nn.Linear(hidden_size, vocab_size)
        for q in (self.q1, self.q2):
            nn.init.normal_(q.weight, std=Q_INIT_SPREAD / hidden_norm)
            nn.init.zeros_(q.bias)
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)
        self.v = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.v.weight)
        nn.init.zeros_(self.v.bias)

    def qhat(self, hidden: torch.Tensor) -> torch.Tensor:
        """min(Q'_1, Q'_2) over the vocabulary, from the target heads: (..., H) -> (..., V)."""
        with torch.no_grad():
            return torch.minimum(self.target_q1(hidden), self.target_q2(hidden))

    @staticmethod
    def at(layer: nn.Linear, hidden: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """layer(hidden)[action] per row without the (N, V) output: (N, H), (N,) -> (N,)."""
        return (hidden * layer.weight[actions]).sum(-1) + layer.bias[actions]

    def qhat_at(self, hidden: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min(Q'_1, Q'_2) of the taken action only: (N, H), (N,) -> (N,), no grad."""
        with torch.no_grad():
            return torch.minimum(self.at(self.target_q1, hidden, actions), self.at(self.target_q2, hidden, actions))

    def update_targets(self, polyak: float) -> None:
        polyak_update(self.target_q1, self.q1, polyak)
        polyak_update(self.target_q2, self.q2, polyak)

    @classmethod
    def load(cls, model_dir: str | Path) -> ILQLHeads:
        path = Path(model_dir) / ILQL_HEADS
        if not path.exists():
            raise FileNotFoundError(f"'{model_dir}' has no {ILQL_HEADS}: it is not an offline-RL (train_offline) model")
        state = load_file(str(path))
        vocab_size, hidden_size = state["q1.weight"].shape
        heads = cls(hidden_size, vocab_size)
        heads.load_state_dict(state)
        return heads.eval()


def ilql_decoding_shift(logits: torch.Tensor, qhat: torch.Tensor, v: torch.Tensor, beta: float) -> torch.Tensor:
    """ILQL decoding: log_softmax(logits) + beta * (Qhat(s, .) - V(s)); beta 0 -> the policy itself.

    logits, qhat (B, V), v (B,) or (B, 1) -> (B, V).
    """
    return torch.log_softmax(logits.float(), -1) + beta * (qhat - v.reshape(-1, 1))


def ilql_shift_hook(heads: ILQLHeads, beta: float):
    """A `generation.generate` logits hook adding beta * (Qhat - V) at the current step, from the
    last position's hidden state that generate hands it (`needs_hidden`): linear in length."""

    @torch.no_grad()
    def hook(ids: torch.Tensor, logits: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return ilql_decoding_shift(logits, heads.qhat(last), heads.v(last).squeeze(-1), beta)

    hook.needs_hidden = True
    hook.heads = heads
    return hook


class Decoder(NamedTuple):
    """A saved policy ready to sample: pass `hook` as `generate(..., logits_hook=hook)` (None: plain)."""

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    hook: Any


def is_offline_policy(model_dir: str | Path) -> bool:
    """True for offline RL's shifted decoder, which decodes with an ILQL shift (its directory holds
    the heads); an evaluation-only variant, never a deployed candidate."""
    return (Path(model_dir) / ILQL_HEADS).exists()


def load_decoder(cfg: Config, model_dir: str | Path, device: torch.device | None = None) -> Decoder:
    """The policy in `model_dir` as it decodes, in its checkpoint's dtype on `device` (None:
    `default_device()`): offline RL's shifted decoder with its beta * (Q - V) shift
    (`offline.decode_beta`), any other (every deployable candidate) plainly (hook None)."""
    device = device or default_device()
    tokenizer, model = load_policy(model_dir, train=False, device=device)
    model.eval()
    if not is_offline_policy(model_dir):
        return Decoder(tokenizer, model, None)
    heads = ILQLHeads.load(model_dir).to(device)
    return Decoder(tokenizer, model, ilql_shift_hook(heads, cfg.offline.decode_beta))
