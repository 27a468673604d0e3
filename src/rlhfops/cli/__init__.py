"""`rlhfops ...`: one sub-command per stage; each wires a library function to paths and config.

`common` holds the typer app and what every command shares (options, setup, errors, JSON output);
each command module registers its commands on that app when imported, and imports nothing else
from this package:

    train     sft, eval, train-rm, score, train-prm, tune-weights, train-policy, bon, offline
    cycle     run, stage, compile, schedule
    data      collect, annotate, review export | import, data history
    serving   serve, simulate-traffic, models, deploy canary | promote | rollback | status | gate
    bench     bench, report

The console script is `rlhfops = "rlhfops.cli:app"`; `python -m rlhfops.cli` runs the same app.
"""

# isort: off
# each registers its commands on `app`, and `rlhfops --help` lists them in this order
from rlhfops.cli import train, cycle, data, serving, bench  # noqa: F401
from rlhfops.cli.common import app

# isort: on

__all__ = ["app"]
