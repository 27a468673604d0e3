import json

import pytest
import torch

from rlhfops.config import CONFIG_FILENAME, load_config
from rlhfops.modeling import build_char_tokenizer, init_policy, load_policy
from rlhfops.sft import DATA_STATS, TRAIN_LOG, run_sft, teacher_dataset
from rlhfops.tasks import make_task
from rlhfops.tasks.arithmetic import CORRUPTIONS


def test_teacher_dataset_is_prompt_completion_with_the_configured_noise(smoke_cfg):
    cfg = smoke_cfg.model_copy(deep=True)
    cfg.task.n_train = 400
    data, counts = teacher_dataset(make_task(cfg.task), 400, 0, build_char_tokenizer())
    assert data.column_names == ["prompt", "completion"] and len(data) == 400
    assert sum(counts.values()) == 400
    assert 0 < sum(v for k, v in counts.items() if k != "none") < 200
    again, _ = teacher_dataset(make_task(cfg.task), 400, 0, build_char_tokenizer())
    assert again["completion"] == data["completion"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = load_config("smoke")
    out = run_sft(cfg, tmp_path_factory.mktemp("ws") / "sft", progress=False)
    return cfg, out


def test_smoke_sft_loss_falls_and_parameters_change(trained):
    cfg, out = trained
    log = json.loads((out / TRAIN_LOG).read_text())
    losses = [row["loss"] for row in log if "loss" in row]
    assert len(losses) >= 4
    assert losses[-1] < 0.7 * losses[0]
    _, before = init_policy(cfg)  # same seed: the initial weights
    _, after = load_policy(out)
    changed = [not torch.equal(p0, p1) for p0, p1 in zip(before.parameters(), after.parameters(), strict=True)]
    assert all(changed)


def test_sft_directory_holds_config_and_data_stats(trained):
    cfg, out = trained
    assert load_config(out / CONFIG_FILENAME) == cfg
    stats = json.loads((out / DATA_STATS).read_text())
    assert stats["n"] == cfg.task.n_train
    assert set(stats["corruptions"]) <= {"none", *CORRUPTIONS}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_sft_prompts_are_what_the_chat_model_is_conditioned_on(smoke_cfg):
    """With a chat-template tokenizer the SFT prompt is the rendered template, exactly the ids the
    sampler conditions on; the completion stays the task's response text."""
    from bpe_model import TOKENIZER_DIR

    from rlhfops.chat import render
    from rlhfops.modeling import load_tokenizer

    tokenizer = load_tokenizer(TOKENIZER_DIR)
    task = make_task(smoke_cfg.task)
    data, _ = teacher_dataset(task, 8, 0, tokenizer)
    examples = task.examples("train", 8)
    for row, ex in zip(data, examples, strict=True):
        assert row["prompt"] == render(tokenizer, ex.prompt) and row["prompt"].endswith("<|im_start|>assistant\n")
        ids = tokenizer(row["prompt"])["input_ids"]
        expected = tokenizer.apply_chat_template(
            [{"role": "user", "content": ex.prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert ids == list(expected)


def test_sft_without_reference_responses_is_one_sentence(tmp_path, smoke_cfg):
    from rlhfops.tasks import TaskError

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"say {i}\n", "answer": str(i)}) + "\n" for i in range(20)))
    cfg = load_config(
        "smoke",
        overrides=[
            "task.name=dataset",
            f"task.path={path}",
            "task.n_train=4",
            "task.objectives=[helpfulness]",
            "reward.objectives=[helpfulness]",
        ],
    )
    with pytest.raises(TaskError, match="has no reference responses"):
        run_sft(cfg, tmp_path / "sft", progress=False)
