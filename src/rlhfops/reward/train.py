"""Train per-objective reward-model ensembles (Bradley-Terry, trl RewardTrainer).

For every objective in `cfg.reward.objectives`, K members that differ by seed and by a
bootstrap resample of the objective's preference pairs; each starts from the current policy
(or from `cfg.reward.member_init[k]`, any Hugging Face model, for members of other sizes or
architectures). `kind: heads` instead trains K linear heads on the frozen policy trunk's
last-token features: one trunk pass scores the whole ensemble.

After training, each member is scored on the clean validation pairs: its accuracy and the mean
and std of its scores (the normalisation) go into the manifest, with the ensemble's accuracy
under every aggregation and the ensemble's spread on pairs it gets right vs wrong.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
from datasets import Dataset
from rich.progress import Progress
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    set_seed,
)
from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

from rlhfops.annotation.pairs import FIELDS as PAIR_FIELDS
from rlhfops.annotation.pairs import build_preference_data, read_pairs
from rlhfops.chat import render, scored_text
from rlhfops.config import Config
from rlhfops.files import atomic_directory, atomic_write_json, write_jsonl
from rlhfops.modeling import default_device, load_tokenizer, load_weights
from rlhfops.reward.ensemble import AGGREGATIONS, HEADS, MANIFEST, RewardEnsemble, aggregate, pooled_last_token
from rlhfops.reward.likelihood import LM_DIR, fit_weight, link_model_dir, load_lm, response_min_logprob
from rlhfops.training import one_progress_display, trl_run_args
from rlhfops.workspace import PAIR_STATS, RM_MEMBERS, Workspace, is_model_dir, pairs_file
from rlhfops.workspace import RM_SUMMARY as SUMMARY


def bootstrap(records: list[dict], seed: int) -> list[dict]:
    """A resample with replacement of the same size."""
    rng = random.Random(seed)
    return [records[rng.randrange(len(records))] for _ in records]


def train_member(cfg: Config, pairs: list[dict], init: str | Path, out_dir: Path, seed: int) -> list[dict]:
    """One Bradley-Terry reward model from `init` (a causal LM or classifier directory) -> out_dir.
    Returns trl's log history."""
    tokenizer = load_tokenizer(init)
    set_seed(seed)  # the new reward head's initialisation is part of what the member's seed decides
    model = load_weights(AutoModelForSequenceClassification, init, train=True, num_labels=1)  # fp32 to train
    model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    # TRL joins prompt + chosen + eos: with the prompt rendered that is `chat.scored_text`, what scoring reads
    pairs = [{**r, "prompt": render(tokenizer, r["prompt"])} for r in pairs]
    with tempfile.TemporaryDirectory(prefix="rlhfops-rm-") as scratch:
        args = TRLRewardConfig(
            output_dir=scratch,
            per_device_train_batch_size=cfg.reward.batch_size,
            learning_rate=cfg.reward.lr,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            num_train_epochs=cfg.reward.epochs,
            max_steps=cfg.reward.max_steps,
            max_length=cfg.reward.max_length,
            logging_steps=10,
            logging_first_step=True,  # the untrained loss, so "the loss fell" is measured from the start
            **trl_run_args(seed),
        )
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer
        )
        one_progress_display(trainer, progress=False)
        trainer.train()
    trainer.model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return trainer.state.log_history


@torch.no_grad()
def trunk_features(trunk, tokenizer, prompts: list[str], completions: list[str], max_length: int) -> torch.Tensor:
    """Last-token hidden states (N, H) of `chat.scored_text` (rendered prompt + completion + eos)."""
    tokenizer.padding_side = "right"
    feats = []
    for i in range(0, len(prompts), 128):
        batch = zip(prompts[i : i + 128], completions[i : i + 128], strict=True)
        texts = [scored_text(tokenizer, p, c) for p, c in batch]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hidden = trunk(**enc).last_hidden_state
        feats.append(pooled_last_token(hidden, enc["input_ids"], tokenizer.pad_token_id))
    return torch.cat(feats)


