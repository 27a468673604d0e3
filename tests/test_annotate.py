"""The annotate stage, step-label sources and their agreement, and the union of cycles for the RM / PRM."""

import json

import pytest

from rlhfops.annotation.annotate import annotate, pairs_path
from rlhfops.annotation.review import QUEUE, QUEUE_PRIVATE, read_queue
from rlhfops.annotation.steps import (
    exact_step_labels,
    label_agreement,
    mc_step_labels,
    read_step_data,
    sparse_step_labels,
)
from rlhfops.config import TaskConfig, load_config
from rlhfops.files import write_jsonl
from rlhfops.modeling import init_policy
from rlhfops.reward.prm import union_cycle_steps
from rlhfops.reward.train import union_cycle_pairs
from rlhfops.tasks import make_task
from rlhfops.tasks.arithmetic import make_example
from rlhfops.workspace import ANNOTATE_SUMMARY as SUMMARY
from rlhfops.workspace import JUDGEMENTS, STEPS, Workspace

STEPS_ = make_task(TaskConfig()).steps
SOLVE = make_example("q: 2+3*4?\n")
GOOD, BAD = SOLVE.reference, "3*4=12\n2+12=15\nanswer: 15"


def responses(n_prompts=6):
    rows = []
    for i in range(n_prompts):
        ex = make_example(f"q: {i}+3*4?\n")
        wrong = ex.reference.replace("answer: ", "answer: 1")
        for text in (ex.reference, wrong, ex.reference):
            rows.append(
                {"prompt": ex.prompt, "response": text, "source": "policy", "model_version": "v", "feedback": None}
            )
    rows.append({"prompt": "hello?", "response": "hi", "source": "interaction", "model_version": "v", "feedback": 1.0})
    return rows


def test_annotate_writes_pairs_steps_and_review_queue(tmp_path):
    cfg = load_config("smoke", ["annotation.judge.label_noise=0", "annotation.review.n_validation=3"])
    ws = Workspace(tmp_path / "ws")
    out = ws.cycle_dir(1)
    write_jsonl(tmp_path / "responses.jsonl", responses())
    summary = annotate(cfg, ws, tmp_path / "responses.jsonl", out)
    assert summary["prompts_collected"] == 7 and summary["responses_judged"] == 13  # duplicates judged once
    assert summary["unlabelled"] == 4  # the free-text interaction, every objective
    helpful = [json.loads(x) for x in pairs_path(out, "helpfulness").read_text().splitlines()]
    assert len(helpful) == 6
    assert all(make_example(p["prompt"]).reference == p["chosen"] for p in helpful)
    steps = read_step_data(out / STEPS)
    assert len(steps) == 12 and sum(r["labels"][-1] for r in steps) == 6  # 6 right answers, 6 wrong
    assert len(read_queue(out / QUEUE_PRIVATE)) == 3 and len(json.loads((out / QUEUE).read_text())) == 3
    assert json.loads((out / SUMMARY).read_text()) == summary
    assert len((out / JUDGEMENTS).read_text().splitlines()) == 13

    budget = load_config("smoke", ["annotation.active.budget=2", "annotation.steps.method=sparse"])
    small = annotate(budget, ws, tmp_path / "responses.jsonl", ws.cycle_dir(2))
    assert small["prompts_annotated"] == 2 and small["active_learning"] == "random"
    assert any(None in r["labels"] for r in read_step_data(ws.cycle_dir(2) / STEPS))

    # reward models and the PRM of cycle n train on the union of cycles 1..n
    union, cycles = union_cycle_pairs(ws, "helpfulness")
    assert cycles == [1, 2] and len(union) == 6 + small["pairs"]["helpfulness"]
    assert set(union[0]) == {"prompt", "chosen", "rejected"}
    steps_union, step_cycles = union_cycle_steps(ws)
    assert step_cycles == [1, 2] and len(steps_union) == 12 + small["step_records"]


def test_annotate_rejects_bad_input(tmp_path):
    cfg = load_config("smoke")
    ws = Workspace(tmp_path / "ws")
    path = tmp_path / "responses.jsonl"
    path.write_text('{"prompt": "q: 1+1?\\n", "response": "", "source": "policy", "model_version": "v"}\n')
    with pytest.raises(ValueError, match=f"{path}:1: field 'response' is empty"):
        annotate(cfg, ws, path, ws.cycle_dir(1))
    assert not ws.cycle_dir(1).exists()  # nothing half-written


