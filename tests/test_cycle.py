"""rlhfops.cycle: the stage plumbing (the whole cycle runs in tests/test_cli.py through kfp.local)."""

import json
import os
from types import SimpleNamespace

import pytest

from rlhfops import cycle
from rlhfops.config import GateConfig, load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.registry import Registry
from rlhfops.workspace import Workspace


@pytest.fixture
def ws_with_sft(tmp_path):
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, tmp_path / "models" / "sft")
    return cfg, Workspace(tmp_path)


def test_scalars_flattens_finite_numbers():
    result = {"a": 1, "b": {"c": 0.5, "d": float("nan"), "e": "text", "f": True}, "g": [1, 2]}
    assert cycle.scalars(result) == {"a": 1.0, "b/c": 0.5, "b/f": 1.0}


def test_first_cycle_makes_sft_stable_and_numbers_cycles(ws_with_sft):
    cfg, ws = ws_with_sft
    stable = cycle.stable_or_register_sft(cfg, ws)
    assert stable["name"] == "sft" and stable["stage"] == "stable"
    assert cycle.stable_or_register_sft(cfg, ws)["id"] == stable["id"]  # idempotent
    assert cycle.begin(cfg, ws) == {"cycle": 1, "canary": {"decision": "none", "reason": "no canary deployed"}}
    ws.cycle_dir(1).mkdir(parents=True)
    assert cycle.next_cycle(ws) == 1  # data but no evaluation: cycle 1 is redone
    cycle.cycle_eval_path(ws, 1).parent.mkdir(parents=True, exist_ok=True)
    cycle.cycle_eval_path(ws, 1).write_text("{}")
    assert cycle.next_cycle(ws) == 1  # evaluated, but the gate never ran: not done
    cycle.cycle_gate_path(ws, 1).write_text('{"decision": "deploy"}')
    assert cycle.next_cycle(ws) == 1  # the gate said deploy, but no canary of cycle 1 is registered
    Registry(ws.root).register(ws.model_dir("sft"), metrics={"cycle": 1}, stage="canary")
    assert cycle.next_cycle(ws) == 2 and cycle.cycles_done(ws) == 1
    cycle.cycle_gate_path(ws, 1).write_text('{"decision": "reject"}')
    assert cycle.next_cycle(ws) == 2  # a rejecting gate finishes a cycle without a canary


def test_the_workspace_lock_names_its_holder_and_is_taken_over_from_a_dead_one(tmp_path):
    import json
    import subprocess
    import sys

    ws = Workspace(tmp_path)
    with cycle.workspace_lock(ws) as note:
        assert note is None
        code = "import sys; from rlhfops import cycle; from rlhfops.workspace import Workspace\n"
        code += "with cycle.workspace_lock(Workspace(sys.argv[1])): pass"
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert other.returncode != 0
        assert f"pid {os.getpid()} on host" in other.stderr and "is in use" in other.stderr
    # a holder killed with -9 leaves its record but not the lock: the next run takes it over, with a note
    (tmp_path / cycle.RUN_LOCK).write_text(json.dumps({"pid": 999999, "host": "h", "started": "t", "command": "c"}))
    with cycle.workspace_lock(ws) as note:
        assert "pid 999999 on host h since t" in note


def test_no_stable_and_no_sft_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="rlhfops sft"):
        cycle.stable_or_register_sft(load_config("smoke"), Workspace(tmp_path))


def test_exit_handler_records_only_failures(ws_with_sft):
    _, ws = ws_with_sft
    cycle.finish_cycle(str(ws.root), "run-1", "SUCCEEDED", "")
    assert Registry(ws.root).failures() == []
    cycle.finish_cycle(str(ws.root), "run-2", "FAILED", "Task collect failed.")
    (failure,) = Registry(ws.root).failures()
    assert failure["cycle"] == 1 and "run-2: FAILED: Task collect failed." in failure["message"]


