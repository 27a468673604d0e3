"""Judges from config, per objective, for annotation and for evaluation (issue 15, item 3): each
kind, their mixing, evaluation on judges other than the task's, the win rate against stable."""

import json
import random
import shutil
from statistics import fmean

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhfops import cycle
from rlhfops.annotation.judges import (
    PythonJudge,
    SequenceClassifierJudge,
    annotation_judges,
    build_judges,
    eval_judges,
)
from rlhfops.config import ConfigError, JudgeSpec, load_config
from rlhfops.evaluation import paired, per_prompt_composite, score_responses, win_rate
from rlhfops.modeling import build_char_tokenizer, init_policy, save_policy, tiny_llama_config
from rlhfops.tasks import make_task
from rlhfops.workspace import Workspace

SOLVE = "q: 2+3*4?\n"
RIGHT, WRONG = "3*4=12\n2+12=14\nanswer: 14", "3*4=12\n2+12=15\nanswer: 15"
JUDGE_FILE = '''
def length(prompts, responses):
    """1 for a response of at most 12 characters, 0 for longer, unlabelled when empty."""
    return [None if not r else float(len(r) <= 12) for r in responses]

def too_few(prompts, responses):
    return [0.5]

def too_high(prompts, responses):
    return [1.5 for _ in responses]

def boom(prompts, responses):
    raise RuntimeError("no grader today")
'''


@pytest.fixture
def judge_file(tmp_path):
    path = tmp_path / "my_judges.py"
    path.write_text(JUDGE_FILE)
    return path


def with_judges(section: str, judges: dict, *overrides: str):
    """The smoke config with `section.judges` set (as a YAML file would)."""
    cfg = load_config("smoke", list(overrides)).to_dict()
    target = cfg["annotation"] if section == "annotation" else cfg["eval"]
    target["judges"] = judges
    from rlhfops.config import validate

    return validate(cfg)


def test_python_judge_from_a_file_mixed_with_the_task_verifier(judge_file):
    cfg = with_judges("eval", {"conciseness": {"kind": "python", "callable": f"{judge_file}:length"}})
    task = make_task(cfg.task, cfg.seed)
    judge = eval_judges(cfg, task)
    assert judge.kinds == {
        "helpfulness": "verifier",
        "harmlessness": "verifier",
        "honesty": "verifier",
        "conciseness": f"python: {judge_file}:length",
    }
    scores = judge([SOLVE, SOLVE, SOLVE], [RIGHT, "answer: 14", ""])
    gold = [task.judge(task.example(SOLVE), r) for r in (RIGHT, "answer: 14", "")]
    for row, g, concise in zip(scores, gold, (0.0, 1.0, None), strict=True):
        assert row == {**g, "conciseness": concise}  # the other objectives are exactly the task's


def test_python_judges_that_misbehave_get_one_sentence_naming_them(judge_file, tmp_path):
    for fn, says in [
        ("too_few", "returned 1 scores for 2 responses"),
        ("too_high", "scored response 0 1.5, not a number in [0, 1] or None"),
        ("boom", "raised RuntimeError: no grader today"),
    ]:
        judge = PythonJudge(f"{judge_file}:{fn}", ["helpfulness"], "eval.judges.helpfulness")
        with pytest.raises(ValueError, match="eval.judges.helpfulness") as err:
            judge([SOLVE, SOLVE], [RIGHT, WRONG])
        assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="eval.judges.helpfulness .* cannot be used.*does not exist"):
        PythonJudge(f"{tmp_path}/absent.py:length", ["helpfulness"], "eval.judges.helpfulness")
    with pytest.raises(ValueError, match="has no 'nothing'"):
        PythonJudge(f"{judge_file}:nothing", ["helpfulness"], "eval.judges.helpfulness")


def test_judge_specs_are_checked_with_their_key():
    cases = [
        ("eval", {"honesty": {"kind": "python"}}, "eval.judges.honesty is a python judge whose callable"),
        ("eval", {"honesty": {"kind": "verifier", "path": "/x"}}, "eval.judges.honesty.path is for reward_model"),
        ("annotation", {"honesty": {"kind": "llm", "callable": "a:b"}}, "annotation.judges.honesty.callable is for"),
        ("eval", {"honesty": {"kind": "reward_model"}}, "eval.judges.honesty is a reward_model judge without a path"),
    ]
    for section, judges, message in cases:
        with pytest.raises(ConfigError, match=message):
            with_judges(section, judges)
    with pytest.raises(ConfigError, match="'eval.judges.honesty.kind'"):
        with_judges("eval", {"honesty": {"kind": "oracle"}})


def test_objectives_are_checked_against_the_task():
    cfg = with_judges("annotation", {"tone": {"kind": "llm"}})
    task = make_task(cfg.task, cfg.seed)
    with pytest.raises(ValueError, match="annotation.judges names tone, which is not among the objectives"):
        annotation_judges(cfg, task)
    cfg = load_config("smoke", ["reward.objectives=[helpfulness,tone]"])  # any names in the config ...
    with pytest.raises(ValueError, match="reward.objectives names tone, which task 'arithmetic' does not judge"):
        annotation_judges(cfg, task)  # ... but only the task's where judges are built
    with pytest.raises(ConfigError, match="distinct"):
        load_config("smoke", ["reward.objectives=[honesty,honesty]"])


