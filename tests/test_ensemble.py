import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from rlhfops.modeling import build_char_tokenizer
from rlhfops.reward.ensemble import aggregate, pooled_last_token
from rlhfops.reward.stacked import StackedLlamaScorer, can_stack

R = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, -2.0]])  # K=2 members, N=3 samples


def test_mean_and_spread():
    agg, std = aggregate(R, "mean")
    assert agg.tolist() == [2.0, 0.0, 0.0]
    assert std.tolist() == [1.0, 0.0, 2.0]  # population std over members


def test_weighted_by_validation_accuracy():
    agg, _ = aggregate(R, "weighted", weights=torch.tensor([0.75, 0.25]))
    assert torch.allclose(agg, torch.tensor([1.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match="needs member weights"):
        aggregate(R, "weighted")


def test_min_is_conservative_and_uwo_penalises_spread():
    assert aggregate(R, "min")[0].tolist() == [1.0, 0.0, -2.0]
    agg, _ = aggregate(R, "uwo", lam=0.5)
    assert agg.tolist() == [1.5, 0.0, -1.0]
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        aggregate(R, "max")


def test_pooling_takes_the_rightmost_real_token():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    ids = torch.tensor([[5, 6, 0, 0], [0, 5, 6, 7]])  # pad 0: right- and left-padded rows
    assert pooled_last_token(hidden, ids, 0)[:, 0].tolist() == [1.0, 7.0]


def _members(k, kv_heads=2, seed=0):
    tok = build_char_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
    )
    torch.manual_seed(seed)
    return tok, [LlamaForSequenceClassification(cfg).eval() for _ in range(k)]


TEXTS = ["q: 2+3*4?\n3*4=12\n2+12=14\nanswer: 14<eos>", "q: 1?\nanswer: 1<eos>", "q: 7-2?\nanswer: 5<eos>"]


@pytest.mark.parametrize(
    ("kv_heads", "side", "texts"),
    [
        (4, "right", TEXTS),  # packed: the pads are left out of every token-wise op
        (2, "right", TEXTS),
        (2, "right", TEXTS[:1]),  # no pads at all
        (2, "right", [t.removesuffix("<eos>") + "<pad><pad>" for t in TEXTS[1:]]),  # pads the mask keeps
        (4, "left", TEXTS),  # any other mask: applied as the members apply it
    ],
)
def test_stacked_scorer_equals_member_by_member(kv_heads, side, texts):
    tok, members = _members(3, kv_heads)
    tok.padding_side = side
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.stack([m(**enc).logits[:, 0] for m in members])
    got = StackedLlamaScorer(members)(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_different_shapes_do_not_stack():
    _, a = _members(1)
    _, b = _members(1, kv_heads=4)
    assert can_stack(a + a) and not can_stack(a + b)
    with pytest.raises(ValueError, match="cannot be stacked"):
        StackedLlamaScorer(a + b)
