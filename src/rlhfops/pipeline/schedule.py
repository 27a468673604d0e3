"""Upload the compiled cycle pipeline to Kubeflow Pipelines and schedule it as a recurring run.

    rlhfops schedule --config cluster --host https://kubeflow.example.com/pipeline --cron '0 0 2 * * 0'

The pipeline is uploaded under its name the first time and as a new version afterwards. The
recurring run executes in the client's namespace (`pipeline.namespace`) with its pods running as
`service_account` (`pipeline.service_account`, bound to the Roles of manifests/base/rbac.yaml); it
allows one cycle at a time (`max_concurrency=1`: a cycle starts from what the last one left) and
does not back-fill missed slots (`no_catchup=True`). KFP cron expressions have six
fields, seconds first: '0 0 2 * * 0' is Sundays at 02:00.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfops.pipeline.graph import PIPELINE_NAME


@dataclass
class Scheduled:
    pipeline_id: str
    version_id: str
    experiment_id: str
    recurring_run_id: str


def check_cron(cron: str) -> str:
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"KFP cron expressions have 6 fields (seconds first), got {len(fields)} in '{cron}'")
    return cron


def schedule(
    client: Any,
    package: str | Path,
    cron: str,
    *,
    experiment: str = "rlhfops",
    job_name: str = "rlhfops-weekly-cycle",
    params: dict[str, Any] | None = None,
    version_name: str | None = None,
    service_account: str | None = None,
) -> Scheduled:
    """Upload `package` (a new pipeline or a new version of it) and create the recurring run with
    `client` (a `kfp.Client`)."""
    check_cron(cron)
    package = str(package)
    if not Path(package).exists():
        raise FileNotFoundError(f"compiled pipeline '{package}' does not exist; run `rlhfops compile` first")
    version_name = version_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=PIPELINE_NAME, description=__doc__.splitlines()[0])
        pipeline_id = pipeline.pipeline_id
    version = client.upload_pipeline_version(package, pipeline_version_name=version_name, pipeline_id=pipeline_id)
    exp = client.create_experiment(name=experiment)
    run = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=job_name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params or {},
        pipeline_id=pipeline_id,
        version_id=version.pipeline_version_id,
        service_account=service_account,
    )
    return Scheduled(pipeline_id, version.pipeline_version_id, exp.experiment_id, run.recurring_run_id)
