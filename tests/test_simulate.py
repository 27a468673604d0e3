import pytest

from rlhfops.config import load_config, validate
from rlhfops.modeling import init_policy, save_policy
from rlhfops.registry import Registry
from rlhfops.serving.gate import decide
from rlhfops.serving.simulate import simulate_traffic
from rlhfops.serving.store import InteractionStore


@pytest.mark.parametrize("feedback", ["thumbs", "score"])
def test_simulated_users_send_prompts_and_feedback(tmp_path, feedback):
    overrides = ["serving.canary_percent=25", "simulate.max_tokens=24", "simulate.noise=0"]
    cfg = load_config("smoke", [*overrides, f"simulate.feedback={feedback}"])
    tokenizer, model = init_policy(cfg)
    path = save_policy(model, tokenizer, cfg, tmp_path / "models" / "sft")
    reg = Registry(tmp_path)
    v1 = reg.register(path, stage="stable")
    v2 = reg.register(path, parent=v1, stage="canary")
    out = simulate_traffic(cfg, tmp_path, 200)
    assert out["errors"] == 0 and out["requests"] == 200
    assert out["seconds"] < 60
    store = InteractionStore.for_workspace(tmp_path)
    rows = store.interactions()
    assert len(rows) == 200 and all(0.0 <= r["feedback"] <= 1.0 for r in rows)
    if feedback == "thumbs":
        assert all(r["feedback"] in (0.0, 1.0) for r in rows)
    assert out["versions"][v1]["requests"] + out["versions"][v2]["requests"] == 200
    assert 0.15 < out["versions"][v2]["requests"] / 200 < 0.35
    # with noise 0 a thumbs up is exactly a gold mean >= threshold, a score exactly the gold mean
    key = "thumbs_up_rate" if feedback == "thumbs" else "mean_gold"
    for v in (v1, v2):
        logged = [r["feedback"] for r in rows if r["version"] == v]
        assert sum(logged) / len(logged) == pytest.approx(out["versions"][v][key])
    assert decide(store, v1, v2, cfg.gate).decision == "wait"  # 100 feedback per arm is the first look


def test_feedback_comes_from_the_eval_judges(tmp_path):
    """A python eval judge that scores 0.25 and leaves requests for the secret unlabelled: every
    feedback is its score, and an unlabelled response gets none."""
    judge_file = tmp_path / "judge.py"
    judge_file.write_text(
        "def quarter(prompts, responses):\n    return [None if 'secret' in p else 0.25 for p in prompts]\n"
    )
    raw = load_config("smoke", ["simulate.noise=0", "simulate.feedback=score", "simulate.max_tokens=8"]).to_dict()
    spec = {"kind": "python", "callable": f"{judge_file}:quarter"}
    raw["eval"]["judges"] = dict.fromkeys(["helpfulness", "harmlessness", "honesty", "conciseness"], spec)
    cfg = validate(raw)
    tokenizer, model = init_policy(cfg)
    path = save_policy(model, tokenizer, cfg, tmp_path / "models" / "sft")
    v1 = Registry(tmp_path).register(path, stage="stable")
    out = simulate_traffic(cfg, tmp_path, 40)
    rows = InteractionStore.for_workspace(tmp_path).interactions()
    secret = [r for r in rows if "secret" in r["prompt"]]
    assert out["errors"] == 0 and len(rows) == 40 and 0 < len(secret) < 40
    assert all(r["feedback"] is None for r in secret)
    assert all(r["feedback"] == 0.25 for r in rows if "secret" not in r["prompt"])
    assert out["versions"][v1]["unlabelled"] == len(secret) and out["versions"][v1]["mean_gold"] == 0.25


def test_more_rounds_while_the_caller_asks_up_to_the_bound(tmp_path):
    """`rlhfops run` sends another round while the online gate would still wait on the canary: each
    round is logged before the question is asked, and the bound ends it."""
    cfg = load_config("smoke", ["simulate.max_tokens=8", "simulate.noise=0"])
    tokenizer, model = init_policy(cfg)
    Registry(tmp_path).register(save_policy(model, tokenizer, cfg, tmp_path / "models" / "sft"), stage="stable")
    seen = []

    def more() -> bool:
        seen.append(len(InteractionStore.for_workspace(tmp_path).interactions()))
        return len(seen) < 2

    out = simulate_traffic(cfg, tmp_path, 10, more=more, max_rounds=5)
    assert out["rounds"] == 2 and out["requests"] == 20 and seen == [10, 20] and out["errors"] == 0
    out = simulate_traffic(cfg, tmp_path, 10, more=lambda: True, max_rounds=3)
    assert out["rounds"] == 3 and out["requests"] == 30
    assert len(InteractionStore.for_workspace(tmp_path).interactions()) == 50
