"""Collection: policy samples plus the interactions logged since the last cycle (the real store)."""

import json

import pytest

from rlhfops.annotation.collect import MANIFEST, RESPONSES, collect, read_responses
from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.serving.store import InteractionStore
from rlhfops.workspace import Workspace


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    return save_policy(model, tokenizer, cfg, tmp_path_factory.mktemp("p") / "sft")


def test_policy_samples_and_interactions_since_the_last_cycle(tmp_path, policy):
    cfg = load_config("smoke", ["collect.n_prompts=4", "collect.samples_per_prompt=2", "generation.max_new_tokens=8"])
    ws = Workspace(tmp_path / "ws")
    store = InteractionStore.for_workspace(ws.root)
    a = store.log("q: 1+1?\n", "answer: 2", "sft", 12.0, "ok", user="u1")
    store.add_feedback(a, 1.0)
    store.log("q: 2+2?\n", "answer: 5", "canary-1", 9.0, "ok")
    store.log("q: 3+3?\n", "", "canary-1", 9.0, "error")

    c1 = collect(cfg, ws, policy, ws.cycle_dir(1), cycle=1)
    records = read_responses(ws.cycle_dir(1) / RESPONSES)
    policy_rows = [r for r in records if r["source"] == "policy"]
    inter = [r for r in records if r["source"] == "interaction"]
    assert c1["policy_samples"] == len(policy_rows) == 8 - c1["empty_samples"]
    assert {r["model_version"] for r in policy_rows} <= {"sft"} and all(r["feedback"] is None for r in policy_rows)
    assert [(r["prompt"], r["model_version"], r["feedback"]) for r in inter] == [
        ("q: 1+1?\n", "sft", 1.0),
        ("q: 2+2?\n", "canary-1", None),
    ]
    assert c1["interactions"] == 2 and c1["interactions_skipped_empty"] == 1 and c1["with_feedback"] == 1

    store.log("q: 4+4?\n", "answer: 8", "canary-1", 7.0, "ok")
    c2 = collect(cfg, ws, policy, ws.cycle_dir(2), cycle=2)
    inter2 = [r for r in read_responses(ws.cycle_dir(2) / RESPONSES) if r["source"] == "interaction"]
    assert [r["prompt"] for r in inter2] == ["q: 4+4?\n"] and c2["interactions"] == 1
    assert json.loads((ws.cycle_dir(2) / MANIFEST).read_text())["interactions_since"] is not None
    # each cycle samples other prompts
    p1 = {r["prompt"] for r in policy_rows}
    p2 = {r["prompt"] for r in read_responses(ws.cycle_dir(2) / RESPONSES) if r["source"] == "policy"}
    assert p1 != p2
    store.close()


def test_prompts_from_a_data_set_file(tmp_path, policy):
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"text": f"q: {i}+{i}?\n"}) + "\n" for i in range(10)))
    overrides = [f"collect.dataset={data}", "collect.prompt_field=text", "collect.n_prompts=3"]
    cfg = load_config("smoke", [*overrides, "collect.interactions=false", "generation.max_new_tokens=4"])
    ws = Workspace(tmp_path / "ws")
    counts = collect(cfg, ws, policy, ws.cycle_dir(1), cycle=1)
    assert counts["prompts"] == 3
    bad = load_config("smoke", [f"collect.dataset={data}", "collect.prompt_field=prompt"])
    with pytest.raises(ValueError, match="no column 'prompt'"):
        collect(bad, ws, policy, ws.cycle_dir(2), cycle=2)


GOOD = {"prompt": "q: 1+1?\n", "response": "answer: 2", "source": "policy", "model_version": "sft", "feedback": None}


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (json.dumps({**GOOD, "prompt": None}), "field 'prompt' must be a string"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "response"}), "field 'response' must be a string"),
        (json.dumps({**GOOD, "response": "  "}), "field 'response' is empty"),
        (json.dumps({**GOOD, "source": "web"}), "field 'source'"),
        (json.dumps({**GOOD, "feedback": "good"}), "field 'feedback'"),
        (json.dumps(GOOD)[:-5], "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, line, fragment):
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=fragment) as e:
        read_responses(path)
    assert f"{path}:2:" in str(e.value)


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "\xff"}\n')
    with pytest.raises(ValueError, match="not valid UTF-8") as e:
        read_responses(path)
    assert f"{path}:3:" in str(e.value)


def test_interaction_rows_with_text_or_infinite_values_are_named_and_skipped():
    from rlhfops.annotation.collect import check_interaction

    good = {"id": "a", "time": 5.0, "prompt": "p", "response": "r", "version": "v1", "feedback": None}
    assert check_interaction(good) is None
    assert "time 'yesterday' is not a finite number" in check_interaction({**good, "time": "yesterday"})
    assert "feedback 'good'" in check_interaction({**good, "feedback": "good"})
    assert "feedback inf" in check_interaction({**good, "feedback": float("inf")})
    assert "response is not text" in check_interaction({**good, "response": None})
