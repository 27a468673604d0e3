import torch

from rlhfops.generation import generate
from rlhfops.modeling import init_policy

PROMPTS = ["q: 1+2?\n", "q: 23+45*2?\n", "q: what is the secret?\n"]


def _policy(cfg):
    tokenizer, model = init_policy(cfg)
    return tokenizer, model.eval()


def test_greedy_matches_transformers_generate(smoke_cfg):
    tokenizer, model = _policy(smoke_cfg)
    ours = generate(model, tokenizer, PROMPTS, 12, greedy=True)
    enc = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    theirs = model.generate(
        **enc,
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    n = ours.completion_ids.shape[1]
    assert torch.equal(theirs[:, enc.input_ids.shape[1] :][:, :n], ours.completion_ids)


def test_logprobs_match_a_full_forward_pass(smoke_cfg):
    """KV cache + left padding + position ids give the same log-probs as one pass over the whole text."""
    tokenizer, model = _policy(smoke_cfg)
    g = generate(model, tokenizer, PROMPTS, 10, temperature=1.0, generator=torch.Generator().manual_seed(0))
    ids = torch.cat([g.prompt_ids, g.completion_ids], 1)
    mask = torch.cat([g.prompt_mask, g.completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    p = g.prompt_ids.shape[1]
    full = torch.log_softmax(logits[:, p - 1 : -1].float(), -1).gather(-1, g.completion_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(full * g.completion_mask, g.logprobs, atol=1e-5, rtol=0)


def test_stops_at_eos_and_respects_the_length_bound(smoke_cfg):
    tokenizer, model = _policy(smoke_cfg)
    eos = tokenizer.eos_token_id

    # Make eos the most likely token after the prompt for the first row only by a logits hook.
    def hook(ids, logits):
        logits = logits.clone()
        logits[0, eos] = 1e4
        logits[1:, eos] = -1e4
        return logits

    g = generate(model, tokenizer, PROMPTS, 7, greedy=True, logits_hook=hook)
    assert g.completion_ids.shape == (3, 7)
    assert g.completion_mask[0].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert g.completion_ids[0, 1:].eq(tokenizer.pad_token_id).all()
    assert g.texts[0] == ""
    assert g.completion_mask[1:].eq(1).all()  # never emitted eos: cut at the bound
    assert all(len(t) <= 7 for t in g.texts)
    assert (g.logprobs[0, 1:] == 0).all()


def test_sampling_is_seeded_and_top_k_restricts(smoke_cfg):
    tokenizer, model = _policy(smoke_cfg)
    a = generate(model, tokenizer, PROMPTS * 4, 8, generator=torch.Generator().manual_seed(1))
    b = generate(model, tokenizer, PROMPTS * 4, 8, generator=torch.Generator().manual_seed(1))
    assert a.texts == b.texts
    g = generate(model, tokenizer, PROMPTS, 6, top_k=1, generator=torch.Generator().manual_seed(2))
    greedy = generate(model, tokenizer, PROMPTS, 6, greedy=True)
    assert torch.equal(g.completion_ids, greedy.completion_ids)


def test_stops_at_either_eos_of_a_bpe_model(tmp_path):
    """SmolLM2's tokenizer with a second eos id in `generation_config` (as Llama-3-Instruct ships its
    turn terminator): a row that emits either stops there, and the text leaves it off."""
    from bpe_model import EOS, SECOND_EOS, tiny_bpe_policy

    from rlhfops.modeling import load_policy

    tokenizer, model = load_policy(tiny_bpe_policy(tmp_path / "bpe", second_eos=True))
    assert model.generation_config.eos_token_id == [EOS, SECOND_EOS] and tokenizer.eos_token_id == EOS

    def hook(ids, logits):  # row 0 ends with the tokenizer's eos, row 1 with the second, row 2 never
        logits = logits.clone()
        logits[:, [EOS, SECOND_EOS]] = -1e4
        logits[0, EOS] = logits[1, SECOND_EOS] = 1e4
        return logits

    g = generate(model, tokenizer, ["q: 1+2?", "q: 3+4?", "hello"], 5, greedy=True, logits_hook=hook)
    assert g.completion_mask.tolist() == [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert g.completion_ids[:2, 0].tolist() == [EOS, SECOND_EOS]
    assert g.texts[:2] == ["", ""] and g.stopped == [True, True, False]


def test_stop_strings_end_a_row_and_cut_its_text(smoke_cfg):
    tokenizer, model = _policy(smoke_cfg)
    eos = tokenizer.eos_token_id
    digit = tokenizer.convert_tokens_to_ids("7")

    def hook(ids, logits):  # always "7", never eos
        logits = torch.full_like(logits, -1e4)
        logits[:, digit] = 0.0
        return logits

    g = generate(model, tokenizer, PROMPTS[:2], 6, greedy=True, logits_hook=hook, stop=["77"])
    assert g.completion_mask.tolist() == [[1, 1]] * 2 and eos not in g.completion_ids  # all stopped: no more steps
    assert g.texts == ["", ""] and g.stopped == [True, True]
    plain = generate(model, tokenizer, PROMPTS[:2], 6, greedy=True, logits_hook=hook)
    assert plain.texts == ["777777"] * 2 and plain.stopped == [False, False]
    # `generation.stop` reaches every sampler through sample_texts
    from rlhfops.generation import sample_texts

    gen = smoke_cfg.generation.model_copy(update={"stop": ["777"], "max_new_tokens": 6})
    assert sample_texts(model, tokenizer, PROMPTS[:2], gen, 0, logits_hook=hook) == ["", ""]


def test_the_kv_cache_goes_by_the_name_transformers_keeps(smoke_cfg):
    """transformers 5.24 warns that `past_key_values` is removed in 5.40 and names `cache`."""
    import warnings

    from rlhfops.generation import cache_argument

    tokenizer, model = _policy(smoke_cfg)
    assert cache_argument(model) == "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(model, tokenizer, PROMPTS, 4, generator=torch.Generator().manual_seed(0))


def test_only_the_last_position_reaches_the_lm_head(smoke_cfg):
    """No (B, P, V) logits over the prompt: every LM-head call sees one position per row, with or
    without a hook that needs the hidden state; the returned tensors own their memory."""
    tokenizer, model = _policy(smoke_cfg)
    seen = []
    handle = model.lm_head.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))

    def hook(ids, logits, last):
        assert last.shape == (len(PROMPTS), model.config.hidden_size)
        return logits

    hook.needs_hidden = True
    try:
        for logits_hook in (None, hook):
            seen.clear()
            gen = generate(
                model, tokenizer, PROMPTS, 6, generator=torch.Generator().manual_seed(0), logits_hook=logits_hook
            )
            assert len(seen) == gen.completion_ids.shape[1]
            assert all(
                s[-2:] in ((1, model.config.hidden_size),) or s == (len(PROMPTS), model.config.hidden_size)
                for s in seen
            )
            assert gen.completion_ids.is_contiguous() and gen.logprobs.is_contiguous()
    finally:
        handle.remove()
