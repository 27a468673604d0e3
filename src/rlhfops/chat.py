"""Prompts as text or as chat messages, and the one place a prompt becomes what a model reads.

A prompt travels through the cycle as one string: pairs, step data, the interaction store, the
judges and `task.example(prompt)` all key on it. A plain prompt is its text; a conversation is the
JSON array of its messages (`[{"role": "system", "content": ...}, {"role": "user", ...}]`), except
that a conversation of one user message is just that message's text, so a plain prompt and the
same words sent to `/v1/chat/completions` are one prompt. `prompt_of(messages)` makes the string,
`messages_of(prompt)` reads it back.

What a model is conditioned on is `render(tokenizer, prompt)`:

    chat template   the tokenizer has one (an instruct model): the messages through
                    `apply_chat_template(add_generation_prompt=True)`, a plain prompt as one user
                    message. A leading BOS that the tokenizer adds by itself is left off the text,
                    so `tokenizer(render(...))` gives exactly the template's ids, as TRL tokenizes
                    text prompts (no doubled BOS for Llama-3-style templates).
    none            (a base model, the built-in character model) the prompt text; a conversation
                    is its user turns' text joined.

Every path renders through here: sampling (`generation.generate`), SFT, GRPO / RLOO, reward-model
training and scoring, the PRM, offline RL and `/v1/chat/completions`; `/v1/completions` is raw text
by definition and does not.
"""

from __future__ import annotations

import json
from typing import Any

ROLES = ("system", "user", "assistant", "tool", "developer")


def is_conversation(prompt: str) -> bool:
    """Whether `prompt` is a conversation written by `prompt_of` (a JSON array of messages)."""
    if not prompt.startswith("[{"):
        return False
    try:
        return _check_messages(json.loads(prompt)) is None
    except ValueError:
        return False


def _check_messages(messages: Any) -> str | None:
    """None when `messages` is a non-empty list of {"role", "content": str} dicts; else the reason."""
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content", "name"} or "role" not in m:
            return f"message {i} must be an object with 'role' and 'content'"
        if m["role"] not in ROLES:
            return f"message {i} has role {m['role']!r}; roles are {', '.join(ROLES)}"
        if not isinstance(m.get("content"), str):
            return f"message {i} has content {m.get('content')!r}, not text"
    return None


def prompt_of(messages: list[dict[str, Any]]) -> str:
    """The prompt string of a conversation: a lone user message's text, else its JSON (ValueError
    with the reason when `messages` is not a list of role / content messages)."""
    problem = _check_messages(messages)
    if problem:
        raise ValueError(problem)
    kept = [{"role": m["role"], "content": m["content"]} for m in messages]
    if len(kept) == 1 and kept[0]["role"] == "user":
        return kept[0]["content"]
    return json.dumps(kept, ensure_ascii=False)


def messages_of(prompt: str) -> list[dict[str, str]]:
    """The messages a prompt stands for (a plain prompt: one user message)."""
    if is_conversation(prompt):
        return json.loads(prompt)
    return [{"role": "user", "content": prompt}]


def prompt_text(prompt: str) -> str:
    """The prompt as a person (or an LLM judge) reads it: a plain prompt as is, a conversation as
    `role: content` turns."""
    if not is_conversation(prompt):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in json.loads(prompt))


def has_chat_template(tokenizer: Any) -> bool:
    """Whether prompts for this tokenizer's model are rendered with a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, prompt: str) -> str:
    """The text a model with `tokenizer` is conditioned on for `prompt` (module docstring)."""
    return render_all(tokenizer, [prompt])[0]


def _adds_bos(tokenizer: Any) -> bool:
    """Whether `tokenizer(text)` puts a BOS in front by itself."""
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def render_all(tokenizer: Any, prompts: list[str]) -> list[str]:
    """`render` of each prompt; whether the tokenizer adds a BOS itself is asked once per call."""
    if not has_chat_template(tokenizer):
        return ["".join(m["content"] for m in messages_of(p) if m["role"] == "user") for p in prompts]
    bos = tokenizer.bos_token
    strip = bool(bos) and _adds_bos(tokenizer)
    texts = [tokenizer.apply_chat_template(messages_of(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    return [t[len(bos) :] if strip and t.startswith(bos) else t for t in texts]


def scored_text(tokenizer: Any, prompt: str, response: str) -> str:
    """What a reward model reads for (prompt, response): the rendered prompt, the response, eos, as
    TRL's RewardTrainer joins a text pair (prompt + chosen + eos), so scoring matches training."""
    return render(tokenizer, prompt) + response + (tokenizer.eos_token or "")
