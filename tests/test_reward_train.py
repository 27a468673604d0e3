"""Smoke-size reward-model training: real RewardTrainer runs, manifests, scoring, CLI."""

import json

import pytest
import torch
from typer.testing import CliRunner

from rlhfops.annotation.pairs import build_preference_data, read_pairs, select_pair, select_pairs
from rlhfops.cli import app
from rlhfops.config import load_config
from rlhfops.modeling import init_policy, load_decoder, save_policy
from rlhfops.reward.ensemble import MANIFEST, RewardEnsemble
from rlhfops.reward.functions import CompositeReward, EnsembleReward, load_ensembles
from rlhfops.reward.train import SUMMARY, bootstrap, prepare_preference_data, train_heads, train_reward_models
from rlhfops.workspace import Workspace, pairs_file

OVERRIDES = [
    "reward.objectives=[helpfulness, honesty]",
    "reward.members=2",
    "reward.max_steps=40",
    "reward.lr=3e-3",
    "reward.data.n_prompts=200",
    "reward.data.n_val_prompts=64",
    "scalarisation.weights={helpfulness: 0.5, honesty: 0.5}",
]


def test_select_pair_rules():
    import random

    assert select_pair([0.5, 1.0, 0.0, 1.0], "max_min", random.Random(0)) == (1, 2)
    assert select_pair([1.0, 1.0], "max_min", random.Random(0)) is None
    chosen, rejected = select_pair([0.2, 1.0, 0.0, 0.5], "max_random", random.Random(3))
    assert chosen == 1 and rejected in (0, 2, 3)


def test_select_pairs_adds_distinct_ordered_pairs_after_the_selections_own():
    import random

    scores, texts = [1.0, 0.0, 1.0, 0.0, 0.5], ["a", "b", "c", "b", "d"]
    picked = select_pairs(scores, texts, "max_min", 10, random.Random(0))
    assert picked[0] == select_pair(scores, "max_min", random.Random(0)) == (0, 1)
    assert all(scores[c] > scores[r] for c, r in picked)
    assert len({(texts[c], texts[r]) for c, r in picked}) == len(picked) == 5  # a>b a>d c>b c>d d>b
    assert select_pairs(scores, texts, "max_min", 1, random.Random(0)) == [(0, 1)]
    assert select_pairs([1.0, 1.0], ["a", "b"], "max_min", 4, random.Random(0)) == []


def test_bootstrap_is_a_seeded_resample():
    records = [{"i": i} for i in range(50)]
    a, b = bootstrap(records, 1), bootstrap(records, 1)
    assert a == b and len(a) == 50 and len({r["i"] for r in a}) < 50


def test_heads_learn_a_separable_preference():
    torch.manual_seed(0)
    direction = torch.randn(16)
    chosen, rejected = torch.randn(200, 16) + direction, torch.randn(200, 16) - direction
    weight, bias = train_heads(chosen, rejected, k=3, seed=0, steps=100)
    assert weight.shape == (3, 16) and bias.shape == (3,)
    assert ((chosen - rejected) @ weight.T > 0).float().mean() > 0.95
    assert not torch.allclose(weight[0], weight[1])  # bootstrap + seed: members differ


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    cfg = load_config("smoke", OVERRIDES)
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, root / "models" / "sft")
    build_preference_data(cfg, root / "data" / "preferences", policy=load_decoder(cfg, root / "models" / "sft"))
    return root, cfg


def test_preference_data_in_trl_fields(workspace):
    root, cfg = workspace
    stats = json.loads((root / "data" / "preferences" / "stats.json").read_text())
    for obj in cfg.reward.objectives:
        pairs = read_pairs(root / "data" / "preferences" / "train" / f"{obj}.jsonl")
        assert pairs and set(pairs[0]) == {"prompt", "chosen", "rejected"}
        assert stats["train"][obj]["pairs"] == len(pairs)
        assert stats["val"][obj]["flipped"] == 0


