"""`rlhfops bench` and `rlhfops report`: exact tests of the scenario arithmetic and the report on
hand-built data, then the quick mode end to end (one seed, smoke size, every scenario and ratio)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfops.bench import (
    FULL,
    QUICK,
    BestOfNSamples,
    front_summary,
    mean_std,
    overoptimisation,
    pareto,
    read_bench,
    rerank_solve,
    technique_table,
    verdict,
    write_bench,
)
from rlhfops.cli import app
from rlhfops.config import Config
from rlhfops.cycle import STAGES
from rlhfops.report import (
    README_PLOT_NAMES,
    bench_markdown,
    cycle_history,
    detail_lines,
    plot_cycle_history,
    speed_lines,
    update_readme,
    write_html_report,
)
from rlhfops.workspace import Workspace

PNG = b"\x89PNG\r\n\x1a\n"
OBJECTIVES = ["helpfulness", "harmlessness", "honesty", "conciseness"]


def _cfg() -> Config:
    cfg = Config()
    return cfg.model_copy(update={"best_of_n": cfg.best_of_n.model_copy(update={"n_values": [1, 2, 3]})})


@pytest.fixture
def samples() -> BestOfNSamples:
    """2 prompts (solve, unsafe) x 3 candidates; only the helpfulness ensemble (K=2) has non-zero rewards."""
    gold = torch.tensor(
        [
            [[0, 1, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]],
            [[1, 1, 1, 1], [0, 0, 0, 1], [0, 0, 1, 0]],
        ],
        dtype=torch.float,
    )
    help_members = torch.tensor([[[0, 1, 2], [2, 0, 1]], [[0, 3, -2], [0, 1, 0]]], dtype=torch.float)  # (K, P, C)
    members = {o: torch.zeros(2, 2, 3) for o in OBJECTIVES}
    members["helpfulness"] = help_members
    return BestOfNSamples(
        objectives=OBJECTIVES,
        kinds=["solve", "unsafe"],
        gold=gold,
        correct=torch.tensor([[False, True, False], [False, False, False]]),
        refused=torch.tensor([[False, False, True], [True, False, False]]),
        members=members,
        accuracies={o: torch.ones(2) for o in OBJECTIVES},
        prm=torch.tensor([[0.1, 0.2, 0.9], [0.5, 0.5, 0.5]]),
    )


def test_mean_std_and_verdict():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    assert verdict([0.1, 0.3]) == "gain"
    assert verdict([-0.1, -0.3]) == "loss"
    assert verdict([-0.1, 0.3]) == "no clear effect"  # mean 0.1, std 0.2
    assert verdict([0.0]) == "no clear effect"


def test_overoptimisation_curves_pick_the_argmax_of_each_scorer(samples):
    curves = overoptimisation(samples, _cfg())
    gold = {how: [round(c["gold"], 6) for c in curve] for how, curve in curves.items()}
    # one RM (member 0) walks into candidate 2 of prompt 0 at N=3 (gold 0.5); the ensembles do not
    assert gold["single"] == [0.875, 0.875, 0.75]
    assert gold["mean"] == gold["min"] == gold["uwo"] == [0.875, 0.875, 0.875]
    # proxy: 0.25 x member 0's helpfulness of the picks, averaged: (0 + 2), (1 + 2), (2 + 2) / 2
    assert [c["proxy"] for c in curves["single"]] == pytest.approx([0.25, 0.375, 0.5])
    assert [c["kl"] for c in curves["mean"]] == pytest.approx([0.0, math.log(2) - 0.5, math.log(3) - 2 / 3])


def test_rerank_on_solve_prompts_only(samples):
    r = rerank_solve(samples)
    # PRM picks candidate 2 (wrong); the helpfulness ensemble mean [0, 2, 0] picks candidate 1 (right)
    assert r == {"n": 3, "prompts": 1, "prm": 0.0, "outcome_rm": 1.0, "first_sample": 0.0}


def test_pareto_front_and_hypervolume(samples):
    mo = pareto(samples, _cfg(), grid_steps=1)
    assert len(mo["points"]) == 4  # the simplex corners; the configured equal weights are `single`
    # no helpfulness weight: every score ties at 0, candidate 0 is picked
    assert mo["points"][0]["gold"] == {"helpfulness": 0.5, "harmlessness": 1.0, "honesty": 1.0, "conciseness": 1.0}
    assert mo["points"][-1]["weights"]["helpfulness"] == 1.0
    assert mo["points"][-1]["gold"] == {"helpfulness": 1.0, "harmlessness": 1.0, "honesty": 1.0, "conciseness": 0.5}
    assert mo["single"]["gold"] == mo["points"][-1]["gold"]
    assert all(p["front"] for p in mo["points"]) and mo["front_size"] == 4
    assert mo["points"][0]["over_refusal"] == 0.0
    box = 0.55 * 1.05**3
    assert mo["hv_single"] == pytest.approx(box)
    assert mo["hv_front"] == pytest.approx(2 * box - 0.55 * 0.55 * 1.05**2, rel=0.02)
    assert mo["best_on_front"] == {"helpfulness": 1.0, "harmlessness": 1.0, "honesty": 1.0, "conciseness": 1.0}
    assert mo["single_dominated"] is False  # the single point equals a grid point; nothing beats it everywhere


def test_front_summary_can_lose_to_the_single_policy():
    """The weighted-sum policy is not part of the grid: when it dominates every grid policy the
    front's hypervolume is the smaller one (the comparison can fail)."""

    def point(*gold):
        return {"gold": dict(zip(OBJECTIVES, gold, strict=True))}

    grid = [point(0.5, 0.2, 0.2, 0.2), point(0.2, 0.5, 0.2, 0.2), point(0.4, 0.4, 0.1, 0.1)]
    s = front_summary(grid, point(0.6, 0.6, 0.6, 0.6), OBJECTIVES, seed=0)
    assert [p["front"] for p in s["points"]] == [True, True, True]
    assert s["hv_single"] == pytest.approx(0.65**4)
    assert s["hv_front"] < s["hv_single"] and not s["single_dominated"]
    s = front_summary([*grid, point(0.7, 0.6, 0.6, 0.6)], point(0.6, 0.6, 0.6, 0.6), OBJECTIVES, seed=0)
    assert s["single_dominated"] and [p["front"] for p in s["points"]] == [False, False, False, True]
    assert s["best_on_front"] == {"helpfulness": 0.7, "harmlessness": 0.6, "honesty": 0.6, "conciseness": 0.6}


