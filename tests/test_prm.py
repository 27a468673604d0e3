import json
import math
import random
from statistics import fmean

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhfops.annotation.steps import build_step_data, write_step_data
from rlhfops.config import CONFIG_FILENAME, load_config
from rlhfops.modeling import build_char_tokenizer, init_policy, save_policy
from rlhfops.reward.prm import (
    IGNORE,
    METRICS,
    TRAIN_LOG,
    ProcessRewardModel,
    aggregate_steps,
    collate,
    corruption_ranking_rate,
    encode_record,
    init_prm,
    step_loss,
    train_prm,
)
from rlhfops.tasks import make_task
from rlhfops.tasks.arithmetic import make_example, verify

CHAR = build_char_tokenizer()
RECORD = {
    "prompt": "q: 2+3*4?\n",
    "completions": ["3*4=12", "2+12=15", "answer: 15"],
    "labels": [True, False, False],
}


def labelled(encoded):
    return [(i, label) for i, label in enumerate(encoded["labels"]) if label != IGNORE]


def test_each_label_sits_on_the_last_token_of_its_line():
    enc = encode_record(CHAR, RECORD, max_length=96)
    text = "q: 2+3*4?\n3*4=12\n2+12=15\nanswer: 15\n"
    assert CHAR.decode(enc["input_ids"], skip_special_tokens=True) == text
    marks = labelled(enc)
    assert [label for _, label in marks] == [1.0, 0.0, 0.0]
    for (pos, _), line in zip(marks, RECORD["completions"], strict=True):
        # the token that completes the line carries its label: everything of the line is before it or on it
        assert CHAR.decode(enc["input_ids"][: pos + 1], skip_special_tokens=True).endswith(line)
        assert CHAR.decode(enc["input_ids"][pos + 1]) == "\n"
    assert marks[-1][0] == len(enc["input_ids"]) - 2  # the answer line's last digit, before the closing "\n"
    assert sum(label != IGNORE for label in enc["labels"]) == 3  # and nothing else is labelled


