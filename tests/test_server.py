import asyncio
import functools
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.serving import server
from rlhfops.serving.protocol import APIError
from rlhfops.serving.server import create_app, start_server
from rlhfops.serving.store import InteractionStore


@pytest.fixture(scope="module")
def cfg():
    return load_config("smoke", ["serving.max_tokens=16", "serving.default_max_tokens=8", "serving.max_n=4"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, cfg):
    tokenizer, model = init_policy(cfg)
    return save_policy(model, tokenizer, cfg, tmp_path_factory.mktemp("m") / "policy")


@pytest.fixture(scope="module")
def served(model_dir, cfg, tmp_path_factory):
    store = InteractionStore.for_workspace(tmp_path_factory.mktemp("ws"))
    running = start_server(create_app(model_dir, "v1", cfg, store=store), "127.0.0.1", 0)
    yield running, store
    running.stop()


def test_openai_client_shapes(served):
    running, store = served
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["v1"]
    c = client.completions.create(model="v1", prompt="q: 2+3?\n", max_tokens=8, n=2, user="alice")
    assert c.object == "text_completion" and c.model == "v1" and len(c.choices) == 2
    assert all(isinstance(ch.text, str) and ch.finish_reason in ("stop", "length") for ch in c.choices)
    assert 0 < c.usage.completion_tokens <= 16
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
    chat = client.chat.completions.create(
        model="v1", messages=[{"role": "user", "content": "q: 4*2?\n"}], max_tokens=6, temperature=0
    )
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens <= 6
    greedy = [
        client.completions.create(model="v1", prompt="q: 1+1?\n", max_tokens=6, temperature=0).choices[0].text
        for _ in range(2)
    ]
    assert greedy[0] == greedy[1]  # temperature 0 is greedy decoding
    rows = store.interactions(version="v1")
    assert {r["prompt"] for r in rows} >= {"q: 2+3?\n", "q: 4*2?\n"}
    assert [r["user"] for r in rows if r["prompt"] == "q: 2+3?\n"] == ["alice", "alice"]


def test_usage_counts_tokens(served):
    running, _ = served
    r = httpx.post(running.url + "/v1/completions", json={"prompt": "q: 2+3?\n", "max_tokens": 5}).json()
    assert r["usage"]["completion_tokens"] <= 5
    assert r["usage"]["prompt_tokens"] == len("q: 2+3?\n") + 1  # one token per character plus <bos>
    assert r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]


