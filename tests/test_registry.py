import json
import threading

import pytest

from rlhfops.registry import Registry, RegistryError


def test_register_stages_and_lineage(tmp_path):
    reg = Registry(tmp_path)
    assert reg.list() == [] and reg.stable() is None and reg.canary() is None
    v1 = reg.register(tmp_path / "models" / "sft", metrics={"gold": 0.5}, config={"seed": 0}, stage="stable")
    v2 = reg.register(tmp_path / "models" / "ppo-1", parent=v1, metrics={"gold": 0.6})
    assert (v1, v2) == ("v1", "v2")
    assert reg.stable()["id"] == v1 and reg.stable()["name"] == "sft" and reg.stable()["metrics"] == {"gold": 0.5}
    assert reg.get(v2)["stage"] == "candidate" and reg.get(v2)["parent"] == v1
    reg.set_stage(v2, "canary")
    assert reg.canary()["id"] == v2
    assert reg.promote_canary() == v2
    assert reg.stable()["id"] == v2 and reg.get(v1)["stage"] == "archived" and reg.canary() is None
    v3 = reg.register("m3", parent=v2, stage="canary")
    v4 = reg.register("m4", parent=v2, stage="canary")  # a newer canary replaces the old one
    assert reg.get(v3)["stage"] == "archived" and reg.canary()["id"] == v4
    assert reg.rollback_canary() == v4
    assert reg.get(v4)["stage"] == "archived" and reg.stable()["id"] == v2
    on_disk = json.loads((tmp_path / "registry.json").read_text())
    assert [v["stage"] for v in on_disk["versions"]] == ["archived", "stable", "archived", "archived"]


def test_decisions_and_failures_are_recorded(tmp_path):
    reg = Registry(tmp_path)
    v1 = reg.register("a", stage="stable")
    v2 = reg.register("b", parent=v1, stage="canary")
    reg.record_decision(v2, "wait", {"n_canary": 10})
    reg.record_decision(v2, "promote", {"n_canary": 200, "diff": 0.2})
    reg.record_failure(3, "reward training diverged")
    assert [d["decision"] for d in reg.get(v2)["decisions"]] == ["wait", "promote"]
    assert reg.decisions()[-1] == {**reg.decisions()[-1], "version": v2, "decision": "promote"}
    assert reg.failures()[0]["cycle"] == 3 and reg.failures()[0]["message"] == "reward training diverged"


def test_bad_operations_are_clear_errors_and_write_nothing(tmp_path):
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError, match="no canary version to promote"):
        reg.promote_canary()
    with pytest.raises(RegistryError, match="no canary version to roll back"):
        reg.rollback_canary()
    reg.register("a", stage="stable")
    before = (tmp_path / "registry.json").read_text()
    with pytest.raises(RegistryError, match="unknown stage 'prod'"):
        reg.set_stage("v1", "prod")
    with pytest.raises(RegistryError, match=r"no model version 'v9' in the registry \(known: v1\)"):
        reg.register("b", parent="v9")
    with pytest.raises(RegistryError, match="no model version 'v7'"):
        reg.record_decision("v7", "promote", {})
    assert (tmp_path / "registry.json").read_text() == before
    (tmp_path / "registry.json").write_text("{oops")
    with pytest.raises(RegistryError, match="not valid JSON"):
        reg.list()


def test_concurrent_registrations_lose_nothing(tmp_path):
    threads = [threading.Thread(target=lambda i=i: Registry(tmp_path).register(f"m{i}")) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [v["id"] for v in Registry(tmp_path).list()]
    assert sorted(ids, key=lambda s: int(s[1:])) == [f"v{i}" for i in range(1, 17)]
