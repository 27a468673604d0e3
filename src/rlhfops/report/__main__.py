"""`python -m rlhfops.report README.md WORKSPACE [BLOCK ...]`: rewrite the README's result blocks
(default: all) from the workspace."""

import sys
from pathlib import Path

from rlhfops.report.readme import BLOCKS, update_readme
from rlhfops.workspace import Workspace

if __name__ == "__main__":
    if len(sys.argv) < 3 or any(b not in BLOCKS for b in sys.argv[3:]):
        sys.exit(f"usage: python -m rlhfops.report README.md WORKSPACE [{'|'.join(BLOCKS)} ...]")
    try:
        update_readme(Path(sys.argv[1]), Workspace(Path(sys.argv[2])), sys.argv[3:] or None)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
