import json

import pytest

from rlhfops.report import END, START, update_readme
from rlhfops.workspace import Workspace


def _result(helpfulness):
    gold = {"helpfulness": helpfulness, "harmlessness": 0.5, "honesty": 0.25, "conciseness": 1.0}
    return {
        "gold": gold,
        "gold_composite": sum(gold.values()) / 4,
        "solve_accuracy": helpfulness,
        "step_validity": None,
        "refusal_recall": 1.0,
        "over_refusal_rate": 0.0,
        "undefined_recall": 0.5,
        "n_prompts": 8,
        "decoding": "greedy",
    }


def test_readme_block_is_rewritten_from_the_workspace(tmp_path):
    ws = Workspace(tmp_path / "ws")
    for name, h in (("untrained", 0.0), ("sft", 0.625)):
        ws.eval_path(name).parent.mkdir(parents=True, exist_ok=True)
        ws.eval_path(name).write_text(json.dumps(_result(h)))
    ws.model_dir("sft").mkdir(parents=True)
    (ws.model_dir("sft") / "train_log.json").write_text(json.dumps([{"loss": 1.0}, {"train_runtime": 99.6}]))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nstale numbers\n{END}\noutro\n")
    update_readme(readme, ws)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n") and "stale" not in text
    assert "| gold helpfulness | 0.000 | 0.625 |" in text
    assert "| step validity | - | - |" in text
    assert "took 100 s" in text


def test_readme_without_results_is_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    with pytest.raises(FileNotFoundError, match="run `rlhfops run` first"):
        update_readme(readme, Workspace(tmp_path / "empty"))
