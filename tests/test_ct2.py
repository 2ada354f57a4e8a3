"""mtkit convert --to ctranslate2, mtkit translate -m CONVERTED, and mtkit's own int8 decoding."""

import json
import sys

import pytest
from helpers import assert_one_line_error, run_in_process

from mtkit.config import DecodeConfig
from mtkit.data.textio import read_lines
from mtkit.inference.translate import quantize_int8, translate
from mtkit.metrics.bleu import corpus_bleu
from mtkit.model.checkpoint import load_for_inference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(reverse_model, tmp_path_factory):
    pytest.importorskip("ctranslate2", reason="CTranslate2 is optional (pip install 'mtkit[ct2]')")
    out = {}
    for quantization in ("float32", "int8"):
        path = tmp_path_factory.mktemp("ct2") / quantization
        code, _, err = run_in_process("convert", "-m", str(reverse_model), "-o", str(path), "--quantization", quantization)
        assert code == 0, err
        out[quantization] = path
    return out


def test_convert_help_names_the_extra_to_install():
    code, out, _ = run_in_process("convert", "--help")
    assert code == 0 and "pip install 'mtkit[ct2]'" in out  # rich markup would swallow an unescaped [ct2]


def _mtkit(reverse_model, lines, **cfg):
    model, tok, _ = load_for_inference(reverse_model, "best")
    return [t.text for t in translate(model, tok, lines, DecodeConfig(**cfg))]


def test_converted_float32_greedy_equals_mtkit_greedy(converted, reverse_model, reverse_data):
    lines = read_lines(reverse_data["valid_src"])
    code, out, err = run_in_process("translate", "-m", str(converted["float32"]), "--greedy",
                                    "-i", str(reverse_data["valid_src"]))
    assert code == 0, err
    same = sum(a == b for a, b in zip(out.splitlines(), _mtkit(reverse_model, lines, beam=1), strict=True))
    assert same >= 0.99 * len(lines)


def test_converted_int8_loses_at_most_half_a_bleu_point(converted, reverse_model, reverse_data):
    """Quantization costs little: int8 scores no more than 0.5 BLEU below mtkit's fp32 search (it
    may score above it: one sentence of these 100 moves BLEU by ~0.8)."""
    lines, refs = read_lines(reverse_data["valid_src"]), read_lines(reverse_data["valid_tgt"])
    code, out, err = run_in_process("translate", "-m", str(converted["int8"]), "-i", str(reverse_data["valid_src"]))
    assert code == 0, err
    ours = corpus_bleu(_mtkit(reverse_model, lines, beam=5), [refs]).score
    assert corpus_bleu(out.splitlines(), [refs]).score >= ours - 0.5


def test_a_cpu_translates_a_batch_per_thread(converted, reverse_data):
    """As mtkit's own decoding: on a CPU each thread decodes batches of its own (CTranslate2's
    inter_threads), unless told otherwise; the output is the same."""
    from mtkit.inference import ct2
    from mtkit.inference.types import TranslateStats

    lines, cfg = read_lines(reverse_data["valid_src"]), DecodeConfig(beam=3, max_tokens=200)
    per_thread = ct2.Translator(converted["int8"], "cpu", "int8", threads=2)
    together = ct2.Translator(converted["int8"], "cpu", "int8", threads=2, concurrent=1)
    assert per_thread.model.num_translators == 2 and together.model.num_translators == 1
    texts = [[t.text for t in engine.translate(lines, cfg, TranslateStats())] for engine in (per_thread, together)]
    assert texts[0] == texts[1]


def test_converted_model_keeps_translate_behaviour(converted):
    m = str(converted["float32"])
    code, out, err = run_in_process("translate", "-m", m, "-f", "jsonl", "--nbest", "3", stdin="alpha bravo\n\ncharlie\n")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3 and rows[1]["translation"] == "" and len(rows[0]["nbest"]) == 3
    assert rows[0]["translation"] == rows[0]["nbest"][0]["translation"]
    info = json.loads((converted["float32"] / "mtkit.json").read_text())
    assert info["format"] == "ctranslate2" and (converted["float32"] / "tokenizer" / "tokenizer.json").is_file()
    long_line = " ".join(["alpha"] * 1500)
    code, out, err = run_in_process("translate", "-m", m, "--greedy", stdin=f"{long_line}\n")
    assert code == 0 and "truncated" in err