def train_heads(
    chosen: torch.Tensor, rejected: torch.Tensor, k: int, seed: int, steps: int = 300, lr: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """K linear Bradley-Terry heads on fixed features (N, H), each on its own bootstrap resample.
    Loss per head: -mean log sigmoid(w . (f_chosen - f_rejected)). Returns weight (K, H), bias (K,)."""
    gen = torch.Generator().manual_seed(seed)
    n, h = chosen.shape
    idx = torch.randint(0, n, (k, n), generator=gen)  # (K, N) bootstrap rows
    diff = (chosen - rejected)[idx]  # (K, N, H)
    weight = (torch.randn(k, h, generator=gen) * h**-0.5).requires_grad_()
    opt = torch.optim.Adam([weight], lr=lr)
    for _ in range(steps):
        loss = -torch.nn.functional.logsigmoid(torch.einsum("knh,kh->kn", diff, weight)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return weight.detach(), torch.zeros(k)


def validate(ensemble: RewardEnsemble, val: list[dict], cfg: Config) -> dict[str, Any]:
    """Member and ensemble accuracy on clean validation pairs, and the spread on right vs wrong."""
    prompts = [r["prompt"] for r in val]
    chosen, rejected = [r["chosen"] for r in val], [r["rejected"] for r in val]
    raw_c = ensemble.raw_rewards(prompts, chosen)  # (K, N)
    raw_r = ensemble.raw_rewards(prompts, rejected)
    both = torch.cat([raw_c, raw_r], dim=1)
    mean, std = both.mean(1, keepdim=True), both.std(1, keepdim=True).clamp_min(1e-6)
    # the ensemble's likelihood term (zeros without one) is the same for every member
    norm_c = (raw_c - mean) / std + ensemble.likelihood_term(prompts, chosen)
    norm_r = (raw_r - mean) / std + ensemble.likelihood_term(prompts, rejected)
    member_acc = (raw_c > raw_r).float().mean(1)  # (K,)
    summary: dict[str, Any] = {
        "pairs": len(val),
        "member_accuracy": member_acc.tolist(),
        "mean_member_accuracy": member_acc.mean().item(),
        "ensemble_accuracy": {},
    }
    for how in AGGREGATIONS:
        agg_c, _ = aggregate(norm_c, how, member_acc, cfg.reward.uwo_lambda)
        agg_r, _ = aggregate(norm_r, how, member_acc, cfg.reward.uwo_lambda)
        summary["ensemble_accuracy"][how] = (agg_c > agg_r).float().mean().item()
    agg_c, spread_c = aggregate(norm_c, cfg.reward.aggregation, member_acc, cfg.reward.uwo_lambda)
    agg_r, spread_r = aggregate(norm_r, cfg.reward.aggregation, member_acc, cfg.reward.uwo_lambda)
    right = agg_c > agg_r
    spread = (spread_c + spread_r) / 2  # the pair's uncertainty: mean spread of its two responses
    summary["spread_when_right"] = spread[right].mean().item() if right.any() else None
    summary["spread_when_wrong"] = spread[~right].mean().item() if (~right).any() else None
    summary["normalisation"] = {"mean": mean[:, 0].tolist(), "std": std[:, 0].tolist()}
    return summary


def _train_full_member(cfg: Config, train: list[dict], k: int, policy_dir: Path, dest: Path) -> dict[str, Any]:
    """Member k (its own seed, init and bootstrap resample) into `dest`; returns its manifest entry."""
    rc = cfg.reward
    seed = cfg.seed * 1000 + k
    init = rc.member_init[k % len(rc.member_init)] if rc.member_init else str(policy_dir)
    data = bootstrap(train, seed) if rc.bootstrap else train
    log = train_member(cfg, data, init, dest, seed)
    losses = [row["loss"] for row in log if "loss" in row]
    return {
        "name": f"member_{k}",
        "seed": seed,
        "init": init,
        "n_train": len(data),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
    }


def _train_all_heads(cfg: Config, train: list[dict], policy_dir: Path, dest: Path) -> list[dict[str, Any]]:
    """`kind: heads`: the frozen trunk and all K heads into `dest`; returns the manifest entries."""
    rc = cfg.reward
    tokenizer = load_tokenizer(policy_dir)
    trunk = load_weights(AutoModel, policy_dir, train=True).eval()  # fp32: its features train the heads
    prompts = [r["prompt"] for r in train]
    fc = trunk_features(trunk, tokenizer, prompts, [r["chosen"] for r in train], rc.max_length)
    fr = trunk_features(trunk, tokenizer, prompts, [r["rejected"] for r in train], rc.max_length)
    weight, bias = train_heads(fc, fr, rc.members, cfg.seed)
    trunk.save_pretrained(dest / "trunk", safe_serialization=True)
    tokenizer.save_pretrained(dest / "trunk")
    save_file({"weight": weight.contiguous(), "bias": bias}, dest / HEADS)
    return [
        {"name": f"head_{k}", "seed": cfg.seed, "init": str(policy_dir), "n_train": len(train)}
        for k in range(rc.members)
    ]


def _finish_ensemble(
    cfg: Config, objective: str, members: list[dict], tmp: Path, val: list[dict], train: list[dict], policy_dir: Path
) -> dict[str, Any]:
    """The manifest, per-member normalisation, likelihood term (`reward.likelihood`: the LM is
    `reward.likelihood_lm`, else `policy_dir`; beta fitted on `train`) and validation of an
    ensemble whose members are in `tmp`."""
    rc = cfg.reward
    manifest = {
        "objective": objective,
        "kind": rc.kind,
        "max_length": rc.max_length,
        "aggregation": rc.aggregation,
        "uwo_lambda": rc.uwo_lambda,
        "members": members,
    }
    atomic_write_json(tmp / MANIFEST, manifest)
    summary = validate(RewardEnsemble(tmp), val, cfg)
    for member, acc, mu, sd in zip(
        members,
        summary["member_accuracy"],
        summary["normalisation"]["mean"],
        summary["normalisation"]["std"],
        strict=True,
    ):
        member.update(val_accuracy=acc, reward_mean=mu, reward_std=sd)
    manifest["val"] = {k: v for k, v in summary.items() if k != "normalisation"}
    atomic_write_json(tmp / MANIFEST, manifest)
    if rc.likelihood:
        manifest["likelihood"] = _fit_likelihood_term(
            RewardEnsemble(tmp), val, train, likelihood_lm_dir(cfg, policy_dir)
        )
        atomic_write_json(tmp / MANIFEST, manifest)
        without = manifest["val"]["ensemble_accuracy"]
        summary = validate(RewardEnsemble(tmp), val, cfg)
        manifest["val"] = {k: v for k, v in summary.items() if k != "normalisation"}
        manifest["val"]["ensemble_accuracy_without_likelihood"] = without
        manifest["val"]["likelihood_beta"] = manifest["likelihood"]["beta"]
        atomic_write_json(tmp / MANIFEST, manifest)
    cfg.save(tmp)
    return manifest["val"]


def likelihood_lm_dir(cfg: Config, policy_dir: str | Path) -> Path:
    """The LM the ensembles' likelihood term reads: `reward.likelihood_lm`, else the policy."""
    lm = Path(cfg.reward.likelihood_lm or policy_dir)
    if not is_model_dir(lm):
        raise FileNotFoundError(f"reward.likelihood_lm '{lm}' is not a model directory (config.json + weights)")
    return lm


def _fit_likelihood_term(
    ensemble: RewardEnsemble, val: list[dict], train: list[dict], lm_dir: Path
) -> dict[str, float]:
    """The ensemble's likelihood term (reward/likelihood.py): the LM linked into `<ensemble>/lm`, m's
    mean and std on the validation responses, beta by Bradley-Terry on the train pairs over the
    members' normalised mean; returns the manifest's `likelihood` entry."""
    link_model_dir(lm_dir, ensemble.path / LM_DIR)
    tokenizer = load_tokenizer(ensemble.path / LM_DIR)
    lm = load_lm(ensemble.path / LM_DIR, default_device())

    def m_of(records: list[dict], side: str) -> torch.Tensor:
        prompts = [r["prompt"] for r in records]
        return response_min_logprob(lm, tokenizer, prompts, [r[side] for r in records], ensemble.max_length)

    m_val = torch.cat([m_of(val, "chosen"), m_of(val, "rejected")])
    mean, std = m_val.mean().item(), max(m_val.std(correction=0).item(), 1e-6)
    prompts = [r["prompt"] for r in train]
    base = {side: ensemble.member_rewards(prompts, [r[side] for r in train]).mean(0) for side in ("chosen", "rejected")}
    z = {side: (m_of(train, side) - mean) / std for side in ("chosen", "rejected")}
    beta = fit_weight(base["chosen"], base["rejected"], z["chosen"], z["rejected"])
    return {"beta": beta, "mean": mean, "std": std, "n_train_pairs": len(train)}


def train_reward_ensemble(
    cfg: Config, objective: str, data_dir: Path, policy_dir: Path, out_dir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Train, validate and write one objective's ensemble; returns its validation summary."""
    train = read_pairs(data_dir / "train" / f"{objective}.jsonl")
    val = read_pairs(data_dir / "val" / f"{objective}.jsonl")
    rc = cfg.reward
    task = progress.add_task(f"reward models: {objective}", total=rc.members) if progress else None
    with atomic_directory(out_dir) as tmp:
        if rc.kind == "full":
            members = []
            for k in range(rc.members):
                members.append(_train_full_member(cfg, train, k, policy_dir, tmp / f"member_{k}"))
                if progress:
                    progress.advance(task)
        else:
            members = _train_all_heads(cfg, train, policy_dir, tmp)
            if progress:
                progress.advance(task, rc.members)
        return _finish_ensemble(cfg, objective, members, tmp, val, train, policy_dir)


# ---- the same, fanned out: one pipeline task per objective x member, then one finishing task ----

PARTS = ".parts"


def train_ensemble_member(
    cfg: Config, objective: str, member: int, data_dir: str | Path, policy_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Member `member` of `objective`'s ensemble (-1 with `kind: heads`: all heads) into
    `<out_dir>/<objective>.parts/`; `finish_reward_models` assembles the parts."""
    data_dir, policy_dir, out_dir = Path(data_dir), Path(policy_dir), Path(out_dir)
    train = read_pairs(data_dir / "train" / f"{objective}.jsonl")
    name = f"member_{member}" if member >= 0 else "heads"
    if (member >= 0) != (cfg.reward.kind == "full") or member >= cfg.reward.members:
        raise ValueError(f"member {member} does not exist for reward.kind={cfg.reward.kind} x {cfg.reward.members}")
    with atomic_directory(out_dir / f"{objective}{PARTS}" / name) as tmp:
        if member >= 0:
            records = [_train_full_member(cfg, train, member, policy_dir, tmp)]
        else:
            records = _train_all_heads(cfg, train, policy_dir, tmp)
        atomic_write_json(tmp / RM_MEMBERS, records)
    return {"objective": objective, "member": member, "n_train": len(train)}


def finish_reward_models(
    cfg: Config, data_dir: str | Path, policy_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Assemble every objective's trained parts into its ensemble (manifest, normalisation,
    likelihood term from the policy in `policy_dir`, validation) and write `<out_dir>/summary.json`,
    as `train_reward_models` does."""
    data_dir, policy_dir, out_dir = Path(data_dir), Path(policy_dir), Path(out_dir)
    summary = {}
    for objective in cfg.reward.objectives:
        parts = out_dir / f"{objective}{PARTS}"
        names = [f"member_{k}" for k in range(cfg.reward.members)] if cfg.reward.kind == "full" else ["heads"]
        missing = [n for n in names if not (parts / n / RM_MEMBERS).exists()]
        if missing:
            raise FileNotFoundError(f"reward ensemble '{objective}' lacks trained parts {missing} in '{parts}'")
        val = read_pairs(data_dir / "val" / f"{objective}.jsonl")
        train = read_pairs(data_dir / "train" / f"{objective}.jsonl")
        with atomic_directory(out_dir / objective) as tmp:
            members = []
            for n in names:
                members += json.loads((parts / n / RM_MEMBERS).read_text())
                shutil.copytree(parts / n, tmp if n == "heads" else tmp / n, dirs_exist_ok=True)
                (tmp / (n if n != "heads" else "") / RM_MEMBERS).unlink()
            summary[objective] = _finish_ensemble(cfg, objective, members, tmp, val, train, policy_dir)
        shutil.rmtree(parts)
    summary["mean_ensemble_accuracy"] = fmean(s["ensemble_accuracy"][cfg.reward.aggregation] for s in summary.values())
    atomic_write_json(out_dir / SUMMARY, summary)
    return summary


def union_cycle_pairs(ws: Workspace, objective: str) -> tuple[list[dict[str, str]], list[int]]:
    """The pairs of every cycle in the workspace for one objective (TRL fields only, human labels
    in force), and the cycles they came from."""
    records, cycles = [], []
    for cycle in ws.cycle_numbers():
        path = ws.cycle_dir(cycle) / pairs_file(objective)
        if path.exists():
            records += [{k: r[k] for k in PAIR_FIELDS} for r in read_pairs(path)]
            cycles.append(cycle)
    return records, cycles


AUTO = "auto"  # the automatically labelled pairs that join the cycles' pairs, built once


def built_from(data_dir: Path, cfg: Config) -> bool:
    """Whether `data_dir` holds pairs built with the `reward.data` settings of `cfg`."""
    path = data_dir / PAIR_STATS
    return path.exists() and json.loads(path.read_text()).get("data") == cfg.reward.data.model_dump()


def prepare_preference_data(cfg: Config, ws: Workspace, data_dir: str | Path, policy_dir: str | Path) -> str:
    """Training pairs in `data_dir`: the union of the workspace's cycles 1..n when it has cycle
    data, with `reward.data.join_cycles` plus the `reward.data` pairs built from the task once into
    `<data_dir>/auto` (labelled by the task's exact judges, so they cost sampling only), and clean
    validation pairs built from the task once; else pairs sampled from the policy as before (built
    once). Returns "cycles" or "policy"."""
    from rlhfops.modeling import load_decoder

    data_dir = Path(data_dir)
    unions = {obj: union_cycle_pairs(ws, obj) for obj in cfg.reward.objectives}
    if not any(cycles for _, cycles in unions.values()):
        if not (data_dir / PAIR_STATS).exists():
            build_preference_data(cfg, data_dir, policy=load_decoder(cfg, policy_dir))
        return "policy"
    auto = data_dir / AUTO
    join = cfg.reward.data.join_cycles
    if join and not built_from(auto, cfg):
        build_preference_data(cfg, auto, policy=load_decoder(cfg, policy_dir), splits=("train",))
    stats: dict[str, Any] = {"source": "cycles", "train": {}}
    for obj, (records, cycles) in unions.items():
        if not records:
            raise ValueError(f"the workspace's cycles {cycles or ws.cycle_numbers()} hold no '{obj}' preference pairs")
        labelled = read_pairs(auto / "train" / f"{obj}.jsonl") if join else []
        write_jsonl(data_dir / "train" / f"{obj}.jsonl", records + labelled)
        stats["train"][obj] = {"pairs": len(records) + len(labelled), "cycles": cycles, "auto": len(labelled)}
    if not all((data_dir / "val" / f"{obj}.jsonl").exists() for obj in cfg.reward.objectives):
        build_preference_data(cfg, data_dir, policy=load_decoder(cfg, policy_dir), splits=("val",))
    atomic_write_json(data_dir / PAIR_STATS, stats)
    return "cycles"


def train_reward_models(
    cfg: Config,
    data_dir: str | Path,
    policy_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    *,
    workspace: Workspace | None = None,
) -> Path:
    """All objectives x members: `<out_dir>/<objective>/` ensembles and `<out_dir>/summary.json`.

    With a `workspace`, the training pairs are prepared first (`prepare_preference_data`): the
    union of its cycles' pairs when it has any, else sampled from the policy."""
    data_dir, policy_dir, out_dir = Path(data_dir), Path(policy_dir), Path(out_dir)
    if not is_model_dir(policy_dir):
        raise FileNotFoundError(f"policy directory '{policy_dir}' does not exist; train one with `rlhfops sft`")
    if cfg.reward.likelihood:
        likelihood_lm_dir(cfg, policy_dir)  # before any member trains
    if workspace is not None:
        prepare_preference_data(cfg, workspace, data_dir, policy_dir)
    summary = {}
    with Progress(disable=not progress) as bar:
        for objective in cfg.reward.objectives:
            summary[objective] = train_reward_ensemble(cfg, objective, data_dir, policy_dir, out_dir / objective, bar)
    summary["mean_ensemble_accuracy"] = fmean(s["ensemble_accuracy"][cfg.reward.aggregation] for s in summary.values())
    atomic_write_json(out_dir / SUMMARY, summary)
    return out_dir
