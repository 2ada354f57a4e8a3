"""Label-smoothed cross-entropy as one autograd function.

The target distribution is (1 - eps) on the reference token plus eps / V spread over the whole
vocabulary (as torch's `cross_entropy(label_smoothing=eps)`), padding positions ignored. The
gradient with respect to the logits is written directly as softmax - target, in one pass over
the (tokens x vocabulary) matrix, instead of log_softmax + nll backward + their zero-filled
buffers: the loss is the largest non-matmul cost of training on a CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _LabelSmoothedCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, eps: float, ignore_index: int):  # logits (N, V), target (N,)
        keep = target.ne(ignore_index)  # (N,)
        safe_target = target.masked_fill(~keep, 0)
        x = logits.float()
        lse = torch.logsumexp(x, dim=-1)  # (N,)
        nll = (lse - x.gather(1, safe_target[:, None]).squeeze(1)) * keep  # (N,)
        smooth = (lse - x.mean(dim=-1)) * keep  # (N,) cross-entropy against the uniform distribution
        ctx.save_for_backward(logits, lse, safe_target, keep)
        ctx.eps = eps
        return ((1 - eps) * nll + eps * smooth).sum(), nll.sum()

    @staticmethod
    def backward(ctx, grad_loss: Tensor, grad_nll: Tensor):
        logits, lse, target, keep = ctx.saved_tensors
        eps, vocab = ctx.eps, logits.size(-1)
        # d/dlogits of [g_loss * ((1-eps) nll + eps smooth) + g_nll * nll] per kept row:
        #   (g_loss + g_nll) * softmax - (g_loss (1-eps) + g_nll) * onehot - g_loss eps / V
        scale = (grad_loss + grad_nll) * keep  # (N,)
        grad = torch.exp(logits.float() - lse[:, None])  # softmax (N, V)
        grad.mul_(scale[:, None]).sub_((grad_loss * eps / vocab) * keep[:, None])
        grad.scatter_add_(1, target[:, None], (-(grad_loss * (1 - eps) + grad_nll) * keep)[:, None].to(grad.dtype))
        return grad.to(logits.dtype), None, None, None


def label_smoothed_nll(logits: Tensor, target: Tensor, eps: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(summed label-smoothed loss, summed nll) over non-ignored positions; logits (..., V), target (...)."""
    return _LabelSmoothedCE.apply(logits.reshape(-1, logits.size(-1)), target.reshape(-1), eps, ignore_index)
