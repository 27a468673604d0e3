"""Review queue, Label Studio round trip, Cohen's kappa, human overrides, weight-preference study."""

import json
import random

import pytest

from rlhfops.annotation.pairs import judged_pairs
from rlhfops.annotation.review import (
    apply_human_labels,
    cohen_kappa,
    fit_study_weights,
    label_studio_tasks,
    pair_items,
    read_export,
    study_items,
)


def test_cohen_kappa_exact():
    assert cohen_kappa(["A", "A", "B", "B"], ["A", "A", "B", "A"]) == pytest.approx(0.5)
    # p_o = 3/5, p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52 -> (0.6 - 0.52) / 0.48
    assert cohen_kappa(list("AAABB"), list("ABABA")) == pytest.approx((0.6 - 0.52) / 0.48)
    assert cohen_kappa(["A", "B"], ["B", "A"]) == pytest.approx(-1.0)
    assert cohen_kappa(["A"] * 3, ["A"] * 3) == 1.0 and cohen_kappa([], []) is None


def make_pairs(n=12):
    groups = [
        (f"q: {i}+1?\n", [f"answer: {i + 1}", f"answer: {i}"], [{"helpfulness": 1.0}, {"helpfulness": 0.0}])
        for i in range(1, n + 1)
    ]
    return judged_pairs(groups, ["helpfulness"], "max_min", 0)


def export_for(tasks, choose):
    """What Label Studio exports after a person annotated every task: choose(data) -> A | B."""
    return [
        {
            "id": n,
            "data": t["data"],
            "annotations": [
                {
                    "was_cancelled": False,
                    "result": [
                        {
                            "from_name": "preference",
                            "to_name": "prompt",
                            "type": "choices",
                            "value": {"choices": [choose(t["data"])]},
                        }
                    ],
                }
            ],
        }
        for n, t in enumerate(tasks, start=1)
    ]


def test_queue_round_trip_human_labels_override_and_kappa(tmp_path):
    pairs = make_pairs()
    uncertainty = {p["id"]: float(i) for i, p in enumerate(pairs["helpfulness"])}
    queue = pair_items(pairs, uncertainty, n_uncertain=3, n_validation=4, seed=0)
    assert [q["reason"] for q in queue] == ["uncertain"] * 3 + ["validation"] * 4
    assert {q["id"] for q in queue[:3]} == {p["id"] for p in pairs["helpfulness"][-3:]}
    tasks = label_studio_tasks(queue)
    assert all("ai_choice" not in t["data"] for t in tasks)  # reviewers do not see the AI's choice
    assert {q["ai_choice"] for q in queue} == {"A", "B"}  # sides shuffled

    by_id = {q["id"]: q for q in queue}
    wrong_ids = {queue[0]["id"], queue[3]["id"]}  # the person disagrees with the AI on two items

    def person(data):
        ai = by_id[data["id"]]["ai_choice"]
        return ({"A": "B", "B": "A"}[ai]) if data["id"] in wrong_ids else ai

    path = tmp_path / "export.json"
    path.write_text(json.dumps(export_for(tasks, person)))
    human = read_export(path)
    assert len(human) == 7
    updated, report = apply_human_labels(pairs, queue, human)
    assert report["flipped"] == 2 and report["reviewed_pairs"] == 7
    assert report["all"]["agreement"] == pytest.approx(5 / 7)
    ai, people = [by_id[i]["ai_choice"] for i in human], [human[i] for i in human]
    assert report["all"]["kappa"] == pytest.approx(cohen_kappa(ai, people))
    flipped = [p for p in updated["helpfulness"] if p["id"] in wrong_ids]
    wrong_answer = {p["id"]: "answer: " + p["prompt"][3:].split("+")[0] for p in flipped}
    assert all(p["label_source"] == "human" and p["chosen"] == wrong_answer[p["id"]] for p in flipped)
    untouched = [p for p in updated["helpfulness"] if p["id"] not in human]
    assert untouched and all(p["label_source"] == "ai" for p in untouched)
    # importing again changes nothing more
    again, report2 = apply_human_labels(updated, queue, human)
    assert again == updated and report2["flipped"] == 0


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json", "review export '.*' is not valid JSON"),
        ('{"a": 1}', "a list of tasks"),
        ('[{"nodata": 1}]', "task 1: no 'data'"),
        ('[{"data": {"id": 5}}]', "task 1: 'data.id'"),
        (
            '[{"data": {"id": "x"}, "annotations": [{"result": '
            '[{"from_name": "preference", "value": {"choices": ["C"]}}]}]}]',
            "exactly one of A or B",
        ),
    ],
)
def test_bad_exports_name_the_file_and_task(tmp_path, content, fragment):
    path = tmp_path / "export.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=fragment) as e:
        read_export(path)
    assert str(path) in str(e.value)


def test_cancelled_annotations_are_ignored_and_unknown_ids_rejected(tmp_path):
    queue = pair_items(make_pairs(2), None, 0, 2, 0)
    tasks = export_for(label_studio_tasks(queue), lambda d: "A")
    tasks[0]["annotations"][0]["was_cancelled"] = True
    path = tmp_path / "e.json"
    path.write_text(json.dumps(tasks))
    assert list(read_export(path)) == [queue[1]["id"]]
    with pytest.raises(ValueError, match="not in the queue"):
        apply_human_labels(make_pairs(2), queue, {"nope": "A"})


def test_study_choices_fit_the_weights_people_hold():
    """Simulated people choose by a hidden weighting; the fit puts most weight where they do."""
    rng = random.Random(0)
    names = ["w_help", "w_honest", "w_concise"]
    objectives = ["helpfulness", "honesty", "conciseness"]
    prompts = [f"q: {i}?\n" for i in range(60)]
    responses = {n: [f"{n} says {i}" for i in range(60)] for n in names}
    vectors = {n: [[rng.random() for _ in objectives] for _ in prompts] for n in names}
    items = study_items(prompts, responses, vectors, seed=0)
    assert len(items) == 60 * 3 and all(i["kind"] == "study" for i in items)
    hidden = [0.7, 0.3, 0.0]

    def utility(v):
        return sum(w * x for w, x in zip(hidden, v, strict=True))

    human = {i["id"]: "A" if utility(i["vectors"][0]) >= utility(i["vectors"][1]) else "B" for i in items}
    fit = fit_study_weights(items, human, objectives, steps=10)
    assert fit["n"] == 180 and fit["choices_explained"] == pytest.approx(1.0)
    assert fit["weights"]["helpfulness"] > fit["weights"]["honesty"] > fit["weights"]["conciseness"] - 1e-9
    assert fit_study_weights(items, {}, objectives) is None
