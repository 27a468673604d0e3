"""The state that outlives a run, in one directory (a mounted volume in a cluster).

The workspace is a git + DVC repository (`rlhfops.versioning.init_repo`); what is versioned is
each cycle's data, one DVC-tracked directory per cycle, tagged `cycle-NNNN` in git:

    <root>/cycles/NNNN/               cycle NNNN's data (DVC: `cycles/NNNN.dvc` in git)
        responses.jsonl               collected responses: prompt, response, source, model_version, feedback
        collect.json                  what was collected and up to which interaction time
        judgements.jsonl              per response, the judge's score per objective (None: unlabelled)
        pairs-<objective>.jsonl       preference pairs (TRL: prompt / chosen / rejected, + id, label_source)
        steps.jsonl                   step labels (TRL stepwise: prompt / completions / labels)
        review.json                   the review queue, Label Studio import JSON
        review-config.xml             the Label Studio labelling interface for it
        review-import.json            human labels imported back, with Cohen's kappa vs the AI
        annotate.json                 annotation counts and settings
    <root>/models/<name>/             save_pretrained directories (`sft`, later registry versions)   git-ignored
    <root>/eval/<name>.json           gold evaluations                                               git-ignored
    <root>/data/<name>/               stage working data, rebuilt from the cycles or the task          git-ignored
    <root>/interactions.db            the interaction store (a database, not a data version)         git-ignored
    <root>/dvc-remote/                the default DVC remote (`versioning.remote`)                   git-ignored

Reward models and the PRM of cycle n train on the union of cycles 1..n (`cycle_numbers()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CYCLES = "cycles"


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        # absolute, so a path built from it means the same thing from any working directory (git and
        # DVC run with cwd=root: a relative root would be applied twice)
        object.__setattr__(self, "root", Path(self.root).absolute())
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"workspace '{self.root}' exists and is not a directory")

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    def eval_path(self, name: str) -> Path:
        return self.root / "eval" / f"{name}.json"

    def cycle_dir(self, cycle: int) -> Path:
        if cycle < 1:
            raise ValueError(f"cycles are numbered from 1, got {cycle}")
        return self.root / CYCLES / f"{cycle:04d}"

    def cycle_numbers(self) -> list[int]:
        """The cycles whose data directory exists, in order."""
        base = self.root / CYCLES
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())
