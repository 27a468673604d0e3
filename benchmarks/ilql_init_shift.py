"""How far untrained ILQL heads move a policy's next-token distribution (issue 20, item 5).

Decoding adds beta * (Qhat - V) to the policy's log-probs; before training that shift should be ~0.
Prints, per model, the mean KL(shifted || policy) in nats per token over the positions of a few
task records, at `offline.decode_beta` (2), for the heads as initialised now (Q weights at std
Q_INIT_SPREAD / hidden-state norm, V at 0) and for the former fixed init (Q weights std 1e-2,
V nn.Linear's default).

    python benchmarks/ilql_init_shift.py                   # the tiny BPE test model
    python benchmarks/ilql_init_shift.py --real            # + SmolLM2-135M-Instruct (rlhfops.real_model)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from rlhfops.config import load_config
from rlhfops.modeling import ILQLHeads, ilql_decoding_shift, load_policy
from rlhfops.rl.ilql import collate, encode, hidden_norm, trunk_forward

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def shift_kl(model_dir: Path, former: bool, beta: float) -> tuple[float, float]:
    """(mean KL per token, the hidden-state norm) for heads initialised the current or former way."""
    tokenizer, model = load_policy(model_dir)
    records = [{"prompt": f"q: {a}+{a}*3?", "response": f"{a}*3={3 * a}\nanswer: {4 * a}"} for a in range(16)]
    batch = collate(encode(tokenizer, records, 128), tokenizer.pad_token_id)
    norm = hidden_norm(model, batch)
    torch.manual_seed(0)
    heads = ILQLHeads(model.config.hidden_size, model.get_output_embeddings().weight.shape[0], norm)
    if former:
        for q in (heads.q1, heads.q2, heads.target_q1, heads.target_q2):
            nn.init.normal_(q.weight, std=1e-2)
        heads.target_q1.load_state_dict(heads.q1.state_dict())
        heads.target_q2.load_state_dict(heads.q2.state_dict())
        heads.v.reset_parameters()
    with torch.no_grad():
        logits, hidden = trunk_forward(model, batch["ids"], batch["attn"])
        real = batch["attn"].bool()
        shifted = ilql_decoding_shift(logits[real], heads.qhat(hidden[real]), heads.v(hidden[real]), beta)
        p = shifted.log_softmax(-1)
        kl = (p.exp() * (p - torch.log_softmax(logits[real], -1))).sum(-1).mean().item()
    return kl, norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also SmolLM2-135M-Instruct (prepared if needed)")
    args = parser.parse_args()
    beta = load_config("tiny").offline.decode_beta
    from bpe_model import tiny_bpe_policy

    with tempfile.TemporaryDirectory() as tmp:
        models = {"tiny BPE (tests/bpe_model.py)": tiny_bpe_policy(Path(tmp) / "bpe")}
        if args.real:
            from rlhfops.real_model import prepare_real_model

            models["SmolLM2-135M-Instruct"] = prepare_real_model()
        print(f"KL(shifted || policy) per token at beta {beta}, untrained heads")
        print(f"{'model':<32} {'hidden norm':>12} {'former init':>12} {'now':>12}")
        for name, path in models.items():
            former, norm = shift_kl(path, True, beta)
            now, _ = shift_kl(path, False, beta)
            print(f"{name:<32} {norm:>12.1f} {former:>12.3g} {now:>12.3g}")


if __name__ == "__main__":
    main()
