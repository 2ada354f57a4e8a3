"""The encoder-decoder Transformer (Vaswani et al., 2017), written from scratch in plain PyTorch.

Masks are boolean. An *attention mask* says True where a query may attend to a key (the
convention of F.scaled_dot_product_attention); a *padding mask* says True at padding positions.
Sequences are right-padded with PAD_ID, so the decoder's causal mask alone keeps every real
target position away from padding, and no attention row is ever fully masked (every source
ends with eos, every target starts with bos).

    encode(src)                         -> memory            (batch, src_len, d_model)
    decode(tgt_in, memory, src_pad)     -> decoder states    (batch, tgt_len, d_model), teacher-forced
    forward(src, tgt_in)                -> logits            (batch, tgt_len, tgt_vocab)
    start_state(memory, src_pad, beams) -> DecoderState      cross-attention keys/values, once per source
    decode_step(tokens, state)          -> logits            (batch, tgt_vocab), cache grows by one

Training does not compute whole logits: mtkit.model.loss projects decoder states chunk by chunk.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mtkit.config import ModelConfig
from mtkit.data.tokenizer import PAD_ID

KV = tuple[Tensor, Tensor]  # keys, values: (batch, n_heads, len, d_head) each
LayerCalls = tuple[Sequence[Callable[..., Tensor]], Sequence[Callable[..., Tensor]]]  # encoder's, decoder's


def sinusoidal_table(n_positions: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)  # (n, 1)
    inv_freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: d_model // 2])
    return table.float()


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(d_model), plus positions, then dropout."""

    table: Tensor  # (max_positions, d_model) sinusoidal positions, a non-persistent buffer

    def __init__(self, tokens: nn.Embedding, cfg: ModelConfig):
        super().__init__()
        self.tokens, self.scale = tokens, math.sqrt(cfg.d_model)
        self.learned = nn.Embedding(cfg.max_positions, cfg.d_model) if cfg.positions == "learned" else None
        if self.learned is None:
            self.register_buffer("table", sinusoidal_table(cfg.max_positions, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.max_positions = cfg.max_positions

    def forward(self, ids: Tensor, start: int = 0) -> Tensor:  # ids (batch, len)
        end = start + ids.size(1)
        if end > self.max_positions:
            raise ValueError(f"sequence of {end} positions exceeds model.max_positions={self.max_positions}")
        pos = self.learned.weight[start:end] if self.learned is not None else self.table[start:end]  # (len, d)
        return self.dropout(self.tokens(ids) * self.scale + pos)  # (batch, len, d_model)


class Attention(nn.Module):
    """Multi-head scaled dot-product attention of projected queries, keys and values, then the
    output projection. SelfAttention and CrossAttention add the input projections."""

    out_proj: nn.Linear

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.d_head, self.d_model = cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.d_model
        self.attn_dropout = cfg.attn_dropout

    def split_heads(self, x: Tensor) -> Tensor:  # (batch, len, d_model) -> (batch, heads, len, d_head)
        return x.view(x.size(0), x.size(1), self.n_heads, self.d_head).transpose(1, 2)

    def forward(
        self,
        q: Tensor,  # queries (batch, heads, q_len, d_head)
        kv: KV,  # keys/values (batch, heads, k_len, d_head)
        mask: Tensor | None = None,  # (batch, 1, 1, k_len), True = may attend
        causal: bool = False,
        sink: list[Tensor] | None = None,  # records the probabilities (non-causal attention only)
    ) -> Tensor:
        """Attention of whole sequences (training, teacher-forced decoding): (batch, q_len, d_model)."""
        k, v = kv
        if sink is not None:
            out = self._explicit(q, k, v, mask, sink)
        else:
            p = self.attn_dropout if self.training else 0.0
            with _kernel_choice(q):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out_proj(self.merge_heads(out))

    def step(
        self,
        q: Tensor,  # one query per decoder row (rows, heads, 1, d_head)
        kv: KV,  # keys/values (rows / beams, heads, k_len, d_head)
        mask: Tensor | None = None,  # (rows / beams, 1, 1, k_len), True = may attend
        beams: int = 1,  # consecutive decoder rows per key row (beam search)
        sink: list[Tensor] | None = None,  # records the probabilities
    ) -> Tensor:
        """Attention of one decoding step: (rows, 1, d_model). A source's beams query its keys
        together, one matmul instead of `beams` copies of the keys; on a CPU two small matmuls
        beat torch's flash kernel at one query (1.8x)."""
        k, v = kv
        rows = q.size(0)
        if beams > 1:
            q = q.reshape(rows // beams, beams, self.n_heads, self.d_head).transpose(1, 2)  # (sources, heads, beams, d_head)
        if sink is not None or q.device.type == "cpu":
            out = self._explicit(q, k, v, mask, sink)
        else:
            with _kernel_choice(q):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        # (sources, heads, beams, d_head) -> (rows, 1, d_model): one row per beam again
        return self.out_proj(out.transpose(1, 2).reshape(rows, 1, -1))

    def merge_heads(self, x: Tensor) -> Tensor:  # (batch, heads, len, d_head) -> (batch, len, d_model)
        return x.transpose(1, 2).reshape(x.size(0), x.size(2), -1)

    @staticmethod
    def _explicit(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, sink: list[Tensor] | None) -> Tensor:
        """The same attention (without causal masking or dropout) computed step by step; the
        probabilities are recorded into sink when one is given."""
        scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(q.size(-1)))  # (batch, heads, q_len, k_len)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = scores.softmax(-1)
        if sink is not None:
            sink.append(probs.detach())
        return probs @ v


class SelfAttention(Attention):
    """Queries, keys and values from one (3 d_model, d_model) projection, one matmul (the layout of
    nn.MultiheadAttention's in_proj_weight)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.in_proj = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)

    def project(self, x: Tensor) -> tuple[Tensor, KV]:
        """Queries and (keys, values) of x, each (batch, heads, len, d_head)."""
        q, k, v = self.in_proj(x).split(self.d_model, dim=-1)  # (batch, len, d_model) each
        return self.split_heads(q), (self.split_heads(k), self.split_heads(v))

    def project_step(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The queries (rows, heads, 1, d_head) of one position per row, and its keys and values
        together, (2, rows, heads, 1, d_head): the layout of DecoderCache."""
        y = self.in_proj(x)  # (rows, 1, 3 d_model)
        kv = y[..., self.d_model:].view(y.size(0), 1, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return self.split_heads(y[..., : self.d_model]), kv


class CrossAttention(Attention):
    """Queries from the decoder (q_proj); keys and values from the encoder's memory, computed once
    per sentence (kv_proj, (2 d_model, d_model))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv_proj = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)

    def project_q(self, x: Tensor) -> Tensor:
        return self.split_heads(self.q_proj(x))

    def project_kv(self, memory: Tensor) -> KV:
        k, v = self.kv_proj(memory).split(self.d_model, dim=-1)
        return self.split_heads(k), self.split_heads(v)


# On CUDA the backends are chosen, not left to torch: the memory-efficient kernel, never cuDNN's,
# which builds a new execution plan (~15 ms) for every new (batch, length) shape, and token-budget
# batches bring a new shape at nearly every step. Nor flash attention, torch's first choice without
# a mask: on an H100 its causal forward+backward took up to 1.75x as long as the memory-efficient
# kernel's at sentence lengths (1.07x at 128 positions), and training `base` ran 1.17x faster without it
# (recipes/benchmarks, 2026-11-23). The math kernel is the fallback.
CUDA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _kernel_choice(q: Tensor):
    """CUDA: CUDA_BACKENDS. CPU in bf16/fp16: the math kernel, several times faster there than the
    flash one (whose backward is slow on CPUs). CPU fp32: torch's own choice."""
    if q.device.type == "cuda":
        return sdpa_kernel(CUDA_BACKENDS)
    if q.dtype != torch.float32:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(cfg.d_model, cfg.d_ff), nn.Linear(cfg.d_ff, cfg.d_model)
        self.activation = F.relu if cfg.activation == "relu" else F.gelu
        self.dropout = nn.Dropout(cfg.activation_dropout)

    def forward(self, x: Tensor) -> Tensor:  # (batch, len, d_model)
        h = self.activation(self.fc1(x))
        return self.fc2(self.dropout(h) if self.training else h)


class Residual(nn.Module):
    """The norm and dropout around a sub-layer f: pre-norm x + dropout(f(norm(x))), post-norm
    norm(x + dropout(f(x))). A layer calls input(x), computes f, then output(x, f's result)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm, self.dropout, self.pre = nn.LayerNorm(cfg.d_model), nn.Dropout(cfg.dropout), cfg.norm == "pre"

    def input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre else x

    def output(self, x: Tensor, y: Tensor) -> Tensor:
        x = x + (self.dropout(y) if self.training else y)
        return x if self.pre else self.norm(x)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn, self.ff = SelfAttention(cfg), FeedForward(cfg)
        self.attn_res, self.ff_res = Residual(cfg), Residual(cfg)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:  # x (batch, src_len, d_model)
        h = self.attn_res.input(x)
        x = self.attn_res.output(x, self.self_attn(*self.self_attn.project(h), src_mask))
        h = self.ff_res.input(x)
        return self.ff_res.output(x, self.ff(h))  # (batch, src_len, d_model)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn, self.cross_attn, self.ff = SelfAttention(cfg), CrossAttention(cfg), FeedForward(cfg)
        self.self_res, self.cross_res, self.ff_res = Residual(cfg), Residual(cfg), Residual(cfg)

    def forward(
        self,
        x: Tensor,  # (batch, tgt_len, d_model)
        memory_kv: KV,  # cross-attention keys/values from the encoder output
        src_mask: Tensor,  # (batch, 1, 1, src_len)
        sink: list[Tensor] | None = None,
    ) -> Tensor:
        """The whole target at once, under the causal mask (training, teacher-forced decoding)."""
        h = self.self_res.input(x)
        x = self.self_res.output(x, self.self_attn(*self.self_attn.project(h), causal=True))
        h = self.cross_res.input(x)
        x = self.cross_res.output(x, self.cross_attn(self.cross_attn.project_q(h), memory_kv, src_mask, sink=sink))
        h = self.ff_res.input(x)
        return self.ff_res.output(x, self.ff(h))  # (batch, tgt_len, d_model)

    def step(
        self,
        x: Tensor,  # (rows, 1, d_model): the newest position of each decoder row
        memory_kv: KV,  # cross-attention keys/values, one row per source
        src_mask: Tensor,  # (sources, 1, 1, src_len)
        cache: DecoderCache,  # this layer's keys/values of the earlier positions; grows by one
        beams: int = 1,  # decoder rows per source (DecoderState.beams)
        sink: list[Tensor] | None = None,
    ) -> Tensor:
        """One decoding step: the new position sees every cached one (no mask needed)."""
        h = self.self_res.input(x)
        q, kv = self.self_attn.project_step(h)
        x = self.self_res.output(x, self.self_attn.step(q, cache.append(kv)))
        h = self.cross_res.input(x)
        x = self.cross_res.output(x, self.cross_attn.step(self.cross_attn.project_q(h), memory_kv, src_mask, beams,
                                                          sink))
        h = self.ff_res.input(x)
        return self.ff_res.output(x, self.ff(h))  # (rows, 1, d_model)


@dataclass
class DecoderCache:
    """Self-attention keys and values of the positions decoded so far, for one layer, in one tensor
    (2, rows, heads, len, d_head): one copy a step to grow it, one to reorder it."""

    kv: Tensor | None = None

    def append(self, new: Tensor) -> KV:
        """new: (2, rows, heads, 1, d_head) -> the keys and values so far, (rows, heads, len, d_head) each."""
        self.kv = new.contiguous() if self.kv is None else torch.cat([self.kv, new], dim=3)
        return self.kv[0], self.kv[1]


@dataclass
class DecoderState:
    """Everything incremental decoding carries from one step to the next."""

    memory_kv: list[KV]  # per layer, cross-attention keys/values computed once, one row per source
    src_mask: Tensor  # (sources, 1, 1, src_len)
    caches: list[DecoderCache]  # one row per decoder row: source s owns rows s*beams .. s*beams+beams-1
    beams: int = 1
    step: int = 0
    attention: list[Tensor] | None = field(default=None)  # cross-attention probabilities, when recorded

    def reorder(self, index: Tensor, same_sources: bool = False) -> None:
        """Keep decoder rows `index` (rows,). same_sources: each row keeps a row of its own source
        (beams reordered), so the sources' keys/values stay as they are; otherwise the rows come in
        whole groups of `beams`, in order, e.g. the rows of the sentences still searching."""
        if not same_sources:
            sources = index if self.beams == 1 else index[:: self.beams] // self.beams
            self.memory_kv = [(k.index_select(0, sources), v.index_select(0, sources)) for k, v in self.memory_kv]
            self.src_mask = self.src_mask.index_select(0, sources)
        if self.attention is not None:
            self.attention = [a.index_select(0, index) for a in self.attention]
        for cache in self.caches:
            if cache.kv is not None:
                cache.kv = cache.kv.index_select(1, index)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, init_weights: bool = True):  # False: weights come from a checkpoint
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        tgt_tokens = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        src_tokens = tgt_tokens if cfg.share_embeddings else nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.src_embed, self.tgt_embed = Embedding(src_tokens, cfg), Embedding(tgt_tokens, cfg)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_dec_layers))
        pre = cfg.norm == "pre"
        self.enc_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.dec_norm = nn.LayerNorm(cfg.d_model) if pre else nn.Identity()
        self.output = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        if init_weights:
            self._init_weights()
        if cfg.tie_output:
            self.output.weight = tgt_tokens.weight

    def _init_weights(self) -> None:
        """Xavier-uniform linear layers (each of q, k and v as its own d_model x d_model matrix),
        N(0, 1/d_model) embeddings with a zero padding row."""
        fused = {id(m.in_proj) for m in self.modules() if isinstance(m, SelfAttention)}
        fused |= {id(m.kv_proj) for m in self.modules() if isinstance(m, CrossAttention)}
        for module in self.modules():
            if isinstance(module, nn.Linear):
                for block in module.weight.split(self.cfg.d_model) if id(module) in fused else [module.weight]:
                    nn.init.xavier_uniform_(block)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.cfg.d_model**-0.5)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def _decoder_layers(self) -> list[DecoderLayer]:
        return [cast(DecoderLayer, layer) for layer in self.decoder]

    @staticmethod
    def attention_mask(src_pad_mask: Tensor) -> Tensor:  # (batch, src_len) -> (batch, 1, 1, src_len)
        return (~src_pad_mask)[:, None, None, :]

    def encode(self, src: Tensor, layers: Sequence[Callable[..., Tensor]] | None = None) -> Tensor:
        """(batch, src_len) -> (batch, src_len, d_model). layers: callables to run in place of the
        encoder's layers (compiled ones, see mtkit.model.loss)."""
        mask = self.attention_mask(src.eq(PAD_ID))
        x = self.src_embed(src)
        for layer in self.encoder if layers is None else layers:
            x = layer(x, mask)
        return self.enc_norm(x)

    def decode(
        self, tgt_in: Tensor, memory: Tensor, src_pad_mask: Tensor, sink: list[Tensor] | None = None,
        layers: Sequence[Callable[..., Tensor]] | None = None,
    ) -> Tensor:
        """Final decoder states (batch, tgt_len, d_model) of every target position, teacher-forced:
        the input of the output projection. layers: as in encode."""
        mask = self.attention_mask(src_pad_mask)
        x = self.tgt_embed(tgt_in)  # (batch, tgt_len, d_model)
        own = self._decoder_layers()
        runs: Sequence[Callable[..., Tensor]] = own if layers is None else layers
        for layer, run in zip(own, runs, strict=True):
            x = run(x, layer.cross_attn.project_kv(memory), mask, sink=sink)
        return self.dec_norm(x)

    def features(self, src: Tensor, tgt_in: Tensor, layers: LayerCalls | None = None) -> Tensor:
        """(batch, src_len), (batch, tgt_len) -> final decoder states (batch, tgt_len, d_model).
        layers: (encoder's, decoder's) callables to run in place of the layers."""
        enc, dec = layers if layers is not None else (None, None)
        return self.decode(tgt_in, self.encode(src, enc), src.eq(PAD_ID), layers=dec)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits (batch, tgt_len, tgt_vocab) of every target position, teacher-forced."""
        return self.output(self.features(src, tgt_in))

    # -------------------------------------------------------------- incremental decoding
    def start_state(self, memory: Tensor, src_pad_mask: Tensor, beams: int = 1,
                    record_attention: bool = False) -> DecoderState:
        """beams: decoder rows per source (beam search); the cross-attention keys/values are computed
        and kept once per source. Attention is recorded for one row per source only."""
        assert beams == 1 or not record_attention
        # contiguous once here, not copied again by every decoding step (they are views into kv_proj's output)
        memory_kv = [(k.contiguous(), v.contiguous()) for k, v in
                     (layer.cross_attn.project_kv(memory) for layer in self._decoder_layers())]
        caches = [DecoderCache() for _ in self.decoder]
        return DecoderState(memory_kv, self.attention_mask(src_pad_mask), caches, beams,
                            attention=[] if record_attention else None)

    def decode_step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """Logits (batch, tgt_vocab) of the next token after `tokens` (batch,), the last input."""
        x = self.tgt_embed(tokens[:, None], start=state.step)  # (batch, 1, d_model)
        sink: list[Tensor] | None = [] if state.attention is not None else None
        for layer, kv, cache in zip(self._decoder_layers(), state.memory_kv, state.caches):
            x = layer.step(x, kv, state.src_mask, cache, state.beams, sink)
        if sink and state.attention is not None:
            state.attention.append(torch.stack(sink).mean(dim=(0, 2))[:, 0])  # (batch, src_len), layers+heads
        state.step += 1
        return self.output(self.dec_norm(x))[:, 0]


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
