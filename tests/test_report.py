import json

import pytest

from rlhfops.report import update_readme
from rlhfops.workspace import Workspace

START, END = "<!-- gold-eval:start -->", "<!-- gold-eval:end -->"


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
    update_readme(readme, ws, ["gold-eval"])
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{END}\noutro\n") and "stale" not in text
    assert "| gold helpfulness | 0.000 | 0.625 |" in text
    assert "| step validity | - | - |" in text
    assert "took 100 s" in text


def test_readme_without_results_is_a_clear_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    with pytest.raises(FileNotFoundError, match="run `rlhfops run` first"):
        update_readme(readme, Workspace(tmp_path / "empty"), ["gold-eval"])


def test_reward_scoring_and_kinds_blocks(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path / "ws")
    acc = {"mean": 0.8, "weighted": 0.81, "min": 0.7, "uwo": 0.75}
    summary = {
        "helpfulness": {
            "pairs": 10,
            "member_accuracy": [0.7, 0.8],
            "mean_member_accuracy": 0.75,
            "ensemble_accuracy": acc,
            "spread_when_right": 0.2,
            "spread_when_wrong": 0.4,
        },
        "mean_ensemble_accuracy": 0.8,
    }
    (ws.model_dir("reward") / "helpfulness").mkdir(parents=True)
    (ws.model_dir("reward") / "summary.json").write_text(json.dumps(summary))
    manifest = {"kind": "full", "members": [{}, {}, {}]}
    (ws.model_dir("reward") / "helpfulness" / "manifest.json").write_text(json.dumps(manifest))
    ws.model_dir("prm").mkdir(parents=True)
    prm = {
        "step_accuracy": 0.9,
        "n_steps": 100,
        "bad_step_accuracy": 0.5,
        "good_step_accuracy": 0.95,
        "ranking": {"min": {"rate": 0.6, "n": 50}},
    }
    (ws.model_dir("prm") / "metrics.json").write_text(json.dumps(prm))
    (ws.root / "bench").mkdir()
    runs = [[{"batch": 1, "member_by_member_s": 0.03, "stacked_s": s, "heads_s": 0.006}] for s in (0.01, 0.015, 0.0075)]
    scoring = {"threads": 2, "model": "tiny Llama", "runs": {"5": runs}}
    (ws.root / "bench" / "ensemble_scoring.json").write_text(json.dumps(scoring))
    kinds = {
        k: {"train_s": 10.0, "score_val_s": 1.0, "objectives": {"helpfulness": {"mean_member": 0.7, "ensemble": 0.72}}}
        for k in ("full", "heads")
    }
    (ws.root / "bench" / "ensemble_kinds.json").write_text(json.dumps(kinds))
    assert "| helpfulness | 10 | 0.700 / 0.800 | 0.750 | 0.800 | 0.810 | 0.700 | 0.750 | 0.200 | 0.400 |" in BLOCKS[
        "reward"
    ](ws)
    assert "min 0.600 of 50 cases" in BLOCKS["reward"](ws)
    assert "| 5 | 1 | 0.0300 | 0.0100 | 3.00x [2.00-4.00] | 0.0060 | 5.00x [5.00-5.00] |" in BLOCKS["scoring"](ws)
    assert "| heads | 10.0 | 1.00 | 0.700 / 0.720 |" in BLOCKS["kinds"](ws)
    weights = {
        "best_weights": {"helpfulness": 0.75, "honesty": 0.25},
        "grid_size": 5,
        "test_utility": {"equal_weights": 0.5, "grid_best": 0.625},
    }
    (ws.model_dir("reward") / "weights.json").write_text(json.dumps(weights))
    block = BLOCKS["weights"](ws)
    assert "helpfulness 0.75, honesty 0.25" in block and "| grid best | 0.625 |" in block


def test_bon_block(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path)
    curve = [{"n": 1, "gold": 0.5, "proxy": 0.1, "samples": 8, "kl": 0.0}]
    adaptive = {"n": 16, "gold": 0.6, "proxy": 0.2, "samples": 12}
    ws.eval_path("bon-sft").parent.mkdir(parents=True)
    ws.eval_path("bon-sft").write_text(
        json.dumps({"n_prompts": 8, "scorer": "ensemble", "curve": curve, "adaptive": adaptive})
    )
    block = BLOCKS["bon"](ws)
    assert "| 1 | 0.500 | 0.100 | 8 | 0.000 |" in block and "| adaptive (<= 16) | 0.600 | 0.200 | 12 | - |" in block


def test_policy_block(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path)
    ws.eval_path("sft").parent.mkdir(parents=True)
    ws.eval_path("sft").write_text(json.dumps(_result(0.5)))
    with pytest.raises(FileNotFoundError, match="train-policy"):
        BLOCKS["policy"](ws)
    ws.eval_path("ppo").write_text(json.dumps(_result(0.75)))
    ws.model_dir("ppo").mkdir(parents=True)
    (ws.model_dir("ppo") / "train_log.json").write_text(json.dumps([{"update": 1}, {"update": 2}]))
    block = BLOCKS["policy"](ws)
    assert "| gold helpfulness | 0.500 | 0.750 |" in block and "| updates | - | 2 |" in block


