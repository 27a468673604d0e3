import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.registry import Registry
from rlhfops.serving.gate import arm_stats
from rlhfops.serving.router import Backend, Split, canary_bucket, create_router_app, start_stack
from rlhfops.serving.server import create_app, start_server
from rlhfops.serving.store import InteractionStore


@pytest.fixture(scope="module")
def cfg():
    return load_config("smoke", ["serving.default_max_tokens=4"])


@pytest.fixture(scope="module")
def backends(tmp_path_factory, cfg):
    tokenizer, model = init_policy(cfg)
    path = save_policy(model, tokenizer, cfg, tmp_path_factory.mktemp("m") / "policy")
    running = {v: start_server(create_app(path, v, cfg), "127.0.0.1", 0) for v in ("v1", "v2")}
    yield {v: Backend(v, r.url) for v, r in running.items()}, path
    for r in running.values():
        r.stop()


def test_split_share_and_stickiness():
    split = Split(10.0, sticky=False, rng=random.Random(0))
    share = sum(split.to_canary(None) for _ in range(20000)) / 20000
    assert abs(share - 0.10) < 0.01
    sticky = Split(10.0, sticky=True, rng=random.Random(0))
    users = [f"user{i}" for i in range(2000)]
    assert all(sticky.to_canary(u) == sticky.to_canary(u) for u in users)
    assert abs(sum(sticky.to_canary(u) for u in users) / 2000 - 0.10) < 0.02
    assert sticky.to_canary("user1") == (canary_bucket("user1") < 10.0)
    assert Split(0.0, sticky=False).to_canary(None) is False and Split(100.0, sticky=False).to_canary(None) is True


def test_router_splits_logs_and_takes_feedback(backends, cfg, tmp_path):
    arms, _ = backends
    store = InteractionStore.for_workspace(tmp_path)
    sc = cfg.serving.model_copy(update={"canary_percent": 30.0})
    router = start_server(create_router_app(arms["v1"], arms["v2"], sc, store), "127.0.0.1", 0)
    try:
        client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["rlhfops", "v1", "v2"]

        def one(i):
            if i % 2:
                return client.completions.create(model="rlhfops", prompt=f"q: {i % 10}+1?\n", max_tokens=4)
            return client.chat.completions.create(model="rlhfops", messages=[{"role": "user", "content": "q: 2*2?\n"}])

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(one, range(200)))
        assert store.count() == 200
        by_id = {r["id"]: r for r in store.interactions()}
        for reply in replies:
            row = by_id[reply.id]
            assert row["version"] == reply.model and row["status"] == "ok"
            text = reply.choices[0].text if reply.object == "text_completion" else reply.choices[0].message.content
            assert row["response"] == text
        assert {r["prompt"] for r in by_id.values() if r["prompt"].startswith("q: 2*2")} == {"q: 2*2?\n"}
        assert 0.2 < store.count("v2") / 200 < 0.4
        assert httpx.post(router.url + "/v1/feedback", json={"id": replies[0].id, "thumbs": "down"}).status_code == 200
        assert [r["feedback"] for r in store.interactions() if r["id"] == replies[0].id] == [0.0]
        bad = httpx.post(router.url + "/v1/completions", json={"prompt": "q\n", "max_tokens": 10**6})
        assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]["message"]
        assert store.interactions()[-1]["status"] == "rejected"
        metrics = httpx.get(router.url + "/metrics").text
        assert "rlhfops_router_canary_share" in metrics and 'arm="canary"' in metrics
        assert httpx.get(router.url + "/health").json()["status"] == "ok"
    finally:
        router.stop()