def test_feedback_lands_in_the_store(served):
    running, store = served
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused")
    c = client.completions.create(model="v1", prompt="q: 3-1?\n", max_tokens=4)
    assert httpx.post(running.url + "/v1/feedback", json={"id": c.id, "thumbs": "up"}).status_code == 200
    assert [r["feedback"] for r in store.interactions() if r["id"] == c.id] == [1.0]
    again = httpx.post(running.url + "/v1/feedback", json={"id": c.id, "score": 0.25})
    assert again.status_code == 409 and "already has feedback" in again.json()["error"]["message"]
    assert [r["feedback"] for r in store.interactions() if r["id"] == c.id] == [1.0]  # the first one stands
    r = httpx.post(running.url + "/v1/feedback", json={"id": "nope", "score": 1})
    assert r.status_code == 404 and "no interaction with id 'nope'" in r.json()["error"]["message"]
    r = httpx.post(running.url + "/v1/feedback", json={"id": c.id, "thumbs": "sideways"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "thumbs"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ('{"id": "ID", "score": -1e6}', "'score' is -1000000.0; feedback scores are in [0, 1]"),
        ('{"id": "ID", "score": 1.5}', "feedback scores are in [0, 1]"),
        ('{"id": "ID", "score": NaN}', "NaN; numbers must be finite"),
        ('{"id": "ID", "score": Infinity}', "Infinity; numbers must be finite"),
        ('{"id": "ID", "score": -Infinity}', "-Infinity; numbers must be finite"),
        ('{"id": "ID", "score": 1e400}', "1e400, which overflows a float"),
        ('{"id": "ID", "score": true}', "'score'"),
        ('{"id": "ID", "score": "0.5"}', "'score'"),
        ('{"id": "ID", "score": 0.5, "thumbs": "up"}', "exactly one of"),
    ],
)
def test_feedback_out_of_range_or_not_finite_is_400_and_nothing_is_stored(served, raw, fragment):
    running, store = served
    rid = store.log("q", "a", "v1", 1.0, "ok")
    r = httpx.post(
        running.url + "/v1/feedback", content=raw.replace("ID", rid), headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and fragment in r.json()["error"]["message"]
    assert [x["feedback"] for x in store.interactions() if x["id"] == rid] == [None]


def test_bad_text_and_deep_nesting_are_400_with_the_field_named(served):
    running, _ = served
    lone = '{"prompt": "q: \\ud800", "max_tokens": 2}'  # a JSON escape for a lone surrogate
    r = httpx.post(running.url + "/v1/completions", content=lone, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert "not valid UTF-8 text" in r.json()["error"]["message"]
    chat = '{"messages": [{"role": "user", "content": "\\udfff"}]}'
    r = httpx.post(running.url + "/v1/chat/completions", content=chat, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.content"
    for depth in (40, 30000):  # deeper than MAX_DEPTH; deeper than Python's recursion limit
        r = httpx.post(running.url + "/v1/completions", content="[" * depth + "]" * depth)
        assert r.status_code == 400 and "nests deeper than 32 levels" in r.json()["error"]["message"]
    r = httpx.post(running.url + "/v1/completions", content=b"\xff\xfe not utf-8")
    assert r.status_code == 400 and r.json()["error"]["message"] == "request body is not UTF-8"


def test_a_bad_prompt_among_concurrent_requests_fails_alone(served):
    """30 ordinary requests and one with a lone surrogate, sent at once: only that one fails."""
    running, _ = served
    lone = '{"prompt": "q: \\ud800", "max_tokens": 4}'

    def one(i):
        if i == 15:
            return httpx.post(running.url + "/v1/completions", content=lone, timeout=60).status_code
        return httpx.post(running.url + "/v1/completions", json={"prompt": f"q: {i}+1?\n", "max_tokens": 4},
                          timeout=60).status_code  # fmt: skip

    with ThreadPoolExecutor(31) as pool:
        codes = list(pool.map(one, range(31)))
    assert codes[15] == 400 and codes[:15] + codes[16:] == [200] * 30


def test_a_failing_batch_is_retried_one_request_at_a_time(model_dir, cfg):
    app = create_app(model_dir, "v1", cfg)
    worker = app.state.worker
    real = server.generate

    def fails_on_poison(model, tokenizer, prompts, *args, **kwargs):
        if "poison" in prompts:
            raise RuntimeError("boom")
        return real(model, tokenizer, prompts, *args, **kwargs)

    async def go():
        lane = worker.lanes["small"]
        tasks = [asyncio.create_task(worker.run(lane))]
        d = server.Decoding(4, 1.0, 0, False)
        results = await asyncio.gather(*(worker.submit([p], d) for p in ("a", "poison", "b")), return_exceptions=True)
        tasks[0].cancel()
        return results

    server.generate = fails_on_poison
    try:
        a, poison, b = asyncio.run(go())
    finally:
        server.generate = real
    assert isinstance(a[0], server.Completion) and isinstance(b[0], server.Completion)
    assert isinstance(poison, APIError) and poison.status == 500 and "boom" not in poison.message


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"prompt": "q\n", "max_tokens": 17}, 400, "max_tokens is 17; the limit is 16"),
        ({"prompt": "q\n", "n": 5}, 400, "n is 5; the limit is 4"),
        ({"prompt": "x" * 2000}, 400, "a prompt is 2000 characters; the limit is 1024"),
        ({"prompt": "q\n", "best_of": 2}, 400, "best_of needs reward models"),
        ({"prompt": "q\n", "top_p": 0.5}, 400, "'top_p' is not supported"),
        ({"prompt": "q\n", "stop": ["a", "b", "c", "d", "e"]}, 400, "'stop' takes at most 4"),
        ({"prompt": "q\n", "logprobs": 6}, 400, "'logprobs'"),
        ({"prompt": "q\n", "echo": True, "logprobs": 1}, 400, "'echo' is not supported"),
        ({"prompt": [5, 999999]}, 400, "token id 999999"),
        ({"prompt": "x" * 120, "max_tokens": 16}, 400, "exceeds the model's context of 128"),
        ({"prompt": "q\n", "model": "gpt-4"}, 404, "the model 'gpt-4' does not exist"),
        ({"prompt": "q\n", "temperature": 2.5}, 400, "'temperature'"),
        ({"prompt": "q\n", "temperature": -1}, 400, "'temperature'"),
        ({"max_tokens": 3}, 400, "'prompt'"),
        ({"prompt": "y" * 70000}, 413, "the limit is 65536"),
    ],
)
def test_limits_are_4xx_with_a_clear_message(served, body, status, fragment):
    running, _ = served
    r = httpx.post(running.url + "/v1/completions", json=body)
    assert r.status_code == status and fragment in r.json()["error"]["message"]
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_openai_client_sees_the_limit_message(served):
    running, _ = served
    client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="max_tokens is 99; the limit is 16"):
        client.completions.create(model="v1", prompt="q\n", max_tokens=99)


