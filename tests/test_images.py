import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfops import __version__, images

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def _hadolint(path: Path) -> list[dict]:
    """Every finding, of any level (error, warning, info, style), as hadolint's JSON."""
    proc = subprocess.run([HADOLINT, "--no-fail", "--format", "json", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_one_dockerfile_per_image_kind():
    assert [p.name for p in DOCKERFILES] == sorted(f"{kind}.Dockerfile" for kind in images.KINDS)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path):
    assert _hadolint(path) == []


def test_hadolint_does_catch_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install torch\n")
    codes = {f["code"] for f in _hadolint(bad)}
    assert {"DL3006", "DL3013"} <= codes


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root_with_pinned_base(path):
    text = path.read_text()
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1].isdigit() and users[-1] != "0"
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    for base in bases:
        if base.startswith("${"):
            base = re.search(r"^ARG RUNTIME_IMAGE=(\S+)$", text, flags=re.M).group(1)
        assert re.search(r":\d[\w.-]*$", base), f"{path.name}: base image {base} is not pinned to a version"
    for line in re.findall(r"pip install [^\n]*torch[= ][^\n]*", text):
        assert "torch==2.13.0" in line


def test_runtime_uses_cpu_torch_and_trainer_deepspeed():
    runtime = (ROOT / "images" / "runtime.Dockerfile").read_text()
    trainer = (ROOT / "images" / "trainer.Dockerfile").read_text()
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runtime
    assert trainer.startswith("#") and "FROM nvidia/cuda:" in trainer
    assert "deepspeed==" in trainer and '".[gpu]"' in trainer
    serving = (ROOT / "images" / "serving.Dockerfile").read_text()
    assert "HEALTHCHECK" in serving and "/health" in serving
    # KServe's ServingRuntime (manifests/base/servingruntime.yaml) passes args that start with `serve`
    assert 'ENTRYPOINT ["rlhfops"]' in serving and 'CMD ["serve", ' in serving


def test_constraints_pin_every_package():
    lines = [ln for ln in (ROOT / "images" / "constraints.txt").read_text().splitlines() if not ln.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+!-]+", ln) for ln in lines)
    names = {ln.split("==")[0].lower() for ln in lines}
    assert {"transformers", "trl", "kfp", "wandb"} <= names
    assert "torch" not in names


def test_dockerignore_keeps_what_the_images_copy():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for kept in ("!pyproject.toml", "!README.md", "!src/", "!configs/", "!images/constraints.txt"):
        assert kept in ignore
    assert ignore[ignore.index("*")] == "*"  # everything else (.venv, workspace, .git) stays out


def test_image_refs_compose_registry_kind_and_tag():
    assert images.image_ref("trainer", "reg.example/ml/", "1.2.3") == "reg.example/ml/trainer:1.2.3"
    with pytest.raises(ValueError, match="not 'latest'"):
        images.image_ref("runtime", "r", "latest")
    with pytest.raises(ValueError, match="kind must be one of"):
        images.image_ref("gpu", "r", "1")


def test_image_constants_follow_the_environment_at_import():
    env = {**os.environ, "RLHFOPS_REGISTRY": "reg.example/ml", "RLHFOPS_IMAGE_TAG": "2026.11.1"}
    code = "from rlhfops import images; print(images.TRAINER_IMAGE, images.RUNTIME_IMAGE, images.SERVING_IMAGE)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [f"reg.example/ml/{k}:2026.11.1" for k in ("trainer", "runtime", "serving")]
    if "RLHFOPS_REGISTRY" not in os.environ and "RLHFOPS_IMAGE_TAG" not in os.environ:
        assert f"ghcr.io/rlhfops/trainer:{__version__}" == images.TRAINER_IMAGE


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_images_builds_and_pushes_what_the_pipeline_names():
    proc = subprocess.run(
        ["make", "-n", "images", "REGISTRY=reg.example/ml", "TAG=7.0"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for kind in images.KINDS:
        ref = images.image_ref(kind, "reg.example/ml", "7.0")
        build = [ln for ln in lines if ln.startswith("docker build") and f"-t {ref} " in ln]
        assert len(build) == 1 and f"-f images/{kind}.Dockerfile" in build[0] and build[0].endswith(" .")
        assert f"docker push {ref}" in lines
        assert lines.index(build[0]) < lines.index(f"docker push {ref}")
    serving = next(ln for ln in lines if "images/serving.Dockerfile" in ln)
    assert f"--build-arg RUNTIME_IMAGE={images.image_ref('runtime', 'reg.example/ml', '7.0')}" in serving
    default = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"docker push ghcr.io/rlhfops/trainer:{__version__}" in default
    latest = subprocess.run(["make", "images", "TAG=latest"], cwd=ROOT, capture_output=True, text=True)
    assert latest.returncode != 0 and "pinned tag" in latest.stderr