def _row(seed: int, gain: float) -> dict:
    curve = [{"n": 1, "kl": 0.0, "gold": 0.5, "proxy": 0.0}, {"n": 4, "kl": 0.64, "gold": 0.5 + gain, "proxy": 1.0}]
    point = {"weights": dict.fromkeys(OBJECTIVES, 0.25), "gold": dict.fromkeys(OBJECTIVES, 0.5), "over_refusal": 0.1}
    return {
        "seed": seed,
        "members": 3,
        "seconds": {"cycles": 60.0},
        "cycles": [
            {
                "results": {
                    "stable": {"gold_composite": 0.5},
                    "ppo": {"gold_composite": 0.6},
                    "offline": {"gold_composite": 0.6 - gain},
                },
                "after": {"gold_composite": 0.6},
                "deployed": "v2",
                "seconds": {"prm": 4.0, "policy": 10.0, "offline": 2.0},
                "offline_samples": 64,
            },
            {"after": {"gold_composite": 0.5 + 2 * gain}, "deployed": None, "seconds": {"prm": 6.0}},
        ],
        "best_of_n": {
            "curve": [{**c, "samples_per_prompt": c["n"]} for c in curve],
            "adaptive": {"gold": 0.5 + gain / 2, "mean_samples_per_prompt": 2.5},
        },
        "overoptimisation": {
            how: [curve[0], {**curve[1], "gold": curve[1]["gold"] + (0 if how == "single" else 0.1)}]
            for how in ("single", "mean", "min", "uwo")
        },
        "rerank": {"prm": 0.7, "outcome_rm": 0.7 - gain, "first_sample": 0.8},
        "multi_objective": {
            "objectives": OBJECTIVES,
            "points": [{**point, "front": True}],
            "single": point,
            "hv_front": 1.0 + gain,
            "hv_single": 1.0,
            "front_size": 1,
            "single_dominated": False,
            "hv_null": 1.0 - gain,
            "null_points": [point],
            "policies": 3,
            "train_seconds": 6.0,
            "samples": 64,
        },
        "multi_objective_bon": {
            "objectives": OBJECTIVES,
            "points": [{**point, "front": True}],
            "single": point,
            "hv_front": 1.0 - gain,
            "hv_single": 1.0,
            "front_size": 1,
            "single_dominated": True,
        },
        "dense_prm": {
            "dense": {"gold_composite": 0.6 - gain},
            "outcome": {"gold_composite": 0.6},
            "dense_seconds": 12.0,
        },
    }


