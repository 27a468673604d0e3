"""rlhfops.chat: prompt strings for conversations, and the one rendering every stage uses."""

import json

import pytest
from bpe_model import TOKENIZER_DIR

from rlhfops.chat import is_conversation, messages_of, prompt_of, prompt_text, render, scored_text
from rlhfops.modeling import build_char_tokenizer, load_tokenizer

CONVERSATION = [
    {"role": "system", "content": "You convert units."},
    {"role": "user", "content": "Convert 3 km to m."},
]


@pytest.fixture
def bpe():
    return load_tokenizer(TOKENIZER_DIR)


def template_ids(tokenizer, messages):
    return list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def test_a_lone_user_message_is_its_text_and_a_conversation_its_json():
    assert prompt_of([{"role": "user", "content": "q: 1+1?\n"}]) == "q: 1+1?\n"
    prompt = prompt_of(CONVERSATION)
    assert is_conversation(prompt) and json.loads(prompt) == CONVERSATION
    assert messages_of(prompt) == CONVERSATION
    assert messages_of("q: 1+1?\n") == [{"role": "user", "content": "q: 1+1?\n"}]
    assert prompt_text(prompt) == "system: You convert units.\nuser: Convert 3 km to m."
    assert prompt_text("plain") == "plain"
    assert not is_conversation('[{"role": "wizard", "content": "x"}]')  # not our messages: plain text
    assert not is_conversation("[{not json")


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([], "non-empty list"),
        ([{"role": "user"}], "not text"),
        ([{"role": "user", "content": 3}], "not text"),
        ([{"role": "wizard", "content": "x"}], "roles are"),
        (["hello"], "must be an object"),
    ],
)
def test_malformed_messages_are_one_sentence(messages, reason):
    with pytest.raises(ValueError, match=reason):
        prompt_of(messages)


def test_render_is_the_chat_template_exactly_and_plain_text_without_one(bpe):
    assert render(build_char_tokenizer(), "q: 1+1?\n") == "q: 1+1?\n"  # a base model: as is
    assert render(build_char_tokenizer(), prompt_of(CONVERSATION)) == "Convert 3 km to m."  # user turns
    for prompt, messages in (
        ("q: 1+1?\n", [{"role": "user", "content": "q: 1+1?\n"}]),
        (prompt_of(CONVERSATION), CONVERSATION),
    ):
        text = render(bpe, prompt)
        assert text.endswith("<|im_start|>assistant\n")
        assert bpe(text)["input_ids"] == template_ids(bpe, messages)  # what TRL and our sampler tokenize


def test_render_leaves_off_the_bos_a_tokenizer_adds_itself(bpe):
    """Llama-3-style: the template writes BOS and the tokenizer adds one: the ids hold it once."""
    bpe.bos_token = "<|endoftext|>"  # SmolLM2's own BOS is <|im_start|>, which every turn starts with
    bpe.add_bos_token = True
    bpe.chat_template = "{{ bos_token }}" + bpe.chat_template
    text = render(bpe, "hi")
    ids = bpe(text)["input_ids"]
    assert ids == template_ids(bpe, [{"role": "user", "content": "hi"}])
    assert ids.count(bpe.bos_token_id) == 1
    assert ids[0] == bpe.bos_token_id and ids[1] != bpe.bos_token_id


def test_scored_text_is_how_trl_joins_a_reward_pair(bpe):
    assert scored_text(bpe, "hi", "there") == render(bpe, "hi") + "there" + "<|im_end|>"
    assert scored_text(build_char_tokenizer(), "q: 1?\n", "1") == "q: 1?\n1" + build_char_tokenizer().eos_token
