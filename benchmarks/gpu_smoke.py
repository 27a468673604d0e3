"""GPU smoke: every training and sampling path once, at tiny size, on one device (issue 20).

Runs, in order, on `--device` (cuda: the first CUDA device; cpu: CUDA hidden even when present):

    sft              SFT of the tiny policy (TRL SFTTrainer)
    placement        the SFT policy, a PRM and the reward ensembles load on the device
    train-rm         reward-model ensembles (TRL RewardTrainer), the pairs sampled from the policy
    prm              step labels + a process reward model
    ppo+reference    PPO with kl_coef 0.05 (a reference model), composite reward from the ensembles
    ppo-no-reference PPO with kl_coef 0 (no reference)
    ppo+dense-prm    PPO with the PRM's step rewards on the line-ending tokens
    ppo-from-bf16    PPO from a bf16 copy of the policy: it must train (and save) in float32
    grpo             GRPO (TRL GRPOTrainer)
    offline          logged samples + ILQL, decoded with its Q - V shift
    best-of-n        Best-of-N curve with the ensembles and the PRM
    evaluation       gold evaluation of the PPO policy

Each stage prints ok / FAILED with its seconds (and the peak CUDA memory on cuda); the script exits
1 when any stage failed (2 when the device is not there). `--bpe` starts every stage after SFT
from the tiny random-weight Llama on SmolLM2's BPE tokenizer (`tests/bpe_model.py`: a "\\n\\n"
token, a second eos id in generation_config) instead of the SFT policy.

    python benchmarks/gpu_smoke.py --device cuda          # on a GPU node
    python benchmarks/gpu_smoke.py --device cpu --bpe     # the same paths, as a dry check on a CPU

Status: written and run with `--device cpu` (with and without `--bpe`) on a CPU-only machine; it
has NOT yet been run on a CUDA device.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

SMALL = [
    "task.n_train=64",
    "eval.n_test=4",
    "eval.samples_per_prompt=1",
    "generation.max_new_tokens=16",
    "generation.batch_size=8",
    "policy.steps=2",
    "policy.prompts_per_step=4",
    "policy.max_new_tokens=16",
    "reward.members=2",
    "reward.max_steps=2",
    "reward.data.n_prompts=24",
    "reward.data.n_val_prompts=12",
    "prm.max_steps=2",
    "prm.n_prompts=16",
    "prm.n_val_prompts=8",
    "offline.n_prompts=8",
    "offline.max_steps=2",
    "offline.batch_size=4",
    "best_of_n.n_prompts=4",
    "best_of_n.n_values=[1, 2]",
]
PPO = ["policy.eval_every=2", "policy.eval_prompts=4", "policy.reward=composite"]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--bpe", action="store_true", help="stages after SFT start from the tiny BPE policy")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the outputs here (default: a temp dir)")
    return parser.parse_args()


def main() -> int:
    args = parse()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: nothing may pick the GPU
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: --device cuda, but torch sees no CUDA device on this machine", file=sys.stderr)
        return 2
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix="rlhfops-gpu-smoke-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, root: Path) -> int:
    import torch

    from rlhfops.config import load_config
    from rlhfops.evaluation import evaluate_dir
    from rlhfops.inference.best_of_n import evaluate_best_of_n
    from rlhfops.modeling import default_device, load_decoder, load_policy, model_device, save_policy
    from rlhfops.reward.build import reward_fn
    from rlhfops.reward.functions import load_ensembles
    from rlhfops.reward.prm import ProcessRewardModel, train_prm_on_task
    from rlhfops.reward.train import train_reward_models
    from rlhfops.rl.ilql import build_offline_data, train_offline
    from rlhfops.rl.train import train_policy
    from rlhfops.sft import run_sft
    from rlhfops.workspace import Workspace

    device = torch.device(args.device)
    cfg = load_config("smoke", SMALL)
    ppo_cfg = load_config("smoke", [*SMALL, *PPO])
    paths = {name: root / name for name in ("sft", "rm", "steps", "prm", "ppo", "offline")}
    cuda = device.type == "cuda"

    def on_device(model, what: str) -> None:
        if model_device(model).type != device.type:
            raise AssertionError(f"{what} is on {model_device(model)}, not {device.type}")

    def sft():
        run_sft(cfg, paths["sft"], progress=False)
        if args.bpe:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from bpe_model import tiny_bpe_policy

            paths["sft"] = tiny_bpe_policy(root / "bpe", cfg=cfg, second_eos=True)

    def placement():
        if default_device().type != device.type:
            raise AssertionError(f"modeling.default_device() is {default_device()}, not {device.type}")
        on_device(load_decoder(cfg, paths["sft"]).model, "the decoded policy")

    def train_rm():
        ws = Workspace(root / "ws")
        train_reward_models(cfg, root / "prefs", paths["sft"], paths["rm"], progress=False, workspace=ws)
        for ensemble in load_ensembles(paths["rm"], cfg.reward.objectives).values():
            if ensemble.kind == "heads":
                model = ensemble.trunk
            else:  # once a batch is scored, the stacked scorer replaces the members
                model = ensemble.models[0] if ensemble.models else ensemble.stacked
            on_device(model, f"the {ensemble.objective} ensemble")

    def prm():
        train_prm_on_task(cfg, paths["sft"], paths["steps"], paths["prm"], progress=False)
        on_device(ProcessRewardModel.load(paths["prm"]).model, "the PRM")

    def ppo(name: str, *overrides: str, start: Path | None = None, **dirs):
        out = root / name
        stage_cfg = load_config("smoke", [*SMALL, *PPO, *overrides])
        train_policy(stage_cfg, start or paths["sft"], out, rm_dir=paths["rm"], progress=False, **dirs)
        return out

    def ppo_from_bf16():
        tokenizer, model = load_policy(paths["sft"], train=False)
        bf16 = save_policy(model.to(torch.bfloat16), tokenizer, cfg, root / "sft-bf16")
        out = ppo("ppo-bf16", "policy.kl_coef=0.05", start=bf16)
        _, trained = load_policy(out, train=False)
        if trained.dtype != torch.float32:
            raise AssertionError(f"PPO from a bf16 checkpoint saved {trained.dtype}, not float32 master weights")

    def grpo():
        grpo_cfg = load_config("smoke", [*SMALL, "policy.algorithm=grpo", "policy.group_size=2"])
        train_policy(grpo_cfg, paths["sft"], root / "grpo", rm_dir=paths["rm"], progress=False)

    def offline():
        data = build_offline_data(cfg, paths["sft"], root / "offline.jsonl", reward_fn(cfg, "gold"))
        shifted = root / "offline-shifted"  # the evaluation-only shifted decoder, heads and all
        train_offline(cfg, paths["sft"], data, paths["offline"], progress=False, shifted_dir=shifted)
        on_device(load_decoder(cfg, shifted).hook.heads, "the ILQL heads")
        on_device(load_decoder(cfg, paths["offline"]).model, "the extracted offline policy")
        evaluate_dir(cfg, paths["offline"])

    def best_of_n():
        evaluate_best_of_n(cfg, paths["sft"], paths["rm"], paths["prm"], root / "bon.json")

    def evaluation():
        evaluate_dir(ppo_cfg, paths["ppo"])

    stages = [
        ("sft", sft),
        ("placement", placement),
        ("train-rm", train_rm),
        ("prm", prm),
        ("ppo+reference", lambda: ppo("ppo", "policy.kl_coef=0.05")),
        ("ppo-no-reference", lambda: ppo("ppo-no-ref", "policy.kl_coef=0.0")),
        ("ppo+dense-prm", lambda: ppo("ppo-prm", "policy.dense_prm=true", prm_dir=paths["prm"])),
        ("ppo-from-bf16", ppo_from_bf16),
        ("grpo", grpo),
        ("offline", offline),
        ("best-of-n", best_of_n),
        ("evaluation", evaluation),
    ]
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"gpu_smoke on {name} ({'BPE' if args.bpe else 'char'} policy after SFT), outputs in {root}")
    failed = []
    for stage, fn in stages:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            fn()
            status = "ok"
        except Exception as e:  # every stage runs; the exit code reports any failure
            failed.append(stage)
            status = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            traceback.print_exc(file=sys.stderr)
        memory = f" peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""
        print(f"  {stage:<18} {time.perf_counter() - start:7.1f} s{memory}  {status}", flush=True)
    print(f"{len(stages) - len(failed)}/{len(stages)} stages ok" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
