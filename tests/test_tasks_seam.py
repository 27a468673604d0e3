"""Every stage gets its task through `tasks.make_task`: nothing outside `rlhfops/tasks/` imports a
particular task's module, so a user's task (`task.name: dataset`, `task.factory`) reaches every
stage the built-in one does."""

from test_layers import PACKAGE, imports


def test_nothing_outside_tasks_imports_the_arithmetic_module():
    offenders = sorted(
        f"rlhfops.{module}"
        for module, targets in imports(PACKAGE).items()
        if not module.startswith("tasks") and any(t.startswith("tasks.arithmetic") for t in targets)
    )
    assert offenders == [], f"these modules bypass tasks.make_task: {offenders}"


def test_the_check_sees_a_deferred_import(tmp_path):
    import shutil

    copy = tmp_path / "rlhfops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    evaluation = copy / "evaluation.py"
    evaluation.write_text(
        evaluation.read_text() + "\n\ndef _bypass():\n    from rlhfops.tasks.arithmetic import judge\n"
    )
    assert any(t.startswith("tasks.arithmetic") for t in imports(copy)["evaluation"])


def _dataset_config(tmp_path, overrides=()):
    import json

    from rlhfops.config import load_config

    rows = [{"prompt": f"Say {i} twice.\n", "response": f"{i} {i}", "answer": f"{i} {i}"} for i in range(60)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys = [
        "task.name=dataset",
        f"task.path={path}",
        "reward.objectives=[helpfulness, conciseness]",
        "scalarisation.weights={helpfulness: 0.5, conciseness: 0.5}",
    ]
    return load_config("smoke", [*keys, *overrides])


def test_a_task_without_steps_skips_the_prm_in_one_line(tmp_path):
    from rlhfops.reward.prm import train_prm_on_task

    cfg = _dataset_config(tmp_path)
    result = train_prm_on_task(cfg, tmp_path / "no-policy-needed", tmp_path / "steps", tmp_path / "prm")
    assert result == {"skipped": "task 'dataset' has no step structure, so there is no process reward model to train"}
    assert not (tmp_path / "prm").exists() and not (tmp_path / "steps").exists()


def test_a_task_without_steps_gets_no_step_labels_and_its_own_gold_reward(tmp_path):
    from rlhfops.annotation.annotate import step_records
    from rlhfops.reward.build import reward_fn
    from rlhfops.tasks import make_task

    cfg = _dataset_config(tmp_path)
    task = make_task(cfg.task, seed=cfg.seed)
    assert step_records(cfg, task, [("Say 3 twice.\n", ["3 3"])], None) == []
    # the gold reward is the task's own judge: a right answer scores above a wrong one
    right, wrong = reward_fn(cfg, "gold")(["Say 3 twice.\n"] * 2, ["3 3", "4"])
    assert right > wrong


def test_dense_prm_rewards_on_a_task_without_steps_are_one_clear_error(tmp_path):
    """PPO with `policy.dense_prm` needs a PRM; a task without steps has none, and says why."""
    import pytest

    from rlhfops.modeling import init_policy, save_policy
    from rlhfops.reward.prm import train_prm_on_task
    from rlhfops.rl.train import train_policy

    cfg = _dataset_config(tmp_path, ["policy.reward=gold", "policy.dense_prm=true", "policy.steps=1"])
    tokenizer, model = init_policy(cfg)
    start = save_policy(model, tokenizer, cfg, tmp_path / "sft")
    skipped = train_prm_on_task(cfg, start, tmp_path / "steps", tmp_path / "prm")
    assert "no step structure" in skipped["skipped"]
    with pytest.raises(ValueError, match="policy.dense_prm needs a trained process reward model"):
        train_policy(cfg, start, tmp_path / "ppo", prm_dir=tmp_path / "prm", progress=False)
    assert not (tmp_path / "ppo").exists()