def test_metrics_and_health(served):
    running, _ = served
    assert httpx.get(running.url + "/health").json() == {"status": "ok", "version": "v1"}
    for i in range(20):
        r = httpx.get(running.url + f"/no/such/path/{i}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    text = httpx.get(running.url + "/metrics").text
    assert 'rlhfops_requests_total{code="200",endpoint="/v1/completions"}' in text
    assert 'rlhfops_requests_total{code="404",endpoint="unmatched"} 20.0' in text
    assert "/no/such/path" not in text  # labelled by route template, not raw path
    assert "rlhfops_request_latency_seconds_bucket" in text and "rlhfops_completion_tokens_total" in text


def test_bearer_token(model_dir, cfg, monkeypatch):
    monkeypatch.setenv("RLHFOPS_TEST_KEY", "s3cret")
    cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"api_key_env": "RLHFOPS_TEST_KEY"})})
    running = start_server(create_app(model_dir, "v1", cfg), "127.0.0.1", 0)
    try:
        with pytest.raises(openai.AuthenticationError, match="bearer token"):
            openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=running.url + "/v1", api_key="s3cret").models.list()
        assert ok.data[0].id == "v1"
        r = httpx.post(
            running.url + "/v1/feedback", json={"id": "x", "score": 1}, headers={"authorization": "Bearer s3cret"}
        )
        assert r.status_code == 404 and "no interaction store" in r.json()["error"]["message"]
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(running.url + path).status_code == 401
            assert httpx.get(running.url + path, headers={"authorization": "Bearer s3cret"}).status_code == 200
    finally:
        running.stop()


class ShortestWins:
    """A stand-in reward ensemble: score = -length, spread = 0.1 * length."""

    def __call__(self, prompts, completions, **columns):
        return [-float(len(c)) for c in completions]

    def vectors(self, prompts, completions):
        lengths = torch.tensor([[float(len(c))] for c in completions])
        return {"spreads": 0.1 * lengths}


def test_best_of_n_and_reward_spread_metric(model_dir, cfg):
    running = start_server(create_app(model_dir, "v1", cfg, scorer=ShortestWins()), "127.0.0.1", 0)
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused")
        single = [client.completions.create(model="v1", prompt="q: 5+5?\n", max_tokens=12) for _ in range(8)]
        best = [client.completions.create(model="v1", prompt="q: 5+5?\n", max_tokens=12, best_of=8) for _ in range(8)]
        mean_len = sum(len(c.choices[0].text) for c in single) / 8
        assert sum(len(c.choices[0].text) for c in best) / 8 < mean_len  # the shortest of 8 beats one sample
        spreads = [s for c in single + best for s in c.model_extra["rlhfops"]["reward_spread"]]
        assert spreads == pytest.approx([0.1 * len(c.choices[0].text) for c in single + best])
        text = httpx.get(running.url + "/metrics").text
        gauge = next(line for line in text.splitlines() if line.startswith("rlhfops_reward_spread_mean "))
        assert float(gauge.split()[1]) == pytest.approx(sum(spreads) / len(spreads))
        assert "rlhfops_reward_spread_count 16.0" in text
    finally:
        running.stop()


def _slow_cfg(cfg, **serving):
    return cfg.model_copy(update={"serving": cfg.serving.model_copy(update=serving)})


