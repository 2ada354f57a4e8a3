"""mtkit train --init-from: a run that starts from a trained model's weights (fine-tuning)."""

import json
import shutil

import pytest
import torch
from helpers import assert_one_line_error, run_in_process

from mtkit.model import checkpoint as ckpt

pytestmark = pytest.mark.slow


def _finetune(out, data, parent, *extra):
    """A short fine-tuning run (two updates unless extra says otherwise: the last --max-steps wins)."""
    return run_in_process("train", "-o", str(out), "--src", str(data["train_src"]), "--tgt", str(data["train_tgt"]),
                          "--init-from", str(parent), "--max-tokens", "512", "--warmup", "5", "--lr", "0.001",
                          "--valid-every", "0", "--quiet", "--max-steps", "2", *extra)


def _translate(model, lines, *args):
    code, out, err = run_in_process("translate", "-m", str(model), "--format", "jsonl", *args,
                                    stdin="".join(line + "\n" for line in lines))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_before_any_update_the_child_translates_as_its_parent(tmp_path, reverse_model, reverse_data, monkeypatch):
    """Set up and saved at step 0 (the loop replaced by a save): the parent's weights, bit for bit."""
    import mtkit.training.trainer as T

    def save_only(tr):
        tr.save()
        return T.Done(reason="max_steps", step=0, epoch=1, elapsed=0.0, best_metric="bleu", best_score=None,
                      skipped_steps=0, oversized_pairs=0)

    monkeypatch.setattr(T, "run", save_only)
    child = tmp_path / "child"
    code, _, err = _finetune(child, reverse_data, reverse_model, "--init-checkpoint", "last", "--dropout", "0.2")
    assert code == 0, err
    parent_weights = torch.load(reverse_model / "checkpoints" / "last.pt", weights_only=True)["model"]
    child_weights = torch.load(child / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert parent_weights.keys() == child_weights.keys()
    assert all(torch.equal(parent_weights[k], child_weights[k]) for k in parent_weights)
    lines = reverse_data["valid_src"].read_text().splitlines()[:20]
    assert _translate(child, lines, "--checkpoint", "last") == _translate(reverse_model, lines, "--checkpoint", "last")
    manifest = json.loads((child / "manifest.json").read_text())
    assert manifest["parent"]["directory"] == str(reverse_model.resolve())
    assert manifest["parent"]["checkpoint"].endswith("last.pt") and len(manifest["parent"]["weights_sha256"]) == 64
    stored = torch.load(child / "checkpoints" / "last.pt", weights_only=True)["config"]["model"]
    assert stored["dropout"] == 0.2 and stored["d_model"] == 64  # the parent's shape, the run's own dropout


def test_a_fine_tuning_run_resumes_exactly_whatever_became_of_its_parent(tmp_path, reverse_model, reverse_data):
    parent = shutil.copytree(reverse_model, tmp_path / "parent", ignore=shutil.ignore_patterns("cache"))
    whole = tmp_path / "whole"
    assert _finetune(whole, reverse_data, parent, "--max-steps", "6", "--save-every", "3")[0] == 0
    parts = tmp_path / "parts"
    assert _finetune(parts, reverse_data, parent, "--max-steps", "3", "--save-every", "3")[0] == 0
    shutil.rmtree(parent / "checkpoints")  # the parent goes: the run restarts from its own copy
    code, _, err = _finetune(parts, reverse_data, parent, "--max-steps", "6", "--save-every", "3")
    assert code == 0, err
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(parts / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((parts / "manifest.json").read_text())["parent"]["directory"] == str(parent.resolve())


def test_what_would_change_the_parents_tokenizer_or_shape_is_refused(tmp_path, reverse_model, reverse_data):
    other = tmp_path / "tok"
    assert run_in_process("tokenizer", "train", "--src", str(reverse_data["train_src"]), "--tgt",
                          str(reverse_data["train_tgt"]), "-o", str(other), "--vocab-size", "41")[0] == 0
    cases = [(["--tokenizer", str(other)], "--tokenizer", "keeps its tokenizer"),
             (["--vocab-size", "100"], "--vocab-size", "keeps its tokenizer"),
             (["--preset", "small"], "--preset", "model's shape"),
             (["--set", "model.d_model=32"], "--set model.d_model", "model's shape"),
             (["--init-checkpoint", str(tmp_path / "none.pt")], "none.pt", "no such checkpoint")]
    for args, *fragments in cases:
        assert_one_line_error(*_finetune(tmp_path / "m", reverse_data, reverse_model, *args)[::2], *fragments)
        assert not (tmp_path / "m").exists()
    assert _finetune(tmp_path / "m", reverse_data, reverse_model, "--tokenizer", str(reverse_model / "tokenizer"),
                     "--max-steps", "1")[0] == 0  # the parent's own tokenizer is fine


def test_a_parent_that_is_not_an_mtkit_model_is_refused(tmp_path, reverse_model, reverse_data):
    assert_one_line_error(*_finetune(tmp_path / "m", reverse_data, tmp_path / "nope")[::2], "no such directory")
    broken = shutil.copytree(reverse_model, tmp_path / "broken", ignore=shutil.ignore_patterns("cache"))
    state = torch.load(broken / "checkpoints" / "best.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    ckpt.save(broken / "checkpoints" / "best.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    assert_one_line_error(*_finetune(tmp_path / "m", reverse_data, broken)[::2], "best.pt", "non-finite")
    pytest.importorskip("ctranslate2", reason="CTranslate2 is optional")
    converted = tmp_path / "ct2"
    assert run_in_process("convert", "-m", str(reverse_model), "-o", str(converted))[0] == 0
    assert_one_line_error(*_finetune(tmp_path / "m", reverse_data, converted)[::2], "converted", "cannot be trained")
    assert not (tmp_path / "m").exists()
