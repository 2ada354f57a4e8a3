"""The training objective: label-smoothed cross-entropy fused with the output projection.

The target distribution is (1 - eps) on the reference token plus eps / V spread over the whole
vocabulary (as torch's `cross_entropy(label_smoothing=eps)`), padding positions ignored.

The (tokens x vocabulary) logits are the largest tensors of training by far (8k tokens x 8k
vocabulary is 256 MB in float32), and on a CPU the passes over them cost more than the matmuls.
So the logits are never materialised whole: the forward pass projects a chunk of hidden states
at a time, takes one float32 log-softmax, and, when gradients are wanted, turns that same buffer
in place into softmax - target and multiplies it straight back into the gradients of the hidden
states and of the projection. Backward then only scales those two small saved tensors by the
incoming gradient. The chunk buffers are a few MB and reused, where whole-logit buffers were
fresh pages from the kernel at every step (12x fewer page faults per update on Multi30k), and
peak memory no longer grows with batch x vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtkit.model import Transformer

# Elements of one float32 chunk of logits: 16 MB, under glibc's mmap threshold on a CPU (so the
# buffers are reused rather than page-faulted in afresh); large enough that each launch counts on a GPU.
CHUNK_ELEMENTS = {"cpu": 1 << 22}
CHUNK_ELEMENTS_DEFAULT = 1 << 26


def _scored_rows(target: Tensor, ignore_index: int) -> Tensor | None:
    """Indices of the real (non-padding) target positions on a CPU, where skipping padding saves
    compute; None elsewhere: every row is scored and padding masked, since counting the real rows
    would make the host wait for the GPU at every step."""
    return target.ne(ignore_index).nonzero().squeeze(1) if target.device.type == "cpu" else None


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
            real = None if rows is not None else t.ne(ignore_index).float()  # (n, 1): 0 at padding
            log_probs = torch.log_softmax(h @ w.T, dim=-1, dtype=torch.float32)  # (n, V)
            token_nll = -log_probs.gather(1, t)  # (n, 1)
            uniform = -log_probs.mean(dim=-1, keepdim=True)  # (n, 1) cross-entropy with the uniform target
            if real is not None:
                token_nll, uniform = token_nll * real, uniform * real
            loss += (1 - eps) * token_nll.sum() + eps * uniform.sum()
            nll += token_nll.sum()
            if with_grad:
                assert grad_hidden is not None and grad_weight is not None
                # d loss / d logits = softmax - (1 - eps) onehot - eps / V, in the log-softmax's buffer
                grad = log_probs.exp_().sub_(eps / vocab)
                grad.scatter_add_(1, t, grad.new_full(t.shape, eps - 1.0))
                if real is not None:
                    grad.mul_(real)
                grad_logits = grad.to(dtype)
                grad_hidden[idx] = (grad_logits @ w).float()
                grad_weight += grad_logits.T @ h
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
    return _ProjectedLabelSmoothedCE.apply(
        hidden.reshape(-1, hidden.size(-1)), weight, target.reshape(-1), eps, ignore_index, dtype, with_grad)


class LabelSmoothedObjective(nn.Module):
    """The training forward of a Transformer: (summed label-smoothed loss, summed nll) of a batch.
    A module so that DistributedDataParallel wraps the loss with the model. With compile=True the
    encoder-decoder (`features`) is compiled with dynamic shapes (one graph for every batch shape);
    the chunked loss, a Python loop over chunks, stays eager."""

    def __init__(self, model: Transformer, label_smoothing: float, ignore_index: int, compile: bool = False):
        super().__init__()
        self.model, self.label_smoothing, self.ignore_index = model, label_smoothing, ignore_index
        self.features = torch.compile(model.features, dynamic=True) if compile else model.features

    def forward(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> tuple[Tensor, Tensor]:
        return projected_label_smoothed_nll(self.features(src, tgt_in), self.model.output.weight, tgt_out,
                                            self.label_smoothing, self.ignore_index)
