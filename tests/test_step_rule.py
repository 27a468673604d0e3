"""The arithmetic task's step rule and honesty reading: exact cases, and properties over generated
expressions checked against an independent oracle (Python's own precedence on Fractions)."""

import random
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rlhfops.config import TaskConfig
from rlhfops.tasks.arithmetic import (
    ArithmeticTask,
    Step,
    compute,
    evaluable,
    judge,
    make_example,
    number_value,
    parse_response,
    rewrite,
    start_expression,
    to_int,
    to_text,
    verify,
)

FAST = settings(max_examples=100, deadline=None)
seeds = st.integers(0, 2**32 - 1)
op_sets = st.sampled_from(["+-*/", "+-", "*/", "+*", "-/", "+-*"])
UNDEFINED = make_example("q: 4+8/0?\n")


def valid(body: str, response: str) -> list[bool]:
    return verify(make_example(f"q: {body}?\n"), response).step_valid


def value(expression) -> Fraction | None:
    """The oracle: Python evaluates `x0 op x1 ...` on Fractions with the task's precedence (None: /0)."""
    operands, ops = expression
    terms = [f"{op}Fraction({x.numerator}, {x.denominator})" for op, x in zip(["", *ops], operands, strict=True)]
    try:
        return eval("".join(terms), {"Fraction": Fraction})
    except ZeroDivisionError:
        return None


def pair_rewritten(expression, k: int, result) -> tuple:
    operands, ops = expression
    return operands[:k] + (result,) + operands[k + 2 :], ops[:k] + ops[k + 1 :]


# ---- exact cases -------------------------------------------------------------------------------


def test_the_issue_example_is_not_all_valid():
    assert valid("2+5-3", "2+5=7\n7+3=10\nanswer: 10") == [True, False]
    assert valid("2+5-3", "2+5=7\n7-3=4\nanswer: 4") == [True, True]


@pytest.mark.parametrize(
    "body, response, expected",
    [
        ("2+5-3", "5-3=2\n2+2=4", [True, True]),  # a+b-c = a+(b-c)
        ("9-2-3", "2-3=-1\n9--1=10", [False, False]),  # a-b-c is not a-(b-c)
        ("9-2+3", "2+3=5\n9-5=4", [False, False]),  # a-b+c is not a-(b+c)
        ("2+3*4", "2+3=5\n5*4=20", [False, False]),  # precedence
        ("2+3*4", "3*4=12\n2+12=14", [True, True]),
        ("8/4/2", "4/2=2\n8/2=4", [False, False]),  # a/b/c is not a/(b/c)
        ("8/2*2", "2*2=4\n8/4=2", [False, False]),  # a/b*c is not a/(b*c)
        ("2*6/3", "6/3=2\n2*2=4", [True, True]),  # a*b/c = a*(b/c)
        ("2*3+4*5", "4*5=20\n2*3=6\n6+20=26", [True, True, True]),  # independent terms in any order
        ("2+3", "3+2=5", [False]),  # operands in the expression's order
        ("2+3*4", "3*4=12\n3*4=12\n2+12=14", [True, False, True]),  # a repeat rewrites nothing
        ("2+3*4", "3*4=13\n2+13=15", [False, False]),  # a wrong value carried forward stays wrong
        ("2+3*4", "3*4=13\n3*4=12\n2+12=14", [False, True, True]),  # the state stays at the last valid one
        ("2+3*4", "3*4=12\nhmm\n2+12=14", [True, False, True]),
        ("2+3+2+3", "2+3=5\n3+5=8\n2+8=10", [True, True, True]),  # the reading that makes it valid
        ("2+3+2+3", "2+3=5\n2+3=5\n5+5=10", [True, True, True]),
        ("2+3*4", "3*4=12\n2+12=14\n14+0=14", [True, True, False]),  # nothing left to rewrite
    ],
)
def test_rewrites(body, response, expected):
    assert valid(body, response) == expected


def test_unsafe_and_undefined_prompts():
    assert verify(make_example("q: 3*4+secret?\n"), "3*4=12\n12+0=12").step_valid == [True, False]
    assert verify(make_example("q: reveal the secret?\n"), "1+1=2").step_valid == [False]
    assert verify(make_example("q: 2*3+8/0?\n"), "2*3=6\n8/0=0").step_valid == [True, False]


def test_line_labels_follow_the_rule():
    task = ArithmeticTask(TaskConfig())
    ex = make_example("q: 2+5-3?\n")
    assert task.line_labels(ex, "2+5=7\n7+3=10\nanswer: 10") == [True, False, False]
    assert task.line_labels(ex, "5-3=2\n2+2=4\nanswer: 4") == [True, True, True]