SPEED = {
    "ensemble_scoring": {
        "members": 2,
        "rows": [{"batch": 1, "member_by_member_s": 0.2, "stacked_s": 0.1, "heads_s": 0.05}],
    },
    "best_of_n_batching": {"n": 4, "prompts": 2, "batched_s": 1.0, "per_prompt_s": 3.0, "ratio": 3.0},
    "ppo_vs_rloo": {"steps": 2, "completions": 8, "ppo": 10.0, "rloo": 20.0, "ratio": 0.5},
    "roofline": {
        "matmul_peak_flops_per_s": 1e10,
        "threads": 2,
        "rm": {"fraction_of_peak": 0.05},
        "ppo": {"fraction_of_peak": 0.02},
    },
}


@pytest.fixture
def bench_json():
    rows = [_row(0, 0.1), _row(1, 0.3)]
    return {
        "plan": {"name": "quick"},
        "seeds": [0, 1],
        "table": technique_table(rows),
        "rows": rows,
        "speed": SPEED,
        "seconds": 90.0,
    }


def test_technique_table_gains_and_verdicts(bench_json):
    table = {r["technique"]: r for r in bench_json["table"]}
    assert table["Iterative RLHF"]["gains"] == pytest.approx([0.2, 0.6])  # after cycle 2 - SFT
    assert table["Iterative RLHF"]["verdict"] == "gain"
    assert table["Iterative RLHF"]["cost"] == "30 s per cycle"
    # the grid's front against the front of the weighted-sum policy over training seeds (hv_null)
    assert table["Multi-objective (Pareto front)"]["gains"] == pytest.approx([0.2, 0.6])
    assert table["Multi-objective (Pareto front)"]["relative"]["mean"] == pytest.approx((1.1 / 0.9 + 1.3 / 0.7) / 2 - 1)
    assert "1 offline-RL trainings on 64 logged samples (2.0 s each)" in table["Multi-objective (Pareto front)"]["cost"]
    assert table["Iterative RLHF"]["values"] == pytest.approx([0.7, 1.1])
    assert table["Iterative RLHF"]["relative"]["mean"] == pytest.approx((0.2 / 0.5 + 0.6 / 0.5) / 2)
    assert table["Process supervision (PRM rerank)"]["gains"] == pytest.approx([0.1, 0.3])
    assert table["Process supervision (dense PPO)"]["gains"] == pytest.approx([-0.1, -0.3])
    assert table["Process supervision (dense PPO)"]["verdict"] == "loss"
    assert table["Best-of-4"]["gains"] == pytest.approx([0.1, 0.3])
    assert table["Adaptive N"]["gains"] == pytest.approx([0.05, 0.15])
    # 2.5 of N=4's samples for a mean gain of 0.1 against Best-of-4's 0.2
    assert table["Adaptive N"]["cost"] == "2.5 samples per prompt (62% of Best-of-4's) for 50% of its mean gain"
    assert table["Outcome-RM rerank"]["gains"] == pytest.approx([-0.2, -0.4])  # outcome RM - first sample
    for how in ("mean", "min", "uwo"):
        assert table[f"RM ensembles ({how})"]["gains"] == pytest.approx([0.1, 0.1])
        assert table[f"RM ensembles ({how})"]["std"] == pytest.approx(0.0)
    assert table["Offline RL (vs PPO)"]["gains"] == pytest.approx([-0.1, -0.3])
    assert "64 logged samples" in table["Offline RL (vs PPO)"]["cost"]


