import threading
import time

import pytest

from rlhfops.serving.store import FeedbackExists, InteractionStore


def test_log_feedback_and_read_back(tmp_path):
    store = InteractionStore.for_workspace(tmp_path)
    assert (tmp_path / "interactions.db").exists()
    t0 = time.time()
    a = store.log("1+1=", "2", "v1", 12.5, "ok", user="alice")
    b = store.log("2+2=", "5", "v2", 30.0, "ok", request_id="req-b")
    assert b == "req-b" and a != b
    store.add_feedback(a, 1.0)
    rows = store.interactions()
    assert [r["id"] for r in rows] == [a, b]
    assert set(rows[0]) == {"id", "time", "prompt", "response", "version", "latency_ms", "status", "user", "feedback"}
    assert rows[0]["feedback"] == 1.0 and rows[0]["user"] == "alice" and rows[0]["latency_ms"] == 12.5
    assert rows[1]["feedback"] is None and rows[1]["user"] is None
    assert rows[0]["time"] >= t0 - 1
    assert [r["id"] for r in store.interactions(version="v2")] == [b]
    assert store.interactions(since=time.time() + 60) == []
    assert store.count() == 2 and store.count("v1") == 1 and store.count("v3") == 0
    with pytest.raises(FeedbackExists, match=f"interaction '{a}' already has feedback"):
        store.add_feedback(a, 0.0)  # one feedback per interaction: the first one stands
    assert store.interactions(version="v1")[0]["feedback"] == 1.0


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_feedback_must_be_finite(tmp_path, score):
    store = InteractionStore.for_workspace(tmp_path)
    rid = store.log("p", "r", "v", 1.0, "ok")
    with pytest.raises(ValueError, match="must be a finite number"):
        store.add_feedback(rid, score)
    assert store.interactions()[0]["feedback"] is None


def test_unknown_id_is_a_clear_error(tmp_path):
    store = InteractionStore(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(KeyError, match="no interaction with id 'nope'"):
        store.add_feedback("nope", 1.0)


def test_reopen_keeps_records(tmp_path):
    rid = InteractionStore.for_workspace(tmp_path).log("p", "r", "v", 1.0, "ok")
    store = InteractionStore.for_workspace(tmp_path)
    assert store.count() == 1 and store.interactions()[0]["id"] == rid


def test_concurrent_writers_lose_nothing(tmp_path):
    store = InteractionStore.for_workspace(tmp_path)
    other = InteractionStore.for_workspace(tmp_path)  # a second engine, like a second process
    errors = []

    def write(s, k):
        try:
            for i in range(50):
                rid = s.log(f"p{k}-{i}", "r", f"v{k % 2}", 1.0, "ok")
                s.add_feedback(rid, float(i % 2))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(store if k % 2 else other, k)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 400 and store.count("v0") == 200
    assert sum(r["feedback"] for r in store.interactions()) == 200


def test_for_config_takes_a_url_or_the_workspace(tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert InteractionStore.for_config(url, tmp_path / "ws").url == url
    assert InteractionStore.for_config(None, tmp_path / "ws").url.endswith("ws/interactions.db")
