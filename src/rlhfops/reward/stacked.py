"""K Llama reward models of one architecture scored in one batched pass.

Member-by-member scoring runs K forward passes of many small ops; on a CPU (and for the small
batches Best-of-N scores) the per-op overhead dominates, and at large batches the matmuls do.
`StackedLlamaScorer` stacks every weight along a leading member axis K and runs each layer as a
few ops over all K members at once, reproducing `LlamaForSequenceClassification` (tests compare
them to float tolerance):

    RMSNorm     a norm and a multiply; its weight is folded into the projection it feeds
    q, k, v     one `bmm` over K with the three projections side by side, (K, H, (nh + 2 nkv) d)
    rotary      q and k together, x cos + roll(x) sin' (sin' carries rotate_half's sign)
    attention   one SDPA over K * B sequences (grouped kv heads shared, causal kernel when the
                batch is right-padded)
    o, down     `baddbmm` over K, the residual added in the same op
    gate, up    a `bmm` over K each

It also does less work than the members do, none of which changes a score: a right-padded batch
runs its token-wise ops on the real tokens only (packed, (K, N, C)), padded back to (K * B, T)
only inside attention; and the last layer, whose output is only read at the pooled token, runs
attention queries, o-projection and MLP for that one token per sequence. `torch.func.vmap` over
`functional_call` gives the same numbers but, on this CPU, falls back to a per-member loop inside
attention and is slower than the plain loop (see benchmarks/ensemble_scoring.py).
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
        self.head_dim = models[0].model.layers[0].self_attn.head_dim
        self.eps, self.pad_token_id = cfg.rms_norm_eps, cfg.pad_token_id

        def stack(weights: list[torch.Tensor]) -> nn.Parameter:
            return nn.Parameter(torch.stack([w.detach() for w in weights]).contiguous(), requires_grad=False)

        def proj(*linears: nn.Linear, norm: nn.Module | None = None) -> torch.Tensor:
            """The linears' weights side by side as one (in, out) matrix, the RMSNorm weight that
            feeds them folded into its rows: (x * w) @ W = x @ (w[:, None] * W)."""
            weight = torch.cat([lin.weight for lin in linears]).T
            if norm is None:
                return weight
            return (norm.weight.float()[:, None] * weight.float()).to(weight.dtype)

        self.embed = stack([m.model.embed_tokens.weight for m in models])  # (K, V, H)
        self.layers = nn.ModuleList()
        for i in range(cfg.num_hidden_layers):
            blocks = [m.model.layers[i] for m in models]
            layer = nn.Module()
            layer.qkv = stack(
                [
                    proj(b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj, norm=b.input_layernorm)
                    for b in blocks
                ]
            )  # (K, H, (nh + 2 nkv) d)
            layer.o = stack([proj(b.self_attn.o_proj) for b in blocks])  # (K, nh d, H)
            layer.gate = stack([proj(b.mlp.gate_proj, norm=b.post_attention_layernorm) for b in blocks])  # (K, H, I)
            layer.up = stack([proj(b.mlp.up_proj, norm=b.post_attention_layernorm) for b in blocks])
            layer.down = stack([proj(b.mlp.down_proj) for b in blocks])  # (K, I, H)
            self.layers.append(layer)
        self.score = stack([proj(m.score, norm=m.model.norm)[:, 0] for m in models])  # (K, H), final norm folded in
        self.register_buffer("inv_freq", models[0].model.rotary_emb.inv_freq.detach().clone(), persistent=False)

    def _rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (N,) -> cos, sin' (N, 1, d) with rotate_half(x) sin = roll(x, d/2) sin'."""
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (N, d/2)
        cos = torch.cat((freqs, freqs), dim=-1).cos()
        sin = torch.cat((-freqs.sin(), freqs.sin()), dim=-1)
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]

    def _qkv(self, h: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """(K, N, H) -> (K, N, (nh + 2 nkv) d): the projections, q and k rotated in place."""
        qkv = torch.bmm(h, weight)
        qk = qkv[..., : (self.n_heads + self.n_kv) * self.head_dim].unflatten(-1, (-1, self.head_dim))
        rolled = qk.roll(self.head_dim // 2, dims=-1)
        qk.mul_(cos).addcmul_(rolled, sin)
        return qkv

    def _heads(self, qkv: torch.Tensor, batch: int) -> list[torch.Tensor]:
        """(K, B * T, (nh + 2 nkv) d) -> q (K B, nh, T, d), k and v (K B, nkv, T, d), as views."""
        K, BT, _ = qkv.shape
        heads = qkv.view(K * batch, BT // batch, -1, self.head_dim).transpose(1, 2)
        return list(heads.split((self.n_heads, self.n_kv, self.n_kv), dim=1))

    def _mlp(self, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        """x + down(silu(gate h) * up h), h = rms(x); (K, N, H) -> (K, N, H)."""
        h = self._norm(x)
        # two products rather than one of (K, H, 2 I): silu is several times slower on a strided half
        act = torch.nn.functional.silu(torch.bmm(h, layer.gate)).mul_(torch.bmm(h, layer.up))
        return torch.baddbmm(x, act, layer.down)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """x / rms(x) in float32, as LlamaRMSNorm computes it (its weight is folded into the next
        projection); two passes over x, where `rms_norm` on a CPU takes five."""
        scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
        scale = scale.square_().div_(x.shape[-1]).add_(self.eps).rsqrt_()
        return (x * scale).to(x.dtype)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> rewards (K, B), as each member would score them."""
        sdpa = torch.nn.functional.scaled_dot_product_attention
        B, T = input_ids.shape
        K, dev = self.embed.shape[0], input_ids.device
        keep = attention_mask.bool()
        lengths, pos = keep.sum(-1), torch.arange(T, device=dev)
        # The rightmost non-pad token, as LlamaForSequenceClassification pools.
        last = (pos * (input_ids != self.pad_token_id)).argmax(-1)  # (B,)
        # Right padding (as `RewardEnsemble.encode` pads) with the pooled token among the real ones:
        # real tokens only attend real tokens under the causal mask, so pads need not be computed.
        packed = bool(torch.equal(keep, pos < lengths[:, None]) and (last < lengths).all())
        flat = keep.flatten().nonzero()[:, 0] if packed and not keep.all() else None  # real tokens of (B * T,)
        starts = lengths.cumsum(0) - lengths if flat is not None else torch.arange(B, device=dev) * T
        pooled = starts + last  # (B,) rows of the token axis N
        if packed:
            mask = None
        else:  # any other mask as the members apply it: causal and the keys it keeps
            allowed = pos[None, :] <= pos[:, None]
            mask = (allowed[None, None] & keep[:, None, None, :]).repeat(K, 1, 1, 1)  # (K B, 1, T, T)
        group = {"enable_gqa": True} if self.n_heads != self.n_kv else {}

        buffer = None if flat is None else self.embed.new_zeros(K, B * T, self.layers[0].qkv.shape[-1])

        def padded(t: torch.Tensor) -> torch.Tensor:  # (K, N, C) -> (K, B * T, C), zeros at the pads
            return t if buffer is None else buffer.index_copy_(1, flat, t)  # one buffer: pads stay zero

        tokens = input_ids.flatten() if flat is None else input_ids.flatten()[flat]  # (N,)
        x = self.embed.index_select(1, tokens)  # (K, N, H)
        cos, sin = self._rotary(pos.repeat(B) if flat is None else pos.repeat(B)[flat], x.dtype)
        *inner, final = self.layers
        for layer in inner:
            q, k, v = self._heads(padded(self._qkv(self._norm(x), layer.qkv, cos, sin)), B)
            attn = sdpa(q, k, v, attn_mask=mask, is_causal=mask is None, **group)  # (K B, nh, T, d)
            attn = attn.transpose(1, 2).reshape(K, B * T, -1)
            x = torch.baddbmm(x, attn if flat is None else attn.index_select(1, flat), layer.o)
            x = self._mlp(x, layer)
        # The last layer: keys and values of every token, everything else at the pooled one.
        qkv = self._qkv(self._norm(x), final.qkv, cos, sin)
        _, k, v = self._heads(padded(qkv), B)
        q = (
            qkv.index_select(1, pooled)[..., : self.n_heads * self.head_dim]
            .reshape(K * B, 1, self.n_heads, -1)
            .transpose(1, 2)
        )
        mask = ((pos[None, :] <= last[:, None]) & keep).repeat(K, 1)[:, None, None, :]  # (K B, 1, 1, T)
        attn = sdpa(q, k, v, attn_mask=mask, **group).transpose(1, 2).reshape(K, B, -1)  # (K, B, nh d)
        x = self._mlp(torch.baddbmm(x.index_select(1, pooled), attn, final.o), final)  # (K, B, H)
        return torch.bmm(self._norm(x), self.score[:, :, None])[..., 0]
