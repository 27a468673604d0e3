"""What the stacked reward scorer costs in memory (issue 20, item 6).

`StackedLlamaScorer` copies every member weight into (K, ...) stacks. A `RewardEnsemble` builds it
when the first batch is scored, never at load time, and then lets the members go. Prints the bytes
of weights an ensemble of K full members holds after loading, after a first batch and after a
second one, on this machine's default device (`modeling.default_device()`), and the process's
peak resident memory.

    python benchmarks/stacked_memory.py                 # tiny BPE-vocabulary members, K=4
    python benchmarks/stacked_memory.py --real --members 2   # SmolLM2-135M-shaped members (random weights)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, LlamaForSequenceClassification

from rlhfops.modeling import load_tokenizer, tiny_llama_config
from rlhfops.reward.ensemble import RewardEnsemble
from rlhfops.workspace import RM_MANIFEST

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
GIB = 2**30


def write_ensemble(path: Path, config, tokenizer, members: int) -> Path:
    for k in range(members):
        torch.manual_seed(k)
        LlamaForSequenceClassification(config).save_pretrained(path / f"member_{k}")
        tokenizer.save_pretrained(path / f"member_{k}")
    manifest = {"objective": "helpfulness", "kind": "full", "max_length": 128}
    manifest["members"] = [{"name": f"member_{k}"} for k in range(members)]
    (path / RM_MANIFEST).write_text(json.dumps(manifest))
    return path


def held_bytes(ensemble: RewardEnsemble) -> tuple[int, int]:
    """(bytes of the members' weights, bytes of the stacked scorer's) the ensemble holds."""
    members = sum(p.numel() * p.element_size() for m in ensemble.models for p in m.parameters())
    stacked = sum(p.numel() * p.element_size() for p in ensemble.stacked.parameters()) if ensemble.stacked else 0
    return members, stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--real", action="store_true", help="SmolLM2-135M-Instruct's shape (rlhfops.real_model)")
    args = parser.parse_args()
    from bpe_model import TINY_BPE, TOKENIZER_DIR

    tokenizer = load_tokenizer(TOKENIZER_DIR)
    if args.real:
        from rlhfops.real_model import prepare_real_model

        config = AutoConfig.from_pretrained(prepare_real_model(), num_labels=1)
        config.pad_token_id = tokenizer.pad_token_id
        name = "SmolLM2-135M-shaped"
    else:
        config, name = tiny_llama_config(TINY_BPE, tokenizer, num_labels=1), "tiny BPE"
    with tempfile.TemporaryDirectory() as tmp:
        ensemble = RewardEnsemble(write_ensemble(Path(tmp) / "rm", config, tokenizer, args.members))
        print(f"{args.members} {name} members on {ensemble.device}; GiB of weights held (members + stacked)")
        rows = [("after loading", held_bytes(ensemble))]
        prompts, texts = ["q: 1+2?"] * 8, ["1+2=3\nanswer: 3"] * 8
        ensemble.raw_rewards(prompts, texts)
        rows.append(("after a batch of 8", held_bytes(ensemble)))
        ensemble.raw_rewards(prompts[:2], texts[:2])
        rows.append(("after a batch of 2", held_bytes(ensemble)))
        for label, (members, stacked) in rows:
            print(f"  {label:<20} {members / GIB:7.3f} + {stacked / GIB:7.3f} = {(members + stacked) / GIB:7.3f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        print(f"  peak resident memory of this process: {peak / GIB:.3f} GiB")


if __name__ == "__main__":
    main()