def test_sticky_users_stay_on_one_version(backends, cfg, tmp_path):
    arms, _ = backends
    store = InteractionStore.for_workspace(tmp_path)
    sc = cfg.serving.model_copy(update={"canary_percent": 50.0, "sticky": True})
    router = start_server(create_router_app(arms["v1"], arms["v2"], sc, store), "127.0.0.1", 0)
    try:
        for i in range(40):
            httpx.post(router.url + "/v1/completions", json={"prompt": "q: 1+1?\n", "user": f"u{i % 8}"})
        versions = {}
        for row in store.interactions():
            versions.setdefault(row["user"], set()).add(row["version"])
        assert len(versions) == 8 and all(len(v) == 1 for v in versions.values())
        assert {u: v.pop() for u, v in versions.items()} == {
            f"u{i}": "v2" if canary_bucket(f"u{i}") < 50 else "v1" for i in range(8)
        }
    finally:
        router.stop()


def test_a_dead_canary_is_retried_on_stable_and_counted_against_the_canary(backends, cfg, tmp_path):
    arms, _ = backends
    store = InteractionStore.for_workspace(tmp_path)
    dead = Backend("v9", "http://127.0.0.1:9")  # nothing listens on the discard port
    sc = cfg.serving.model_copy(update={"canary_percent": 100.0})
    router = start_server(create_router_app(arms["v1"], dead, sc, store), "127.0.0.1", 0)
    try:
        r = httpx.post(router.url + "/v1/completions", json={"prompt": "q\n"})
        assert r.status_code == 200 and r.json()["model"] == "v1" and r.json()["rlhfops"]["arm"] == "stable"
        assert [(x["version"], x["status"]) for x in store.interactions()] == [("v9", "error"), ("v1", "ok")]
        assert store.interactions()[0]["response"] == "the canary backend (v9) failed: ConnectError"
        named = httpx.post(router.url + "/v1/completions", json={"prompt": "q\n", "model": "v9"})  # no fallback
        assert named.status_code == 503 and named.headers["retry-after"] == "1"
        assert named.json()["error"]["message"] == "the canary backend (v9) failed: ConnectError"
        assert "127.0.0.1" not in named.text  # no internal address reaches the client
        assert httpx.get(router.url + "/health").status_code == 503
    finally:
        router.stop()


