"""mtkit.metrics.bleu against sacrebleu: known values, random corpora, Multi30k, and the CLI."""

import gzip
import json
import random
import subprocess
import sys

import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkit.data.textio import read_lines
from mtkit.errors import UserError
from mtkit.metrics import bleu
from mtkit.metrics import tokenizers as T

TOKENIZERS = ["13a", "intl", "zh", "char", "none"]
SMOOTHING = ["none", "floor", "add-k", "exp"]


def theirs(hyps, refs, **kw):
    kw = dict(kw)
    order = kw.pop("max_ngram_order", 4)
    eff = kw.pop("use_effective_order", False)
    return sacrebleu.BLEU(max_ngram_order=order, effective_order=eff, force=True, **kw).corpus_score(hyps, refs)


def assert_same(hyps, refs, **kw):
    ours = bleu.corpus_bleu(hyps, refs, **kw)
    ref = theirs(hyps, refs, **kw)
    assert list(ours.counts) == list(ref.counts)
    assert list(ours.totals) == list(ref.totals)
    assert (ours.sys_len, ours.ref_len) == (ref.sys_len, ref.ref_len)
    assert ours.bp == pytest.approx(ref.bp, abs=1e-12)
    assert ours.score == pytest.approx(ref.score, abs=1e-9)
    assert ours.precisions == pytest.approx(ref.precisions, abs=1e-9)
    return ours


# Exact values worked out by hand (or fixed by sacrebleu 2.x) for small cases.
KNOWN = [
    # hyps, refs, kwargs, score, counts, totals, sys_len, ref_len
    (["the cat sat on the mat"], [["the cat sat on the mat"]], {}, 100.0, [6, 5, 4, 3], [6, 5, 4, 3], 6, 6),
    ([""], [["a b c"]], {}, 0.0, [0, 0, 0, 0], [0, 0, 0, 0], 0, 3),
    (["a b c"], [[""]], {}, 0.0, [0, 0, 0, 0], [3, 2, 1, 0], 3, 0),
    # clipping: "the" appears 7 times in the hypothesis but at most twice in a reference
    (["the the the the the the the"], [["the cat is on the mat"], ["there is a cat on the mat"]],
     {"max_ngram_order": 1}, 2 / 7 * 100, [2], [7], 7, 7),
    # brevity penalty with the closest reference length (ties go to the shorter one)
    (["a b"], [["a b c"], ["a b c d e f"]], {"max_ngram_order": 2}, 100 * 2.718281828459045 ** (1 - 3 / 2),
     [2, 1], [2, 1], 2, 3),
]


@pytest.mark.parametrize("hyps,refs,kw,score,counts,totals,sys_len,ref_len", KNOWN)
def test_known_values(hyps, refs, kw, score, counts, totals, sys_len, ref_len):
    ours = assert_same(hyps, refs, **kw)
    assert ours.score == pytest.approx(score, abs=1e-9)
    assert (ours.counts, ours.totals, ours.sys_len, ours.ref_len) == (counts, totals, sys_len, ref_len)


SAMPLES = (
    ["The cat sat on the mat.", "", "Hello, world! 3.14 is pi-ish; a-b 1,000 &amp; <skipped>", "日本語の文章です。",
     "Ünïcödé “quotes” — dash… ¿qué? ¡sí! 100 %", "a"],
    [["The cat is on the mat.", "x", "Hello world! 3.14 is pi", "日本語の文です。", "Unicode quotes - dash", ""],
     ["There is a cat on the mat.", None, "hi", "", "“quotes” ¿qué?", "a b"]],
)


@pytest.mark.parametrize("tokenize", TOKENIZERS)
@pytest.mark.parametrize("smooth_method", SMOOTHING)
@pytest.mark.parametrize("lowercase", [False, True])
def test_every_option_combination(tokenize, smooth_method, lowercase):
    hyps, refs = SAMPLES
    for order in (1, 2, 4, 6):
        assert_same(hyps, refs, tokenize=tokenize, smooth_method=smooth_method, lowercase=lowercase,
                    max_ngram_order=order)
    assert_same(hyps, refs[:1], tokenize=tokenize, smooth_method=smooth_method, smooth_value=0.3,
                use_effective_order=True)


