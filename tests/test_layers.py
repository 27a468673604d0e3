"""The package's layers, lowest first: a module imports only from its own layer or below, and no
two modules import each other, directly or round a loop. `docs/design.md` draws the same map.

Every `rlhfops` import counts, including the ones inside functions (deferred for start-up time,
not to hide a dependency)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rlhfops"

# (layer, module prefixes); the longest matching prefix places a module.
LAYERS = [
    # pipeline.warm: the fork server the local run's tasks hand their stage to (cycle.run_stage calls it)
    (0, ["chat", "config", "files", "workspace", "registry", "images", "tracking", "serving.store", "pipeline.warm"]),
    (1, ["tasks", "modeling", "generation", "training", "real_model", "versioning", "kube", "trainer_job"]),
    # the pair and stepwise record formats and the task-built data sets are what reward training
    # reads; the judges, active learning, review and the annotate stage above them use reward models
    (2, ["reward", "annotation.pairs", "annotation.steps"]),
    (3, ["annotation"]),
    (4, ["rl", "inference", "sft"]),
    (5, ["evaluation", "serving"]),
    (6, ["cycle"]),
    (7, ["pipeline"]),
    (8, ["cli", "bench", "report"]),
]
LAYER_NAMES = {
    0: "config / files / workspace",
    1: "tasks / modeling / generation",
    2: "reward / labelled data",
    3: "annotation",
    4: "rl / inference",
    5: "evaluation / serving",
    6: "cycle",
    7: "pipeline",
    8: "cli / bench / report",
}


def layer_of(module: str) -> int:
    """The layer of `rlhfops.<module>` (the package itself, `rlhfops`, is the version string: 0)."""
    best, found = -1, 0
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), layer
    if best < 0 and module:
        raise AssertionError(f"module 'rlhfops.{module}' has no layer in tests/test_layers.py: add it to LAYERS")
    return found


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(root: Path) -> dict[str, set[str]]:
    """module -> the rlhfops modules it imports (relative to the package, '' for the package)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, node.module] if node.module else base)
                    targets = ["rlhfops." + target if target else "rlhfops"]
                else:
                    targets = [node.module or ""]
                # `from rlhfops.x import y` may import the module rlhfops.x.y
                targets += [f"{targets[0]}.{a.name}" for a in node.names]
            for target in targets:
                if target == "rlhfops" or target.startswith("rlhfops."):
                    rel = target.removeprefix("rlhfops").removeprefix(".")
                    if (root / rel.replace(".", "/")).with_suffix(".py").exists() or (
                        root / rel.replace(".", "/") / "__init__.py"
                    ).exists():
                        found.add(rel)
        found.discard(name)
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(module):
                out.append(
                    f"rlhfops.{module} ({LAYER_NAMES[layer_of(module)]}) imports rlhfops.{target} "
                    f"({LAYER_NAMES[layer_of(target)]}), a higher layer"
                )
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import loops between modules (a package's `__init__` re-exporting its own modules is not one)."""

    def edges(module: str) -> set[str]:
        return {t for t in graph.get(module, ()) if not module.startswith(t + ".") and t}

    found, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges(module)):
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_has_a_layer():
    for module in imports(PACKAGE):
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    assert violations(imports(PACKAGE)) == []


def test_no_import_cycle_in_the_package():
    assert cycles(imports(PACKAGE)) == []


def test_the_check_fails_on_an_inverted_import(tmp_path):
    """The same checks on a copy of the package with one deliberately inverted import."""
    import shutil

    copy = tmp_path / "rlhfops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "config.py"
    config.write_text(config.read_text() + "\n\ndef _inverted():\n    from rlhfops.cycle import STAGES\n")
    graph = imports(copy)
    assert violations(graph) == [
        "rlhfops.config (config / files / workspace) imports rlhfops.cycle (cycle), a higher layer"
    ]
    assert cycles(graph), "config -> cycle -> config is a loop"


@pytest.mark.parametrize("forbidden", ["components", "pipelines"])
def test_no_top_level_modules_but_rlhfops_are_installed(forbidden):
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"].get("include", [])
    assert include and all(p.startswith("rlhfops") for p in include), include
