"""The likelihood PRM (`prm.kind: likelihood`): per-line features from a causal LM's own token
log-probs, recomputed one prefix at a time; line spans on a real BPE vocabulary; the calibration fit;
a training run, its directory and a malformed calibration file."""

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

from rlhfops.annotation.steps import build_step_data, write_step_data
from rlhfops.config import load_config
from rlhfops.modeling import build_char_tokenizer, init_policy, save_policy
from rlhfops.reward.likelihood import LOGPROB_FLOOR
from rlhfops.reward.prm import (
    FEATURES,
    LIKELIHOOD,
    METRICS,
    ProcessRewardModel,
    calibrated,
    fit_calibration,
    line_features,
    line_token_spans,
    train_prm,
)
from rlhfops.tasks import make_task

CHAR = build_char_tokenizer()
PROMPTS = ["q: 2+3*4?\n", "q: 9*4?\n"]
LINES = [["3*4=12", "2+12=15", "answer: 15"], ["9*4=48", "", "answer: 48"]]


@pytest.fixture(scope="module")
def policy():
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    return tokenizer, model.eval()


def test_spans_are_the_characters_of_each_line():
    for prompt, lines in zip(PROMPTS, LINES, strict=True):
        ids, spans = line_token_spans(CHAR, prompt, lines, max_length=96)
        for line, span in zip(lines, spans, strict=True):
            assert CHAR.decode([ids[t] for t in span]) == line  # an empty line: no tokens
    _, cut = line_token_spans(CHAR, PROMPTS[0], LINES[0], max_length=20)
    assert cut[0] is not None and cut[1:] == [None, None]  # labels past max_length are not scored


def test_features_are_each_lines_lowest_token_log_prob_recomputed_one_prefix_at_a_time(policy):
    tokenizer, model = policy
    batched = line_features(model, tokenizer, PROMPTS, LINES, max_length=96)  # two lengths: right padding
    for prompt, lines, features in zip(PROMPTS, LINES, batched, strict=True):
        ids, spans = line_token_spans(tokenizer, prompt, lines, max_length=96)
        earlier = 0.0
        for span, (m, r) in zip(spans, features, strict=True):
            one_at_a_time = []
            for t in span:  # log p(token t | tokens < t) from a forward over the prefix alone
                with torch.no_grad():
                    logits = model(torch.tensor([ids[:t]])).logits[0, -1]
                one_at_a_time.append(max(LOGPROB_FLOOR, torch.log_softmax(logits, -1)[ids[t]].item()))
            expected = min(one_at_a_time, default=0.0)
            assert m == pytest.approx(expected, abs=1e-4)
            assert r == pytest.approx(earlier, abs=1e-4)
            earlier = min(earlier, expected)


def test_spans_on_a_real_bpe_vocabulary(tmp_path):
    """SmolLM2's tokenizer: "\\n\\n" is one token, numbers and words several characters a token."""
    from bpe_model import tiny_bpe_policy

    from rlhfops.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_bpe_policy(tmp_path / "bpe"))
    lines = ["12+30=42", "", "answer: 42"]
    ids, spans = line_token_spans(tokenizer, "q: 12+30?", lines, max_length=512)
    assert spans[1] == range(0)
    for line, span in zip(lines, spans, strict=True):
        if line:
            text = tokenizer.decode([ids[t] for t in span])
            assert line in text and text.strip("\n") == line  # whole tokens, a separator at most beside it


def test_calibration_recovers_a_known_logistic_model():
    rng = random.Random(0)
    features = [(rng.uniform(-8, 0), rng.uniform(-8, 0)) for _ in range(4000)]
    truth = {"weights": [1.5, 0.5], "bias": 2.0}
    good = [rng.random() < calibrated(f, truth) for f in features]
    fit = fit_calibration(features, good)
    assert fit["features"] == list(FEATURES) and fit["n_lines"] == 4000 and fit["n_bad_lines"] == good.count(False)
    assert fit["weights"] == pytest.approx(truth["weights"], abs=0.25)
    assert fit["bias"] == pytest.approx(truth["bias"], abs=0.4)
    assert calibrated((0.0, 0.0), fit) == pytest.approx(1 / (1 + math.exp(-fit["bias"])))
    assert calibrated((-1e6, 0.0), {"weights": [1.0, 0.0], "bias": 0.0}) == 0.0  # no overflow either way
    for one_class in (True, False):  # nothing to slope: the smoothed rate, whatever the features
        flat = fit_calibration(features[:5], [one_class] * 5)
        assert flat["weights"] == [0.0, 0.0] and calibrated(features[0], flat) == pytest.approx(
            5.5 / 6 if one_class else 0.5 / 6
        )
    with pytest.raises(ValueError, match="there are none"):
        fit_calibration([], [])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    cfg = load_config("smoke")  # prm.kind: likelihood, the default
    work = tmp_path_factory.mktemp("likelihood")
    tokenizer, model = init_policy(cfg)
    init = save_policy(model, tokenizer, cfg, work / "policy")
    task = make_task(cfg.task, seed=cfg.seed)
    write_step_data(build_step_data(task, None, "train", 200, cfg.seed), work / "train.jsonl")
    write_step_data(build_step_data(task, None, "val", 40, cfg.seed + 1), work / "val.jsonl")
    out = train_prm(cfg, work / "train.jsonl", work / "val.jsonl", init, work / "prm", progress=False)
    return cfg, init, out