def test_sentence_bleu_defaults_match_sacrebleu():
    for hyp, ref in [("a b c", "a b c d"), ("x", "y"), ("", "a"), ("the cat", "the cat sat")]:
        ours = bleu.sentence_bleu(hyp, [ref])
        ref_score = sacrebleu.sentence_bleu(hyp, [ref])
        assert ours.score == pytest.approx(ref_score.score, abs=1e-9)
        assert "eff:yes" in ours.signature


def test_signature_format():
    s = bleu.corpus_bleu(["a"], [["a"], ["b"]], lowercase=True, smooth_method="floor")
    assert s.signature.startswith("nrefs:2|case:lc|eff:no|tok:13a|smooth:floor[0.10]|version:mtkit-")
    varied = bleu.corpus_bleu(["a", "b"], [["a", "b"], ["c", None]])
    assert varied.signature.startswith("nrefs:var|")
    line = s.format(width=1)
    assert line.startswith("BLEU|nrefs:2") and "(BP = 1.000 ratio = 1.000 hyp_len = 1 ref_len = 1)" in line


def test_tokenizers_equal_sacrebleus_on_tricky_strings():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International
    from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

    pairs = [(Tokenizer13a(), T.tokenize_13a), (TokenizerZh(), T.tokenize_zh),
             (TokenizerV14International(), T.tokenize_intl)]
    rng = random.Random(0)
    alphabet = "a1.,-!'&;:/中文 \u2001\u2a6d\u2f81€$%·。、\"()?@#*+=<>[]{}^_`|~\\"
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for their, our in pairs:
            assert our(s) == their(s), (s, our(s), their(s))


def test_bad_arguments():
    with pytest.raises(UserError, match="tokenize"):
        bleu.corpus_bleu(["a"], [["a"]], tokenize="moses")
    with pytest.raises(UserError, match="smooth"):
        bleu.corpus_bleu(["a"], [["a"]], smooth_method="magic")
    with pytest.raises(UserError, match="2 lines"):
        bleu.corpus_bleu(["a"], [["a", "b"]])
    with pytest.raises(TypeError):
        bleu.corpus_bleu(["a"], ["a"])


# ------------------------------------------------------------------ property-based, against sacrebleu
WORDS = st.sampled_from(
    ["the", "a", "cat", "Cat", "mat", ".", ",", "3.14", "1,000", "-", "x-y", "'s", "&amp;", "“", "”", "!", "?",
     "日本", "中文", "。", "€", "$5", "Ünï", "ß", "é", "(", ")", ":", "..."]
)
SENT = st.lists(WORDS, max_size=12).map(lambda ws: " ".join(ws)) | st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=20
)


@st.composite
def corpora(draw):
    n = draw(st.integers(1, 6))
    hyps = draw(st.lists(SENT, min_size=n, max_size=n))
    nrefs = draw(st.integers(1, 4))
    refs = [draw(st.lists(SENT, min_size=n, max_size=n)) for _ in range(nrefs)]
    return hyps, refs


def _assigned(text: str) -> bool:
    import unicodedata

    # intl uses Python's Unicode tables, sacrebleu the `regex` package's newer ones.
    return all(unicodedata.category(c) != "Cn" for c in text)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpora(), st.sampled_from(TOKENIZERS), st.sampled_from(SMOOTHING), st.booleans(), st.integers(1, 5))
def test_random_corpora_equal_sacrebleu(corpus, tokenize, smooth_method, lowercase, order):
    hyps, refs = corpus
    if tokenize == "intl" and not all(_assigned(s) for s in hyps + [r for rs in refs for r in rs]):
        return
    assert_same(hyps, refs, tokenize=tokenize, smooth_method=smooth_method, lowercase=lowercase,
                max_ngram_order=order)


