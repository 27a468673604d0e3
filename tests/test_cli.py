import ast
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import rlhfops.cli
from rlhfops.cli import app
from rlhfops.cli.common import fail, user_errors
from rlhfops.workspace import Workspace

runner = CliRunner()
CLI_DIR = Path(rlhfops.cli.__file__).parent


def _cli_imports(path: Path) -> set[str]:
    """The modules of the rlhfops.cli package that `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlhfops.cli"):
            if node.module == "rlhfops.cli":
                found |= {f"rlhfops.cli.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rlhfops.cli")}
    return found


def test_command_modules_import_only_common_so_the_package_has_no_cycle():
    commands = {f"rlhfops.cli.{p.stem}" for p in CLI_DIR.glob("*.py") if p.stem not in ("__init__", "__main__")}
    commands.remove("rlhfops.cli.common")
    assert {"rlhfops.cli.train", "rlhfops.cli.cycle", "rlhfops.cli.serving"} <= commands
    assert _cli_imports(CLI_DIR / "common.py") == set()
    for module in commands:
        assert _cli_imports(CLI_DIR / f"{module.rsplit('.', 1)[1]}.py") == {"rlhfops.cli.common"}, module
    # the package registers every command module (a module it forgot would add no commands)
    assert _cli_imports(CLI_DIR / "__init__.py") == commands | {"rlhfops.cli.common"}


def test_user_errors_reports_one_line_and_lets_other_errors_through(capsys):
    with pytest.raises(typer.Exit) as exit_, user_errors():
        raise FileNotFoundError("no policy in 'x'")
    assert exit_.value.exit_code == 2 and capsys.readouterr().err == "error: no policy in 'x'\n"
    # typer's Exit is a RuntimeError: a `fail` inside the block must not be reported twice
    with pytest.raises(typer.Exit), user_errors():
        fail("the gate needs a stable version")
    assert capsys.readouterr().err == "error: the gate needs a stable version\n"
    with pytest.raises(KeyError), user_errors():  # a bug keeps its traceback
        raise KeyError("x")


def test_a_missing_model_dir_is_one_error_line_through_the_shared_handler(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "q: 1+1?\n", "response": "answer: 2"}) + "\n")
    result = runner.invoke(app, ["score", str(data), "-c", "smoke", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: no reward ensemble for helpfulness")
    assert line.endswith(f"in '{tmp_path / 'ws' / 'models' / 'reward'}'; train them with `rlhfops train-rm`")
    assert result.stdout == ""


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


def test_sft_out_writes_a_verifier_lm_beside_the_policy(tmp_path):
    """`rlhfops sft --out DIR`: a second model (a longer-trained verifier for reward.likelihood_lm /
    prm.init) lands in DIR; the workspace's SFT policy is left alone."""
    ws, out = tmp_path / "ws", tmp_path / "ws" / "models" / "verifier"
    result = runner.invoke(
        app, ["sft", "-c", "smoke", "-w", str(ws), "--set", "sft.max_steps=3", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_dir"] == str(out) and (out / "config.json").exists()
    assert not (ws / "models" / "sft").exists()


def test_run_is_one_whole_cycle_through_kfp_local(tmp_path):
    """The main job at smoke size: SFT, then one cycle pipeline run through kfp.local (collect ->
    annotate -> DVC version -> reward fan-out -> PRM -> PPO || offline RL -> evaluate -> gate ->
    canary deploy), simulated canary traffic, and the canary decision."""
    from rlhfops.registry import Registry
    from rlhfops.serving.store import InteractionStore
    from rlhfops.versioning import history

    ws = tmp_path / "ws"
    small = ["sft.max_steps=5", "eval.n_test=8", "policy.steps=2", "offline.max_steps=5", "prm.epochs=1"]
    # a gate that lets the (untrained, smoke-size) candidate through, so the canary path runs too
    deploy = ["gate.min_improvement=-1", "gate.min_samples=5", "simulate.n_requests=40", "simulate.max_tokens=8"]
    args = ["run", "-c", "smoke", "-w", str(ws), "--cycles", "1", "--json"]
    for item in small + deploy:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (cycle,) = report["cycles"]
    assert cycle["cycle"] == 1 and set(cycle["results"]) == {"stable", "ppo", "offline"}
    assert cycle["gate"]["decision"] == "deploy" and cycle["canary"] is not None
    # rounds of 1.15 x 5 / 10% canary requests until the online gate decides (at most gate.max_looks)
    traffic = cycle["traffic"]
    assert traffic["errors"] == 0 and traffic["requests"] == 58 * traffic["rounds"] and traffic["rounds"] <= 5
    assert report["final_canary"]["decision"] in ("promote", "rollback")  # decided, not left waiting
    assert report["stable"]["gold_composite"] >= 0
    registry = Registry(ws)
    assert registry.get(cycle["canary"])["decisions"] and not registry.failures()
    assert InteractionStore.for_workspace(ws).count() == traffic["requests"]
    assert [h["tag"] for h in history(Workspace(ws))] == ["cycle-0001"]
    models = ws / "models" / "cycle-0001"
    assert (models / "reward" / "summary.json").exists() and not list((models / "reward").glob("*.parts"))
    assert (models / "prm" / "config.json").exists() and (models / "offline" / "config.json").exists()
    assert not (models / "offline" / "ilql_heads.safetensors").exists()  # the extracted LM, no heads
    (log,) = (ws / "logs").glob("pipeline-*.log")
    # every stage ran in a child of the warm task server (rlhfops.pipeline.warm): 14 tasks less record-failure
    assert log.read_text().count("rlhfops.cycle:run_stage in a process forked from the warm task server") == 13


def test_a_failed_cycle_is_recorded_and_exits_non_zero(tmp_path):
    from rlhfops.registry import Registry

    ws = tmp_path / "ws"
    args = ["run", "-c", "smoke", "-w", str(ws), "--cycles", "1", "--set", "sft.max_steps=5", "--set", "eval.n_test=8"]
    result = runner.invoke(app, [*args, "--set", f"collect.dataset={tmp_path / 'no-such-dataset'}"])
    assert result.exit_code == 2
    assert "cycle 1 failed" in result.output and "collect" in result.output
    (failure,) = Registry(ws).failures()
    assert failure["cycle"] in (1, "1") and "FAILED" in failure["message"]


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
    offline = tmp_path / "ws" / "models" / "offline"
    assert (offline / "config.json").exists() and not (offline / "ilql_heads.safetensors").exists()
    assert (tmp_path / "ws" / "data" / "offline" / "samples-gold.jsonl").exists()


def test_stage_names_are_checked_before_anything_runs(tmp_path):
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["stage", "rewards", "-c", "smoke", "-w", str(ws)])
    assert result.exit_code == 2 and "unknown stage 'rewards'" in result.stderr
    result = runner.invoke(app, ["stage", "reward_member", "-c", "smoke", "-w", str(ws)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: stage 'reward_member' runs once per item of 'reward_plan'; run `rlhfops stage reward_plan`"
    ]
    assert not ws.exists()
