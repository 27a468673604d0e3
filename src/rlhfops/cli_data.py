"""`rlhfops collect | annotate | review | data`: the data side of a cycle (registered on `rlhfops.cli.app`)."""
