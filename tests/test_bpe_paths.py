"""The commands' library paths on a real byte-level BPE tokenizer with a chat template (a tiny
random-weight Llama on SmolLM2's tokenizer, `tests/bpe_model.py`): no character-tokenizer
assumption (eos / pad from the tokenizer, a vocabulary with multi-character and "\\n\\n" tokens)
breaks evaluation, Best-of-N, reward models, the PRM, PPO / GRPO / RLOO, offline RL or serving."""

import pytest
import torch
from bpe_model import tiny_bpe_policy

from rlhfops.config import load_config

SMALL = [
    "eval.n_test=4",
    "eval.samples_per_prompt=2",
    "generation.max_new_tokens=12",
    "generation.batch_size=8",
    "policy.steps=2",
    "policy.prompts_per_step=4",
    "policy.max_new_tokens=12",
]
PPO = ["policy.eval_every=2", "policy.eval_prompts=4"]  # PPO's held-out slice (keys GRPO / RLOO reject)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return tiny_bpe_policy(tmp_path_factory.mktemp("bpe") / "sft")


def _changed(before, after) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(str(before / "model.safetensors")), load_file(str(after / "model.safetensors"))
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_eval_on_the_bpe_model(policy):
    from rlhfops.evaluation import evaluate_dir

    result = evaluate_dir(load_config("smoke", SMALL), policy)
    assert result["n"] == 8 and 0.0 <= result["gold_composite"] <= 1.0


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo"])
def test_train_policy_on_the_bpe_model(policy, tmp_path, algorithm):
    from rlhfops.rl.train import train_policy

    extra = PPO if algorithm == "ppo" else ["policy.group_size=2"]
    cfg = load_config(
        "smoke", [*SMALL, *extra, f"policy.algorithm={algorithm}", "policy.reward=gold", "policy.lr=1e-3"]
    )
    out = train_policy(cfg, policy, tmp_path / algorithm, progress=False)
    assert _changed(policy, out)


def test_dense_prm_ppo_on_the_bpe_model(policy, tmp_path):
    """The PRM is found through offset mappings, PPO's step positions per newline a token holds."""
    from rlhfops.reward.prm import train_prm_on_task
    from rlhfops.rl.train import train_policy

    cfg = load_config("smoke", [*SMALL, "prm.max_steps=2", "prm.n_prompts=16", "prm.n_val_prompts=8"])
    metrics = train_prm_on_task(cfg, policy, tmp_path / "steps", tmp_path / "prm", progress=False)
    assert "step_accuracy" in metrics
    cfg = load_config("smoke", [*SMALL, *PPO, "policy.reward=gold", "policy.dense_prm=true"])
    out = train_policy(cfg, policy, tmp_path / "ppo", prm_dir=tmp_path / "prm", progress=False)
    assert _changed(policy, out)


def test_reward_models_and_best_of_n_on_the_bpe_model(policy, tmp_path):
    from rlhfops.inference.best_of_n import evaluate_best_of_n
    from rlhfops.reward.train import train_reward_models

    cfg = load_config(
        "smoke",
        [*SMALL, "reward.members=1", "reward.max_steps=2", "reward.data.n_prompts=24", "reward.data.n_val_prompts=12"]
        + ["best_of_n.n_prompts=4", "best_of_n.n_values=[1, 2]"],
    )
    from rlhfops.workspace import Workspace

    ws = Workspace(tmp_path / "ws")  # no cycles: the pairs are sampled from the policy and the teacher
    rm = train_reward_models(cfg, tmp_path / "prefs", policy, tmp_path / "rm", progress=False, workspace=ws)
    result = evaluate_best_of_n(cfg, policy, rm, None, tmp_path / "bon.json")
    assert [row["n"] for row in result["curve"]] == [1, 2]