def test_sparse_labels_mask_all_but_every_kth_and_the_answer():
    long = "3*4=12\n3*4=12\n2+12=14\nanswer: 14"  # the repeated step rewrites nothing: invalid
    record = sparse_step_labels(STEPS_, SOLVE, long, every=2)
    assert record["labels"] == [None, False, None, True]
    exact = exact_step_labels(STEPS_, SOLVE, long)
    agree = label_agreement([exact], [record])
    assert agree["coverage"] == 0.5 and agree["agreement"] == 1.0
    assert agree["imputed_agreement"] == 0.75  # the masked first step takes the repeated step's False
    wrong = "3*4=12\n2+12=15\nanswer: 15"  # exact: [True, False, False]
    sparse = sparse_step_labels(STEPS_, SOLVE, wrong, every=2)
    assert sparse["labels"] == [None, False, False]
    agree = label_agreement([exact_step_labels(STEPS_, SOLVE, wrong)], [sparse])
    assert agree["imputed_agreement"] == pytest.approx(2 / 3)  # the masked first step takes the next label


def test_monte_carlo_labels_hard_and_soft(monkeypatch):
    import rlhfops.annotation.steps as steps

    def fake_sample(model, tokenizer, prompts, gen, seed, logits_hook=None, template=True):
        # a completion that finishes right after a correct prefix and wrong after a wrong one
        out = []
        for i, p in enumerate(prompts):
            right = "3*4=12\n" in p and "2+12=15" not in p
            out.append("2+12=14\nanswer: 14" if right and i % 2 == 0 else "answer: 99")
        return out

    monkeypatch.setattr(steps, "sample_texts", fake_sample)
    (record,) = mc_step_labels(STEPS_, [SOLVE], [BAD], None, None, None, rollouts=2, seed=0)
    # line 0 '3*4=12' -> rollouts alternate right / wrong: soft 0.5, hard True;
    # line 1 '2+12=15' -> every rollout wrong; the answer line is the (wrong) answer itself
    assert record["soft_labels"] == [0.5, 0.0, 0.0] and record["labels"] == [True, False, False]
    agree = label_agreement([exact_step_labels(STEPS_, SOLVE, BAD)], [record])
    assert agree["agreement"] == 1.0 and agree["coverage"] == 1.0


def test_monte_carlo_labels_with_a_real_policy():
    cfg = load_config("smoke", ["generation.max_new_tokens=12"])
    tokenizer, model = init_policy(cfg)
    records = mc_step_labels(STEPS_, [SOLVE, SOLVE], [GOOD, BAD], model, tokenizer, cfg.generation, rollouts=3, seed=0)
    for record, response in zip(records, (GOOD, BAD), strict=True):
        assert record["completions"] == response.split("\n")
        assert all(x in (0.0, 1 / 3, 2 / 3, 1.0) for x in record["soft_labels"])
        assert record["labels"] == [x > 0 for x in record["soft_labels"]]
    assert records[0]["labels"][-1] is True and records[1]["labels"][-1] is False  # answer lines are exact


def test_a_judge_that_labels_too_little_fails_the_stage_naming_the_reasons():
    from collections import Counter

    from rlhfops.annotation.annotate import check_labelled_share

    class FakeJudges:
        kinds = {"helpfulness": "llm"}
        stats = Counter(unparsable=3, failed=1)
        errors = {"status": "HTTP 400: wrong model"}

    nothing = [{"helpfulness": None}] * 4
    with pytest.raises(RuntimeError, match=r"labelled 0 of 4 .*3 unparsable replies; 1 failed requests; HTTP 400"):
        check_labelled_share(FakeJudges(), nothing, ["helpfulness"], 0.5)
    with pytest.raises(RuntimeError, match="labelled 0 of 4"):  # nothing labelled fails even at share 0
        check_labelled_share(FakeJudges(), nothing, ["helpfulness"], 0.0)
    half = [{"helpfulness": 1.0}, {"helpfulness": 0.0}, {"helpfulness": None}, {"helpfulness": None}]
    check_labelled_share(FakeJudges(), half, ["helpfulness"], 0.5)
    with pytest.raises(RuntimeError, match="less than annotation.min_labelled_share=0.75"):
        check_labelled_share(FakeJudges(), half, ["helpfulness"], 0.75)
