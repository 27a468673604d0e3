"""Fused vs member-by-member reward-ensemble scoring, measured on this machine.

    python benchmarks/ensemble_scoring.py [--members 5] [--repeats 5]

K reward models of the tiny Llama architecture (`configs/tiny.yaml`) score the same batch of
(prompt, response) texts three ways: member by member (K forward passes), the stacked scorer
(one pass over weights stacked along K; `reward/stacked.py`), and `kind: heads` (one shared
trunk pass plus K linear heads). Prints seconds per call and the speed-up over member by member
for several batch sizes; numbers are medians of `--repeats` timed calls after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaForSequenceClassification, LlamaModel

from rlhfops.config import Config
from rlhfops.modeling import build_char_tokenizer, tiny_llama_config
from rlhfops.reward.ensemble import pooled_last_token
from rlhfops.reward.stacked import StackedLlamaScorer
from rlhfops.tasks.arithmetic import ArithmeticTask


def median_seconds(fn, repeats: int, *args) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--out", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args()

    cfg = Config()
    tok = build_char_tokenizer()
    tok.padding_side = "right"
    llama = tiny_llama_config(cfg.model, tok, num_labels=1)
    torch.manual_seed(0)
    members = [LlamaForSequenceClassification(llama).eval() for _ in range(args.members)]
    stacked = StackedLlamaScorer(members)
    trunk = LlamaModel(llama).eval()
    heads = torch.randn(args.members, cfg.model.hidden_size)
    examples = ArithmeticTask(cfg.task).examples("test", max(args.batches))
    texts = [ex.prompt + ex.reference + tok.eos_token for ex in examples]

    def member_by_member(ids, mask):
        return [member(input_ids=ids, attention_mask=mask).logits for member in members]

    def shared_trunk(ids, mask):
        hidden = trunk(input_ids=ids, attention_mask=mask).last_hidden_state
        return heads @ pooled_last_token(hidden, ids, tok.pad_token_id).T

    print(
        f"K={args.members} members, {sum(p.numel() for p in members[0].parameters()):,} parameters each, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'batch':>6} {'member-by-member s':>19} {'stacked s':>10} {'ratio':>6} {'heads s':>9} {'ratio':>6}")
    rows = []
    with torch.no_grad():
        for b in args.batches:
            enc = tok(texts[:b], padding=True, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            seq = median_seconds(member_by_member, args.repeats, ids, mask)
            fused = median_seconds(stacked, args.repeats, ids, mask)
            shared = median_seconds(shared_trunk, args.repeats, ids, mask)
            rows.append({"batch": b, "member_by_member_s": seq, "stacked_s": fused, "heads_s": shared})
            print(f"{b:>6} {seq:>19.4f} {fused:>10.4f} {seq / fused:>5.2f}x {shared:>9.4f} {seq / shared:>5.2f}x")

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"members": args.members, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
