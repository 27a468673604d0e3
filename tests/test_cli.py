import json

from typer.testing import CliRunner

from rlhfops.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sft", "eval", "run"):
        assert command in result.output


def test_bad_override_is_one_line_and_non_zero(tmp_path):
    result = runner.invoke(app, ["sft", "-c", "smoke", "-w", str(tmp_path / "ws"), "--set", "sft.lrr=1"])
    assert result.exit_code == 2
    assert "unknown config key 'sft.lrr'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "ws").exists()  # nothing half-written


def test_eval_of_a_missing_model_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["eval", "-c", "smoke", "-w", str(tmp_path), "--model", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_sft_then_eval_json(tmp_path):
    ws = str(tmp_path / "ws")
    sft = runner.invoke(app, ["sft", "-c", "smoke", "-w", ws, "--set", "sft.max_steps=10", "--json"])
    assert sft.exit_code == 0, sft.output
    summary = json.loads(sft.stdout)
    assert summary["steps"] == 10 and summary["final_loss"] < summary["first_loss"]
    ev = runner.invoke(app, ["eval", "-c", "smoke", "-w", ws, "--set", "eval.n_test=8", "--json"])
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.stdout)
    assert result["model"].endswith("sft") and result["n_prompts"] == 8
    assert json.loads((tmp_path / "ws" / "eval" / "sft.json").read_text()) == result


def test_run_trains_and_evaluates_beside_the_untrained_policy(tmp_path):
    ws = tmp_path / "ws"
    result = runner.invoke(
        app, ["run", "-c", "smoke", "-w", str(ws), "--set", "sft.max_steps=5", "--set", "eval.n_test=8", "--json"]
    )
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert set(results) == {"untrained", "sft"}
    assert results["untrained"]["model"] == "untrained" and results["sft"]["n_prompts"] == 8
    assert (ws / "eval" / "untrained.json").exists() and (ws / "models" / "sft" / "model.safetensors").exists()


def test_offline_trains_and_evaluates_with_the_shifted_decoding(tmp_path):
    ws = str(tmp_path / "ws")
    assert runner.invoke(app, ["sft", "-c", "smoke", "-w", ws, "--set", "sft.max_steps=5", "--json"]).exit_code == 0
    small = [
        "--set",
        "offline.reward=gold",
        "--set",
        "offline.n_prompts=8",
        "--set",
        "offline.samples_per_prompt=2",
        "--set",
        "offline.max_steps=5",
        "--set",
        "eval.n_test=8",
    ]
    result = runner.invoke(app, ["offline", "-c", "smoke", "-w", ws, *small, "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert set(results) == {"sft", "offline"} and results["offline"]["n_prompts"] == 8
    assert (tmp_path / "ws" / "models" / "offline" / "ilql_heads.safetensors").exists()
    assert (tmp_path / "ws" / "data" / "offline" / "samples-gold.jsonl").exists()