def test_more_pairs_per_prompt_from_the_same_responses(tmp_path):
    stats = {}
    for per_prompt in (1, 4):
        cfg = load_config("smoke", [*OVERRIDES, f"reward.data.pairs_per_prompt={per_prompt}"])
        build_preference_data(cfg, tmp_path / str(per_prompt), policy=None)  # teacher responses only: fast
        stats[per_prompt] = json.loads((tmp_path / str(per_prompt) / "stats.json").read_text())
        assert stats[per_prompt]["data"] == cfg.reward.data.model_dump()
    assert stats[4]["train"]["helpfulness"]["pairs"] > stats[1]["train"]["helpfulness"]["pairs"]
    assert stats[4]["val"] == stats[1]["val"]  # validation: one pair per prompt
    pairs = read_pairs(tmp_path / "4" / "train" / "helpfulness.jsonl")
    assert len({(r["prompt"], r["chosen"], r["rejected"]) for r in pairs}) == len(pairs)


def test_a_cycle_trains_on_its_annotated_pairs_and_with_join_cycles_the_exactly_labelled_ones(workspace, tmp_path):
    root, _ = workspace
    ws = Workspace(tmp_path / "ws")
    annotated = {"prompt": "q: 1+2?\n", "chosen": "1+2=3\nanswer: 3", "rejected": "answer: 4"}
    cfg = load_config("smoke", [*OVERRIDES, "reward.data.n_prompts=40", "reward.data.n_val_prompts=16"])
    for obj in cfg.reward.objectives:
        path = ws.cycle_dir(1) / pairs_file(obj)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(annotated) + "\n")
    data = tmp_path / "prefs"
    assert prepare_preference_data(cfg, ws, data, root / "models" / "sft") == "cycles"
    assert read_pairs(data / "train" / "helpfulness.jsonl") == [annotated] and not (data / "auto").exists()
    joined = load_config("smoke", [*OVERRIDES, "reward.data.n_prompts=40", "reward.data.join_cycles=true"])
    prepare_preference_data(joined, ws, data, root / "models" / "sft")
    stats = json.loads((data / "stats.json").read_text())
    for obj in cfg.reward.objectives:
        train = read_pairs(data / "train" / f"{obj}.jsonl")
        assert train[0] == annotated and len(train) == 1 + stats["train"][obj]["auto"] > 1
    built = (data / "auto" / "stats.json").stat().st_mtime_ns
    prepare_preference_data(joined, ws, data, root / "models" / "sft")  # built once
    assert (data / "auto" / "stats.json").stat().st_mtime_ns == built


@pytest.mark.parametrize("kind", ["full", "heads"])
def test_train_rm_writes_validated_ensembles(workspace, kind):
    root, cfg = workspace
    cfg = load_config("smoke", [*OVERRIDES, f"reward.kind={kind}"])
    out = train_reward_models(
        cfg, root / "data" / "preferences", root / "models" / "sft", root / "models" / f"reward-{kind}", progress=False
    )
    summary = json.loads((out / SUMMARY).read_text())
    for obj in cfg.reward.objectives:
        manifest = json.loads((out / obj / MANIFEST).read_text())
        assert manifest["objective"] == obj and manifest["kind"] == kind and len(manifest["members"]) == 2
        assert all(0 <= m["val_accuracy"] <= 1 and m["reward_std"] > 0 for m in manifest["members"])
        if kind == "full":
            assert all(m["final_loss"] < m["first_loss"] for m in manifest["members"])  # loss fell
        assert set(summary[obj]["ensemble_accuracy"]) == {"mean", "weighted", "min", "uwo"}
        ensemble = RewardEnsemble(out / obj)
        prompts, completions = ["q: 2+3?\n", "q: 2+3?\n", "q: 4/0?\n"], ["2+3=5\nanswer: 5", "answer: 7", ""]
        member = ensemble.member_rewards(prompts, completions)
        assert member.shape == (2, 3) and torch.isfinite(member).all()
        agg, spread = ensemble.score(prompts, completions, "uwo", 1.0)
        torch.testing.assert_close(agg, member.mean(0) - member.std(0, correction=0))
        assert EnsembleReward(ensemble)(prompts, completions) == ensemble.score(prompts, completions)[0].tolist()
    ensembles = load_ensembles(out, cfg.reward.objectives)
    parts = CompositeReward(ensembles, cfg).vectors(["q: 2+3?\n"], ["2+3=5\nanswer: 5"])
    assert parts["rewards"].shape == (1, 2) and parts["spreads"].shape == (1, 2)
    assert parts["total"][0].item() == pytest.approx(parts["rewards"][0].mean().item(), abs=1e-5)  # 0.5/0.5 weights
    cfg.reward.uncertainty_penalty = 2.0
    penalised = CompositeReward(ensembles, cfg).vectors(["q: 2+3?\n"], ["2+3=5\nanswer: 5"])
    expected = parts["total"][0] - 2.0 * parts["spreads"][0].mean()
    assert penalised["total"][0].item() == pytest.approx(expected.item(), abs=1e-5)


