"""Ensembles: mtkit translate -m A -m B decodes with the mean of the models' log-probabilities."""

import json
import shutil

import pytest
import torch
from helpers import REVERSE_SETTINGS, assert_one_line_error, run_in_process

from mtkit.config import DecodeConfig
from mtkit.data.tokenizer import Tokenizer
from mtkit.inference.ensemble import Ensemble
from mtkit.inference.translate import translate
from mtkit.model.checkpoint import load_for_inference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def second_model(tmp_path_factory, reverse_with_tokenizer):
    """Another model of the reverse task, another seed and shape, the same tokenizer."""
    d = reverse_with_tokenizer
    out = tmp_path_factory.mktemp("second") / "m"
    assert REVERSE_SETTINGS[-2] == "--vocab-size"  # the tokenizer is given instead
    settings = [s if s != "model.d_ff=128" else "model.d_ff=96" for s in REVERSE_SETTINGS[:-2]]
    code, _, err = run_in_process("train", "-o", str(out), "--src", str(d["train_src"]), "--tgt", str(d["train_tgt"]),
                                  "--tokenizer", str(d["tokenizer"]), *settings, "--seed", "7", "--max-steps", "300",
                                  "--valid-every", "0", "--quiet")
    assert code == 0, err
    return out


def _jsonl(models, lines, *args):
    code, out, err = run_in_process("translate", *[a for m in models for a in ("-m", str(m))], "--format", "jsonl",
                                    *args, stdin="".join(line + "\n" for line in lines))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_an_ensemble_of_a_model_with_itself_is_the_model(reverse_model, reverse_data):
    lines = reverse_data["valid_src"].read_text().splitlines()[:30]
    for args in (["--beam", "4", "--nbest", "2"], ["--greedy"], ["--sampling", "--nbest", "2", "--seed", "3"]):
        alone, twice = _jsonl([reverse_model], lines, *args), _jsonl([reverse_model, reverse_model], lines, *args)
        for a, b in zip(alone, twice, strict=True):  # the same hypotheses, the same scores (to float rounding)
            assert [h["translation"] for h in a["nbest"]] == [h["translation"] for h in b["nbest"]], args
            assert [h["score"] for h in a["nbest"]] == pytest.approx([h["score"] for h in b["nbest"]], abs=1e-5)


def test_an_ensemble_translation_does_not_depend_on_its_batch(reverse_model, second_model, reverse_data):
    lines = reverse_data["valid_src"].read_text().splitlines()[:24]
    members = [load_for_inference(m, "last")[0] for m in (reverse_model, second_model)]
    tok = load_for_inference(reverse_model, "best")[1]
    ensemble = Ensemble(members)
    for cfg in (DecodeConfig(beam=4, nbest=2), DecodeConfig(beam=1)):  # as for one model: the same hypotheses
        together = [t.nbest for t in translate(ensemble, tok, lines, cfg, concurrent=1)]
        one_by_one = [t.nbest for line in lines for t in translate(ensemble, tok, [line], cfg, concurrent=1)]
        assert [[text for text, _ in n] for n in together] == [[text for text, _ in n] for n in one_by_one]
        assert [s for n in together for _, s in n] == pytest.approx([s for n in one_by_one for _, s in n], abs=1e-5)


def test_the_ensembles_distribution_is_the_normalised_mean_of_log_probabilities(reverse_model, second_model):
    a, b = (load_for_inference(m, "last")[0] for m in (reverse_model, second_model))
    src = torch.tensor([[5, 6, 7, 3]])
    states = []
    for model in (a, b, Ensemble([a, b])):
        state = model.start_state(model.encode(src), src.eq(0))
        states.append(torch.log_softmax(model.decode_step(torch.tensor([2]), state).float(), -1))
    expected = torch.log_softmax((states[0] + states[1]) / 2, -1)
    torch.testing.assert_close(states[2], expected)


def test_ensembles_of_converted_or_foreign_models_are_refused(tmp_path, reverse_model, reverse_data):
    other = tmp_path / "tok"
    assert run_in_process("tokenizer", "train", "--src", str(reverse_data["train_src"]), "--tgt",
                          str(reverse_data["train_tgt"]), "-o", str(other), "--vocab-size", "41")[0] == 0
    foreign = tmp_path / "foreign"
    code, _, err = run_in_process("train", "-o", str(foreign), "--src", str(reverse_data["train_src"]), "--tgt",
                                  str(reverse_data["train_tgt"]), "--tokenizer", str(other), "--preset", "tiny",
                                  "--max-steps", "1", "--valid-every", "0", "--quiet")
    assert code == 0, err
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "-m", f"{foreign}:last", stdin="alpha\n")
    assert_one_line_error(code, err, str(foreign), "share one tokenizer")
    pytest.importorskip("ctranslate2", reason="CTranslate2 is optional")
    converted = tmp_path / "ct2"
    assert run_in_process("convert", "-m", str(reverse_model), "-o", str(converted))[0] == 0
    code, _, err = run_in_process("translate", "-m", str(reverse_model), "-m", str(converted), stdin="alpha\n")
    assert_one_line_error(code, err, "converted", "translates alone")


def test_a_checkpoint_per_member(reverse_model, reverse_data):
    lines = reverse_data["valid_src"].read_text().splitlines()[:10]
    assert _jsonl([f"{reverse_model}:last", f"{reverse_model}:last"], lines, "--greedy") == \
        _jsonl([reverse_model, reverse_model], lines, "--greedy", "--checkpoint", "last")


def test_models_whose_tokenizers_were_trained_alike_in_two_places_ensemble(tmp_path, reverse_model, reverse_data):
    """SentencePiece writes where it was trained into the model file: two tokenizers trained alike
    differ in bytes, not in what they encode, and their models make an ensemble."""
    again = tmp_path / "tok"
    assert run_in_process("tokenizer", "train", "--src", str(reverse_data["train_src"]), "--tgt",
                          str(reverse_data["train_tgt"]), "-o", str(again), "--vocab-size", "43")[0] == 0
    ours, theirs = Tokenizer.load(reverse_model / "tokenizer"), Tokenizer.load(again)
    assert ours.fingerprint() != theirs.fingerprint()
    assert ours.encoding_fingerprint() == theirs.encoding_fingerprint()
    copy = tmp_path / "copy"
    shutil.copytree(reverse_model, copy)
    for f in again.iterdir():
        shutil.copy(f, copy / "tokenizer" / f.name)
    lines = reverse_data["valid_src"].read_text().splitlines()[:20]
    assert _jsonl([reverse_model, copy], lines, "--greedy") == _jsonl([reverse_model], lines, "--greedy")
