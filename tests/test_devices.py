"""Where models, generators and weights go (issue 20), checked on a CPU-only machine.

A CUDA run crashes when a generator, a model or a score sits on another device than the tensors it
meets; these tests ask for the `meta` device (a device other than the CPU every checkpoint loads
on) wherever a loader takes one, and mock the one CUDA call a CPU cannot make. Real CUDA runs are
`benchmarks/gpu_smoke.py`'s job. Also: a bf16 checkpoint trains in float32 and decodes in bf16.
"""

import json

import pytest
import torch
from bpe_model import tiny_bpe_policy
from safetensors.torch import load_file, save_file
from transformers import LlamaForSequenceClassification

from rlhfops.config import load_config
from rlhfops.generation import generator_on
from rlhfops.modeling import (
    ILQLHeads,
    build_char_tokenizer,
    init_policy,
    load_decoder,
    load_policy,
    save_policy,
    tiny_llama_config,
)
from rlhfops.reward.ensemble import RewardEnsemble
from rlhfops.reward.prm import ProcessRewardModel, init_prm
from rlhfops.workspace import ILQL_HEADS, RM_MANIFEST

META = torch.device("meta")


def _devices(*modules) -> set[str]:
    return {p.device.type for m in modules for p in m.parameters()}


@pytest.fixture(scope="module")
def offline_policy(tmp_path_factory):
    """A char-model policy directory with (untrained) ILQL heads beside it."""
    cfg = load_config("smoke")
    tokenizer, model = init_policy(cfg)
    out = save_policy(model, tokenizer, cfg, tmp_path_factory.mktemp("offline") / "policy")
    save_file(ILQLHeads(model.config.hidden_size, len(tokenizer)).state_dict(), out / ILQL_HEADS)
    return out


def test_a_saved_policy_decodes_on_the_default_device(offline_policy, monkeypatch):
    """Evaluation, collection, Best-of-N, offline RL and serving load through `load_decoder`: with
    no device given it is `default_device()` (CUDA when there is one), heads included."""
    monkeypatch.setattr("rlhfops.modeling.default_device", lambda: META)
    _, model, hook = load_decoder(load_config("smoke"), offline_policy)
    assert _devices(model, hook.heads) == {"meta"}
    _, model, hook = load_decoder(load_config("smoke"), offline_policy, device=torch.device("cpu"))
    assert _devices(model, hook.heads) == {"cpu"}


def test_the_prm_and_reward_ensembles_load_on_the_device(offline_policy, tmp_path, monkeypatch):
    cfg = load_config("smoke")
    tokenizer, prm_model = init_prm(offline_policy, seed=0)
    prm_dir = save_policy(prm_model, tokenizer, cfg, tmp_path / "prm")
    monkeypatch.setattr("rlhfops.reward.prm.default_device", lambda: META)
    assert _devices(ProcessRewardModel.load(prm_dir).model) == {"meta"}

    ensemble_dir = _ensemble(tmp_path / "rm", members=2)
    monkeypatch.setattr("rlhfops.reward.ensemble.default_device", lambda: META)
    ensemble = RewardEnsemble(ensemble_dir, fused="never")
    assert _devices(*ensemble.models) == {"meta"}


def _ensemble(path, members: int):
    """A full-kind reward ensemble directory of random-weight char-model members."""
    tokenizer = build_char_tokenizer()
    config = tiny_llama_config(load_config("smoke").model, tokenizer, num_labels=1)
    for k in range(members):
        torch.manual_seed(k)
        LlamaForSequenceClassification(config).save_pretrained(path / f"member_{k}")
        tokenizer.save_pretrained(path / f"member_{k}")
    manifest = {
        "objective": "helpfulness",
        "kind": "full",
        "max_length": 64,
        "members": [{"name": f"member_{k}"} for k in range(members)],
    }
    (path / RM_MANIFEST).write_text(json.dumps(manifest))
    return path


def test_the_stacked_scorer_is_built_by_the_first_batch_and_replaces_the_members(tmp_path):
    """It copies every member weight: not at load time; the first batch builds it and the members are let go."""
    path = _ensemble(tmp_path / "rm", members=3)
    prompts, texts = ["q: 1+2?\n"] * 6, ["answer: 3", "1+2=3\nanswer: 3", "answer: 4", "", "x", "answer: refuse"]
    ensemble, members = RewardEnsemble(path), RewardEnsemble(path, fused="never")
    assert ensemble.stacked is None and len(ensemble.models) == 3
    stacked = ensemble.raw_rewards(prompts, texts)
    assert ensemble.stacked is not None and ensemble.models == []
    torch.testing.assert_close(stacked, members.raw_rewards(prompts, texts), atol=1e-5, rtol=1e-5)
    assert members.stackable is False and members.stacked is None


def test_a_generator_on_another_device_seeds_one_on_the_models(monkeypatch):
    """The crash of issue 20: a CPU `torch.Generator` handed to `multinomial` on CUDA. `generate`
    samples with `generator_on(generator, model's device)`: the same generator on its own device,
    else a generator made on the model's device and seeded by one draw from the given one."""
    cpu = torch.Generator().manual_seed(0)
    assert generator_on(cpu, torch.device("cpu")) is cpu and generator_on(None, META) is None
    expected = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(0)))
    made = []

    class CudaGenerator:  # what torch.Generator(device="cuda") would give
        def __init__(self, device):
            self.device = torch.device(device)

        def manual_seed(self, seed):
            made.append((self.device, seed))
            return self

    monkeypatch.setattr(torch, "Generator", CudaGenerator)
    derived = generator_on(cpu, torch.device("cuda"))
    assert derived.device.type == "cuda" and made == [(torch.device("cuda"), expected)]
    generator_on(cpu, torch.device("cuda"))
    assert made[1][1] != expected  # the given generator advanced: the next call samples differently


def _changed_fraction(before: torch.Tensor, after: torch.Tensor) -> float:
    return (before.float() != after.float()).float().mean().item()


def test_a_bf16_checkpoint_trains_in_float32_and_decodes_in_bf16(tmp_path):
    """Hub checkpoints are mostly bf16: training loads float32 master weights, so an AdamW step at
    the cluster config's lr 1e-6 changes the weights; left in bf16 it would change almost none."""
    path = tiny_bpe_policy(tmp_path / "bf16", dtype=torch.bfloat16)
    assert load_file(str(path / "model.safetensors"))["model.norm.weight"].dtype == torch.bfloat16
    assert load_decoder(load_config("smoke"), path, device=torch.device("cpu")).model.dtype == torch.bfloat16

    fractions = {}
    for dtype, (tokenizer, model) in (
        ("float32", load_policy(path)),
        ("bfloat16", load_policy(path, train=False)),
    ):
        assert model.dtype == getattr(torch, dtype)
        weight = model.model.layers[0].mlp.down_proj.weight
        before = weight.detach().clone()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
        ids = tokenizer(["q: 2+3?\n2+3=5\nanswer: 5"], return_tensors="pt")["input_ids"]
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        fractions[dtype] = _changed_fraction(before, weight.detach())
    assert fractions["float32"] > 0.99 and fractions["bfloat16"] < 0.2, fractions
