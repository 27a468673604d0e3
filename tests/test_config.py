import pytest
import yaml

from rlhfops.config import CONFIG_FILENAME, Config, ConfigError, load_config


def test_tiny_yaml_states_the_defaults(configs_dir):
    assert load_config(configs_dir / "tiny.yaml") == Config()
    assert load_config("tiny") == Config()


def test_smoke_config_is_smaller_than_tiny():
    smoke, tiny = load_config("smoke"), load_config("tiny")
    assert smoke.model.hidden_size < tiny.model.hidden_size
    assert smoke.task.n_train < tiny.task.n_train


def test_override_sets_nested_values_with_yaml_types():
    cfg = load_config("smoke", ["sft.lr=3e-4", "eval.greedy=false", "task.noise.wrong_step=0.5", "seed=7"])
    assert cfg.sft.lr == pytest.approx(3e-4)
    assert cfg.eval.greedy is False
    assert cfg.task.noise.wrong_step == 0.5
    assert cfg.seed == 7


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["sft.lrr=1"], "unknown config key 'sft.lrr'"),
        (["nosuch.key=1"], "unknown config key 'nosuch'"),
        (["sft.lr=fast"], "config key 'sft.lr'"),
        (["sft.batch_size=0"], "config key 'sft.batch_size'"),
        (["task.noise.over_refusal=1.5"], "config key 'task.noise.over_refusal'"),
        (["task.min_ops=3", "task.max_ops=2"], "min_ops (3) must not exceed max_ops (2)"),
        (["sft.lr"], "must look like section.key=value"),
        (["seed.x=1"], "config key 'seed'"),
        (["sft.lr=1", "sft.lr.x=2"], "'lr' is not a section"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("sft:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'sft.epoch'"):
        load_config(typo)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("smoke", ["sft.lr=1e-3"])
    path = cfg.save(tmp_path)
    assert path.name == CONFIG_FILENAME
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["sft"]["lr"] == pytest.approx(1e-3)


def test_named_configs_ship_inside_the_package(tmp_path):
    """`--config smoke` must not depend on a checkout: a built wheel carries the configs."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    from rlhfops.config import CONFIG_DIR

    root = Path(__file__).resolve().parents[1]
    assert CONFIG_DIR.resolve() == (root / "configs").resolve()
    tree = tmp_path / "tree"  # a copy, so the build leaves nothing in the checkout
    skip = shutil.ignore_patterns("*.egg-info", "__pycache__")
    for name in ("src", "configs"):
        shutil.copytree(root / name, tree / name, symlinks=True, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tree / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(tree)]
    subprocess.run([*build, "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("rlhfops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"rlhfops/configs/tiny.yaml", "rlhfops/configs/smoke.yaml", "rlhfops/configs/accelerate/zero3.yaml"} <= names
    assert not any(n.startswith(("components/", "pipelines/")) for n in names)
