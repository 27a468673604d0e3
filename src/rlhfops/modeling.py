"""Tokenizer and policy models.

The embedded default is a character-level tokenizer and a tiny Llama built from `ModelConfig`;
any Hugging Face causal LM directory or hub id loads through the same `load_policy`, so a real
model drops in by setting `model.name_or_path`. Weights are safetensors only and remote code is
never trusted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
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
from rlhfops.files import atomic_directory

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


def load_policy(name_or_path: str | Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load a causal LM and its tokenizer from a local directory or a hub id."""
    name = str(name_or_path)
    if not Path(name).is_dir() and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise FileNotFoundError(f"model directory '{name}' does not exist")
    try:
        tokenizer = load_tokenizer(name)
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=False, use_safetensors=True)
    except OSError as e:
        raise FileNotFoundError(f"cannot load model '{name}': {str(e).splitlines()[0]}") from None
    return tokenizer, model


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
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n")
    return Path(out_dir)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
