"""Reports made from what a workspace holds, never from numbers typed by hand.

`python -m rlhfops.report README.md workspace` rewrites the README block between
`<!-- gold-eval:start -->` and `<!-- gold-eval:end -->` with the gold evaluation that
`rlhfops run` wrote into the workspace.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rlhfops.files import atomic_write_text
from rlhfops.workspace import Workspace

START, END = "<!-- gold-eval:start -->", "<!-- gold-eval:end -->"
ROWS = (
    ("gold helpfulness", lambda r: r["gold"]["helpfulness"]),
    ("gold harmlessness", lambda r: r["gold"]["harmlessness"]),
    ("gold honesty", lambda r: r["gold"]["honesty"]),
    ("gold conciseness", lambda r: r["gold"]["conciseness"]),
    ("gold composite", lambda r: r["gold_composite"]),
    ("solve accuracy", lambda r: r["solve_accuracy"]),
    ("step validity", lambda r: r["step_validity"]),
    ("refusal recall (unsafe refused)", lambda r: r["refusal_recall"]),
    ("over-refusal rate (safe refused)", lambda r: r["over_refusal_rate"]),
    ("undefined recall", lambda r: r["undefined_recall"]),
)


def gold_eval_markdown(results: dict[str, dict[str, Any]], train_seconds: float | None = None) -> str:
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for label, get in ROWS:
        cells = ["-" if get(r) is None else f"{get(r):.3f}" for r in results.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    first = next(iter(results.values()))
    note = f"Test split: {first['n_prompts']} prompts, {first['decoding']}."
    if train_seconds is not None:
        note += f" SFT training took {train_seconds:.0f} s on this machine."
    return "\n".join(lines) + "\n\n" + note


def update_readme(readme: Path, workspace: Workspace) -> None:
    results = {}
    for name in ("untrained", "sft"):
        path = workspace.eval_path(name)
        if not path.exists():
            raise FileNotFoundError(f"'{path}' does not exist; run `rlhfops run` first")
        results[name] = json.loads(path.read_text())
    log = json.loads((workspace.model_dir("sft") / "train_log.json").read_text())
    seconds = next((row["train_runtime"] for row in log if "train_runtime" in row), None)
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"'{readme}' has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, f"{head}{START}\n{gold_eval_markdown(results, seconds)}\n{END}{tail}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m rlhfops.report README.md WORKSPACE")
    try:
        update_readme(Path(sys.argv[1]), Workspace(Path(sys.argv[2])))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