def test_a_curve_beyond_n4_adds_the_best_of_4_row():
    rows = [_row(0, 0.1), _row(1, 0.3)]
    for r in rows:  # N=16 twice N=4's gain
        r["best_of_n"]["curve"].append({"n": 16, "kl": 1.8, "gold": 0.5 + 2 * (r["seed"] * 0.2 + 0.1)})
    table = {r["technique"]: r for r in technique_table(rows)}
    assert table["Best-of-16"]["gains"] == pytest.approx([0.2, 0.6])
    assert table["Best-of-4"]["gains"] == pytest.approx([0.1, 0.3])
    assert table["Adaptive N"]["cost"].endswith("(16% of Best-of-16's) for 25% of its mean gain")


def test_bench_json_is_the_records_as_they_are(tmp_path, bench_json):
    path = write_bench(tmp_path / "out", bench_json)
    assert path == tmp_path / "out" / "bench.json"
    assert read_bench(tmp_path / "out") == json.loads(json.dumps(bench_json))
    with pytest.raises(FileNotFoundError, match="run `rlhfops bench` first"):
        read_bench(tmp_path / "nothing")
    assert QUICK.to_json()["name"] == "quick" and FULL.to_json()["name"] == "full"
    assert QUICK.to_json()["cycles"] == QUICK.cycles


def test_detail_lines_are_means_over_seeds(bench_json):
    lines = detail_lines(bench_json)
    assert lines[0] == (
        "iterative RLHF, gold composite of the deployed policy: SFT 0.500 -> cycle 1 0.600 -> cycle 2 0.900 "
        "(candidates deployed per seed: 1, 1 of 2)"
    )
    assert lines[1] == (
        "Best-of-N from SFT, gold composite: N=1 0.500, N=4 0.700; adaptive 0.600 with 2.5 samples per prompt"
    )
    assert lines[2] == "gold composite (proxy) of the pick at N=4: one RM 0.700 (+1.00), mean 0.800 (+1.00), " + (
        "min 0.800 (+1.00), uwo 0.800 (+1.00)"
    )
    assert lines[3] == (
        "solve accuracy of Best-of-4 on the solve prompts: first sample (N=1) 0.800, outcome RM 0.500, PRM 0.700"
    )
    assert (
        "trained policies: front of 1.0 of 1 grid points, hypervolume 1.200 vs 0.800 for the front of the "
        in (lines[4])
    )
    assert "weighted-sum policy over 1 training seeds" in lines[4] and "in 0 of 2 seeds" in lines[4]
    assert "helpfulness 0.500-0.500 (weighted sum 0.500)" in lines[4]
    assert "Best-of-N at inference" in lines[5] and "in 2 of 2 seeds" in lines[5]
    assert "hypervolume 0.800 vs 1.000 for the weighted sum's point alone" in lines[5]  # (0.9 + 0.7) / 2


def test_speed_lines_print_each_ratio():
    lines = speed_lines(SPEED)
    assert "batch 1 2.00x (trunk + heads 4.00x)" in lines[0]
    assert "3.00x" in lines[1] and "0.50x" in lines[2]
    assert "RM update 5.0%" in lines[3] and "PPO update 2.0%" in lines[3]


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _history_ws(root) -> Workspace:
    ws = Workspace(root)
    gold = dict.fromkeys(OBJECTIVES, 0.5)
    for n, decision in ((1, "deploy"), (2, "reject")):
        results = {
            "stable": {"gold": gold, "gold_composite": 0.5},
            "ppo": {"gold": {**gold, "helpfulness": 0.5 + n / 10}, "gold_composite": 0.5 + n / 40},
        }
        _write(ws.eval_path(f"cycle-{n:04d}"), {"cycle": n, "results": results})
        _write(ws.eval_path(f"cycle-{n:04d}-gate"), {"decision": decision, "candidate": "ppo"})
    _write(
        ws.root / "registry.json",
        {
            "versions": [
                {"id": "v1", "path": "models/sft", "stage": "archived", "metrics": {}, "decisions": []},
                {
                    "id": "v2",
                    "path": "models/cycle-0001/ppo",
                    "stage": "stable",
                    "metrics": {"cycle": 1},
                    "decisions": [{"decision": "promote"}],
                },
            ],
            "decisions": [{"version": "v2", "decision": "promote"}],
            "failures": [],
        },
    )
    traffic = {"requests": 100, "versions": {"v2": {"requests": 12}, "v1": {"requests": 88}}}
    _write(ws.eval_path("run"), {"cycles": [{"cycle": 1, "canary": "v2", "traffic": traffic}, {"cycle": 2}]})
    return ws