def test_gate_writes_its_own_file_and_deploy_registers_the_canary(ws_with_sft):
    cfg, ws = ws_with_sft
    stable = cycle.stable_or_register_sft(cfg, ws)
    cand = ws.model_dir("cycle-0001/ppo")
    cand.mkdir(parents=True)
    base = {"gold_composite": 0.5, "gold": {"helpfulness": 0.5}, "solve_accuracy": 0.1}
    summary = {
        "cycle": 1,
        "stable_version": stable["id"],
        "best_candidate": "ppo",
        "models": {"stable": stable["path"], "ppo": str(cand)},
        "results": {
            "stable": {**base, "per_prompt": [0.1, 0.2, 0.3, 0.4] * 8},
            "ppo": {**base, "gold_composite": 0.8, "per_prompt": [0.5, 0.7, 0.6, 0.9] * 8},
        },
    }
    cycle.cycle_eval_path(ws, 1).parent.mkdir(parents=True)
    cycle.cycle_eval_path(ws, 1).write_text(json.dumps(summary))
    gate = cycle.gate(cfg, ws, 1)
    assert gate["decision"] == "deploy" and gate["candidate"] == "ppo"
    assert json.loads(cycle.cycle_gate_path(ws, 1).read_text())["decision"] == "deploy"
    assert "gate" not in json.loads(cycle.cycle_eval_path(ws, 1).read_text())  # the evaluation is not rewritten
    deployed = cycle.deploy_canary(cfg, ws, 1)
    canary = Registry(ws.root).canary()
    assert canary["id"] == deployed["version"] and canary["parent"] == stable["id"]
    assert canary["metrics"]["cycle"] == 1 and canary["metrics"]["gate"]["diff"] > 0
    html = cycle.evaluation_html(summary)
    assert "<td>ppo</td><td>0.800</td>" in html and "best candidate: ppo" in html


def test_the_first_cluster_deploy_creates_the_service_on_the_stable_model(ws_with_sft, monkeypatch):
    """`pipeline.kserve`: the cycle's deploy passes the registry's stable record, so on a fresh cluster
    the InferenceService is created serving stable and the candidate becomes its canary."""
    from test_kserve import FakeCustomObjectsApi

    import rlhfops.kube

    cfg, ws = ws_with_sft
    pipeline = cfg.pipeline.model_copy(update={"kserve": True, "mount_path": str(ws.root)})  # ws on the volume
    cfg = cfg.model_copy(update={"pipeline": pipeline})
    cfg.kserve.namespace = "ns"
    stable = cycle.stable_or_register_sft(cfg, ws)
    cand = ws.model_dir("cycle-0001/ppo")
    cand.mkdir(parents=True)
    summary = {"best_candidate": "ppo", "models": {"ppo": str(cand)}, "results": {"ppo": {"gold_composite": 0.8}}}
    cycle.cycle_eval_path(ws, 1).parent.mkdir(parents=True)
    cycle.cycle_eval_path(ws, 1).write_text(json.dumps(summary))
    api = FakeCustomObjectsApi(None)
    monkeypatch.setattr(rlhfops.kube, "custom_objects_api", lambda: api)
    cycle.deploy_canary(cfg, ws, 1)
    (created,) = api.created
    assert created["spec"]["predictor"]["model"]["storageUri"] == "pvc://rlhfops-workspace/models/sft"
    assert stable["path"].endswith("models/sft")
    (patch,) = api.patches
    assert patch["spec"]["predictor"]["model"]["storageUri"] == "pvc://rlhfops-workspace/models/cycle-0001/ppo"


def test_best_candidate_skips_missing_and_nan_composites():
    def r(composite):
        return {"gold_composite": composite}

    nan = float("nan")
    assert cycle.best_candidate({"stable": r(0.99), "ppo": r(0.5), "offline": r(0.7)}) == "offline"
    assert cycle.best_candidate({"stable": r(0.5), "ppo": r(nan), "offline": r(0.1)}) == "offline"
    assert cycle.best_candidate({"stable": r(0.5), "ppo": r(0.3), "offline": r(None)}) == "ppo"
    assert cycle.best_candidate({"stable": r(0.5), "ppo": r(0.3), "offline": r(0.3)}) == "ppo"  # first of equals
    assert cycle.best_candidate({"stable": r(0.5), "ppo": r(nan)}) is None
    assert cycle.best_candidate({"stable": r(0.5)}) is None


def test_picking_the_best_of_two_a_a_candidates_keeps_the_promised_error_rate():
    # fixed seed: fixed numbers. The binomial se at 1000 trials and 0.05 is 0.007
    gate = GateConfig(confidence=0.95)
    before = cycle.aa_deploy_rate(gate, 1000, 128, 2, split_alpha=False)["aa_deploy_rate"]
    after = cycle.aa_deploy_rate(gate, 1000, 128, 2)
    assert before > 0.05 + 2 * 0.007  # picking on the gate's own scores inflated it
    assert after["aa_deploy_rate"] <= after["bound"] + 2 * after["standard_error"] and after["aa_deploy_rate"] < before
    three = cycle.aa_deploy_rate(gate, 500, 128, 3)
    assert 0 < three["aa_deploy_rate"] <= three["bound"] + 2 * three["standard_error"]


