"""`rlhfops serve | simulate-traffic | models | deploy`: serving and the canary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from rlhfops.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    WorkspaceOpt,
    app,
    console,
    emit_json,
    fail,
    require_model,
    setup,
    user_errors,
)
from rlhfops.registry import Registry
from rlhfops.workspace import REGISTRY

deploy_app = typer.Typer(help="Canary rollout: locally in the model registry, or on KServe with --kserve.")
app.add_typer(deploy_app, name="deploy")

KServeOpt = Annotated[bool, typer.Option("--kserve", help="Patch the InferenceService (kserve.*) in the cluster too.")]


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"  # None: no response was labelled


@app.command()
def serve(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Serve only this model directory (no router), e.g. in KServe.")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port for --model (0: any free one); default serving.stable_port.")
    ] = None,
    version: Annotated[str, typer.Option("--version", help="Model id --model answers as.")] = "model",
) -> None:
    """Start stable + canary + the router on loopback (from the registry), until Ctrl-C or SIGTERM,
    then drain the requests in flight."""
    from rlhfops.serving.router import start_stack
    from rlhfops.serving.server import create_app, start_server, wait_for_shutdown_signal

    cfg, ws = setup(config, set_, workspace)
    with user_errors():
        if model is not None:
            require_model(model)  # a damaged directory: one sentence before anything loads
            port = port if port is not None else cfg.serving.stable_port  # 0: any free port
            running = start_server(create_app(model, version, cfg), cfg.serving.host, port)
            urls: dict[str, Any] = {"server": running.url}
            stop = running.stop
        else:
            stack = start_stack(cfg, ws.root)
            urls = {"router": stack.url, **{arm: s.url for arm, s in stack.servers.items()}}
            urls["versions"] = {arm: b.version for arm, b in stack.backends.items()}
            stop = stack.stop
    if json_out:
        emit_json(urls)
    else:
        console.print(" ".join(f"{k}: {v}" for k, v in urls.items()) + "  (Ctrl-C stops)")
    try:
        wait_for_shutdown_signal()  # Ctrl-C or SIGTERM (what Kubernetes sends)
    finally:
        stop()  # drains the requests in flight


@app.command("simulate-traffic")
def simulate_traffic_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    n_requests: Annotated[int | None, typer.Option("--n-requests", "-n", help="Default simulate.n_requests.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="A running router; default: start one in process.")] = None,
) -> None:
    """Simulated users: task prompts through the router, gold-judge feedback with noise."""
    from rlhfops.serving.simulate import simulate_traffic

    cfg, ws = setup(config, set_, workspace)
    with user_errors():
        result = simulate_traffic(cfg, ws.root, cfg.simulate.n_requests if n_requests is None else n_requests, url=url)
    if json_out:
        emit_json(result)
        return
    console.print(f"{result['requests']} requests, {result['errors']} errors, {result['requests_per_s']:.1f} req/s")
    for v, s in result["versions"].items():
        console.print(
            f"  {v}: {s['requests']} requests, gold {_score(s['mean_gold'])}, thumbs up {_score(s['thumbs_up_rate'])}"
        )


@app.command()
def models(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the model registry's versions."""
    from rich.table import Table

    _, ws = setup(config, set_, workspace)
    with user_errors():
        versions = Registry(ws.root).list()
    if json_out:
        emit_json(versions)
        return
    table = Table(title=f"model registry ({ws.root / REGISTRY})")
    for col in ("id", "stage", "name", "parent", "metrics", "last decision", "path"):
        table.add_column(col)
    for v in versions:
        metrics = ", ".join(f"{k}={x:.3f}" if isinstance(x, float) else f"{k}={x}" for k, x in v["metrics"].items())
        last = v["decisions"][-1]["decision"] if v["decisions"] else ""
        table.add_row(v["id"], v["stage"], v["name"], v["parent"] or "", metrics, last, v["path"])
    console.print(table)