def test_the_likelihood_term_is_one_shared_shift_of_every_member(workspace, tmp_path):
    """`reward.likelihood` (default): beta * z(m) added to every member; the spread is the members' own."""
    import math
    import shutil

    from rlhfops.modeling import load_policy
    from rlhfops.reward.likelihood import LM_DIR, response_min_logprob

    root, cfg = workspace
    out = root / "models" / "reward-full" / "helpfulness"  # trained by the test above
    manifest = json.loads((out / MANIFEST).read_text())
    term = manifest["likelihood"]
    assert term["n_train_pairs"] > 0 and term["std"] > 0 and math.isfinite(term["beta"])
    assert manifest["val"]["likelihood_beta"] == term["beta"]
    assert set(manifest["val"]["ensemble_accuracy_without_likelihood"]) == {"mean", "weighted", "min", "uwo"}
    policy = root / "models" / "sft" / "model.safetensors"
    assert (out / LM_DIR / "model.safetensors").stat().st_ino == policy.stat().st_ino  # linked, not rewritten
    ensemble = RewardEnsemble(out)
    prompts, completions = ["q: 2+3?\n", "q: 2+3?\n", "q: 4/0?\n"], ["2+3=5\nanswer: 5", "answer: 7", ""]
    normalised = (ensemble.raw_rewards(prompts, completions) - ensemble.offsets) / ensemble.scales
    tokenizer, lm = load_policy(root / "models" / "sft", train=False)
    m = response_min_logprob(lm, tokenizer, prompts, completions, cfg.reward.max_length)
    shift = term["beta"] * (m - term["mean"]) / term["std"]
    torch.testing.assert_close(ensemble.member_rewards(prompts, completions), normalised + shift, atol=1e-5, rtol=1e-5)
    _, spread = ensemble.score(prompts, completions, "uwo", 1.0)
    torch.testing.assert_close(spread, normalised.std(0, correction=0), atol=1e-5, rtol=1e-5)
    assert RewardEnsemble(out.parent / "honesty").lm is ensemble.lm  # one policy, one copy in memory
    broken = tmp_path / "helpfulness"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / LM_DIR)
    with pytest.raises(FileNotFoundError, match="likelihood term"):
        RewardEnsemble(broken)


def test_without_the_likelihood_term_members_are_only_normalised(workspace):
    from rlhfops.reward.likelihood import LM_DIR

    root, _ = workspace
    cfg = load_config("smoke", [*OVERRIDES, "reward.kind=heads", "reward.likelihood=false"])
    out = train_reward_models(
        cfg, root / "data" / "preferences", root / "models" / "sft", root / "models" / "reward-plain", progress=False
    )
    manifest = json.loads((out / "helpfulness" / MANIFEST).read_text())
    assert "likelihood" not in manifest and not (out / "helpfulness" / LM_DIR).exists()
    ensemble = RewardEnsemble(out / "helpfulness")
    prompts, completions = ["q: 2+3?\n", "q: 4/0?\n"], ["answer: 5", "answer: undefined"]
    normalised = (ensemble.raw_rewards(prompts, completions) - ensemble.offsets) / ensemble.scales
    torch.testing.assert_close(ensemble.member_rewards(prompts, completions), normalised)


