"""The data commands end to end on a temporary git + DVC workspace."""

import json

from typer.testing import CliRunner

from rlhfops.cli import app
from rlhfops.files import write_jsonl
from rlhfops.tasks.arithmetic import make_example

runner = CliRunner()


def test_annotate_review_and_history(tmp_path):
    ws = tmp_path / "ws"
    remote = f"versioning.remote={tmp_path / 'remote'}"
    base = ["--config", "smoke", "--workspace", str(ws), "--set", remote, "--json"]
    result = runner.invoke(app, ["annotate", *base])
    assert result.exit_code == 2 and "no cycle data" in result.output

    rows = []
    for i in range(5):
        ex = make_example(f"q: {i}+2*3?\n")
        for text in (ex.reference, ex.reference.replace("answer: ", "answer: 9")):
            rows.append({"prompt": ex.prompt, "response": text, "source": "policy", "model_version": "v"})
    write_jsonl(ws / "cycles" / "0001" / "responses.jsonl", rows)
    result = runner.invoke(app, ["annotate", *base, "--set", "annotation.review.n_validation=4"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["pairs"]["helpfulness"] == 5 and len(summary["commit"]) == 40

    export = tmp_path / "queue.json"
    result = runner.invoke(app, ["review", "export", str(export), *base])
    assert result.exit_code == 0, result.output
    tasks = json.loads(export.read_text())
    assert len(tasks) == 4
    for n, t in enumerate(tasks):  # a person who always picks A
        t["annotations"] = [{"result": [{"from_name": "preference", "value": {"choices": ["A"]}}]}]
        t["id"] = n
    export.write_text(json.dumps(tasks))
    result = runner.invoke(app, ["review", "import", str(export), *base])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reviewed_pairs"] == 4 and -1 <= report["all"]["kappa"] <= 1

    result = runner.invoke(app, ["data", "history", *base])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["tag"] == "cycle-0001" and row["paths"]["cycles/0001"]["records"] > 0

    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    result = runner.invoke(app, ["review", "import", str(bad), *base])
    assert result.exit_code == 2 and f"review export '{bad}' is not valid JSON (line 1" in result.output