def test_convert_refuses_what_it_cannot_do(converted, reverse_model, tmp_path):
    code, _, err = run_in_process("convert", "-m", str(reverse_model), "-o", str(converted["int8"]))
    assert_one_line_error(code, err, "not an empty directory")
    code, _, err = run_in_process("convert", "-m", str(reverse_model), "-o", str(tmp_path / "x"), "--to", "onnx")
    assert_one_line_error(code, err, "--to")
    code, _, err = run_in_process("convert", "-m", str(reverse_model), "-o", str(tmp_path / "x"), "--quantization", "int3")
    assert_one_line_error(code, err, "--quantization")
    assert not (tmp_path / "x").exists()


def test_convert_without_ctranslate2_says_how_to_install_it(reverse_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if not installed
    code, _, err = run_in_process("convert", "-m", str(reverse_model), "-o", str(tmp_path / "x"))
    assert_one_line_error(code, err, "pip install 'mtkit[ct2]'")


def test_int8_decoding_stays_close_to_fp32(reverse_model, reverse_data):
    lines, refs = read_lines(reverse_data["valid_src"]), read_lines(reverse_data["valid_tgt"])
    model, tok, _ = load_for_inference(reverse_model, "best")
    fp32 = [t.text for t in translate(model, tok, lines, DecodeConfig(beam=5))]
    int8 = [t.text for t in translate(quantize_int8(model), tok, lines, DecodeConfig(beam=5))]
    # on this small set one changed sentence moves BLEU by ~0.6 (a model trained on a GPU moved it
    # by 1.17): the outputs are compared sentence by sentence, BLEU loosely
    assert sum(a == b for a, b in zip(int8, fp32, strict=True)) >= 0.95 * len(fp32)
    assert abs(corpus_bleu(int8, [refs]).score - corpus_bleu(fp32, [refs]).score) <= 2.0
    code, out, err = run_in_process("translate", "-m", str(reverse_model), "--precision", "int8", "-i", str(reverse_data["valid_src"]))
    assert code == 0 and out.splitlines() == int8, err


def test_the_batch_budget_means_the_same_to_both_engines(converted):
    """mtkit's --max-tokens counts sentences x source length x beam; CTranslate2's "tokens" count
    source tokens once: the Translator gives it the budget over the beam."""
    from mtkit.inference.ct2 import Translator

    translator = Translator(converted["int8"], "cpu")
    assert translator.batch_tokens(DecodeConfig(beam=5, max_tokens=8000)) == 1600
    assert translator.batch_tokens(DecodeConfig(beam=1, max_tokens=0)) == 8000  # the CPU's default budget


def test_converted_models_sample_with_the_same_options(converted, reverse_data):
    """CTranslate2 samples from its own generator, seeded by --seed: the same command gives the same
    samples; --topk 1 is greedy; --nbest N gives N samples."""
    args = ["translate", "-m", str(converted["float32"]), "-i", str(reverse_data["valid_src"])]
    one = run_in_process(*args, "--sampling", "--seed", "4", "--temperature", "2", "--nbest", "3", "--format", "jsonl")
    again = run_in_process(*args, "--sampling", "--seed", "4", "--temperature", "2", "--nbest", "3", "--format", "jsonl")
    assert one[0] == 0 and one[1] == again[1], one[2]
    assert all(len(json.loads(line)["nbest"]) == 3 for line in one[1].splitlines())
    top1 = run_in_process(*args, "--sampling", "--topk", "1")
    greedy = run_in_process(*args, "--greedy")
    assert top1[0] == 0 and top1[1] == greedy[1]