def test_the_likelihood_term_reads_the_lm_the_config_names(workspace, tmp_path):
    """`reward.likelihood_lm`: a verifier LM other than the policy (here a smaller Llama) is what
    lm/ links and what m is computed under; a path that is not a model fails before any member trains."""
    from rlhfops.modeling import load_policy
    from rlhfops.reward.likelihood import LM_DIR, response_min_logprob

    root, _ = workspace
    small_cfg = load_config("smoke", ["model.hidden_size=16", "model.intermediate_size=32", "seed=3"])
    tokenizer, model = init_policy(small_cfg)
    save_policy(model, tokenizer, small_cfg, tmp_path / "verifier")
    overrides = [*OVERRIDES, "reward.kind=heads", "reward.objectives=[honesty]"]
    cfg = load_config("smoke", [*overrides, f"reward.likelihood_lm={tmp_path / 'verifier'}"])
    out = train_reward_models(
        cfg, root / "data" / "preferences", root / "models" / "sft", tmp_path / "rm", progress=False
    )
    ensemble = RewardEnsemble(out / "honesty")
    weights = (out / "honesty" / LM_DIR / "model.safetensors").stat().st_ino
    assert weights == (tmp_path / "verifier" / "model.safetensors").stat().st_ino
    prompts, completions = ["q: 2+3?\n", "q: 4/0?\n"], ["2+3=5\nanswer: 5", "answer: undefined"]
    tokenizer, lm = load_policy(tmp_path / "verifier", train=False)
    m = response_min_logprob(lm, tokenizer, prompts, completions, cfg.reward.max_length)
    torch.testing.assert_close(ensemble.min_logprob(prompts, completions), m, atol=1e-5, rtol=1e-5)
    missing = load_config("smoke", [*overrides, f"reward.likelihood_lm={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match="reward.likelihood_lm .*nowhere"):
        train_reward_models(
            missing, root / "data" / "preferences", root / "models" / "sft", tmp_path / "rm2", progress=False
        )
    assert not (tmp_path / "rm2").exists()


def test_stacked_scoring_matches_member_by_member(workspace):
    root, cfg = workspace
    out = root / "models" / "reward-full" / "helpfulness"
    prompts, completions = ["q: 2+3?\n"] * 3, ["2+3=5\nanswer: 5", "answer: 7", "answer: refuse"]
    torch.testing.assert_close(
        RewardEnsemble(out, fused="always").raw_rewards(prompts, completions),
        RewardEnsemble(out, fused="never").raw_rewards(prompts, completions),
        atol=1e-5,
        rtol=1e-5,
    )


def test_cli_train_rm_and_score(workspace, tmp_path):
    root, _ = workspace
    runner = CliRunner()
    args = ["-c", "smoke", "-w", str(root), *[x for o in OVERRIDES for x in ("--set", o)]]
    result = runner.invoke(app, ["train-rm", *args, "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) >= {"helpfulness", "honesty", "mean_ensemble_accuracy"}
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "q: 2+3?\\n", "response": "2+3=5\\nanswer: 5"}\n')
    result = runner.invoke(app, ["score", str(data), *args, "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[0])
    assert set(row["rewards"]) == {"helpfulness", "honesty"} and set(row["spreads"]) == set(row["rewards"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q: 1?\\n", "response": "answer: 1"}\n{"prompt": 3}\n')
    result = runner.invoke(app, ["score", str(bad), *args])
    assert result.exit_code == 2 and f"{bad}:2: field 'prompt' must be a string" in result.output


def test_cli_train_prm_then_score_shows_step_scores(workspace, tmp_path):
    root, _ = workspace
    runner = CliRunner()
    args = ["-c", "smoke", "-w", str(root), *[x for o in OVERRIDES for x in ("--set", o)]]
    prm_args = ["--set", "prm.max_steps=20", "--set", "prm.n_prompts=100", "--set", "prm.n_val_prompts=40"]
    result = runner.invoke(app, ["train-prm", *args, *prm_args, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0 <= metrics["step_accuracy"] <= 1 and set(metrics["ranking"]) == {"min", "product", "last"}
    assert (root / "data" / "steps" / "train.jsonl").exists()
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "q: 2+3*4?\\n", "response": "3*4=12\\n2+12=14\\nanswer: 14"}\n')
    result = runner.invoke(app, ["score", str(data), *args, "--json"])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["prm_steps"]
    assert len(steps) == 3 and all(0 <= p <= 1 for p in steps)


def test_members_of_another_size_train_and_score_one_by_one(workspace, tmp_path):
    """`reward.member_init` gives members their own model (here a smaller Llama): no stacking."""
    root, _ = workspace
    small_cfg = load_config("smoke", ["model.hidden_size=16", "model.intermediate_size=32"])
    tokenizer, model = init_policy(small_cfg)
    save_policy(model, tokenizer, small_cfg, tmp_path / "small")
    cfg = load_config(
        "smoke",
        [
            *OVERRIDES,
            "reward.objectives=[honesty]",
            f"reward.member_init=[{root / 'models' / 'sft'}, {tmp_path / 'small'}]",
        ],
    )
    out = train_reward_models(
        cfg, root / "data" / "preferences", root / "models" / "sft", tmp_path / "rm", progress=False
    )
    ensemble = RewardEnsemble(out / "honesty")
    assert [m["init"] for m in ensemble.manifest["members"]] == [str(root / "models" / "sft"), str(tmp_path / "small")]
    assert ensemble.stacked is None
    assert ensemble.member_rewards(["q: 1+1?\n"], ["answer: 2"]).shape == (2, 1)


def test_member_training_is_deterministic_for_a_seed(workspace, tmp_path):
    from safetensors.torch import load_file

    from rlhfops.reward.train import train_member

    root, cfg = workspace
    cfg = load_config("smoke", [*OVERRIDES, "reward.max_steps=5"])
    pairs = read_pairs(root / "data" / "preferences" / "train" / "honesty.jsonl")
    for i in range(2):
        train_member(cfg, pairs, root / "models" / "sft", tmp_path / f"m{i}", seed=3)
    a, b = load_file(tmp_path / "m0" / "model.safetensors"), load_file(tmp_path / "m1" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_tune_weights(workspace):
    root, _ = workspace
    args = ["-c", "smoke", "-w", str(root), *[x for o in OVERRIDES for x in ("--set", o)], "--set", "task.n_val=24"]
    if not (root / "models" / "reward" / "summary.json").exists():  # when run on its own
        assert CliRunner().invoke(app, ["train-rm", *args, "--json"]).exit_code == 0
    result = CliRunner().invoke(app, ["tune-weights", *args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["best_weights"]) == {"helpfulness", "honesty"}
    assert sum(report["best_weights"].values()) == pytest.approx(1.0)
    utility = report["test_utility"]
    assert utility["random_candidate"] <= utility["oracle"]
    assert all(0 <= v <= 1 for v in utility.values())
    assert (root / "models" / "reward" / "weights.json").exists()


def test_cli_bon(workspace):
    root, _ = workspace
    args = ["-c", "smoke", "-w", str(root), *[x for o in OVERRIDES for x in ("--set", o)]]
    if not (root / "models" / "reward" / "summary.json").exists():  # when run on its own
        assert CliRunner().invoke(app, ["train-rm", *args, "--json"]).exit_code == 0
    bon_args = ["--set", "best_of_n.n_values=[1, 2]", "--set", "best_of_n.n=2", "--set", "best_of_n.n_prompts=4"]
    result = CliRunner().invoke(app, ["bon", *args, *bon_args, "--json"])
    assert result.exit_code == 0, result.output
    curve = json.loads(result.stdout)["curve"]
    assert [row["n"] for row in curve] == [1, 2] and curve[1]["samples"] == 8
    assert (root / "eval" / "bon-sft.json").exists()
