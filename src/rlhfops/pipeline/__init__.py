"""The cycle as a Kubeflow pipeline: `components/` (one KFP component per stage of `rlhfops.cycle`),
`graph` (the DAG, compiled to `pipelines/iterative_rlhf.yaml`), `local` (one run through kfp.local)
and `schedule` (upload and a recurring run)."""

from pathlib import Path

# Where the compiled pipeline is checked in, relative to the repository root (imported without kfp).
COMPILED = Path("pipelines") / "iterative_rlhf.yaml"
