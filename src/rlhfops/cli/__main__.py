"""`python -m rlhfops.cli ...` (how `accelerate launch -m rlhfops.cli` and the Trainer jobs start it)."""

from rlhfops.cli import app

app()
