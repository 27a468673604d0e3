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

# ---- every on-disk name, in one place ----------------------------------------------------------------
# in a model directory (a `save_pretrained` directory plus what its trainer adds)
MODEL_CONFIG = "config.json"  # transformers' own: its presence means "a model is here"
TRAIN_LOG = "train_log.json"  # the trainer's log rows (SFT, PPO, GRPO / RLOO, offline RL, PRM)
VALUE_HEAD = "value_head.safetensors"  # PPO's critic head
ILQL_HEADS = "ilql_heads.safetensors"  # offline RL's Q / V heads: the policy decodes with their shift
SFT_DATA_STATS = "sft_data.json"
PRM_METRICS = "metrics.json"
RM_WEIGHTS = "weights.json"  # `rlhfops tune-weights`: the grid-searched scalarisation weights
# in a reward-model directory (one sub-directory per objective) and its ensembles
RM_SUMMARY = "summary.json"  # per objective: pairs, member and ensemble validation accuracy
RM_MANIFEST = "manifest.json"  # an ensemble's members, normalisation and validation accuracy
RM_HEADS = "heads.safetensors"  # `reward.kind: heads`: K heads on one trunk
RM_MEMBERS = "members.json"
# in a cycle's data directory (`cycles/NNNN/`, module docstring)
RESPONSES = "responses.jsonl"
COLLECT_MANIFEST = "collect.json"
JUDGEMENTS = "judgements.jsonl"
STEPS = "steps.jsonl"
ANNOTATE_SUMMARY = "annotate.json"
REVIEW_QUEUE = "review.json"
REVIEW_QUEUE_PRIVATE = "review-queue.jsonl"
REVIEW_INTERFACE = "review-config.xml"
REVIEW_IMPORTED = "review-import.json"
PAIR_STATS = "stats.json"
OFFLINE_DATA = "offline-data.jsonl"
# at the workspace root
REGISTRY = "registry.json"
RUN_LOCK = ".run.lock"  # `rlhfops run`'s workspace lock (pid, host, start), git-ignored
VERSIONING_LOCK = ".versioning.lock"  # held around git / DVC work on the workspace repository
BENCH_JSON = "bench.json"  # `rlhfops bench`'s measurements, in its output directory
INTERACTIONS = "interactions.db"


def pairs_file(objective: str) -> str:
    """A cycle's preference pairs for one objective (TRL: prompt / chosen / rejected)."""
    return f"pairs-{objective}.jsonl"


def is_model_dir(path: str | Path) -> bool:
    """True when `path` holds a saved model (a finished, atomically written directory)."""
    return (Path(path) / MODEL_CONFIG).exists()


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
