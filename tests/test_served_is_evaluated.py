"""What the gate evaluates is what is served: for each candidate kind a cycle may deploy (PPO, GRPO,
offline RL), `rlhfops serve` answers a fixed seed with the text the evaluation sampled for it, and the
directory is a plain causal LM that `AutoModelForCausalLM.from_pretrained` loads and decodes the same."""

from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfops.config import load_config
from rlhfops.evaluation import evaluate_dir
from rlhfops.reward.build import reward_fn
from rlhfops.rl.ilql import build_offline_data, train_offline
from rlhfops.rl.train import train_policy
from rlhfops.serving.server import create_app, start_server
from rlhfops.sft import run_sft
from rlhfops.workspace import ILQL_HEADS

N_PROMPTS = 6
FAST = [
    "policy.reward=gold",
    "policy.steps=2",
    "policy.prompts_per_step=4",
    "policy.max_new_tokens=8",
    "offline.reward=gold",
    "offline.n_prompts=8",
    "offline.samples_per_prompt=2",
    "offline.max_steps=6",
    "offline.batch_size=8",
    "offline.distill_samples_per_prompt=1",
    "offline.distill_epochs=1",
    "generation.max_new_tokens=16",
    f"eval.n_test={N_PROMPTS}",
]


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("candidates")
    cfg = load_config("smoke", FAST)
    start = run_sft(cfg, root / "start", progress=False)  # a fresh model's greedy text repeats one token
    found = {}
    for algorithm in ("ppo", "grpo"):
        group = ["policy.group_size=2"] if algorithm == "grpo" else []
        algo_cfg = load_config("smoke", [*FAST, f"policy.algorithm={algorithm}", *group])
        found[algorithm] = train_policy(algo_cfg, start, root / algorithm, progress=False)
    data = build_offline_data(cfg, start, root / "offline.jsonl", reward_fn(cfg, "gold"))
    found["offline"] = train_offline(cfg, start, data, root / "offline", progress=False)
    return found


def served(model_dir: Path, cfg, prompts: list[str], **body) -> list[str]:
    running = start_server(create_app(model_dir, "v1", cfg), "127.0.0.1", 0)
    try:
        reply = httpx.post(
            running.url + "/v1/completions",
            json={"prompt": prompts, "max_tokens": cfg.generation.max_new_tokens, **body},
            timeout=60,
        )
        reply.raise_for_status()
        return [c["text"] for c in sorted(reply.json()["choices"], key=lambda c: c["index"])]
    finally:
        running.stop()


def plain_transformers(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy decoding with nothing of rlhfops: the directory as any Hugging Face runtime loads it."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = []
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
            )
        texts.append(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return texts


@pytest.mark.parametrize("kind", ["ppo", "grpo", "offline"])
def test_served_greedy_text_is_the_evaluated_text_and_plain_transformers_agrees(candidates, kind):
    model_dir = candidates[kind]
    assert not (model_dir / ILQL_HEADS).exists()  # nothing a runtime would have to apply beside the LM
    cfg = load_config("smoke", [*FAST, "eval.greedy=true"])
    samples = evaluate_dir(cfg, model_dir)["samples"]
    prompts, evaluated = [s["prompt"] for s in samples], [s["response"] for s in samples]
    assert len(prompts) == N_PROMPTS and len(set(evaluated)) > 1
    assert served(model_dir, cfg, prompts, temperature=0) == evaluated
    assert plain_transformers(model_dir, prompts, cfg.generation.max_new_tokens) == evaluated


@pytest.mark.parametrize("kind", ["ppo", "grpo", "offline"])
@pytest.mark.parametrize("seed", [3, 11])
def test_served_sample_for_a_seed_is_the_evaluated_sample(candidates, kind, seed):
    model_dir = candidates[kind]
    cfg = load_config("smoke", [*FAST, f"seed={seed}", "eval.n_test=1", "eval.samples_per_prompt=1"])
    (sample,) = evaluate_dir(cfg, model_dir)["samples"]
    body = {"temperature": cfg.generation.temperature, "top_k": cfg.generation.top_k, "seed": seed}
    assert served(model_dir, cfg, [sample["prompt"]], **body) == [sample["response"]]