def test_offline_rl_on_the_bpe_model(policy, tmp_path):
    from rlhfops.evaluation import evaluate_dir
    from rlhfops.reward.build import reward_fn
    from rlhfops.rl.ilql import build_offline_data, train_offline

    cfg = load_config("smoke", [*SMALL, "offline.n_prompts=8", "offline.max_steps=2", "offline.batch_size=4"])
    data = build_offline_data(cfg, policy, tmp_path / "offline.jsonl", reward_fn(cfg, "gold"))
    out = train_offline(cfg, policy, data, tmp_path / "offline", progress=False)
    assert evaluate_dir(cfg, out)["n"] == 8


def test_chat_completion_through_the_template_on_the_bpe_model(policy, tmp_path):
    """The served reply is what the sampler gives for the same prompt string (one rendering), the
    usage counts the template's tokens, and the interaction store keeps the messages."""
    import openai

    from rlhfops.chat import prompt_of
    from rlhfops.generation import generate
    from rlhfops.modeling import load_policy
    from rlhfops.serving.server import create_app, start_server
    from rlhfops.serving.store import InteractionStore

    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+3?"}]
    store = InteractionStore(f"sqlite:///{tmp_path / 'store.db'}")
    running = start_server(create_app(policy, "v1", load_config("smoke"), store=store), "127.0.0.1", 0)
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="none")
        reply = client.chat.completions.create(model="v1", messages=messages, max_tokens=8, temperature=0)
    finally:
        running.stop()
    tokenizer, model = load_policy(policy)
    expected = generate(model, tokenizer, [prompt_of(messages)], 8, greedy=True)
    assert reply.choices[0].message.content == expected.texts[0]
    template = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert reply.usage.prompt_tokens == len(template["input_ids"]) == int(expected.prompt_mask.sum())
    rows = store.interactions()
    assert [r["prompt"] for r in rows] == [prompt_of(messages)] and "Answer briefly." in rows[0]["prompt"]


def test_conversation_prompts_from_a_dataset_on_the_bpe_model(policy, tmp_path):
    """A dataset whose prompts are message lists: the model is conditioned on the whole conversation
    through the template, and evaluation judges it like any prompt."""
    import json

    from rlhfops.evaluation import evaluate_dir
    from rlhfops.generation import generate
    from rlhfops.modeling import load_policy
    from rlhfops.tasks import make_task

    path = tmp_path / "chat.jsonl"
    rows = [
        {"prompt": [{"role": "system", "content": "Reply with a number."}, {"role": "user", "content": f"{i}+1?"}],
         "answer": str(i + 1), "response": str(i + 1), "split": "test" if i < 4 else "train"}
        for i in range(12)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config("smoke", [*SMALL, "task.name=dataset", f"task.path={path}", "eval.n_test=4", "task.n_train=8"])
    task = make_task(cfg.task)
    prompt = task.examples("test", 1)[0].prompt
    assert json.loads(prompt)[0] == {"role": "system", "content": "Reply with a number."}
    tokenizer, model = load_policy(policy)
    seen = tokenizer.decode(generate(model, tokenizer, [prompt], 1).prompt_ids[0])
    assert seen.startswith("<|im_start|>system\nReply with a number.<|im_end|>") and seen.endswith("assistant\n")
    result = evaluate_dir(cfg, policy)
    assert result["n"] == 8 and set(result["gold"]) == {"helpfulness", "conciseness"}


def test_prm_labels_follow_the_rendered_prompt_on_the_bpe_tokenizer(policy):
    """Each line's label sits on the token holding its last character (an empty line's: its newline),
    after the whole chat-template prompt."""
    from rlhfops.chat import render
    from rlhfops.modeling import load_tokenizer
    from rlhfops.reward.prm import label_positions

    tokenizer = load_tokenizer(policy)
    lines = ["2+3=5", "", "answer: 5"]
    ids, positions = label_positions(tokenizer, "q: 2+3?\n", lines, 512)
    prompt_len = len(tokenizer(render(tokenizer, "q: 2+3?\n"))["input_ids"])
    assert all(p is not None and p >= prompt_len for p in positions)
    assert [tokenizer.decode([ids[p]])[-1:] for p in positions] == ["5", "\n", "5"]
    assert positions == sorted(positions) and len(set(positions)) == 3
