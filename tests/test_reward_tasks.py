"""The reward fan-out: objective x member units dealt over `reward.train_tasks` tasks (cycle.reward_specs),
and one task training its units for real (cycle.reward_member)."""

import json
from collections import Counter

import pytest

from rlhfops import cycle
from rlhfops.config import load_config
from rlhfops.modeling import init_policy, save_policy
from rlhfops.workspace import RM_MEMBERS, Workspace


@pytest.mark.parametrize("tasks", [0, 1, 2, 5, 12, 40])
@pytest.mark.parametrize("kind", ["full", "heads"])
def test_the_tasks_cover_every_unit_once_and_are_balanced(tasks, kind):
    cfg = load_config("tiny", [f"reward.train_tasks={tasks}", f"reward.kind={kind}"])
    units = cycle.reward_units(cfg)
    assert len(units) == (4 * 3 if kind == "full" else 4)
    specs = cycle.reward_specs(cfg, 7)
    assert len(specs) == min(tasks or len(units), len(units))  # never an empty task
    shares = [cycle.spec_units(spec, 7) for spec in specs]
    assert Counter(u for share in shares for u in share) == Counter(units)  # each exactly once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_the_specs_spell_out_their_units():
    two = ["reward.objectives=[helpfulness, honesty]", "reward.members=2"]
    per_member = load_config("tiny", [*two, "reward.train_tasks=0"])  # the cluster default: a pod per member
    assert cycle.reward_specs(per_member, 3) == ["3/helpfulness/0", "3/helpfulness/1", "3/honesty/0", "3/honesty/1"]
    assert cycle.reward_specs(load_config("tiny", two), 3) == ["3/helpfulness/0,honesty/0", "3/helpfulness/1,honesty/1"]
    heads = load_config("tiny", [*two, "reward.kind=heads"])
    assert cycle.reward_specs(heads, 3) == ["3/helpfulness/-1", "3/honesty/-1"]
    assert cycle.spec_units("3/helpfulness/0,honesty/1", 3) == [("helpfulness", 0), ("honesty", 1)]


@pytest.mark.parametrize("spec", ["2/helpfulness/0", "3/helpfulness", "3/helpfulness/0,honesty", "x/helpfulness/0"])
def test_a_spec_of_another_cycle_or_malformed_is_refused(spec):
    with pytest.raises(ValueError, match="reward spec '.*' (belongs to cycle 2, not 3|is not)"):
        cycle.spec_units(spec, 3)


def test_one_task_trains_each_of_its_units(tmp_path):
    overrides = ["reward.objectives=[helpfulness, honesty]", "reward.members=2", "reward.max_steps=2"]
    cfg = load_config("smoke", overrides)
    tokenizer, model = init_policy(cfg)
    save_policy(model, tokenizer, cfg, tmp_path / "models" / "sft")
    ws = Workspace(tmp_path)
    pair = {"prompt": "q: 1+2?\n", "chosen": "1+2=3\nanswer: 3", "rejected": "answer: 4"}
    for objective in cfg.reward.objectives:
        path = ws.data_dir("preferences") / "train" / f"{objective}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(pair) + "\n")
    spec = cycle.reward_specs(cfg, 1)[1]
    assert spec == "1/helpfulness/1,honesty/1"
    with pytest.raises(ValueError, match="belongs to cycle 1, not 2"):
        cycle.reward_member(cfg, ws, 2, spec)
    result = cycle.reward_member(cfg, ws, 1, spec)
    assert list(result["units"]) == ["helpfulness/1", "honesty/1"] and result["units"]["honesty/1"]["n_train"] == 1
    assert set(cycle.scalars(result)) == {f"units/{u}/{k}" for u in result["units"] for k in ("n_train", "seconds")}
    reward = cycle.cycle_models(ws, 1) / "reward"
    for objective in cfg.reward.objectives:
        parts = sorted(p.name for p in (reward / f"{objective}.parts").iterdir())
        assert parts == ["member_1"]  # this task's units only
        assert json.loads((reward / f"{objective}.parts" / "member_1" / RM_MEMBERS).read_text())