def test_a_fitted_likelihood_prm_is_the_lm_and_its_calibration(fitted):
    cfg, init, out = fitted
    metrics = json.loads((out / METRICS).read_text())
    calibration = json.loads((out / LIKELIHOOD).read_text())
    assert metrics["kind"] == "likelihood" and metrics["calibration"] == calibration
    assert metrics["n_steps"] == metrics["n_bad_steps"] + metrics["n_good_steps"] > 0
    assert calibration["n_bad_lines"] > 0
    prm = ProcessRewardModel.load(out)
    assert prm.kind == "likelihood" and prm.max_length == cfg.prm.max_length
    # The saved LM is the init's, unchanged: the likelihood kind fits three numbers, not the model.
    before, after = load_file(init / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    features = line_features(prm.model, prm.tokenizer, PROMPTS, LINES, cfg.prm.max_length)
    probs = prm.line_probs(PROMPTS, LINES)
    for frow, prow in zip(features, probs, strict=True):
        assert prow == pytest.approx([calibrated(f, calibration) for f in frow])
    responses = ["\n".join(lines) for lines in LINES]
    assert prm.score(PROMPTS, responses, "min") == pytest.approx([min(row) for row in probs])


def test_a_malformed_calibration_file_is_named(fitted, tmp_path):
    import shutil

    _, _, out = fitted
    broken = tmp_path / "prm"
    shutil.copytree(out, broken)
    (broken / LIKELIHOOD).write_text('{"features": ["line_min_logprob"], "weights": [1.0], "bias": 0}')
    with pytest.raises(ValueError, match=f"{broken / LIKELIHOOD}: features"):
        ProcessRewardModel.load(broken)
    (broken / LIKELIHOOD).write_text("{not json")
    with pytest.raises(ValueError, match="not a likelihood PRM calibration"):
        ProcessRewardModel.load(broken)


def test_the_likelihood_kind_needs_a_causal_lm(fitted, tmp_path):
    cfg, _, out = fitted
    data = out.parent
    with pytest.raises(FileNotFoundError, match="cannot load model"):
        train_prm(cfg, data / "train.jsonl", data / "val.jsonl", tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_response_min_logprob_recomputed_one_prefix_at_a_time(policy):
    """m of a response as the reward members read it (rendered prompt + response + eos): the lowest
    log p(token | prefix) from its first character through the eos; cut at max_length."""
    from rlhfops.chat import render, scored_text
    from rlhfops.reward.likelihood import response_min_logprob

    tokenizer, model = policy
    prompts, responses = ["q: 2+3*4?\n", "q: 9*4?\n", "q: 1+1?\n"], ["3*4=12\n2+12=14\nanswer: 14", "answer: 36", ""]
    batched = response_min_logprob(model, tokenizer, prompts, responses, max_length=96)
    for prompt, response, m in zip(prompts, responses, batched.tolist(), strict=True):
        ids = tokenizer(scored_text(tokenizer, prompt, response))["input_ids"]
        first = len(tokenizer(render(tokenizer, prompt))["input_ids"])  # the char tokenizer: one token a character
        assert ids[-1] == tokenizer.eos_token_id
        logps = []
        for t in range(first, len(ids)):
            with torch.no_grad():
                logits = model(torch.tensor([ids[:t]])).logits[0, -1]
            logps.append(max(LOGPROB_FLOOR, torch.log_softmax(logits, -1)[ids[t]].item()))
        assert m == pytest.approx(min(logps), abs=1e-4)
    cut = len(tokenizer(render(tokenizer, prompts[1]))["input_ids"])  # nothing of the response is left
    assert response_min_logprob(model, tokenizer, prompts[1:2], responses[1:2], max_length=cut).tolist() == [
        LOGPROB_FLOOR
    ]


def test_the_likelihood_weight_is_a_bradley_terry_fit():
    from rlhfops.reward.likelihood import fit_weight

    gen = torch.Generator().manual_seed(0)
    base, dz = torch.randn(6000, generator=gen), torch.randn(6000, generator=gen)
    first_wins = torch.rand(6000, generator=gen) < torch.sigmoid(base + 2.0 * dz)
    sign = first_wins.float() * 2 - 1  # chosen - rejected: the winner first
    beta = fit_weight(sign * base, torch.zeros(6000), sign * dz, torch.zeros(6000))
    assert beta == pytest.approx(2.0, abs=0.2)
    assert fit_weight(base, base, dz, dz) == pytest.approx(0.0, abs=1e-6)  # no difference, no weight
