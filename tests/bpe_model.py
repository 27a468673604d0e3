"""A tiny random-weight Llama on SmolLM2's real byte-level BPE tokenizer and chat template.

It exercises what a real pretrained model brings (49,152 BPE tokens, one token for "\\n\\n",
special tokens `<|im_start|>` / `<|im_end|>`, a ChatML template) in seconds and without a download;
`rlhfops.real_model` prepares the real weights. The tokenizer files are in
`fixtures/smollm2-tokenizer/` (Apache-2.0, see the README there).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhfops.config import Config, ModelConfig, load_config
from rlhfops.modeling import build_tiny_llama, load_tokenizer, save_policy

TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "smollm2-tokenizer"
# ~3.2M parameters, nearly all of them the (tied) 49,152 x 64 embedding.
TINY_BPE = ModelConfig(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)


# SmolLM2's tokenizer: eos `<|im_end|>` (2), and one token for "\n\n".
EOS, SECOND_EOS, DOUBLE_NEWLINE = 2, 0, 1116  # SECOND_EOS: `<|endoftext|>`


def tiny_bpe_policy(
    out_dir: str | Path,
    seed: int = 0,
    cfg: Config | None = None,
    *,
    second_eos: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a policy directory like `modeling.save_policy`'s (weights, tokenizer, chat template,
    generation_config, `rlhfops_config.yaml`): `cfg` (default: smoke) with `model` set to TINY_BPE.

    `second_eos`: `generation_config.eos_token_id` is [EOS, SECOND_EOS], a turn terminator the
    tokenizer does not call eos (as Llama-3-Instruct and Gemma-it ship); `dtype`: the weights'
    stored dtype (hub checkpoints are mostly bf16)."""
    cfg = (cfg or load_config("smoke")).model_copy(update={"model": TINY_BPE})
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    model = build_tiny_llama(cfg.model, tokenizer, seed).to(dtype)
    if second_eos:
        model.generation_config.eos_token_id = [EOS, SECOND_EOS]
    return save_policy(model, tokenizer, cfg, out_dir)
