"""The official `openai` client against the router stack (stable + canary + router on loopback),
each backend the tiny random-weight Llama on SmolLM2's BPE tokenizer and chat template: every
parameter the OpenAI surface takes, honoured or refused with a 400 naming it."""

import functools
import threading

import httpx
import openai
import pytest
from bpe_model import tiny_bpe_policy

from rlhfops.config import load_config
from rlhfops.modeling import load_tokenizer
from rlhfops.registry import Registry
from rlhfops.serving.router import start_stack

PROMPT = "q: 12+7?\n"
MESSAGES = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    cfg = load_config("smoke", ["serving.canary_percent=50", "serving.max_tokens=16", "serving.default_max_tokens=8"])
    path = tiny_bpe_policy(ws / "policy")
    reg = Registry(ws)
    v1 = reg.register(path, stage="stable")
    reg.register(path, parent=v1, stage="canary")  # the same weights: greedy replies agree across arms
    running = start_stack(cfg, ws, any_port=True)
    running.policy = path
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


def greedy(client, **kwargs):
    return client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=12, temperature=0, **kwargs)


def test_models_alias_and_named_versions(client, stack):
    ids = [m.id for m in client.models.list().data]
    stable, canary = stack.backends["stable"].version, stack.backends["canary"].version
    assert ids == ["rlhfops", stable, canary]
    assert {client.completions.create(model=canary, prompt=PROMPT, max_tokens=2).model for _ in range(8)} == {canary}
    split = {client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=2).model for _ in range(16)}
    assert split == {stable, canary}  # 50% canary: both arms in 16 requests (seeded split)
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4o", prompt=PROMPT, max_tokens=2)
    assert e.value.code == "model_not_found" and e.value.body["param"] == "model"


def test_completions_n_and_usage_count_the_prompt_once(client, stack):
    one = greedy(client)
    three = client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=6, n=3, user="ann")
    assert len(three.choices) == 3 and [c.index for c in three.choices] == [0, 1, 2]
    assert three.usage.prompt_tokens == one.usage.prompt_tokens > 0
    assert 3 <= three.usage.completion_tokens <= 18
    assert three.usage.total_tokens == three.usage.prompt_tokens + three.usage.completion_tokens
    rows = {r["id"]: r for r in stack.store.interactions()}
    ids = three.model_extra["rlhfops"]["interaction_ids"]
    assert [rows[i]["response"] for i in ids] == [c.text for c in three.choices]
    assert {rows[i]["user"] for i in ids} == {"ann"} and {rows[i]["version"] for i in ids} == {three.model}


def test_stop_cuts_before_the_first_stop_string(client):
    full = greedy(client).choices[0]
    assert len(full.text) >= 4, full.text
    stop = full.text[2:4]
    cut = greedy(client, stop=[stop, "never-appears"]).choices[0]
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
    chat_full = client.chat.completions.create(model="rlhfops", messages=MESSAGES, max_tokens=12, temperature=0)
    text = chat_full.choices[0].message.content
    chat_cut = client.chat.completions.create(
        model="rlhfops", messages=MESSAGES, max_tokens=12, temperature=0, stop=text[3:5]
    )
    assert chat_cut.choices[0].message.content == text[: text.find(text[3:5])]
    assert chat_cut.choices[0].finish_reason == "stop"
    assert chat_cut.usage.completion_tokens <= chat_full.usage.completion_tokens


def test_seed_reproduces_a_sample(client):
    def sample(seed):
        r = client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=12, n=3, temperature=1.0, seed=seed)
        return [c.text for c in r.choices]

    first = sample(42)
    assert sample(42) == first
    assert sample(43) != first
    assert len(set(first)) > 1  # n samples of one seed are not copies of each other


def test_logprobs_top_k_on_completions_and_chat(client):
    c = greedy(client, logprobs=3).choices[0]
    lp = c.logprobs
    assert "".join(lp.tokens) == c.text and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert lp.text_offset[0] == 0 and all(x <= 0 for x in lp.token_logprobs)
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)  # greedy takes the likeliest token
    chat = client.chat.completions.create(
        model="rlhfops", messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    content = chat.choices[0].logprobs.content
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 and t.bytes == list(t.token.encode()) for t in content)
    plain = client.chat.completions.create(model="rlhfops", messages=MESSAGES, max_tokens=6, temperature=0)
    assert plain.choices[0].logprobs is None