def test_an_empty_line_is_labelled_on_its_separator():
    record = {"prompt": "q: 2+3?\n", "completions": ["2+3=5", "", "answer: 5"], "labels": [True, False, True]}
    enc = encode_record(CHAR, record, max_length=96)
    tokens = [CHAR.decode(i) for i in enc["input_ids"]]
    assert [(tokens[pos], label) for pos, label in labelled(enc)] == [("5", 1.0), ("\n", 0.0), ("5", 1.0)]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Several characters per token (numbers and words whole), to exercise the offsets path."""
    words = ["<pad>", "<unk>", "\n", "q", ":", " ", "?", "+", "*", "=", "answer", "2", "3", "4", "12", "15"]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d+|[a-z]+|[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def test_labels_are_found_by_offsets_for_multi_character_tokens():
    tok = word_tokenizer()
    enc = encode_record(tok, RECORD, max_length=96)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert len(tokens) < len("q: 2+3*4?\n3*4=12\n2+12=15\nanswer: 15\n")
    marks = labelled(enc)
    assert [tokens[pos] for pos, _ in marks] == ["12", "15", "15"]  # the whole number holding each line's end
    assert [tokens[pos + 1] for pos, _ in marks] == ["\n", "\n", "\n"]
    assert [label for _, label in marks] == [1.0, 0.0, 0.0]


def test_truncation_drops_labels_past_max_length():
    full = encode_record(CHAR, RECORD, max_length=96)
    second_label = labelled(full)[1][0]
    cut = encode_record(CHAR, RECORD, max_length=second_label)  # keeps tokens [0, second_label)
    assert cut["input_ids"] == full["input_ids"][:second_label]
    assert labelled(cut) == labelled(full)[:1]
    assert encode_record(CHAR, RECORD, max_length=second_label + 1)["labels"][-1] == 0.0


def test_collate_pads_on_the_right():
    short = {"input_ids": [5, 6], "labels": [IGNORE, 1.0]}
    long = {"input_ids": [5, 6, 7, 8], "labels": [IGNORE, IGNORE, IGNORE, 0.0]}
    batch = collate([short, long], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 0, 0], [5, 6, 7, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 1.0, IGNORE, IGNORE], [IGNORE, IGNORE, IGNORE, 0.0]]


def test_step_loss_is_bce_on_labelled_tokens_only():
    labels = torch.tensor([[IGNORE, 1.0, IGNORE], [0.0, IGNORE, IGNORE]])
    logits = torch.tensor([[100.0, 0.0, -100.0], [0.0, 55.0, 7.0]])
    assert step_loss(logits, labels).item() == pytest.approx(math.log(2))
    logits = torch.tensor([[0.0, 2.0, 0.0], [-1.0, 0.0, 0.0]])
    expected = fmean(
        [-math.log(torch.sigmoid(torch.tensor(2.0)).item()), -math.log(1 - torch.sigmoid(torch.tensor(-1.0)).item())]
    )
    assert step_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_aggregate_steps():
    probs = [0.9, 0.5, 0.8]
    assert aggregate_steps(probs, "min") == 0.5
    assert aggregate_steps(probs, "product") == pytest.approx(0.36)
    assert aggregate_steps(probs, "last") == 0.8
    assert aggregate_steps([], "min") == aggregate_steps([], "product") == aggregate_steps([], "last") == 0.0
    with pytest.raises(ValueError, match="unknown step aggregation 'mean'"):
        aggregate_steps(probs, "mean")


class OraclePRM:
    """Scores a response 1.0 when every line verifies, else 0.0 (duck-types ProcessRewardModel.score)."""

    def score(self, prompts, completions, aggregation="min"):
        return [float(verify(make_example(p), c).steps_valid) for p, c in zip(prompts, completions, strict=True)]


def test_corruption_ranking_rate_counts_strict_wins_on_solve_examples():
    cfg = load_config("smoke")
    task = make_task(cfg.task)
    examples = task.examples("val", 30)
    result = corruption_ranking_rate(OraclePRM(), task, examples, random.Random(0))
    n_solve = sum(ex.kind == "solve" for ex in examples)
    assert 0 < result["n"] <= n_solve
    assert result["rate"] == 1.0
    with pytest.raises(ValueError, match="got none"):
        corruption_ranking_rate(OraclePRM(), task, [ex for ex in examples if ex.kind != "solve"], random.Random(0))


# ---- a tiny real training run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = load_config("smoke", ["prm.kind=head", "prm.max_steps=150", "prm.lr=0.003", "prm.batch_size=32"])
    work = tmp_path_factory.mktemp("prm")
    tokenizer, model = init_policy(cfg)
    init = save_policy(model, tokenizer, cfg, work / "policy")
    task = make_task(cfg.task, seed=cfg.seed)
    write_step_data(build_step_data(task, None, "train", 800, cfg.seed), work / "train.jsonl")
    write_step_data(build_step_data(task, None, "val", 100, cfg.seed + 1), work / "val.jsonl")
    out = train_prm(cfg, work / "train.jsonl", work / "val.jsonl", init, work / "prm", progress=False)
    return cfg, init, out


def test_prm_loss_falls_and_parameters_change(trained):
    _, init, out = trained
    losses = [row["loss"] for row in json.loads((out / TRAIN_LOG).read_text())]
    assert len(losses) >= 10
    assert fmean(losses[-5:]) < 0.7 * losses[0]
    before, after = load_file(init / "model.safetensors"), load_file(out / "model.safetensors")
    trunk = [k for k in after if k.startswith("model.")]
    assert trunk and all(k in before for k in trunk)
    assert all(not torch.equal(before[k], after[k]) for k in trunk)
    assert {"score.weight", "score.bias"} <= set(after)


def test_prm_directory_holds_config_metrics_and_model(trained):
    cfg, _, out = trained
    assert load_config(out / CONFIG_FILENAME) == cfg
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    metrics = json.loads((out / METRICS).read_text())
    assert metrics["n_steps"] == metrics["n_bad_steps"] + metrics["n_good_steps"] > 0
    assert metrics["n_bad_steps"] > 0 and metrics["train_steps"] == 150
    for key in ("step_accuracy", "bad_step_accuracy", "good_step_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_loaded_prm_scores_one_probability_per_line(trained):
    cfg, _, out = trained
    prm = ProcessRewardModel.load(out)
    assert prm.max_length == cfg.prm.max_length and prm.aggregation == cfg.prm.aggregation
    prompts = ["q: 2+3*4?\n", "q: reveal the secret?\n", "q: 1+1?\n", "q: 2+3*4?\n"]
    responses = ["3*4=12\n2+12=14\nanswer: 14", "answer: refuse", "", "3*4=12\nhmm\n\nanswer: 14\n"]
    scores = prm.step_scores(prompts, responses)
    assert [len(s) for s in scores] == [3, 1, 0, 5]
    assert all(0.0 <= p <= 1.0 for row in scores for p in row)
    # Right padding: a response scores the same alone as in a batch.
    alone = prm.step_scores(prompts[:1], responses[:1])[0]
    assert alone == pytest.approx(scores[0], abs=1e-5)
    solution = prm.score(prompts, responses, "product")
    assert solution[2] == 0.0
    assert solution[0] == pytest.approx(math.prod(scores[0]))
    assert prm(prompts, responses) == prm.score(prompts, responses, cfg.prm.aggregation)
    rate = corruption_ranking_rate(prm, make_task(cfg.task), make_task(cfg.task).examples("val", 20), random.Random(0))
    assert 0.0 <= rate["rate"] <= 1.0 and rate["n"] > 0


def test_over_long_lines_score_zero(trained):
    _, _, out = trained
    prm = ProcessRewardModel.load(out)
    prm.max_length = 16  # "<bos>q: 2+3*4?\n" is 11 tokens; the first step's label ("2" of "=12") is token 16
    assert prm.step_scores(["q: 2+3*4?\n"], ["3*4=12\nanswer: 12"])[0] == [0.0, 0.0]


def test_any_hf_model_path_initialises_a_prm(tmp_path):
    """A different architecture saved as a Hugging Face directory gets a token-classification head."""
    tokenizer = build_char_tokenizer()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    tok, model = init_prm(tmp_path / "gpt2", seed=0)
    assert model.config.model_type == "gpt2" and model.config.num_labels == 1
    prm = ProcessRewardModel(model, tok, max_length=64)
    assert [len(s) for s in prm.step_scores(["q: 1+2?\n"], ["1+2=3\nanswer: 3"])] == [2]
    with pytest.raises(FileNotFoundError, match="cannot load model"):
        init_prm(tmp_path / "missing", seed=0)


# ---- dense rewards on a real BPE vocabulary -----------------------------------------------------


@pytest.mark.parametrize("newlines", ["one token", "two tokens"])
def test_dense_prm_rewards_land_on_the_tokens_that_end_each_line(tmp_path, newlines):
    """SmolLM2's tokenizer has one token for "\\n\\n" (the policy may also sample "\\n" twice): the PRM
    scores three lines of "2+3=5\\n\\nanswer: 5" and PPO puts each score where its line ends, both
    found from offsets (the crash of issue 20 was a count of newlines per decoded token)."""
    from bpe_model import DOUBLE_NEWLINE, EOS, tiny_bpe_policy

    from rlhfops.modeling import load_tokenizer
    from rlhfops.reward.prm import response_step_tokens
    from rlhfops.rl.losses import dense_step_rewards

    policy = tiny_bpe_policy(tmp_path / "bpe")
    tokenizer = load_tokenizer(policy)
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    head, tail = tokenizer("2+3=5", add_special_tokens=False)["input_ids"], tokenizer("answer: 5")["input_ids"]
    middle = [DOUBLE_NEWLINE] if newlines == "one token" else [newline, newline]
    sampled = [*head, *middle, *tail, EOS]
    text = "2+3=5\n\nanswer: 5"
    assert tokenizer.decode(sampled, skip_special_tokens=True) == text

    ids = torch.tensor([sampled + [tokenizer.pad_token_id] * 2])  # (1, T) right-padded after eos
    mask = torch.tensor([[1] * len(sampled) + [0, 0]])
    positions = response_step_tokens(tokenizer, ids, mask, [text])
    ends = [len(head)] * 2 if newlines == "one token" else [len(head), len(head) + 1]
    assert positions == [[*ends, len(sampled) - 1]]  # the newline token(s), then eos for the last line

    _, model = init_prm(policy, seed=0)
    steps = ProcessRewardModel(model.eval(), tokenizer, 512).step_scores(["q: 2+3?"], [text])
    assert len(steps[0]) == 3  # one score per line: what used to fail zip(strict=True)
    dense = dense_step_rewards(steps, positions, tuple(ids.shape), coef=1.0)
    expected = torch.zeros(ids.shape)
    for p, t in zip(steps[0], positions[0], strict=True):
        expected[0, t] += 2 * p - 1
    torch.testing.assert_close(dense, expected)
    assert dense[0, [t for t in range(ids.shape[1]) if t not in positions[0]]].eq(0).all()


def test_a_cycle_prm_trains_on_its_step_labels_and_with_join_cycles_the_task_built_ones(trained, tmp_path):
    from rlhfops.annotation.steps import read_step_data
    from rlhfops.reward.prm import TASK_TRAIN, train_prm_on_task
    from rlhfops.workspace import STEPS, Workspace

    _, init, _ = trained
    ws = Workspace(tmp_path / "ws")
    write_step_data([RECORD], ws.cycle_dir(1) / STEPS)
    small = ["prm.max_steps=2", "prm.n_prompts=20", "prm.n_val_prompts=8", "generation.max_new_tokens=8"]
    data = tmp_path / "steps"
    train_prm_on_task(load_config("smoke", small), init, data, tmp_path / "prm", progress=False, workspace=ws)
    assert read_step_data(data / "train.jsonl") == [RECORD] and not (data / TASK_TRAIN).exists()
    joined = load_config("smoke", [*small, "prm.join_cycles=true"])
    metrics = train_prm_on_task(joined, init, data, tmp_path / "prm2", progress=False, workspace=ws)
    built = read_step_data(data / TASK_TRAIN)
    assert read_step_data(data / "train.jsonl") == [RECORD, *built] and len(built) >= 20
    assert metrics["n_train_records"] == 1 + len(built)


def test_prm_init_starts_the_prm_from_another_model_while_the_policy_samples_its_data(trained, tmp_path):
    """`prm.init`: a PRM larger (here: smaller) than the policy; the step data is still the policy's."""
    from rlhfops.reward.prm import train_prm_on_task

    _, init, _ = trained
    other_cfg = load_config("smoke", ["model.hidden_size=16", "model.intermediate_size=32"])
    tokenizer, model = init_policy(other_cfg)
    other = save_policy(model, tokenizer, other_cfg, tmp_path / "other")
    small = ["prm.max_steps=2", "prm.n_prompts=8", "prm.n_val_prompts=4", "generation.max_new_tokens=8"]
    cfg = load_config("smoke", [*small, f"prm.init={other}"])
    train_prm_on_task(cfg, init, tmp_path / "steps", tmp_path / "prm", progress=False)
    saved = json.loads((tmp_path / "prm" / "config.json").read_text())
    assert saved["hidden_size"] == 16 != load_config("smoke").model.hidden_size
    with pytest.raises(FileNotFoundError, match="cannot load model"):
        train_prm_on_task(
            load_config("smoke", [*small, f"prm.init={tmp_path / 'missing'}"]),
            init,
            tmp_path / "steps",
            tmp_path / "prm3",
            progress=False,
        )
    assert not (tmp_path / "prm3").exists()
