"""The state that outlives a run, in one directory (a mounted volume in a cluster).

<root>/models/<name>/      save_pretrained directories (`sft`, later registry versions)
<root>/eval/<name>.json    gold evaluations
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"workspace '{self.root}' exists and is not a directory")

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    def eval_path(self, name: str) -> Path:
        return self.root / "eval" / f"{name}.json"
