"""`rlhfops bench | report`: the benchmark suite and the HTML report (registered on `rlhfops.cli.app`)."""