def test_a_full_lane_answers_429_with_retry_after(model_dir, cfg):
    # max_batch 2: a lane holds 2 x 2 completions; a long batch wait keeps all ten requests queued at once
    running = start_server(create_app(model_dir, "v1", _slow_cfg(cfg, max_batch=2, batch_wait_ms=1500)), "127.0.0.1", 0)
    try:

        def one(i):
            return httpx.post(running.url + "/v1/completions", json={"prompt": f"q{i}", "max_tokens": 2}, timeout=60)

        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(one, range(10)))
        codes = sorted(r.status_code for r in replies)
        assert codes == [200] * 4 + [429] * 6
        busy = [r for r in replies if r.status_code == 429]
        assert all(int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error" for r in busy)
    finally:
        running.stop()


def test_a_small_request_does_not_wait_behind_large_ones(model_dir, cfg):
    """A maximum-size request (64 completions x 64 tokens) holds the large lane, blocked inside the
    model until the test lets it go; a small request sent meanwhile is answered (with one queue it
    would wait behind the held batch and time out). No timing: the order is forced."""
    app = create_app(model_dir, "v1", _slow_cfg(cfg, max_tokens=64))
    worker = app.state.worker
    real, held, release = worker._complete, threading.Event(), threading.Event()

    def complete(lane, group):
        if lane.name == "large":
            held.set()
            assert release.wait(120), "the test never released the large batch"
        return real(lane, group)

    worker._complete = complete

    def meanwhile(small, big):
        assert small.status_code == 200 and not big.done()
        release.set()

    try:
        assert _small_during_large(app, held, meanwhile).status_code == 200
    finally:
        release.set()


def _small_during_large(app, reached, meanwhile=lambda small, big: None):
    """Serve `app`; send a maximum-size request, once `reached` is set a small one; call
    `meanwhile(small reply, large future)`; returns the large reply."""
    running = start_server(app, "127.0.0.1", 0)
    try:
        large = {"prompt": ["q: 1+1?\n"] * 16, "n": 4, "max_tokens": 64, "temperature": 0}
        with ThreadPoolExecutor(1) as pool:
            big = pool.submit(httpx.post, running.url + "/v1/completions", json=large, timeout=300)
            assert reached.wait(120), "the large request never reached the model"
            small = httpx.post(
                running.url + "/v1/completions", json={"prompt": "q: 2+2?\n", "max_tokens": 2}, timeout=60
            )
            meanwhile(small, big)
            return big.result()
    finally:
        running.stop()


def test_work_of_a_client_that_gave_up_is_dropped(model_dir, cfg):
    app = create_app(model_dir, "v1", _slow_cfg(cfg, batch_wait_ms=800))
    worker = app.state.worker
    calls = []
    real = worker._complete
    worker._complete = lambda lane, group: calls.append(len(group)) or real(lane, group)
    running = start_server(app, "127.0.0.1", 0)
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(running.url + "/v1/completions", json={"prompt": "q\n", "max_tokens": 4}, timeout=0.2)
        time.sleep(1.5)
        assert calls == [] and all(lane.waiting == 0 for lane in worker.lanes.values())
        assert httpx.post(running.url + "/v1/completions", json={"prompt": "q\n", "max_tokens": 4}).status_code == 200
        assert calls == [1]
    finally:
        running.stop()


SERVE = """
import sys
from rlhfops.config import load_config
from rlhfops.serving.server import create_app, start_server, wait_for_shutdown_signal
cfg = load_config("smoke", ["serving.batch_wait_ms=1500"])
running = start_server(create_app(sys.argv[1], "v1", cfg), "127.0.0.1", 0)
print(running.url, flush=True)
wait_for_shutdown_signal()
running.stop()
print("drained", flush=True)
"""


def test_sigterm_drains_requests_in_flight(model_dir):
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(model_dir)], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        with ThreadPoolExecutor(1) as pool:
            reply = pool.submit(
                httpx.post, url + "/v1/completions", json={"prompt": "q\n", "max_tokens": 4}, timeout=60
            )
            time.sleep(0.5)  # the request waits 1.5 s in the queue
            proc.send_signal(signal.SIGTERM)
            assert reply.result().status_code == 200
        assert proc.wait(30) == 0 and proc.stdout.read().strip() == "drained"
    finally:
        proc.kill()