def test_default_annotation_judges_are_the_noisy_verifier_as_before():
    cfg = load_config("smoke")
    task = make_task(cfg.task, cfg.seed)
    judge = annotation_judges(cfg, task)
    assert judge.kinds == dict.fromkeys(cfg.reward.objectives, "verifier") and len(judge.parts) == 1
    scores = judge([SOLVE] * 200, [RIGHT] * 200)
    flipped = sum(v == 0.0 for row in scores for v in row.values())
    assert flipped == judge.stats["flipped"] > 0  # annotation.judge.label_noise applies


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny random Llama sequence classifier with the char tokenizer, saved as any HF reward model."""
    cfg = load_config("smoke")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_llama_config(cfg.model, tokenizer, num_labels=1))
    path = tmp_path_factory.mktemp("rm") / "classifier"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def logit(path, text: str) -> float:
    tokenizer = build_char_tokenizer()
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()


def test_a_hugging_face_classifier_is_the_sigmoid_of_its_logit(classifier_dir):
    judge = SequenceClassifierJudge(classifier_dir, ["helpfulness"], max_length=96, batch_size=2)
    responses = [RIGHT, "answer: 14", WRONG]  # different lengths: right padding must not move the score
    scores = judge([SOLVE] * 3, responses)
    for row, response in zip(scores, responses, strict=True):
        expected = torch.tensor(logit(classifier_dir, SOLVE + response + "<eos>")).sigmoid().item()
        assert row["helpfulness"] == pytest.approx(expected, abs=1e-6)
        assert 0 < row["helpfulness"] < 1


def test_reward_model_path_takes_a_classifier_or_one_of_our_ensembles(classifier_dir, tmp_path):
    ensemble = tmp_path / "conciseness"
    shutil.copytree(classifier_dir, ensemble / "member_0")
    manifest = {
        "objective": "conciseness",
        "kind": "full",
        "max_length": 96,
        "members": [{"name": "member_0", "val_accuracy": 1.0, "reward_mean": 0.0, "reward_std": 1.0}],
    }
    (ensemble / "manifest.json").write_text(json.dumps(manifest))
    cfg = with_judges(
        "eval",
        {
            "helpfulness": {"kind": "reward_model", "path": str(classifier_dir)},
            "conciseness": {"kind": "reward_model", "path": str(ensemble)},
        },
    )
    task = make_task(cfg.task, cfg.seed)
    judge = eval_judges(cfg, task)
    rows = judge([SOLVE, SOLVE], [RIGHT, WRONG])
    # an ensemble of the one model, normalised by (0, 1): the same score as the model itself
    for row in rows:
        assert row["conciseness"] == pytest.approx(row["helpfulness"], abs=1e-6)
        assert row["honesty"] == 1.0  # the task's own
    with pytest.raises(ValueError, match="eval.judges.helpfulness.path '/nowhere' is not a directory"):
        eval_judges(with_judges("eval", {"helpfulness": {"kind": "reward_model", "path": "/nowhere"}}), task)


def test_default_eval_judges_give_the_task_judges_numbers():
    cfg = load_config("smoke")
    task = make_task(cfg.task, cfg.seed)
    examples = [ex for ex in task.examples("test", 24) for _ in range(2)]
    teacher = task.teacher
    rng = random.Random(3)
    responses = [teacher(ex, rng)[0] for ex in examples]
    result = score_responses(task, examples, responses, eval_judges(cfg, task))
    gold = [task.judge(ex, r) for ex, r in zip(examples, responses, strict=True)]
    for obj in task.objectives:
        assert result["gold"][obj] == fmean(g[obj] for g in gold)
    assert result["gold_composite"] == fmean(fmean(g[o] for g in gold) for o in task.objectives)
    by_prompt: dict[str, list[float]] = {}
    for ex, g in zip(examples, gold, strict=True):
        by_prompt.setdefault(ex.prompt, []).append(fmean(g.values()))
    assert result["per_prompt"] == [fmean(v) for v in by_prompt.values()]  # the gate's numbers, exactly as before
    assert result == score_responses(task, examples, responses)  # None: the same default
    assert result["unlabelled"] == dict.fromkeys(task.objectives, 0)


def test_evaluation_on_a_judge_other_than_the_tasks(judge_file):
    cfg = with_judges("eval", {"helpfulness": {"kind": "python", "callable": f"{judge_file}:length"}})
    task = make_task(cfg.task, cfg.seed)
    examples = [task.example(SOLVE)] * 3
    result = score_responses(task, examples, [RIGHT, "answer: 14", ""], eval_judges(cfg, task))
    assert result["judges"]["helpfulness"] == f"python: {judge_file}:length"
    assert result["gold"]["helpfulness"] == 0.5  # RIGHT is long (0), 'answer: 14' short (1), '' unlabelled
    assert result["unlabelled"] == {"helpfulness": 1, "harmlessness": 0, "honesty": 0, "conciseness": 0}
    assert result["gold"]["honesty"] == fmean(task.judge(examples[0], r)["honesty"] for r in [RIGHT, "answer: 14", ""])


def test_win_rate_and_pairing_on_hand_built_scores():
    stable = [0.2, 0.5, 0.9, None, 0.4, 0.1]
    candidate = [0.4, 0.5, 0.1, 0.7, None, 0.3]
    # kept prompts 0, 1, 2, 5: win, tie, loss, win -> (1 + 0.5 + 0 + 1) / 4
    assert win_rate(stable, candidate) == 0.625
    assert paired(stable, candidate) == ([0.2, 0.5, 0.9, 0.1], [0.4, 0.5, 0.1, 0.3])
    assert win_rate([0.3] * 4, [0.3] * 4) == 0.5 and win_rate([None], [0.1]) is None
    with pytest.raises(ValueError, match="same prompts"):
        win_rate([0.1], [0.1, 0.2])
    ex = make_task(load_config("smoke").task).example(SOLVE)
    other = make_task(load_config("smoke").task).example("q: 7-1?\n")
    rows = [(ex, "a", {"h": 1.0, "c": None}), (ex, "b", {"h": 0.0, "c": 0.5}), (other, "c", {"h": None, "c": None})]
    assert per_prompt_composite(rows) == [0.625, None]  # mean of (1.0, 0.25); a prompt with no label is None


def test_cycle_evaluation_reports_the_win_rate_and_the_gate_pairs_labelled_prompts(tmp_path, judge_file):
    cfg = with_judges(
        "eval",
        {"conciseness": {"kind": "python", "callable": f"{judge_file}:length"}},
        "pipeline.eval_prompts=8",
        "eval.samples_per_prompt=2",
    )
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, tmp_path / "models" / "sft")
    ws = Workspace(tmp_path)
    save_policy(model, tokenizer, cfg, ws.model_dir("cycle-0001") / cfg.policy.algorithm)
    summary = cycle.evaluate(cfg, ws, 1)
    stable, candidate = summary["results"]["stable"], summary["results"][cfg.policy.algorithm]
    assert "win_rate" not in stable and candidate["win_rate"] == 0.5  # the same policy, the same samples: all ties
    assert candidate["judges"]["conciseness"] == f"python: {judge_file}:length"
    assert set(candidate["gold"]) == set(make_task(cfg.task).objectives) and len(candidate["per_prompt"]) == 8

    summary["results"]["stable"]["per_prompt"] = [0.1, None, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1]
    summary["results"][cfg.policy.algorithm]["per_prompt"] = [0.9, 0.9, None, 0.8, 0.9, 0.8, 0.9, 0.8]
    cycle.cycle_eval_path(ws, 1).write_text(json.dumps(summary))
    gate = cycle.gate(cfg, ws, 1)
    assert gate["stats"]["n"] == 6 and gate["decision"] == "deploy"


def test_build_judges_shares_one_judge_per_spec():
    cfg = load_config("smoke")
    task = make_task(cfg.task, cfg.seed)
    specs = {"honesty": JudgeSpec(kind="verifier"), "harmlessness": JudgeSpec(kind="verifier")}
    judge = build_judges(cfg, task, specs, list(task.objectives), JudgeSpec(kind="verifier"), "eval")
    assert len(judge.parts) == 1 and judge.parts[0][1] == list(task.objectives)


def test_annotate_labels_each_objective_with_its_own_judge(tmp_path, judge_file):
    from rlhfops.annotation.annotate import annotate, pairs_path
    from rlhfops.files import write_jsonl

    cfg = with_judges(
        "annotation",
        {"conciseness": {"kind": "python", "callable": f"{judge_file}:length"}},
        "annotation.judge.label_noise=0",
    )
    rows = [
        {"prompt": SOLVE, "response": text, "source": "policy", "model_version": "v", "feedback": None}
        for text in (RIGHT, "answer: 14", WRONG)
    ]
    write_jsonl(tmp_path / "responses.jsonl", rows)
    summary = annotate(cfg, Workspace(tmp_path / "ws"), tmp_path / "responses.jsonl", tmp_path / "out")
    assert summary["judges"]["conciseness"] == f"python: {judge_file}:length"
    assert summary["judges"]["helpfulness"] == "verifier"
    (concise,) = [json.loads(x) for x in pairs_path(tmp_path / "out", "conciseness").read_text().splitlines()]
    assert concise["chosen"] == "answer: 14" and concise["chosen_score"] == 1.0 and concise["rejected_score"] == 0.0
    (helpful,) = [json.loads(x) for x in pairs_path(tmp_path / "out", "helpfulness").read_text().splitlines()]
    assert helpful["chosen"] in (RIGHT, "answer: 14") and helpful["rejected"] == WRONG
