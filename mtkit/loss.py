"""Label-smoothed cross-entropy as one autograd function.

The target distribution is (1 - eps) on the reference token plus eps / V spread over the whole
vocabulary (as torch's `cross_entropy(label_smoothing=eps)`), padding positions ignored.
Forward is one fused float32 log-softmax over the (tokens x vocabulary) logits; backward turns
that same buffer, in place, into the gradient softmax - target. That is two passes over the
largest tensor of training instead of log_softmax + nll backward + their zero-filled buffers
(the loss is the largest non-matmul cost of training on a CPU), and logits in bf16/fp16 are
read directly, never copied to float32 first.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _LabelSmoothedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, eps: float, ignore_index: int):  # logits (N, V), target (N,)
        keep = target.ne(ignore_index)  # (N,)
        safe_target = target.masked_fill(~keep, 0)
        log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # (N, V)
        nll = -log_probs.gather(1, safe_target[:, None]).squeeze(1) * keep  # (N,)
        smooth = -log_probs.mean(dim=-1) * keep  # (N,) cross-entropy against the uniform distribution
        ctx.save_for_backward(log_probs, safe_target, keep)
        ctx.eps, ctx.logits_dtype = eps, logits.dtype
        return ((1 - eps) * nll + eps * smooth).sum(), nll.sum()

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_nll: Tensor):
        log_probs, target, keep = ctx.saved_tensors
        eps, vocab = ctx.eps, log_probs.size(-1)
        # d/dlogits of [g_loss * ((1-eps) nll + eps smooth) + g_nll * nll] per kept row:
        #   (g_loss + g_nll) * softmax - (g_loss (1-eps) + g_nll) * onehot - g_loss eps / V
        grad = log_probs.exp_()  # softmax, in the saved buffer (N, V)
        grad.mul_(((grad_loss + grad_nll) * keep)[:, None]).sub_((grad_loss * eps / vocab) * keep[:, None])
        grad.scatter_add_(1, target[:, None], (-(grad_loss * (1 - eps) + grad_nll) * keep)[:, None])
        return grad.to(ctx.logits_dtype), None, None, None


def label_smoothed_nll(logits: Tensor, target: Tensor, eps: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(summed label-smoothed loss, summed nll) over non-ignored positions; logits (..., V), target (...).
    Call it once per forward: its backward reuses the forward's buffer."""
    return _LabelSmoothedCE.apply(logits.reshape(-1, logits.size(-1)), target.reshape(-1), eps, ignore_index)