def test_an_unhandled_exception_is_a_500_in_openai_shape_without_a_traceback(caplog):
    from fastapi import FastAPI

    from rlhfops.serving.protocol import Guard, install_error_handlers

    seen = []
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(Guard, token=None, observe=lambda route, status, s: seen.append((route, status)))

    @app.get("/boom/{x}")
    async def boom(x: str):
        raise RuntimeError("secret internals")

    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom/1"), await client.post("/boom/2")

    r, wrong_method = asyncio.run(go())
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert wrong_method.status_code == 405 and set(wrong_method.json()["error"]) == {"message", "type", "param", "code"}
    assert seen == [("/boom/{x}", 500), ("/boom/{x}", 405)]
    assert any("RuntimeError: secret internals" in m for m in caplog.messages)  # one log line for the operator


def test_settled_text_holds_back_what_more_tokens_could_change():
    assert server.settled("abcEN", ("END",)) == "abc"  # "EN" may become the stop string
    assert server.settled("abcE", ("END", "Ex")) == "abc"
    assert server.settled("abcENx", ("END",)) == "abcENx"
    assert server.settled("ab\ufffd", ()) == "ab"  # half a UTF-8 character
    assert server.settled("a ", (), tidy=True) == "a" and server.settled("a \n", ()) == "a \n"


def test_a_token_stream_cuts_a_stop_string_that_spans_chunks():
    loop = asyncio.new_event_loop()
    try:
        stream = server.TokenStream(1, ("END",), False, loop)
        for text in ("ab", "abE", "abEN", "abENx", "abENxE", "abENxEND", "abENxENDmore"):
            stream.offer(0, text)
        loop.run_until_complete(asyncio.sleep(0))
        pieces = [stream.queue.get_nowait()[1] for _ in range(stream.queue.qsize())]
    finally:
        loop.close()
    assert pieces == ["ab", "ENx"] and stream.rest(0, "abENx") == ""


def _forwards(model, on_call):
    """Wrap `model.forward` so that `on_call(n, batch_rows)` runs before its n-th call."""
    real, calls = model.forward, [0]

    @functools.wraps(real)
    def forward(*args, **kwargs):
        calls[0] += 1
        on_call(calls[0], kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    model.forward = forward


def test_a_small_batch_decodes_between_two_steps_of_a_large_one(model_dir, cfg):
    """The large batch is held in its third decoding step until a small batch waits for the model;
    then the small batch's steps all run before the large batch's fourth (forced order, no timing)."""
    app = create_app(model_dir, "v1", _slow_cfg(cfg, max_tokens=64))
    worker = app.state.worker
    order, at_third = [], threading.Event()

    def on_call(n, rows):
        lane = threading.current_thread().name.split("_")[0]  # lane-small / lane-large
        order.append(lane)
        if lane == "lane-large" and order.count(lane) == 3:
            at_third.set()
            while not worker.turn.small_waiting:
                time.sleep(0.01)

    _forwards(worker.model, on_call)
    big = _small_during_large(app, at_third, lambda small, big: small.raise_for_status())
    assert big.status_code == 200
    first_small = order.index("lane-small")
    smalls = order.count("lane-small")
    assert order[:first_small] == ["lane-large"] * 3
    assert order[first_small : first_small + smalls] == ["lane-small"] * smalls
    assert order[first_small + smalls :] and set(order[first_small + smalls :]) == {"lane-large"}


def test_a_client_that_leaves_mid_stream_stops_its_decoding(model_dir, cfg, monkeypatch):
    """The streamed batch (3 rows) is held in its fourth step until the server has dropped the job
    of the client that closed the stream; no fifth step of that batch runs."""
    app = create_app(model_dir, "v1", _slow_cfg(cfg, max_tokens=64))
    worker = app.state.worker
    steps, at_fourth, dropped = [], threading.Event(), threading.Event()
    real_drop = server.drop
    monkeypatch.setattr(server, "drop", lambda job: (real_drop(job), dropped.set()))

    def on_call(n, rows):
        if rows == 3:
            steps.append(n)
            if len(steps) == 4:
                at_fourth.set()
                assert dropped.wait(60), "the server never dropped the job of the client that left"

    _forwards(worker.model, on_call)
    running = start_server(app, "127.0.0.1", 0)
    try:
        body = {"prompt": "q: 1+1?\n", "n": 3, "max_tokens": 64, "temperature": 0, "stream": True}
        with httpx.stream("POST", running.url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            assert at_fourth.wait(60)
        assert dropped.wait(60)
        after = httpx.post(running.url + "/v1/completions", json={"prompt": "q\n", "max_tokens": 2}, timeout=60)
        assert after.status_code == 200
    finally:
        running.stop()
    assert len(steps) == 4