# ------------------------------------------------------------------ Multi30k
def _perturb(lines, seed):
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = line.split()
        if rng.random() < 0.3:
            rng.shuffle(words)
        if words and rng.random() < 0.3:
            words.pop(rng.randrange(len(words)))
        if rng.random() < 0.1:
            words = words + words[:2]
        out.append(" ".join(words) if rng.random() > 0.02 else "")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("split,lang", [("val", "de"), ("test_2016_flickr", "fr"), ("test_2016_flickr", "cs")])
def test_multi30k_perturbed(multi30k, split, lang):
    refs = read_lines(multi30k / f"{split}.{lang}.gz")
    hyps = _perturb(refs, seed=1)
    second = _perturb(refs, seed=2)
    for tok in ("13a", "intl"):
        for lc in (False, True):
            assert_same(hyps, [refs], tokenize=tok, lowercase=lc)
            assert_same(hyps, [refs, second], tokenize=tok, lowercase=lc)


# ------------------------------------------------------------------ significance
def test_paired_bootstrap_is_seeded_and_sensible():
    refs = [f"sentence number {i} is here ." for i in range(60)]
    good = list(refs)
    bad = [r.replace("number", "no") if i % 2 else "" for i, r in enumerate(refs)]
    opts = bleu.BLEU()
    a = bleu.evaluate([bad, good, bad], [refs], opts, paired_bs_samples=200, seed=7).paired
    b = bleu.evaluate([bad, good, bad], [refs], opts, paired_bs_samples=200, seed=7).paired
    assert a == b
    assert a[0].p_value is None
    assert a[1].p_value < 0.05  # clearly better
    assert a[2].p_value == 1.0  # identical to the baseline
    assert a[1].ci_low <= a[1].mean <= a[1].ci_high


# ------------------------------------------------------------------ CLI
@pytest.fixture
def files(tmp_path):
    ref = tmp_path / "ref.txt"
    hyp = tmp_path / "hyp.txt"
    ref.write_text("The cat sat on the mat .\nA dog barks.\n", encoding="utf-8")
    hyp.write_text("The cat sat on a mat .\nA dog barked.\n", encoding="utf-8")
    return tmp_path, ref, hyp


def test_cli_text_json_stdin_gzip(files, mtkit_cli):
    tmp, ref, hyp = files
    expected = bleu.corpus_bleu(hyp.read_text().splitlines(), [ref.read_text().splitlines()])
    out = mtkit_cli("bleu", str(ref), "-i", str(hyp), "--sacrebleu", "-w", "4")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert f"= {expected.score:.4f} " in out.stdout
    gz = tmp / "hyp.txt.gz"
    gz.write_bytes(gzip.compress(hyp.read_bytes()))
    js = mtkit_cli("bleu", str(ref), "-i", str(gz), "-f", "json")
    data = json.loads(js.stdout)
    assert data["score"] == pytest.approx(expected.score) and data["counts"] == expected.counts
    assert data["signature"] == expected.signature
    piped = mtkit_cli("bleu", str(ref), "-f", "json", stdin=hyp.read_text())
    assert json.loads(piped.stdout)["score"] == pytest.approx(expected.score)


def test_cli_several_systems_and_paired_bs(files, mtkit_cli):
    tmp, ref, hyp = files
    out = mtkit_cli("bleu", str(ref), "-i", str(hyp), str(ref), "--paired-bs", "--paired-bs-n", "50")
    assert out.returncode == 0, out.stderr
    assert "baseline" in out.stdout and "95% CI" in out.stdout
    sent = mtkit_cli("bleu", str(ref), "-i", str(hyp), "--sentence-level")
    assert len(sent.stdout.strip().splitlines()) == 3


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda t, r, h: [str(r), "-i", str(t / "missing.txt")], "missing.txt: no such file"),
        (lambda t, r, h: [str(r), "-i", str(h), "--tokenize", "moses"], "--tokenize"),
        (lambda t, r, h: [str(r), "-i", str(h), "--smooth-method", "x"], "--smooth-method"),
        (lambda t, r, h: [str(r), "-i", str(h), "--format", "xml"], "--format"),
        (lambda t, r, h: [str(r), "-i", str(t / "short.txt")], "has 1 lines but reference"),
        (lambda t, r, h: [str(r), "-i", str(t / "bad.txt")], "bad.txt:2: invalid UTF-8"),
        (lambda t, r, h: [str(r), "-i", str(h), "--paired-bs"], "--paired-bs needs"),
    ],
)
def test_cli_bad_input(files, mtkit_cli, make_args, message):
    tmp, ref, hyp = files
    (tmp / "short.txt").write_text("one line\n")
    (tmp / "bad.txt").write_bytes(b"fine\nbad \xff byte\n")
    out = mtkit_cli("bleu", *make_args(tmp, ref, hyp))
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_bleu_and_cli_help_do_not_import_torch():
    code = "import sys, mtkit.metrics.bleu, mtkit.cli; assert 'torch' not in sys.modules and 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "mtkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "bleu" in out.stdout