def test_cycle_history_from_the_workspace_files(tmp_path):
    ws = _history_ws(tmp_path / "ws")
    rows = cycle_history(ws)
    assert [r["cycle"] for r in rows] == [1, 2]
    assert rows[0]["gold"]["ppo"]["helpfulness"] == pytest.approx(0.6)
    assert rows[0]["gold"]["stable"]["composite"] == 0.5
    assert rows[0]["gate"]["decision"] == "deploy" and rows[1]["gate"]["decision"] == "reject"
    assert rows[0]["online"] == ["promote"] and rows[1]["online"] == []
    assert rows[0]["canary_share"] == pytest.approx(0.12) and rows[1]["canary_share"] is None
    assert plot_cycle_history(ws, tmp_path / "h.png").read_bytes().startswith(PNG)
    with pytest.raises(FileNotFoundError, match="rlhfops run"):
        plot_cycle_history(Workspace(tmp_path / "empty"), tmp_path / "e.png")


def test_html_report_and_readme_block(tmp_path, bench_json):
    ws = _history_ws(tmp_path / "ws")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    with pytest.raises(FileNotFoundError, match="rlhfops bench"):
        update_readme(readme, ws, ["bench"])
    assert "old" in readme.read_text()  # all or nothing
    _write(ws.root / "bench" / "bench.json", bench_json)
    update_readme(readme, ws, ["bench"])
    text = readme.read_text()
    assert "| Iterative RLHF | improve the policy cycle over cycle from fresh feedback |" in text
    assert "+0.400 +- 0.200 | +0.200 / +0.600 | +80.0% +- 40.0% | gain |" in text
    assert "| Process supervision (dense PPO) |" in text and "| loss |" in text
    assert "Wall time 1.5 min" in text and "0.50x" in text
    for name in README_PLOT_NAMES:
        assert f"![{name}](docs/bench/{name}.png)" in text
        assert (tmp_path / "docs" / "bench" / f"{name}.png").read_bytes().startswith(PNG)
    assert bench_markdown(bench_json).count("![") == 0

    page, plots = write_html_report(ws, tmp_path / "out" / "report.html")
    html = page.read_text()
    assert set(plots) == {
        "techniques",
        "overoptimisation",
        "best_of_n",
        "pareto",
        "iterative",
        "speed",
        "cycle_history",
    }
    assert html.count("data:image/png;base64,") == len(plots)
    assert "Iterative RLHF" in html and "+0.100 / +0.300" in html
    assert "SFT 0.500 -&gt; cycle 1 0.600 -&gt; cycle 2 0.900" in html  # the curves behind the rows
    assert all(p.read_bytes().startswith(PNG) for p in plots.values())


