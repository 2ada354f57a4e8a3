"""Sampling (`mtkit translate --sampling`): reproducible from the seed and the line numbers alone,
the same in any batch and any number of processes, greedy in the limits, and drawing tokens with
the model's probabilities."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import run_in_process

from mtkit.config import DecodeConfig
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mtkit.inference.engine import open_engine
from mtkit.inference.sampling import uniforms
from mtkit.inference.types import TranslateStats


@pytest.fixture(scope="module")
def engine(reverse_model):
    return open_engine(reverse_model, "best", "cpu", "fp32")


@pytest.fixture(scope="module")
def lines(reverse_data):
    return reverse_data["valid_src"].read_text().splitlines()[:40]


def _texts(engine, lines, chunk_size=2000, first_line=0, **settings):
    cfg = DecodeConfig(**settings)
    return [[t.text, [x for x, _ in t.nbest]] for t in engine.translate(lines, cfg, TranslateStats(), chunk_size, first_line)]


def test_samples_depend_on_seed_and_line_only(engine, lines):
    a = _texts(engine, lines, sampling=True, seed=5, nbest=3, temperature=3.0)
    assert a == _texts(engine, lines, sampling=True, seed=5, nbest=3, temperature=3.0)  # reproducible
    assert a == _texts(engine, lines, chunk_size=7, sampling=True, seed=5, nbest=3, temperature=3.0, max_tokens=60)  # any batch
    assert a[10:] == _texts(engine, lines[10:], first_line=10, sampling=True, seed=5, nbest=3, temperature=3.0)  # a later start
    other = _texts(engine, lines, sampling=True, seed=6, nbest=3, temperature=3.0)
    assert sum(x != y for x, y in zip(a, other)) > len(lines) // 2  # another seed, other samples
    assert all(len(samples) == 3 for _, samples in a)
    u = uniforms(5, np.arange(1000), np.zeros(1000), 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.05


def test_greedy_in_the_limits(engine, lines):
    greedy = _texts(engine, lines, beam=1)
    assert _texts(engine, lines, sampling=True, topk=1, seed=3) == greedy
    assert _texts(engine, lines, sampling=True, temperature=1e-4, seed=3) == greedy
    assert _texts(engine, lines, sampling=True, topp=1e-6, seed=3) == greedy


def _first_token_distribution(engine, sentence, temperature=1.0):
    model, tok = engine.model, engine.tokenizer
    src = torch.tensor([tok.encode_src([sentence])[0] + [EOS_ID]])
    with torch.inference_mode():
        state = model.start_state(model.encode(src), src.eq(PAD_ID))
        logits = model.decode_step(torch.tensor([BOS_ID]), state)[0].float()
        logits[PAD_ID] = logits[BOS_ID] = float("-inf")
        return torch.softmax(logits / temperature, dim=0).numpy()


def _chi_square(counts, probs):
    """Pearson's statistic over the tokens expected at least 5 times (the rest pooled) and its
    degrees of freedom."""
    n = counts.sum()
    big = probs * n >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(probs[big] * n, probs[~big].sum() * n)
    keep = expected > 0
    return float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()), int(keep.sum()) - 1


def _critical(df, z=3.09):  # the 99.9% quantile of chi-square (Wilson-Hilferty)
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_sampled_tokens_follow_the_models_probabilities(engine):
    sentence = "alpha bravo charlie"
    n = 6000
    cfg = DecodeConfig(sampling=True, seed=11, temperature=1.5, max_len_a=0, max_len_b=2)
    first = [t.tokens[0] if t.tokens else EOS_ID
             for t in engine.translate([sentence] * n, cfg, TranslateStats())]  # each line its own draw
    counts = np.bincount(first, minlength=engine.model.cfg.tgt_vocab_size).astype(float)
    probs = _first_token_distribution(engine, sentence, temperature=1.5)
    stat, df = _chi_square(counts, probs)
    assert df >= 3 and stat < _critical(df), (stat, df)
    wrong = _first_token_distribution(engine, sentence, temperature=1.0)  # a sampler ignoring temperature
    stat_wrong, df_wrong = _chi_square(counts, wrong)
    assert stat_wrong > _critical(df_wrong), (stat_wrong, df_wrong)


def test_bad_sampling_options_are_one_line(reverse_model):
    for option, value, problem in (("--topp", "0", "topp"), ("--temperature", "0", "temperature"),
                                   ("--topk", "-1", "topk")):
        code, _, err = run_in_process("translate", "-m", str(reverse_model), "--sampling", option, value, stdin="a b\n")
        assert code == 2 and problem in err and len(err.strip().splitlines()) == 1, err
    code, out, err = run_in_process("translate", "-m", str(reverse_model), "--sampling", "--nbest", "8", "--format",
                                    "jsonl", stdin="alpha bravo\n")
    assert code == 0 and len(json.loads(out)["nbest"]) == 8, err  # samples beyond the beam size


@pytest.mark.slow
def test_torchrun_translation_equals_one_process(reverse_model, lines, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines[:37]) + "\n" + "alpha bravo\n")  # an empty line too
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, settings in (("beam", ["--beam", "4"]), ("greedy", ["--greedy"]),
                           ("sampling", ["--sampling", "--seed", "3", "--nbest", "2", "--format", "jsonl"])):
        args = ["translate", "-m", str(reverse_model), "-i", str(source), *settings]
        one = subprocess.run([sys.executable, "-m", "mtkit", *args, "-o", str(tmp_path / f"{name}.one")],
                             capture_output=True, text=True, env=env)
        assert one.returncode == 0, one.stderr
        two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              "-m", "mtkit", *args, "-o", str(tmp_path / f"{name}.two")],
                             capture_output=True, text=True, env=env)
        assert two.returncode == 0, two.stderr[-2000:]
        assert (tmp_path / f"{name}.one").read_text() == (tmp_path / f"{name}.two").read_text(), name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no part left


def test_a_decoded_line_break_never_splits_an_output_line():
    """Byte pieces can decode to a line break (sampling drew one while back-translating 19,000
    sentences): each translation stays one line."""
    from mtkit.inference.types import decode_nbests

    texts = decode_nbests(lambda ids: ["a\nb", "c\r\nd", "e"], [[[1], [2]], [[3]]])
    assert texts == [["a b", "c  d"], ["e"]]
