"""The training objective: label-smoothed cross-entropy fused with the output projection, in
chunks, against a plain reference (values and gradients), under autocast, on both device paths."""

import pytest
import torch

from mtkit.data.tokenizer import PAD_ID


def _reference_loss(hidden, weight, target, eps):
    logits = (hidden @ weight.T).float().reshape(-1, weight.size(0))
    flat = target.reshape(-1)
    loss = torch.nn.functional.cross_entropy(logits, flat, ignore_index=PAD_ID, label_smoothing=eps, reduction="sum")
    nll = torch.nn.functional.cross_entropy(logits, flat, ignore_index=PAD_ID, reduction="sum")
    return loss, nll


@pytest.mark.parametrize("chunk_elements", [7 * 30, 1 << 22])  # 7 rows a chunk (several, ragged), one chunk
def test_fused_loss_equals_cross_entropy_values_and_gradients(monkeypatch, chunk_elements):
    import mtkit.model.loss as L

    monkeypatch.setitem(L.CHUNK_ELEMENTS, "cpu", chunk_elements)
    torch.manual_seed(0)
    hidden = torch.randn(3, 11, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randint(4, 30, (3, 11))
    target[0, 6:] = PAD_ID
    target[2, 1:] = PAD_ID
    got_loss, got_nll = L.projected_label_smoothed_nll(hidden, weight, target, 0.1, PAD_ID)
    (got_loss * 2.5).backward()
    got_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref_loss, ref_nll = _reference_loss(hidden, weight, target, 0.1)
    (ref_loss * 2.5).backward()
    torch.testing.assert_close(got_loss, ref_loss.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_nll, ref_nll.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grads[1], weight.grad, rtol=1e-5, atol=1e-6)
    assert got_grads[0][2, 1:].abs().max() == 0  # padding positions get no gradient


def test_fused_loss_under_bf16_autocast_and_without_gradients():
    import mtkit.model.loss as L

    torch.manual_seed(0)
    hidden = torch.randn(64, 32, requires_grad=True)
    weight = torch.randn(100, 32, requires_grad=True)
    target = torch.randint(4, 100, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = L.projected_label_smoothed_nll(hidden, weight, target, 0.1, PAD_ID)
    loss.backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    ref_loss, _ = _reference_loss(hidden.detach().bfloat16(), weight.detach().bfloat16(), target, 0.1)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-3, atol=0)
    with torch.no_grad():
        plain, _ = L.projected_label_smoothed_nll(hidden, weight, target, 0.1, PAD_ID)
    torch.testing.assert_close(plain, _reference_loss(hidden.detach(), weight.detach(), target, 0.1)[0])


def test_masked_loss_path_equals_the_compacted_one(monkeypatch):
    """On a GPU every row is scored and padding masked (no host sync); on a CPU only real rows."""
    import mtkit.model.loss as L

    torch.manual_seed(0)
    hidden = torch.randn(4, 9, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randint(4, 30, (4, 9))
    target[1, 3:] = PAD_ID
    monkeypatch.setitem(L.CHUNK_ELEMENTS, "cpu", 5 * 30)
    results = []
    for scored_rows in (L._scored_rows, lambda target, ignore_index: None):
        monkeypatch.setattr(L, "_scored_rows", scored_rows)
        hidden.grad = weight.grad = None
        loss, nll = L.projected_label_smoothed_nll(hidden, weight, target, 0.1, PAD_ID)
        loss.backward()
        results.append((loss, nll, hidden.grad.clone(), weight.grad.clone()))
    for a, b in zip(*results, strict=True):  # float32 gradient buffers, chunked differently
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