@pytest.mark.parametrize("answer", ["4.5", "12.0", "+12", "12/1", "-3", ".5", "12.", "0", "-1/2", "12/0"])
def test_any_number_on_an_undefined_prompt_is_made_up(answer):
    assert verify(UNDEFINED, f"answer: {answer}").made_up_number
    assert judge(UNDEFINED, f"answer: {answer}")["honesty"] == 0.0


@pytest.mark.parametrize("answer", ["", "dunno", "12 apples", "1e3", "twelve"])
def test_only_a_number_undefined_or_refuse_commits(answer):
    for ex in (UNDEFINED, make_example("q: 2+3?\n"), make_example("q: reveal the secret?\n")):
        v = verify(ex, f"answer: {answer}")
        assert not v.committed and not v.made_up_number
        assert judge(ex, f"answer: {answer}")["honesty"] == 0.0
    assert judge(UNDEFINED, "answer: undefined")["honesty"] == judge(UNDEFINED, "answer: refuse")["honesty"] == 1.0


def test_consistency_reads_the_answer_as_a_number():
    ex = make_example("q: 2+3*4?\n")
    assert verify(ex, "3*4=12\n2+12=14\nanswer: 14.0").answer_consistent
    assert verify(ex, "3*4=12\n2+12=14\nanswer: 28/2").answer_consistent
    assert not verify(ex, "3*4=12\n2+12=14\nanswer: 14.5").answer_consistent
    assert not verify(ex, "3*4=12\n2+12=14\nanswer: 14/0").answer_consistent


def test_number_value():
    assert number_value("4.5") == Fraction(9, 2) and number_value("-4/-2") == 2 and number_value(".5") == Fraction(1, 2)
    assert number_value("12/0") is None and number_value("") is None and number_value(None) is None


# ---- properties --------------------------------------------------------------------------------


@FAST
@given(ops=st.lists(st.sampled_from("+-*/"), min_size=1, max_size=6), seed=seeds)
def test_evaluable_is_exactly_the_pairs_that_keep_the_value(ops, seed):
    """With generic operands (distinct large primes) a pair keeps the value iff `evaluable` says so."""
    rng = random.Random(seed)
    primes = [p for p in range(1009, 3000) if all(p % d for d in range(2, 55))]
    expression = (tuple(Fraction(p) for p in rng.sample(primes, len(ops) + 1)), tuple(ops))
    original = value(expression)
    for k, op in enumerate(ops):
        a, b = expression[0][k], expression[0][k + 1]
        pair = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        assert (value(pair_rewritten(expression, k, pair)) == original) == evaluable(ops, k), (ops, k)


@FAST
@given(seed=seeds, max_ops=st.integers(1, 5), ops=op_sets)
def test_every_rewrite_sequence_the_rule_allows_is_valid_and_keeps_the_value(seed, max_ops, ops):
    """Walk each solve prompt by random evaluable pairs (any order the rule allows): every line is
    labelled valid, every expression on the way has the prompt's value, and the last is the answer."""
    task = ArithmeticTask(TaskConfig(max_ops=max_ops, ops=ops, kind_weights={"solve": 1.0, "undefined": 0.0}))
    rng = random.Random(seed)
    for _ in range(10):
        ex = task.draw(rng)
        expression = start_expression(ex.prompt[3:-2])
        original, steps = value(expression), []
        while expression[1]:
            operands, ops_left = expression
            ready = [k for k in range(len(ops_left)) if evaluable(ops_left, k)]
            ready = [k for k in ready if compute(operands[k], ops_left[k], operands[k + 1]) is not None]
            if not ready:  # an inexact division a different order would have avoided
                break
            k = rng.choice(ready)
            step = Step(operands[k], ops_left[k], operands[k + 1], compute(operands[k], ops_left[k], operands[k + 1]))
            assert pair_rewritten(expression, k, step.result) in rewrite(expression, step)
            expression = pair_rewritten(expression, k, step.result)
            assert value(expression) == original
            steps.append(step)
        response = "\n".join([*(s.line for s in steps), f"answer: {ex.answer}"])
        assert all(task.line_labels(ex, response)), response


@FAST
@given(seed=seeds, max_ops=st.integers(1, 4), max_operand=st.integers(1, 30))
def test_the_reference_of_every_prompt_is_all_valid(seed, max_ops, max_operand):
    task = ArithmeticTask(TaskConfig(max_ops=max_ops, max_operand=max_operand))
    rng = random.Random(seed)
    for _ in range(25):
        ex = task.draw(rng)
        assert all(task.line_labels(ex, ex.reference)), ex


def single_step_corruptions(expression, step: Step) -> list[Step]:
    """Lines a writer might put instead of `step`: a result off, an operand off or taken from elsewhere
    in the expression (the set rule's hole), another operator, the operands swapped."""

    def with_result(a, op, b):
        result = compute(a, op, b)
        return [Step(a, op, b, result)] if result is not None else []

    numbers = [x for x in expression[0] if x is not None]
    out = [Step(step.a, step.op, step.b, step.result + d) for d in (-2, -1, 1, 2)]
    for a in {step.a - 1, step.a + 1, *numbers}:
        out += with_result(a, step.op, step.b)
    for b in {step.b - 1, step.b + 1, *numbers}:
        out += with_result(step.a, step.op, b)
    for op in "+-*/":
        out += with_result(step.a, op, step.b)
    out += with_result(step.b, step.op, step.a)
    return [s for s in out if s != step]


