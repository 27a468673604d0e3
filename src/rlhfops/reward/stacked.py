"""K Llama reward models of one architecture scored in one batched pass.

Member-by-member scoring runs K forward passes of many small ops; on a CPU (and for the small
batches Best-of-N scores) the per-op overhead dominates. `StackedLlamaScorer` stacks every
weight along a leading member axis K and runs the same ops once, each K times larger (batched
matmuls via einsum), reproducing `LlamaForSequenceClassification` exactly (tests compare them).
`torch.func.vmap` over `functional_call` gives the same numbers but, on this CPU, falls back to a
per-member loop inside attention and is slower than the plain loop (see benchmarks/).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaForSequenceClassification


def can_stack(models: list[nn.Module]) -> bool:
    """True when every member is a Llama sequence classifier with one and the same config shape."""
    if not models or not all(isinstance(m, LlamaForSequenceClassification) for m in models):
        return False
    keys = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "rms_norm_eps",
        "pad_token_id",
        "hidden_act",
    )
    first = models[0].config
    same = all(all(getattr(m.config, k) == getattr(first, k) for k in keys) for m in models)
    inv = models[0].model.rotary_emb.inv_freq
    rope = all(torch.equal(m.model.rotary_emb.inv_freq, inv) for m in models)
    return same and rope and first.hidden_act == "silu" and not getattr(first, "attention_bias", False)


class StackedLlamaScorer(nn.Module):
    def __init__(self, models: list[LlamaForSequenceClassification]):
        super().__init__()
        if not can_stack(models):
            raise ValueError("members cannot be stacked: they must be Llama sequence classifiers of one shape")
        cfg = models[0].config
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.eps, self.pad_token_id = cfg.rms_norm_eps, cfg.pad_token_id

        def stack(get, transpose: bool = False) -> nn.Parameter:
            w = torch.stack([get(m).detach() for m in models])
            # Projections are stored (K, in, out) so that each is one contiguous batched matmul.
            return nn.Parameter(w.transpose(1, 2).contiguous() if transpose else w, requires_grad=False)

        self.embed = stack(lambda m: m.model.embed_tokens.weight)  # (K, V, H)
        self.layers = nn.ModuleList()
        for i in range(cfg.num_hidden_layers):
            layer = nn.Module()
            for name, get in {
                "ln1": lambda m, i=i: m.model.layers[i].input_layernorm.weight,  # (K, H)
                "q": lambda m, i=i: m.model.layers[i].self_attn.q_proj.weight,  # -> (K, H, nh*d)
                "k": lambda m, i=i: m.model.layers[i].self_attn.k_proj.weight,  # -> (K, H, nkv*d)
                "v": lambda m, i=i: m.model.layers[i].self_attn.v_proj.weight,
                "o": lambda m, i=i: m.model.layers[i].self_attn.o_proj.weight,  # -> (K, nh*d, H)
                "ln2": lambda m, i=i: m.model.layers[i].post_attention_layernorm.weight,
                "gate": lambda m, i=i: m.model.layers[i].mlp.gate_proj.weight,  # -> (K, H, I)
                "up": lambda m, i=i: m.model.layers[i].mlp.up_proj.weight,
                "down": lambda m, i=i: m.model.layers[i].mlp.down_proj.weight,  # -> (K, I, H)
            }.items():
                setattr(layer, name, stack(get, transpose=name not in ("ln1", "ln2")))
            self.layers.append(layer)
        self.norm = stack(lambda m: m.model.norm.weight)
        self.score = stack(lambda m: m.score.weight[0])  # (K, H)
        self.register_buffer("inv_freq", models[0].model.rotary_emb.inv_freq.detach().clone(), persistent=False)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return w[:, None, None, :] * x32.to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    @staticmethod
    def _mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(K, B, T, i) @ (K, i, o) -> (K, B, T, o) as one batched matmul."""
        K, B, T, _ = x.shape
        return torch.bmm(x.reshape(K, B * T, -1), w).view(K, B, T, -1)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> rewards (K, B), as each member would score them."""
        B, T = input_ids.shape
        K = self.embed.shape[0]
        x = self.embed[:, input_ids]  # (K, B, T, H)
        pos = torch.arange(T, device=input_ids.device, dtype=torch.float)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)  # (T, d)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
        group = self.n_heads // self.n_kv
        for layer in self.layers:
            h = self._rms(x, layer.ln1)
            q = self._mm(h, layer.q).view(K, B, T, self.n_heads, self.head_dim)
            k = self._mm(h, layer.k).view(K, B, T, self.n_kv, self.head_dim)
            v = self._mm(h, layer.v).view(K, B, T, self.n_kv, self.head_dim)
            q, k, v = (t.transpose(2, 3) for t in (q, k, v))  # (K, B, heads, T, d)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            if group > 1:
                k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
            attn = torch.nn.functional.scaled_dot_product_attention(
                q.reshape(K * B, self.n_heads, T, self.head_dim),
                k.reshape(K * B, self.n_heads, T, self.head_dim),
                v.reshape(K * B, self.n_heads, T, self.head_dim),
                attn_mask=bias.repeat(K, 1, 1, 1),
            )
            attn = attn.view(K, B, self.n_heads, T, self.head_dim).transpose(2, 3).reshape(K, B, T, -1)
            x = x + self._mm(attn, layer.o)
            h = self._rms(x, layer.ln2)
            x = x + self._mm(torch.nn.functional.silu(self._mm(h, layer.gate)) * self._mm(h, layer.up), layer.down)
        x = self._rms(x, self.norm)
        # The rightmost non-pad token, as LlamaForSequenceClassification pools.
        idx = torch.arange(T, device=x.device)
        last = (idx * (input_ids != self.pad_token_id)).argmax(-1)  # (B,)
        pooled = x[:, torch.arange(B, device=x.device), last]  # (K, B, H)
        return torch.einsum("kbh,kh->kb", pooled, self.score)
