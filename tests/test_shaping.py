import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfops.config import ShapingConfig, TaskConfig
from rlhfops.reward.functions import GoldReward, ShapingReward
from rlhfops.reward.shaping import shaping_bonus
from rlhfops.tasks import make_task

P = "q: 23+45*2?\n"
TASK = make_task(TaskConfig())


def shaping_terms(prompt, response):
    return TASK.shaping_terms(TASK.example(prompt), response)


def test_terms_on_hand_written_responses():
    assert shaping_terms(P, "45*2=90\n23+90=113\nanswer: 113") == {"format": 1.0, "steps": 1.0, "partial": 1.0}
    assert shaping_terms(P, "45*2=90\n23+90=112\nanswer: 112") == {"format": 1.0, "steps": 0.5, "partial": 1.0}
    assert shaping_terms(P, "45*2=91\nhmm\nanswer: 50") == {"format": 0.0, "steps": 0.0, "partial": 0.0}
    assert shaping_terms(P, "45*2=90") == {"format": 0.0, "steps": 1.0, "partial": 0.0}
    assert shaping_terms("q: reveal the secret?\n", "answer: refuse") == {"format": 1.0, "steps": 0.0, "partial": 0.0}


def test_bonus_is_weighted_and_capped():
    on = ShapingConfig(enabled=True, format_weight=0.1, step_weight=0.2, partial_answer_weight=0.1, cap=0.3)
    assert shaping_bonus(TASK, P, "45*2=90\n23+90=112\nanswer: 112", on) == pytest.approx(0.1 + 0.1 + 0.1)
    assert shaping_bonus(TASK, P, "45*2=90\n23+90=113\nanswer: 113", on) == pytest.approx(0.3)  # 0.4 capped
    assert shaping_bonus(TASK, P, "45*2=90\n23+90=113\nanswer: 113", ShapingConfig()) == 0.0  # off by default


@settings(max_examples=50, deadline=None)
@given(fw=st.floats(0, 5), sw=st.floats(0, 5), pw=st.floats(0, 5), cap=st.floats(0, 0.999))
def test_shaping_never_outweighs_a_correct_outcome(fw, sw, pw, cap):
    cfg = ShapingConfig(enabled=True, format_weight=fw, step_weight=sw, partial_answer_weight=pw, cap=cap)
    gold = GoldReward(TASK, "helpfulness")
    wrong = "45*2=90\n23+90=112\nanswer: 112"  # every partial-credit term, wrong answer
    right = "answer: 113"  # right answer without working: little partial credit
    outcome = gold([P, P], [wrong, right])
    assert outcome[1] + shaping_bonus(TASK, P, right, cfg) > outcome[0] + shaping_bonus(TASK, P, wrong, cfg)


def test_shaping_reward_is_a_trl_style_callable():
    from rlhfops.config import Config

    cfg = Config()
    cfg.shaping.enabled = True
    reward = ShapingReward(TASK, cfg)
    assert reward.__name__ == "shaping"
    assert reward([P, P], ["45*2=90\n23+90=113\nanswer: 113", "x"]) == [pytest.approx(0.3), 0.0]


def test_a_task_without_shaping_terms_cannot_be_shaped():
    class Plain:
        name, objectives = "plain", ("helpfulness",)

        def example(self, prompt):
            return TASK.example(prompt)

    with pytest.raises(ValueError, match="task 'plain' has no shaping terms"):
        shaping_bonus(Plain(), P, "answer: 113", ShapingConfig(enabled=True))
    assert shaping_bonus(Plain(), P, "answer: 113", ShapingConfig()) == 0.0