def _sacrebleu_resamples(n_segments: int, n_samples: int, seed: int = 12345) -> list[list[int]]:
    """sacreBLEU's resamples (numpy's default_rng(seed).choice), as counts per segment."""
    import numpy as np

    idxs = np.random.default_rng(seed).choice(n_segments, size=(n_samples, n_segments), replace=True)
    return [np.bincount(row, minlength=n_segments).tolist() for row in idxs]


def test_paired_bootstrap_means_and_intervals_equal_sacrebleus_on_its_resamples(monkeypatch):
    from sacrebleu.significance import PairedTest

    from mtkit.metrics import significance

    refs = [f"sentence number {i} is here ." for i in range(60)]
    base_sys = [r.replace("number", "no") if i % 2 else "" for i, r in enumerate(refs)]
    better = [r if i % 3 else r.replace("here", "there") for i, r in enumerate(refs)]
    worse = [r.replace("sentence", "") if i % 4 else "" for i, r in enumerate(refs)]
    systems, n = [base_sys, better, worse], 300
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    theirs = PairedTest([(str(k), s) for k, s in enumerate(systems)], {"BLEU": sacrebleu.BLEU(references=[refs])},
                        references=None, test_type="bs", n_samples=n)()[1]["BLEU"]
    monkeypatch.setattr(significance, "_resample_weights", lambda segments, samples, seed: _sacrebleu_resamples(segments, samples))
    ours = bleu.evaluate(systems, [refs], bleu.BLEU(), paired_bs_samples=n, seed=12345).paired
    for o, t in zip(ours, theirs, strict=True):
        assert o.score == pytest.approx(t.score, abs=1e-12)
        # sacreBLEU sums and scores the resampled statistics in float32: equal to its rounding
        assert o.mean == pytest.approx(t.mean, abs=1e-5)
        assert (o.ci_high - o.mean) == pytest.approx(t.ci, abs=1e-5) and (o.mean - o.ci_low) == pytest.approx(t.ci, abs=1e-5)
    assert ours[1].p_value == theirs[1].p_value == 1 / (n + 1)  # clearly different: both at their floor


def test_paired_bootstrap_p_values_pinned():
    """mtkit's own resamples (Python's random, seed 12345) and its two-sided p-value, pinned; a
    system against itself gets 1.0."""
    refs = [f"sentence number {i} is here ." for i in range(60)]
    base_sys = [r.replace("number", "no") if i % 2 else "" for i, r in enumerate(refs)]
    close = [r if i % 17 == 0 else b for i, (r, b) in enumerate(zip(refs, base_sys))]  # 4 segments fixed
    result = bleu.evaluate([base_sys, close, base_sys], [refs], bleu.BLEU(), paired_bs_samples=500, seed=12345).paired
    assert result[2].p_value == 1.0 and result[2].mean == result[0].mean
    pinned = [(round(r.mean, 4), round(r.ci_low, 4), round(r.ci_high, 4), r.p_value) for r in result[:2]]
    assert pinned == PINNED_BOOTSTRAP, pinned


PINNED_BOOTSTRAP = [(19.6967, 10.0164, 29.3769, None), (25.0145, 13.9286, 36.1004, 38 / 501)]