def test_throughput_block(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path)
    (ws.root / "bench").mkdir(parents=True)
    (ws.root / "bench" / "ppo_vs_rloo.json").write_text(
        json.dumps({"steps": 3, "completions": 8, "ppo": 50.0, "rloo": 100.0})
    )
    assert "ratio 0.50x" in BLOCKS["throughput"](ws) and "per update" not in BLOCKS["throughput"](ws)
    (ws.root / "bench" / "ppo_vs_rloo.json").write_text(
        json.dumps(
            {
                "steps": 3,
                "completions": 8,
                "ppo": 50.0,
                "rloo": 100.0,
                "ppo_update_s": 0.3,
                "ppo_one_epoch_update_s": 0.2,
            }
        )
    )
    block = BLOCKS["throughput"](ws)
    assert "2 epochs x 2 minibatches 0.300" in block and "1 epoch x 1 minibatch 0.200" in block
    assert "RLOO 0.080" in block  # 8 completions at 100 a second


def test_dense_prm_block(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path)
    (ws.root / "bench").mkdir(parents=True)
    row = {"seconds": 10.0, "gold_composite": 0.8, "solve_accuracy": 0.4, "step_validity": 0.6}
    runs = {"outcome": [row, {**row, "gold_composite": 0.9}], "dense_prm": [row]}
    (ws.root / "bench" / "ppo_dense_prm.json").write_text(json.dumps(runs))
    block = BLOCKS["dense-prm"](ws)
    assert "| outcome only | 2 | 0.850 +- 0.050 |" in block and "| outcome + dense PRM steps | 1 |" in block


def test_offline_block(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path)
    (ws.root / "bench").mkdir()

    def side(gold):
        return {"gold_composite": gold, "solve_accuracy": 0.5, "over_refusal_rate": 0.1}

    rows = [
        {"sft": side(0.8), "offline": side(0.9), "ppo": side(0.8), "offline_train_s": 5, "ppo_train_s": 40},
        {
            "sft": side(0.8),
            "offline": side(0.8),
            "ppo": side(0.9),
            "offline_train_s": 7,
            "ppo_train_s": 60,
            "offline_data_s": 20,
        },
    ]
    (ws.root / "bench" / "offline_vs_ppo.json").write_text(json.dumps({"rows": rows, "samples": 1920}))
    block = BLOCKS["offline"](ws)
    assert "| offline RL (ILQL heads, beta-2 shift) | 2 | 0.850 +- 0.050 | 0.050 +- 0.050 |" in block
    assert "| PPO | 2 | 0.850 +- 0.050 | 0.050 +- 0.050 | 0.500 +- 0.000 | 0.100 +- 0.000 | 50 |" in block
    assert "1920 completions" in block and "took 20 s" in block


def test_cycles_load_gates_and_active_blocks(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path)
    (ws.root / "bench").mkdir()
    (ws.root / "eval").mkdir()
    res = {"gold_composite": 0.85, "solve_accuracy": 0.4}
    cycle = {
        "cycle": 1,
        "seconds": 250.0,
        "results": {"stable": res, "ppo": {**res, "gold_composite": 0.88}},
        "gate": {"decision": "deploy", "candidate": "ppo", "stats": {"diff": 0.03, "lower": 0.01}},
        "canary": "v2",
        "traffic": {
            "requests": 100,
            "versions": {"v1": {"requests": 90, "mean_gold": 0.85}, "v2": {"requests": 10, "mean_gold": 0.9}},
        },
    }
    run = {
        "sft": res, "sft_seconds": 100.0, "cycles": [cycle], "seconds": 400.0,
        "final_canary": {"decision": "promote", "reason": "fine"}, "stable": {**res, "gold_composite": 0.88},
    }  # fmt: skip
    (ws.root / "eval" / "run.json").write_text(json.dumps(run))
    block = BLOCKS["cycles"](ws)
    assert (
        "| 1 | 0.850 | ppo 0.880 | deploy ppo (diff +0.030, lower +0.010) | "
        "v2: 10 of 100 requests, 0.900 / 0.850 | 250 |" in block
    )
    assert "SFT 0.850 -> stable after the run 0.880" in block and "1 cycles in 250 s" in block
    decisions = [{"decision": "wait"}, {"decision": "promote"}]
    (ws.root / "registry.json").write_text(json.dumps({"versions": [{"id": "v2", "decisions": decisions}]}))
    assert "0.900 / 0.850 -> promote | 250 |" in BLOCKS["cycles"](ws)

    load = {"requests": 10, "clients": 2, "errors": 0, "records_in_store": 10, "canary_share_pct": 10.0,
            "canary_percent": 10, "latency_p50_ms": 5.0, "latency_p99_ms": 9.0, "requests_per_s": 3.0,
            "model_parameters": 1000, "max_tokens": 4, "seconds": 3.3}  # fmt: skip
    (ws.root / "bench" / "load_router.json").write_text(json.dumps(load))
    assert "| 10 | 2 | 0 | 10 | 10.00% (target 10%) | 5 | 9 | 3.0 |" in BLOCKS["load"](ws)

    row = {"online_test": "superiority", "alpha": 0.05, "false_effect": 0.0, "false_promotion_rate": 0.03,
           "promote_rate_at_true_effect": 0.9}  # fmt: skip
    offline = {"method": "paired_t", "n_prompts": 128, "alpha": 0.05, "trials": 10, "aa_false_deploy_rate": 0.05,
               "deploy_rate_at_effect_0.15": 0.8}  # fmt: skip
    (ws.root / "bench" / "gate_aa.json").write_text(
        json.dumps({"trials": 10, "seed": 0, "online": [row, row], "offline": [offline]})
    )
    gates = BLOCKS["gates"](ws)
    assert "| superiority | 0.05 | 0.030 / 0.030 (equal canary) | 0.900 / 0.900 (canary +0.1) |" in gates
    assert "| paired_t (128 prompts) | 0.05 | 10 | 0.050 | 0.800 |" in gates

    point = {"round": 0, "pairs_mean": 20.0, "accuracy_mean": 0.7, "accuracy_std": 0.01}
    active = {"curves": {"random": [point], "uncertainty": [point]},
              "config": {"seeds": 3, "members": 5, "pool": 300, "batch": 20}}  # fmt: skip
    (ws.root / "bench" / "active_learning.json").write_text(json.dumps(active))
    assert "| 0 | 20, 0.700 +- 0.010 | 20, 0.700 +- 0.010 |" in BLOCKS["active"](ws)