def test_the_gate_stage_splits_alpha_over_the_evaluated_candidates(ws_with_sft):
    cfg, ws = ws_with_sft
    per_prompt = {"stable": [0.1, 0.2, 0.3, 0.4] * 8, "ppo": [0.5, 0.7, 0.6, 0.9] * 8, "offline": [0.2] * 32}
    results = {n: {"gold_composite": sum(v) / len(v), "per_prompt": v} for n, v in per_prompt.items()}
    summary = {"cycle": 1, "best_candidate": cycle.best_candidate(results), "results": results}
    cycle.cycle_eval_path(ws, 1).parent.mkdir(parents=True)
    cycle.cycle_eval_path(ws, 1).write_text(json.dumps(summary))
    gate = cycle.gate(cfg, ws, 1)
    assert gate["candidate"] == "ppo" and gate["stats"]["candidates"] == 2
    assert gate["stats"]["alpha"] == pytest.approx((1 - cfg.gate.confidence) / 2)
    nothing = {"stable": results["stable"], "ppo": {"gold_composite": None, "per_prompt": [None] * 32}}
    cycle.cycle_eval_path(ws, 2).write_text(json.dumps({"cycle": 2, "best_candidate": None, "results": nothing}))
    assert cycle.gate(cfg, ws, 2) == {
        "decision": "reject",
        "reason": "no candidate has a gold composite",
        "candidate": None,
    }


def test_policy_step_as_a_trainjob(ws_with_sft, monkeypatch):
    import rlhfops.trainer_job as tj

    cfg, ws = ws_with_sft
    cfg = load_config("smoke", ["pipeline.trainer_job=true"])
    calls = []
    monkeypatch.setattr(tj, "run_trainjob", lambda cfg, args, name: calls.append((args, name)) or {"status": "ok"})
    result = cycle.policy(cfg, ws, 2)
    ((args, name),) = calls
    config = ws.model_dir("cycle-0002") / "rlhfops_config.yaml"
    assert args == [
        "stage", "policy", "--config", str(config), "--workspace", str(ws.root), "--cycle", "2",
        "--set", "pipeline.trainer_job=false",
    ]  # fmt: skip
    assert name.startswith("rlhfops-policy-c2-") and result["trainjob"] == {"status": "ok"}
    assert load_config(config).pipeline.trainer_job is True  # the job's own --set turns it off inside


def test_write_pointer(tmp_path):
    artifact = SimpleNamespace(path=str(tmp_path / "a" / "model"), metadata={})
    cycle.write_pointer(artifact, {"path": "/ws/models/x", "n": 3})
    assert json.loads((tmp_path / "a" / "model").read_text()) == {"path": "/ws/models/x", "n": 3}
    assert artifact.metadata == {"n": 3.0, "workspace_path": "/ws/models/x"}


def test_registry_metrics_carry_the_task_metrics_and_the_win_rate():
    from rlhfops.cycle import _headline

    result = {
        "n": 8,
        "gold": {"helpfulness": 0.5, "conciseness": 1.0},
        "gold_composite": 0.75,
        "by_kind": {},
        "exact_rate": 0.25,  # a task's own metric
        "mean_length": 9.0,
        "per_prompt": [0.75],
        "win_rate": 0.625,
    }
    assert _headline(result) == {
        "gold_composite": 0.75,
        "exact_rate": 0.25,
        "win_rate": 0.625,
        "gold/helpfulness": 0.5,
        "gold/conciseness": 1.0,
    }


def test_offline_rl_reads_the_most_recent_logged_samples_up_to_its_bound():
    import random

    newest, older, oldest = [{"i": i} for i in range(3)], [{"i": i} for i in range(10, 16)], [{"i": 99}]
    rows = cycle.recent_window([newest, older, oldest], 5, random.Random(0))
    assert rows[:3] == newest  # the newest cycle whole, first
    assert len(rows) == 5 and {r["i"] for r in rows[3:]} < {r["i"] for r in older}  # then part of the next
    assert [r["i"] for r in rows[3:]] == sorted(r["i"] for r in rows[3:])  # in its order
    assert rows == cycle.recent_window([newest, older, oldest], 5, random.Random(0))  # seeded
    assert cycle.recent_window([newest, older, oldest], 0, random.Random(0)) == newest + older + oldest
    assert cycle.recent_window([newest, older], 9, random.Random(0)) == newest + older


def test_offline_rl_reads_no_older_cycle_than_its_window_needs():
    import random

    def newest_first():
        yield [{"i": i} for i in range(4)]
        raise AssertionError("an older cycle was read though the newest one filled the window")

    assert len(cycle.recent_window(newest_first(), 4, random.Random(0))) == 4


def test_reward_plan_checks_the_likelihood_lm_before_any_member_trains(ws_with_sft, tmp_path):
    cfg, ws = ws_with_sft
    cfg = load_config("smoke", [f"reward.likelihood_lm={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match="reward.likelihood_lm"):
        cycle.reward_plan(cfg, ws, 1)
    assert not ws.data_dir("preferences").exists()