def test_a_named_version_is_served_by_that_version(backends, cfg, tmp_path):
    arms, _ = backends
    store = InteractionStore.for_workspace(tmp_path)
    router = start_server(create_router_app(arms["v1"], arms["v2"], cfg.serving, store), "127.0.0.1", 0)
    try:
        for model, version in (("v2", "v2"), ("v1", "v1")):
            replies = [
                httpx.post(router.url + "/v1/completions", json={"prompt": "q\n", "model": model}).json()
                for _ in range(10)
            ]
            assert {r["model"] for r in replies} == {version}
        r = httpx.post(router.url + "/v1/completions", json={"prompt": "q\n", "model": "gpt-4"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert store.count() == 20  # the unknown model reached no version
    finally:
        router.stop()


MALFORMED = [
    '{"prompt": "q", "temperature": 1e400}',
    '{"prompt": "q", "temperature": NaN}',
    '{"prompt": "q", "temperature": Infinity}',
    '{"prompt": "q", "max_tokens": 1000000}',
    '{"prompt": "q", "n": 99}',
    '{"prompt": "' + "x" * 2000 + '"}',
    '{"prompt": [1, 2, 99999999]}',
    '{"prompt": "q: \\ud800"}',
    '{"messages": [{"role": "user", "content": "\\ud800"}]}',
    '{"messages": [{"role": "wizard", "content": "hi"}]}',
    '{"messages": []}',
    '{"prompt": "q", "logprobs": 50}',
    '{"prompt": "q", "top_p": 0.1}',
    '{"prompt": "q", "model": "nope"}',
    "[" * 20000 + "]" * 20000,
    "not json",
]


def test_malformed_requests_leave_every_versions_error_count_unchanged(backends, cfg, tmp_path):
    arms, _ = backends
    store = InteractionStore.for_workspace(tmp_path)
    sc = cfg.serving.model_copy(update={"canary_percent": 50.0})
    router = start_server(create_router_app(arms["v1"], arms["v2"], sc, store), "127.0.0.1", 0)
    try:
        for _ in range(5):
            for raw in MALFORMED:
                path = "/v1/chat/completions" if "messages" in raw else "/v1/completions"
                r = httpx.post(router.url + path, content=raw, headers={"content-type": "application/json"})
                assert 400 <= r.status_code < 500, (raw[:60], r.status_code, r.text[:200])
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        for v in ("v1", "v2"):
            stats = arm_stats(store.interactions(version=v))
            assert stats["errors"] == 0 and stats["requests"] == 0
        assert {r["status"] for r in store.interactions()} <= {"rejected"}
    finally:
        router.stop()


def test_a_lone_surrogate_among_30_concurrent_requests_fails_alone(backends, cfg, tmp_path):
    arms, _ = backends
    store = InteractionStore.for_workspace(tmp_path)
    router = start_server(create_router_app(arms["v1"], arms["v2"], cfg.serving, store), "127.0.0.1", 0)
    lone = '{"prompt": "q: \\ud800", "max_tokens": 4}'
    try:

        def one(i):
            if i == 7:
                r = httpx.post(router.url + "/v1/completions", content=lone, timeout=60)
            else:
                r = httpx.post(router.url + "/v1/completions", json={"prompt": f"q: {i}*2?\n", "max_tokens": 4},
                               timeout=60)  # fmt: skip
            return r.status_code

        with ThreadPoolExecutor(31) as pool:
            codes = list(pool.map(one, range(31)))
        assert codes[7] == 400 and codes[:7] + codes[8:] == [200] * 30
        assert store.count() == 30 and {r["status"] for r in store.interactions()} == {"ok"}
    finally:
        router.stop()


def test_start_stack_from_the_registry(backends, cfg, tmp_path):
    _, path = backends
    with pytest.raises(ValueError, match="has no stable version"):
        start_stack(cfg, tmp_path, any_port=True)
    reg = Registry(tmp_path)
    v1 = reg.register(path, stage="stable")
    v2 = reg.register(path, parent=v1, stage="canary")
    stack = start_stack(cfg, tmp_path, any_port=True)
    try:
        assert set(stack.backends) == {"stable", "canary"} and stack.backends["canary"].version == v2
        ids = [m["id"] for m in httpx.get(stack.url + "/v1/models").json()["data"]]
        assert ids == ["rlhfops", v1, v2]
        httpx.post(stack.url + "/v1/completions", json={"prompt": "q: 1+2?\n"})
        assert InteractionStore.for_workspace(tmp_path).count() == 1
    finally:
        stack.stop()


def test_the_router_follows_rollback_and_promote_at_once(backends, cfg, tmp_path):
    _, path = backends
    reg = Registry(tmp_path)
    v1 = reg.register(path, stage="stable")
    v2 = reg.register(path, parent=v1, stage="canary")
    v3 = reg.register(path, parent=v1, stage="candidate")
    sc = cfg.serving.model_copy(update={"canary_percent": 100.0})
    stack = start_stack(cfg.model_copy(update={"serving": sc}), tmp_path, any_port=True)
    try:

        def served_by() -> str:
            return httpx.post(stack.url + "/v1/completions", json={"prompt": "q\n", "max_tokens": 2}).json()["model"]

        assert served_by() == v2
        reg.rollback_canary()
        assert {served_by() for _ in range(10)} == {v1}  # the next request after rollback returns
        assert [m["id"] for m in httpx.get(stack.url + "/v1/models").json()["data"]] == ["rlhfops", v1]
        r = httpx.post(stack.url + "/v1/completions", json={"prompt": "q\n", "model": v2})
        assert r.status_code == 404  # an archived version is no longer served
        reg.set_stage(v2, "canary")
        assert served_by() == v2
        reg.promote_canary()
        assert {served_by() for _ in range(5)} == {v2}
        assert [m["id"] for m in httpx.get(stack.url + "/v1/models").json()["data"]] == ["rlhfops", v2]
        reg.set_stage(v3, "canary")  # no server runs v3 in this stack: stable keeps the traffic
        assert served_by() == v2
    finally:
        stack.stop()
