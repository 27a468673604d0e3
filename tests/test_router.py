import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.registry import Registry
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
        assert [m.id for m in client.models.list().data] == ["v1", "v2"]

        def one(i):
            if i % 2:
                return client.completions.create(model="x", prompt=f"q: {i % 10}+1?\n", max_tokens=4)
            return client.chat.completions.create(model="x", messages=[{"role": "user", "content": "q: 2*2?\n"}])

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


def test_unreachable_backend_is_a_logged_502(backends, cfg, tmp_path):
    arms, _ = backends
    store = InteractionStore.for_workspace(tmp_path)
    dead = Backend("v9", "http://127.0.0.1:9")  # nothing listens on the discard port
    sc = cfg.serving.model_copy(update={"canary_percent": 100.0})
    router = start_server(create_router_app(arms["v1"], dead, sc, store), "127.0.0.1", 0)
    try:
        r = httpx.post(router.url + "/v1/completions", json={"prompt": "q\n"})
        assert r.status_code == 502 and "the canary backend (v9" in r.json()["error"]["message"]
        assert [(x["version"], x["status"]) for x in store.interactions()] == [("v9", "error")]
        assert "ConnectError" in store.interactions()[0]["response"]
        assert httpx.get(router.url + "/health").status_code == 503
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
        ids = {httpx.get(stack.url + "/v1/models").json()["data"][i]["id"] for i in range(2)}
        assert ids == {v1, v2}
        httpx.post(stack.url + "/v1/completions", json={"prompt": "q: 1+2?\n"})
        assert InteractionStore.for_workspace(tmp_path).count() == 1
    finally:
        stack.stop()