@deploy_app.command("canary")
def deploy_canary_cmd(
    version: Annotated[str, typer.Argument(help="Registry version to deploy as canary, e.g. v3.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    kserve_: KServeOpt = False,
    storage_uri: Annotated[
        str | None,
        typer.Option(
            "--storage-uri",
            help="Model URI for KServe; default pvc://<pipeline.pvc>/<the version's path on the workspace volume>.",
        ),
    ] = None,
) -> None:
    """Make VERSION the canary (serving.canary_percent locally, kserve.canary_percent on KServe)."""
    from rlhfops.serving import kserve

    cfg, ws = setup(config, set_, workspace)
    registry = Registry(ws.root)
    with user_errors():
        entry, stable = registry.get(version), registry.stable()
        if stable is None:
            fail("the registry has no stable version to compare a canary against; register one as stable first")
        registry.set_stage(version, "canary")
    out: dict[str, Any] = {"canary": version}
    if kserve_:
        with user_errors():  # the first deploy creates the InferenceService on stable
            out["kserve"] = kserve.apply(cfg, "canary", entry, uri=storage_uri, stable=stable)
    emit_json(out) if json_out else console.print(f"{version} is the canary")


@deploy_app.command("promote")
def deploy_promote_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    kserve_: KServeOpt = False,
) -> None:
    """The canary becomes stable (and takes all traffic on KServe)."""
    _end_canary(config, workspace, set_, json_out, kserve_, promote=True)


@deploy_app.command("rollback")
def deploy_rollback_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    kserve_: KServeOpt = False,
) -> None:
    """Archive the canary; stable keeps all traffic (the previous model on KServe)."""
    _end_canary(config, workspace, set_, json_out, kserve_, promote=False)


def _end_canary(
    config: str | None, workspace: Path, set_: list[str] | None, json_out: bool, kserve_: bool, promote: bool
) -> None:
    """Promote or roll back the canary in the registry, and on the InferenceService with --kserve."""
    from rlhfops.serving import kserve

    cfg, ws = setup(config, set_, workspace)
    registry = Registry(ws.root)
    with user_errors():
        version = registry.promote_canary() if promote else registry.rollback_canary()
        out: dict[str, Any] = {"stable" if promote else "rolled_back": version}
        if kserve_:
            out["kserve"] = kserve.apply(cfg, "promote" if promote else "rollback")
    emit_json(out) if json_out else console.print(f"{version} {'is now stable' if promote else 'rolled back'}")


@deploy_app.command("status")
def deploy_status_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    kserve_: KServeOpt = False,
) -> None:
    """Stable and canary versions, their logged traffic and the gate's current decision."""
    from rlhfops.serving import kserve
    from rlhfops.serving.gate import decide
    from rlhfops.serving.store import InteractionStore

    cfg, ws = setup(config, set_, workspace)
    with user_errors():
        registry = Registry(ws.root)
        stable, canary = registry.stable(), registry.canary()
        out: dict[str, Any] = {"stable": stable and stable["id"], "canary": canary and canary["id"]}
        if stable and canary:
            store = InteractionStore.for_config(cfg.serving.store_url, ws.root)
            out["gate"] = decide(store, stable["id"], canary["id"], cfg.gate).to_dict()
        if kserve_:
            out["kserve"] = kserve.read_status(cfg)
    if json_out:
        emit_json(out)
        return
    console.print(f"stable: {out['stable'] or '-'}  canary: {out['canary'] or '-'}")
    if "gate" in out:
        console.print(f"gate: {out['gate']['decision']} ({out['gate']['reason']})")
    for t in out.get("kserve", {}).get("traffic", []):
        console.print(f"  {t['revision']}: {t['percent']}%{' (latest)' if t['latest'] else ''}")


@deploy_app.command("gate")
def deploy_gate_cmd(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = Path("workspace"),
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    apply: Annotated[bool, typer.Option("--apply", help="Promote or roll back as the gate decides.")] = False,
) -> None:
    """Run the canary gate on the logged feedback and record its decision in the registry."""
    from rlhfops.serving.gate import decide
    from rlhfops.serving.store import InteractionStore

    cfg, ws = setup(config, set_, workspace)
    registry = Registry(ws.root)
    with user_errors():
        stable, canary = registry.stable(), registry.canary()
        if stable is None or canary is None:
            fail("the gate needs a stable and a canary version in the registry")
        store = InteractionStore.for_config(cfg.serving.store_url, ws.root)
        result = decide(store, stable["id"], canary["id"], cfg.gate)
        registry.record_decision(canary["id"], result.decision, result.stats)
        if apply and result.decision == "promote":
            registry.promote_canary()
        elif apply and result.decision == "rollback":
            registry.rollback_canary()
    if json_out:
        emit_json(result.to_dict())
    else:
        console.print(f"{canary['id']}: {result.decision} ({result.reason})")
