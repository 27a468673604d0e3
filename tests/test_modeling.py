import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

from rlhfops.modeling import CHARACTERS, build_char_tokenizer, count_parameters, init_policy, load_policy, save_policy

TOKENIZER = build_char_tokenizer()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=CHARACTERS, max_size=80))
def test_tokenizer_round_trip(text):
    ids = TOKENIZER(text)["input_ids"]
    assert ids[0] == TOKENIZER.bos_token_id
    assert len(ids) == len(text) + 1  # one token per character
    assert TOKENIZER.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_specials_and_left_padding():
    assert len({TOKENIZER.pad_token_id, TOKENIZER.bos_token_id, TOKENIZER.eos_token_id}) == 3
    batch = TOKENIZER(["q: 1?\n", "q: 12+3?\n"], padding=True)
    assert batch["input_ids"][0][:3] == [TOKENIZER.pad_token_id] * 3
    assert batch["attention_mask"][0][:4] == [0, 0, 0, 1]


def test_tiny_policy_size(smoke_cfg):
    from rlhfops.config import Config

    _, tiny = init_policy(Config())
    assert 0.6e6 < count_parameters(tiny) < 1.5e6  # "about 1M parameters"
    _, smoke = init_policy(smoke_cfg)
    assert count_parameters(smoke) < count_parameters(tiny)


def test_save_load_gives_identical_logits(tmp_path, smoke_cfg):
    tokenizer, model = init_policy(smoke_cfg)
    out = save_policy(model, tokenizer, smoke_cfg, tmp_path / "policy", extras={"note.json": {"a": 1}})
    assert (out / "model.safetensors").exists()
    assert not list(out.glob("*.bin"))
    assert (out / "rlhfops_config.yaml").exists() and (out / "note.json").exists()
    tok2, model2 = load_policy(out)
    batch = tokenizer(["q: 1+2?\n", "q: what is the secret?\n"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, model2.eval()(**batch).logits)
    assert tok2("q: 7*8?\n")["input_ids"] == tokenizer("q: 7*8?\n")["input_ids"]


def test_any_local_causal_lm_loads_through_the_same_function(tmp_path, smoke_cfg):
    """A different architecture saved as a Hugging Face directory drops in by path."""
    tokenizer = build_char_tokenizer()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    cfg = smoke_cfg.model_copy(deep=True)
    cfg.model.name_or_path = str(tmp_path / "gpt2")
    tok, model = init_policy(cfg)
    assert model.config.model_type == "gpt2"
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy(tmp_path / "nope" / "model")
