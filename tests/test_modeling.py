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


def test_extras_are_written_atomically_and_readable_by_all(tmp_path, smoke_cfg):
    import json

    from rlhfops.files import FILE_MODE

    tokenizer, model = init_policy(smoke_cfg)
    out = save_policy(model, tokenizer, smoke_cfg, tmp_path / "policy", extras={"train_log.json": [{"step": 1}]})
    assert json.loads((out / "train_log.json").read_text()) == [{"step": 1}]
    assert (out / "train_log.json").stat().st_mode & 0o777 == FILE_MODE
    assert not list(out.glob(".*.tmp"))


def _full_log_probs(model, hidden, targets, temperature=1.0):
    logp = torch.log_softmax(model.lm_head(hidden).float() / temperature, -1)
    return logp.gather(-1, targets[..., None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_token_log_probs_match_the_full_vocabulary_computation(smoke_cfg, chunk):
    """Chunked log-probs and entropies from hidden states equal log_softmax over the whole (B, T, V)
    logits, and so do their gradients (chunks checkpointed)."""
    from rlhfops.modeling import final_hidden, token_log_probs

    tokenizer, model = init_policy(smoke_cfg)
    enc = tokenizer(["q: 1+2?\n", "q: 12*3-4?\n"], padding=True, return_tensors="pt")
    ids, attn = enc["input_ids"], enc["attention_mask"]
    hidden = final_hidden(model, ids, attn)
    full_logits = model(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    torch.testing.assert_close(model.lm_head(hidden), full_logits)  # the trunk's state is what the head reads
    targets = ids[:, 1:]
    logp, ent = token_log_probs(model, hidden[:, :-1], targets, temperature=0.7, chunk=chunk, entropy=True)
    ref_logp, ref_ent = _full_log_probs(model, hidden[:, :-1], targets, temperature=0.7)
    assert logp.shape == targets.shape and ent.shape == targets.shape
    torch.testing.assert_close(logp, ref_logp)
    torch.testing.assert_close(ent, ref_ent)

    grads = []
    for fn in (
        lambda: token_log_probs(model, hidden[:, :-1], targets, chunk=chunk),
        lambda: _full_log_probs(model, hidden[:, :-1], targets)[0],
    ):
        model.zero_grad()
        (fn() * attn[:, 1:]).sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_token_log_probs_of_nothing_is_empty(smoke_cfg):
    from rlhfops.modeling import token_log_probs

    _, model = init_policy(smoke_cfg)
    hidden = torch.zeros(2, 0, model.config.hidden_size)
    assert token_log_probs(model, hidden, torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0)