def test_step_labels_block(tmp_path):
    from rlhfops.report import BLOCKS

    ws = Workspace(tmp_path)
    (ws.root / "bench").mkdir()
    agree = {"coverage": 0.5, "agreement": 1.0, "agreement_on_bad": 1.0, "agreement_on_good": 0.75,
             "imputed_agreement": 0.9}  # fmt: skip
    data = {"responses": 7, "every": 3, "rollouts": 4, "sparse": agree, "mc": {**agree, "coverage": 1.0}}
    (ws.root / "bench" / "step_labels.json").write_text(json.dumps(data))
    block = BLOCKS["step-labels"](ws)
    assert "| sparse (1 line in 3 + answer) | 0.500 | 1.000 | 1.000 | 0.750 | 0.900 |" in block
    assert "| Monte-Carlo (4 rollouts) | 1.000 |" in block and "7 policy solutions" in block


def test_example_run_block_reports_start_sft_and_stable_on_any_task(tmp_path):
    """A run of a user's task: objectives and metrics as the task names them, win rates against the
    start, the sizes read from the run's saved config; never written by default (own workspace)."""
    from rlhfops.config import load_config
    from rlhfops.report import BLOCKS
    from rlhfops.report.readme import OWN_WORKSPACE

    ws = Workspace(tmp_path)
    (ws.root / "eval").mkdir()
    (ws.root / "models" / "sft").mkdir(parents=True)
    cfg = load_config("smoke", ["model.name_or_path=/models/SmolLM2-135M-Instruct", "task.factory=ex.task:make"])
    cfg.save(ws.root / "models" / "sft")

    def result(h, c, exact):
        return {"gold": {"helpfulness": h, "conciseness": c}, "gold_composite": (h + c) / 2, "exact_rate": exact,
                "n_prompts": 16, "decoding": "2 samples per prompt at temperature 1.0"}  # fmt: skip

    cycle = {"cycle": 1, "seconds": 600.0, "results": {"stable": result(0.0, 0.8, 0.0), "ppo": result(0.1, 0.9, 0.05)},
             "gate": {"decision": "reject", "candidate": "ppo"}, "canary": None}  # fmt: skip
    run = {"start": result(0.0, 0.2, 0.0), "sft": result(0.0, 0.8, 0.0), "stable": result(0.1, 0.9, 0.05),
           "sft_win_rate_vs_start": 0.75, "stable_win_rate_vs_start": 0.8125, "sft_seconds": 300.0,
           "cycles": [cycle], "seconds": 1000.0, "final_canary": {"decision": "none", "reason": "-"}}  # fmt: skip
    (ws.root / "eval" / "run.json").write_text(json.dumps(run))
    block = BLOCKS["example-run"](ws)
    assert "| 1 | 0.400 | ppo 0.500 | reject ppo | - | 600 |" in block
    assert "| helpfulness | 0.000 | 0.000 | 0.100 |" in block and "| exact rate | 0.000 | 0.000 | 0.050 |" in block
    assert "| win rate vs start | - | 0.750 | 0.812 |" in block
    assert "model SmolLM2-135M-Instruct, task ex.task:make" in block and "1 cycles in 600 s" in block
    assert "example-run" in OWN_WORKSPACE  # `make readme` on the demo workspace leaves it alone