def test_echo_and_token_id_prompts(client, stack):
    full = greedy(client).choices[0].text
    echoed = greedy(client, echo=True).choices[0].text
    assert echoed == PROMPT + full
    tokenizer = load_tokenizer(stack.policy)
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    by_ids = client.completions.create(model="rlhfops", prompt=ids, max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == full and by_ids.usage.prompt_tokens == len(ids)
    two = client.completions.create(model="rlhfops", prompt=[ids, ids], max_tokens=4, temperature=0)
    assert len(two.choices) == 2 and two.usage.prompt_tokens == 2 * len(ids)


def test_chat_content_parts_and_null_assistant_content(client, stack):
    plain = client.chat.completions.create(model="rlhfops", messages=MESSAGES, max_tokens=8, temperature=0)
    parts = client.chat.completions.create(
        model="rlhfops",
        messages=[{"role": "user", "content": [{"type": "text", "text": "q: 12"}, {"type": "text", "text": "+7?\n"}]}],
        max_tokens=8,
        temperature=0,
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content
    turns = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "q: 1+1?"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": PROMPT},
    ]
    r = client.chat.completions.create(model="rlhfops", messages=turns, max_tokens=4)
    stored = {x["id"]: x for x in stack.store.interactions()}[r.id]
    assert '"role": "assistant", "content": ""' in stored["prompt"]  # kept as chat.prompt_of wrote it
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="rlhfops",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        )
    assert e.value.body["param"] == "messages.0.content" and "image_url part" in e.value.message


def test_streaming_completions_and_chat(client):
    full = greedy(client)
    chunks = list(client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=12, temperature=0, stream=True))
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(pieces) > 1  # token by token, not the finished reply in one piece
    assert "".join(pieces) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    plain = client.chat.completions.create(model="rlhfops", messages=MESSAGES, max_tokens=8, temperature=0)
    stream = client.chat.completions.create(
        model="rlhfops", messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) > 1 and "".join(contents) == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason


def test_a_streamed_reply_is_stored_under_the_routers_id(client, stack):
    chunks = list(client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=6, n=2, stream=True, user="sam"))
    texts = {i: "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == i) for i in (0, 1)}
    assert {c.id for c in chunks} == {chunks[0].id}
    ids = chunks[-1].model_extra["rlhfops"]["interaction_ids"]
    rows = {r["id"]: r for r in stack.store.interactions()}
    assert [rows[i]["response"] for i in ids] == [texts[0], texts[1]] and rows[ids[0]]["user"] == "sam"


def test_streamed_stop_strings_are_cut_across_chunks(client):
    full = greedy(client).choices[0].text
    stop = full[3:6]  # likely spans tokens: the stream must not send its first characters early
    cut = full[: full.find(stop)]
    chunks = list(
        client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=12, temperature=0, stop=stop, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def hold_the_last_step(stack, steps: int):
    """Both backends' models block in their `steps`-th forward call (the step that decodes the
    last token) until `go` is set; `released` records whether it was set (not timed out)."""
    go, released, originals = threading.Event(), [], []
    for running in stack.servers.values():
        model = running.server.config.app.state.worker.model
        real = model.forward
        calls = [0]

        @functools.wraps(real)
        def forward(*args, _real=real, _calls=calls, **kwargs):
            _calls[0] += 1
            if _calls[0] == steps:
                released.append(go.wait(60))
            return _real(*args, **kwargs)

        model.forward = forward
        originals.append(model)
    return go, released, lambda: [m.__dict__.pop("forward") for m in originals]


def test_the_first_chunk_arrives_before_the_last_token_is_decoded(client, stack):
    """The last decoding step is held inside the model until the client has read a content chunk;
    a server that sent the reply only once decoded would hold it until the timeout."""
    full = greedy(client).choices[0]
    steps = full.finish_reason == "length" and 12
    assert steps, "the greedy reply must run to max_tokens for this test"
    go, released, restore = hold_the_last_step(stack, steps)
    try:
        stream = client.completions.create(model="rlhfops", prompt=PROMPT, max_tokens=12, temperature=0, stream=True)
        pieces = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                go.set()
            pieces += [chunk.choices[0].text] if chunk.choices else []
    finally:
        go.set()
        restore()
    assert released == [True] and "".join(pieces) == full.text


def test_the_sse_stream_ends_with_done(stack):
    body = {"model": "rlhfops", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", stack.url + "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"


@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"top_p": 0.5}, "top_p", "'top_p' is not supported"),
        ({"presence_penalty": 1.0}, "presence_penalty", "'presence_penalty' is not supported"),
        ({"logit_bias": {"5": 10}}, "logit_bias", "'logit_bias' is not supported"),
        ({"suffix": "end"}, "suffix", "'suffix' is not supported"),
        ({"echo": True, "logprobs": 2}, "echo", "'echo' is not supported"),
        ({"logprobs": 9}, "logprobs", "'logprobs'"),
        ({"max_tokens": 99}, "max_tokens", "max_tokens is 99; the limit is 16"),
        ({"n": 99}, "n", "n is 99; the limit is 8"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"best_of": 2}, "best_of", "best_of needs reward models"),
    ],
)
def test_unsupported_or_out_of_limit_parameters_are_400_naming_them(client, kwargs, param, fragment):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="rlhfops", prompt=PROMPT, **{"max_tokens": 2, **kwargs})
    assert e.value.body["param"] == param and fragment in e.value.message


def test_chat_refuses_tools_and_json_mode_by_name(client):
    for kwargs, param in (
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="rlhfops", messages=MESSAGES, max_tokens=2, **kwargs)
        assert e.value.body["param"] == param
