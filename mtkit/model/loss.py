"""The training objective: label-smoothed cross-entropy fused with the output projection.

The target distribution is (1 - eps) on the reference token plus eps / V spread over the whole
vocabulary (as torch's `cross_entropy(label_smoothing=eps)`), padding positions ignored.

The (tokens x vocabulary) logits are the largest tensors of training by far (8k tokens x 8k
vocabulary is 256 MB in float32), and on a CPU the passes over them cost more than the matmuls.
So the logits are never materialised whole: the forward pass projects a chunk of hidden states
at a time, takes its softmax (in the compute dtype, accumulated in float32), and, when gradients
are wanted, turns that same buffer in place into softmax - target and multiplies it straight back
into the gradients of the hidden states and of the projection. Backward then only scales those
two small saved tensors by the incoming gradient. The chunk buffers are reused, where whole-logit
buffers were fresh pages from the kernel at every step (12x fewer page faults per update on
Multi30k), and peak memory no longer grows with batch x vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtkit.model.transformer import LayerCalls, Transformer

# Elements of one chunk of logits. CPU: 16 MB in float32, under glibc's mmap threshold (so the
# buffers are reused rather than page-faulted in afresh). GPU: 256 MB in bf16, large enough that
# few chunks add into the float32 gradient of the projection.
CHUNK_ELEMENTS = {"cpu": 1 << 22}
CHUNK_ELEMENTS_DEFAULT = 1 << 27


def _scored_rows(target: Tensor, ignore_index: int) -> Tensor | None:
    """Indices of the real (non-padding) target positions on a CPU, where skipping padding saves
    compute; None elsewhere: every row is scored and padding masked, since counting the real rows
    would make the host wait for the GPU at every step."""
    return target.ne(ignore_index).nonzero().squeeze(1) if target.device.type == "cpu" else None


def _chunk(logits: Tensor, t: Tensor, eps: float, with_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Of one chunk of logits (n, V) in the compute dtype and its targets t (n, 1): the float32
    (n, 1) nll and cross-entropy with the uniform distribution, and, with_grad, d loss / d logits
    (n, V) in the compute dtype, written over the softmax's buffer.

    Four passes over (n, V): softmax (the kernel accumulates in float32), max, sum, and the
    subtraction of the smoothed target; nothing (n, V) in float32. The log-sum-exp comes from the
    softmax at the row's maximum, max - log p(max), which is at least 1 / V and so never underflows."""
    vocab = logits.size(1)
    probs = torch.softmax(logits, dim=-1)
    top, top_index = logits.max(dim=-1, keepdim=True)
    lse = top.float() - probs.gather(1, top_index).float().log()  # (n, 1)
    token_nll = lse - logits.gather(1, t).float()
    uniform = lse - logits.sum(dim=-1, keepdim=True, dtype=torch.float32) / vocab
    if not with_grad:
        return token_nll, uniform, None
    # softmax - (1 - eps) onehot - eps / V; the target's entry computed in float32 and rounded once
    at_target = probs.gather(1, t).float() - eps / vocab - (1 - eps)
    grad = probs.sub_(eps / vocab).scatter_(1, t, at_target.to(probs.dtype))
    return token_nll, uniform, grad


class _ProjectedLabelSmoothedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, target: Tensor, eps: float, ignore_index: int,
                dtype: torch.dtype, with_grad: bool):  # hidden (N, d), weight (V, d), target (N,)
        vocab = weight.size(0)
        rows = _scored_rows(target, ignore_index)
        w = weight.to(dtype)
        loss = hidden.new_zeros((), dtype=torch.float32)
        nll = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if with_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if with_grad else None
        step = max(1, CHUNK_ELEMENTS.get(hidden.device.type, CHUNK_ELEMENTS_DEFAULT) // vocab)
        for start in range(0, target.numel() if rows is None else rows.numel(), step):
            idx = slice(start, start + step) if rows is None else rows[start:start + step]
            h, t = hidden[idx].to(dtype), target[idx, None]
            real = None if rows is not None else t.ne(ignore_index)  # (n, 1): False at padding
            token_nll, uniform, grad = _chunk(h @ w.T, t, eps, with_grad)
            if real is not None:
                token_nll, uniform = token_nll * real, uniform * real
            loss += (1 - eps) * token_nll.sum() + eps * uniform.sum()
            nll += token_nll.sum()
            if grad is not None:
                assert grad_hidden is not None and grad_weight is not None
                if real is not None:  # padding rows: their gradient is zeroed in the (n, d) tensors, not in (n, V)
                    h = h * real.to(dtype)
                grad_h = (grad @ w).float()
                grad_hidden[idx] = grad_h if real is None else grad_h * real
                grad_weight += grad.T @ h
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_nll: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is None:
            raise RuntimeError("the loss was computed without gradients (under torch.no_grad)")
        return ((grad_hidden * grad_loss).to(ctx.hidden_dtype), (grad_weight * grad_loss).to(ctx.weight_dtype),
                None, None, None, None, None)


def projected_label_smoothed_nll(
    hidden: Tensor, weight: Tensor, target: Tensor, eps: float, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """(summed label-smoothed loss, summed nll) of the logits hidden @ weight.T over non-ignored
    positions; hidden (..., d), weight (V, d), target (...). The projection runs in the autocast
    dtype when autocast is on. Only the loss is differentiable."""
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    with_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    # the dtypes inside are explicit: autocast would run the softmax in float32 and cast its (n, V)
    # output back for each of the two matmuls (2.5x slower on an H100)
    with torch.autocast(device_type, enabled=False):
        return _ProjectedLabelSmoothedCE.apply(
            hidden.reshape(-1, hidden.size(-1)), weight, target.reshape(-1), eps, ignore_index, dtype, with_grad)


class LabelSmoothedObjective(nn.Module):
    """The training forward of a Transformer: (summed label-smoothed loss, summed nll) of a batch.
    A module so that DistributedDataParallel wraps the loss with the model.

    compile=True compiles each encoder and decoder layer with dynamic shapes (torch's "regional
    compilation"): all layers of a kind share one graph, whatever the batch shape, so compiling
    costs two small graphs instead of the whole unrolled model (over two minutes for `base` on an
    H100). Embeddings, the chunked loss (a Python loop over chunks) and the model used for
    validation and decoding stay eager."""

    def __init__(self, model: Transformer, label_smoothing: float, ignore_index: int, compile: bool = False):
        super().__init__()
        self.model, self.label_smoothing, self.ignore_index = model, label_smoothing, ignore_index
        self.layers: LayerCalls | None = None
        if compile:
            self.layers = ([torch.compile(layer, dynamic=True) for layer in model.encoder],
                           [torch.compile(layer, dynamic=True) for layer in model.decoder])

    def forward(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> tuple[Tensor, Tensor]:
        return projected_label_smoothed_nll(self.model.features(src, tgt_in, self.layers), self.model.output.weight,
                                            tgt_out, self.label_smoothing, self.ignore_index)
