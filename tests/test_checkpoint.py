"""Checkpoints: the format version and its one migration, averaging's output rules."""

import pytest
import torch
from helpers import assert_one_line_error, run_in_process

from mtkit.errors import UserError
from mtkit.model import checkpoint as ckpt


def _as_v1(state: dict, layout: str) -> dict:
    """A checkpoint as version 1 wrote it: the attention projections in one of its three layouts,
    the best score named best_bleu."""
    weights = {}
    for name, tensor in state["model"].items():
        prefix, _, rest = name.rpartition("_attn.")
        if layout == "current" or not prefix or rest.split(".")[0] not in ("in_proj", "q_proj", "kv_proj"):
            weights[name] = tensor
            continue
        proj, param = rest.split(".")
        head = f"{prefix}_attn."
        if layout == "separate":  # q_proj, k_proj, v_proj in both attentions
            for part, value in zip("qkv" if proj == "in_proj" else ("q" if proj == "q_proj" else "kv"),
                                   tensor.chunk(3 if proj == "in_proj" else 1 if proj == "q_proj" else 2)):
                weights[f"{head}{part}_proj.{param}"] = value.clone()
        elif layout == "fused":  # one in_proj in both attentions
            if proj == "kv_proj":
                q = state["model"][f"{head}q_proj.{param}"]
                weights[f"{head}in_proj.{param}"] = torch.cat([q, tensor])
            elif proj == "in_proj":
                weights[name] = tensor
    progress = {("best_bleu" if k == "best_score" else k): v for k, v in state.get("progress", {}).items()}
    return {**state, "version": 1, "model": weights, **({"progress": progress} if progress else {})}


@pytest.mark.parametrize("layout", ["current", "separate", "fused"])
def test_version_1_checkpoints_load_as_version_2(tmp_path, reverse_model, layout):
    state = torch.load(reverse_model / "checkpoints" / "last.pt", weights_only=True)
    old = tmp_path / "old.pt"
    torch.save(_as_v1(state, layout), old)
    if layout != "current":
        assert set(torch.load(old, weights_only=True)["model"]) != set(state["model"])
    loaded = ckpt.load(old)
    assert loaded["version"] == ckpt.FORMAT_VERSION == 2
    assert loaded["model"].keys() == state["model"].keys()
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert loaded["progress"] == state["progress"]  # best_bleu became best_score
    code, out, err = run_in_process("translate", "-m", str(reverse_model), "--checkpoint", str(old), "--greedy",
                                    stdin="alpha bravo charlie\n")
    expected = run_in_process("translate", "-m", str(reverse_model), "--checkpoint", "last", "--greedy",
                              stdin="alpha bravo charlie\n")[1]
    assert code == 0 and out == expected, err


def test_a_newer_format_is_refused(tmp_path, reverse_model):
    state = torch.load(reverse_model / "checkpoints" / "best.pt", weights_only=True)
    newer = tmp_path / "newer.pt"
    torch.save({**state, "version": 3}, newer)
    with pytest.raises(UserError, match="format version 3 is not supported"):
        ckpt.load(newer)
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "--checkpoint", str(newer), stdin="a\n")
    assert_one_line_error(code, err, "newer.pt", "version 3")


def test_saved_checkpoints_carry_the_current_version(reverse_model):
    for name in ("last.pt", "best.pt"):
        assert torch.load(reverse_model / "checkpoints" / name, weights_only=True)["version"] == ckpt.FORMAT_VERSION
