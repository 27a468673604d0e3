"""The LLM judge against the project's own OpenAI-compatible server (the tiny policy as the "judge"
model): a model that cannot follow the verdict format yields unlabelled items, never a label."""

from rlhfops.annotation.judges import LLMJudge
from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.serving.server import create_app, start_server


def test_llm_judge_on_our_server_records_unparsable_replies_as_unlabelled(tmp_path):
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    model_dir = save_policy(model, tokenizer, cfg, tmp_path / "judge")
    server = start_server(create_app(model_dir, "judge", cfg), "127.0.0.1", 0)
    try:
        judge_cfg = cfg.annotation.judge.model_copy(
            update={"base_url": f"{server.url}/v1", "model": "judge", "max_tokens": 8, "max_retries": 1}
        )
        judge = LLMJudge(judge_cfg, ["helpfulness", "honesty"])
        scores = judge(["solve: 2+3", "what is 4/0?"], ["2+3=5\nanswer: 5", "answer: undefined"])
    finally:
        server.stop()
    assert scores == [{"helpfulness": None, "honesty": None}] * 2
    assert judge.stats["labelled"] == 0
    assert judge.stats["requests"] >= 4  # every (response, objective) was asked
    assert judge.stats["unparsable"] + judge.stats["failed"] == 4