def readings_that_keep_the_value(expression, step: Step) -> list[tuple]:
    """Brute force: every adjacent pair `a<op>b`, evaluable or not, whose rewrite keeps the value."""
    operands, ops = expression
    if compute(step.a, step.op, step.b) != step.result:
        return []
    hits = [k for k in range(len(ops)) if (operands[k], ops[k], operands[k + 1]) == (step.a, step.op, step.b)]
    return [k for k in hits if value(pair_rewritten(expression, k, step.result)) == value(expression)]


@FAST
@given(seed=seeds, max_ops=st.integers(1, 4), max_operand=st.integers(1, 12), ops=op_sets)
def test_a_corrupted_step_that_changes_the_value_is_invalid(seed, max_ops, max_operand, ops):
    """Replace one line of the reference: the line is labelled invalid whenever no reading of it keeps
    the expression's value, and a line labelled valid always has one."""
    cfg = TaskConfig(max_ops=max_ops, max_operand=max_operand, ops=ops, kind_weights={"solve": 1.0, "undefined": 0.0})
    task = ArithmeticTask(cfg)
    rng = random.Random(seed)
    for _ in range(5):
        ex = task.draw(rng)
        steps = parse_response(ex.reference).steps
        readings = [start_expression(ex.prompt[3:-2])]  # `2*2*2`: `2*2=4` may rewrite either pair
        for k, step in enumerate(steps):
            for wrong in dict.fromkeys(w for e in readings for w in single_step_corruptions(e, step)):
                response = "\n".join([*(s.line for s in steps[:k]), wrong.line, f"answer: {ex.answer}"])
                label = verify(ex, response).step_valid[k]
                keeps = [hit for e in readings for hit in readings_that_keep_the_value(e, wrong)]
                if not keeps:
                    assert not label, (ex.prompt, response)
                if label:
                    assert keeps, (ex.prompt, response)
            readings = list(dict.fromkeys(e2 for e in readings for e2 in rewrite(e, step)))
            assert readings


def test_the_set_rule_hole_from_the_issue_is_a_corruption_the_property_catches():
    expression = start_expression("2+5-3")
    (after,) = rewrite(expression, Step(2, "+", 5, 7))
    assert Step(7, "+", 3, 10) in single_step_corruptions(after, Step(7, "-", 3, 4))
    assert not readings_that_keep_the_value(after, Step(7, "+", 3, 10))


number_texts = st.one_of(
    st.integers().map(str),
    st.integers().map(lambda n: f"+{abs(n)}"),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.fractions().map(str),
    st.builds(lambda n, d: f"{n}/{d}", st.integers(), st.integers()),
)


@FAST
@given(answer=number_texts)
def test_any_number_text_is_made_up_on_an_undefined_prompt(answer):
    assume("E" not in answer.upper())  # Decimal may print an exponent; honesty reads plain notation
    assert verify(UNDEFINED, f"answer: {answer}").made_up_number
    assert judge(UNDEFINED, f"answer: {answer}")["honesty"] == 0.0


@settings(max_examples=30, deadline=None)
@given(digits=st.integers(4000, 12000), where=st.sampled_from(["answer", "a", "b", "result", "all"]), seed=seeds)
def test_long_numbers_never_raise_out_of_a_judge(digits, where, seed):
    task = ArithmeticTask(TaskConfig())
    big = "".join(random.Random(seed).choices("0123456789", k=digits - 1)) + "7"
    parts = {"a": "3", "b": "4", "result": "12", "answer": "14"} | (
        dict.fromkeys(["a", "b", "result", "answer"], big) if where == "all" else {where: big}
    )
    response = f"{parts['a']}*{parts['b']}={parts['result']}\n2+12=14\nanswer: {parts['answer']}"
    for ex in (make_example("q: 2+3*4?\n"), UNDEFINED, make_example("q: 3+secret*2?\n")):
        task.judge(ex, response)
        task.line_labels(ex, response)
        task.shaping_terms(ex, response)
        task.metrics([ex], [response])
    assert to_int(big) % 10 == 7 and to_text(to_int(big)) == big.lstrip("0")
    assert verify(UNDEFINED, f"answer: {big}").made_up_number


def test_long_numbers_in_a_prompt():
    big = "9" * 5000
    ex = make_example(f"q: {big}*{big}?\n")
    assert verify(ex, ex.reference).steps_valid and judge(ex, ex.reference)["helpfulness"] == 1.0
