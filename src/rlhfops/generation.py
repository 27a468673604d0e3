"""Batched sampling and greedy decoding with per-token log-probs.

Prompts are task prompts, rendered for the model by `chat.render` (its chat template when the
tokenizer has one; `template=False` takes them as raw text, as `/v1/completions` does), and
left-padded so every row's next token sits in the last column; the KV cache is
reused between steps (passed as `cache=`, the name transformers keeps after 5.40, to models whose
forward takes it). A row stops at any of the model's stop tokens (`modeling.stop_token_ids`: the
tokenizer's eos and every eos id of `generation_config`; kept, masked in) or once its text holds
one of the `stop` strings (cut before it), and pads after. Sampling runs on the model's device: a
generator on another device (a CPU `torch.Generator` with a model on CUDA) seeds one there with a
single draw, so a seeded run is reproducible on any device. Log-probs are of
the chosen token under the distribution it was sampled from, `log_softmax(logits / temperature)`
before top-k truncation, as TRL computes them for GRPO/RLOO; with temperature 1 they are the
policy's own log-probs, the ones PPO and KL penalties need.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rlhfops.chat import render_all
from rlhfops.config import GenerationConfig
from rlhfops.modeling import model_device, stop_token_ids

# (input_ids so far (B, P+t), logits (B, V)) -> logits (B, V); e.g. ILQL's beta * (Q - V) shift.
LogitsHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Generation:
    texts: list[str]  # decoded completions, cut before eos, special tokens removed
    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    completion_ids: torch.Tensor  # (B, T) pad after eos
    completion_mask: torch.Tensor  # (B, T) 1 on generated tokens, eos included
    logprobs: torch.Tensor  # (B, T) float32, 0 where completion_mask is 0
    stopped: list[bool]  # the row ended at a stop token or stop string (False: at the length bound)


def generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """`generator` when it lives on `device` (or is None); else a generator on `device` seeded by
    one draw from it, so sampling on CUDA from a CPU-seeded generator is seeded and advances it."""
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def cache_argument(model: PreTrainedModel) -> str:
    """The name a model's forward takes its KV cache by: `cache` (transformers >= 5.24 for most
    architectures; `past_key_values` is removed in 5.40) or, for the others, `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before its first stop string, and whether one was found."""
    hits = [text.find(s) for s in stop if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def token_offsets(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[tuple[int, int]]:
    """The character span each token of `ids` covers in `tokenizer.decode(ids, skip_special_tokens=True)`
    (the text `generate` returns): an offset mapping for sampled tokens, read off decoded prefixes
    (one batched decode), so it holds for any tokenizer (special tokens cover nothing)."""
    ends = [len(t) for t in tokenizer.batch_decode([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=True)]
    return [(ends[k - 1] if k else 0, end) for k, end in enumerate(ends)]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    logits_hook: LogitsHook | None = None,
    template: bool = True,
    stop: Sequence[str] = (),
) -> Generation:
    """Complete every prompt in one batch; see the module docstring for what is returned."""
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = model_device(model)
    generator = generator_on(generator, device)
    tokenizer.padding_side = "left"
    rendered = render_all(tokenizer, prompts) if template else prompts
    enc = tokenizer(rendered, padding=True, return_tensors="pt").to(device)
    prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]
    batch = prompt_ids.shape[0]
    stop_ids, pad = stop_token_ids(tokenizer, model), tokenizer.pad_token_id
    stop_tensor = torch.tensor(stop_ids, device=device)
    cache_name = cache_argument(model)
    was_training = model.training
    model.eval()

    ids = prompt_ids
    attention_mask = prompt_mask
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at 0
    cache = DynamicCache()
    step_input, step_positions = ids, position_ids
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, logps, masks = [], [], []
    # A hook with `needs_hidden = True` also gets the last position's final hidden state (B, H).
    needs_hidden = bool(getattr(logits_hook, "needs_hidden", False))
    for _ in range(max_new_tokens):
        out = model(
            input_ids=step_input,
            attention_mask=attention_mask,
            position_ids=step_positions,
            use_cache=True,
            output_hidden_states=needs_hidden,
            **{cache_name: cache},
        )
        logits = out.logits[:, -1, :].float()  # (B, V)
        if needs_hidden:
            logits = logits_hook(ids, logits, out.hidden_states[-1][:, -1].float())
        elif logits_hook is not None:
            logits = logits_hook(ids, logits)
        if greedy:
            logp = torch.log_softmax(logits, dim=-1)
            token = logits.argmax(dim=-1)
        else:
            logp = torch.log_softmax(logits / temperature, dim=-1)
            sample_logits = logp
            if top_k > 0 and top_k < logp.shape[-1]:
                kth = torch.topk(logp, top_k, dim=-1).values[:, -1:]
                sample_logits = logp.masked_fill(logp < kth, float("-inf"))
            probs = torch.softmax(sample_logits, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        token_logp = logp.gather(-1, token[:, None]).squeeze(-1)
        alive = ~done
        token = torch.where(alive, token, torch.full_like(token, pad))
        tokens.append(token)
        logps.append(torch.where(alive, token_logp, torch.zeros_like(token_logp)))
        masks.append(alive.long())
        done = done | torch.isin(token, stop_tensor)
        if stop:
            done = done | _holds_stop(tokenizer, torch.stack(tokens, 1), torch.stack(masks, 1), alive, stop)
        if bool(done.all()):
            break
        ids = torch.cat([ids, token[:, None]], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(token)[:, None]], dim=1)
        step_input = token[:, None]
        step_positions = step_positions[:, -1:] + 1

    if was_training:
        model.train()
    completion_ids = torch.stack(tokens, dim=1)
    completion_mask = torch.stack(masks, dim=1)
    texts, stopped = decode_completions(tokenizer, completion_ids, completion_mask, stop_ids, stop)
    logprobs = torch.stack(logps, dim=1)
    return Generation(texts, prompt_ids, prompt_mask, completion_ids, completion_mask, logprobs, stopped)


def _holds_stop(
    tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor, mask: torch.Tensor, alive: torch.Tensor, stop: Sequence[str]
) -> torch.Tensor:
    """(B,) bool: the row was alive this step and its text so far holds a stop string."""
    hit = []
    for row, m, a in zip(ids.tolist(), mask.tolist(), alive.tolist(), strict=True):
        text = tokenizer.decode([t for t, k in zip(row, m, strict=True) if k], skip_special_tokens=True)
        hit.append(bool(a) and cut_at_stop(text, stop)[1])
    return torch.tensor(hit, device=ids.device)


def decode_completions(
    tokenizer: PreTrainedTokenizerBase,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    stop_ids: Sequence[int],
    stop: Sequence[str] = (),
) -> tuple[list[str], list[bool]]:
    """Per row: the text (a final stop token left off, special tokens removed, cut before a stop
    string) and whether the row stopped (at a stop token or string)."""
    texts, stopped = [], []
    for row, mask in zip(completion_ids.tolist(), completion_mask.tolist(), strict=True):
        kept = [t for t, m in zip(row, mask, strict=True) if m]
        ended = bool(kept) and kept[-1] in stop_ids
        text, cut = cut_at_stop(tokenizer.decode(kept[:-1] if ended else kept, skip_special_tokens=True), stop)
        texts.append(text)
        stopped.append(ended or cut)
    return texts, stopped


def generate_batched(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    **kwargs,
) -> list[str]:
    """Texts for any number of prompts, `batch_size` at a time."""
    texts: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts += generate(model, tokenizer, prompts[i : i + batch_size], max_new_tokens, **kwargs).texts
    return texts


def sample_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    gen: GenerationConfig,
    seed: int,
    **overrides,
) -> list[str]:
    """One completion per prompt decoded as `generation.*` says, with a generator seeded by `seed`;
    `overrides` replace any `generate` argument (e.g. `greedy=True`, `max_new_tokens=...`)."""
    kwargs = {
        "max_new_tokens": gen.max_new_tokens,
        "temperature": gen.temperature,
        "top_k": gen.top_k,
        "stop": gen.stop,
        "generator": torch.Generator().manual_seed(seed),
        **overrides,
    }
    return generate_batched(model, tokenizer, prompts, gen.batch_size, **kwargs)