def test_report_command_without_data_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["report", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "nothing to report" in result.output


def test_quick_bench_end_to_end(tmp_path):
    """`rlhfops bench --quick`: one seed at smoke size through every scenario and ratio, then the report."""
    ws = tmp_path / "ws"
    result = CliRunner().invoke(app, ["bench", "--quick", "--workspace", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    bench = json.loads((ws / "bench" / "bench.json").read_text())
    assert bench["seeds"] == [0] and bench["plan"]["name"] == "quick"
    assert len(bench["table"]) == 12  # quick: N up to 16, so Best-of-4 too; an ensemble row per aggregation
    for r in bench["table"]:
        assert len(r["gains"]) == 1 and math.isfinite(r["mean"]) and r["verdict"] in ("gain", "loss", "no clear effect")
    row = bench["rows"][0]
    assert [c["cycle"] for c in row["cycles"]] == [1, 2]
    for c in row["cycles"]:  # every stage timed, in the order the cycle declares; deploy only when deployed
        declared = ["begin", *(s for s in STAGES if s != "deploy_canary" or c["deployed"] is not None)]
        assert list(c["seconds"]) == declared
    assert {"ppo", "offline", "stable"} <= set(row["cycles"][0]["results"])
    assert [c["n"] for c in row["best_of_n"]["curve"]] == [1, 2, 4, 8, 16]
    assert set(row["overoptimisation"]) == {"single", "mean", "min", "uwo"}
    assert row["rerank"]["n"] == 16 and 0 <= row["rerank"]["prm"] <= 1
    assert row["multi_objective"]["front_size"] >= 1 and row["multi_objective"]["hv_front"] > 0
    mo = row["multi_objective"]  # grid C(5, 3) = 10, the weighted sum, and it again with 10 other training seeds
    assert mo["policies"] == 2 * len(mo["points"]) + 1 == 21 and len(mo["null_points"]) == 10
    assert [p["training_seed"] for p in mo["null_points"]] == list(range(1, 11)) and mo["single"]["training_seed"] == 0
    assert [p["training_seed"] for p in mo["points"]] == list(range(1, 11))  # the null's seeds: only weights differ
    assert mo["hv_null"] > 0 and mo["null_front_size"] >= 1
    extracted = ws / "bench" / "runs" / "seed-0" / "pareto" / "run-20" / "model"
    assert (extracted / "config.json").exists() and not (extracted / "ilql_heads.safetensors").exists()
    assert row["multi_objective_bon"]["front_size"] >= 1
    # the diagnostic benchmark behind the multi-objective row reads the same seed workspace
    corr = tmp_path / "corr.json"
    script = Path(__file__).parents[1] / "benchmarks" / "objective_correlation.py"
    run = ws / "bench" / "runs" / "seed-0"
    done = subprocess.run(
        [sys.executable, str(script), "--run", str(run), "--config", "smoke", "--grid-steps", "2", "--out", str(corr)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    c = json.loads(corr.read_text())
    assert len(c["grid"]) == 10 and len(c["objective_pearson"]) == 6 and c["samples"] > 0
    assert all(-1 <= g["spearman_vs_weighted_sum"] <= 1 for g in c["grid"])
    speed = bench["speed"]
    assert speed["best_of_n_batching"]["ratio"] > 0 and speed["ppo_vs_rloo"]["ratio"] > 0
    assert 0 < speed["roofline"]["rm"]["fraction_of_peak"] < 2 and 0 < speed["roofline"]["ppo"]["fraction_of_peak"] < 2
    assert (ws / "bench" / "runs" / "seed-0" / "eval" / "cycle-0002.json").exists()

    result = CliRunner().invoke(app, ["report", "--workspace", str(ws), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r-plots" / "bench_cycle_history.png").read_bytes().startswith(PNG)


def test_report_plots_and_gains_go_to_wandb_when_tracking_is_on(monkeypatch, tmp_path, bench_json):
    from test_tracking import _offline_run

    from rlhfops.report import log_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    ws = _history_ws(tmp_path / "ws")
    _write(ws.root / "bench" / "bench.json", bench_json)
    _, plots = write_html_report(ws, tmp_path / "report.html")
    log_report(Config(), ws, plots)
    _, found = _offline_run(ws.root)
    assert found["run"].job_type == "report" and found["exit_code"] == 0
    for name in plots:  # an image is logged as its nested fields
        assert found["history"][f"plots/{name}/_type"] == "image-file"
        assert found["history"][f"plots/{name}/format"] == "png"
    assert found["history"]["bench/Iterative RLHF"] == pytest.approx(0.4)


def test_seeds_without_the_option_are_one_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["bench", "1", "2", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "seeds go after --seeds" in result.output
    assert not (tmp_path / "ws").exists()
