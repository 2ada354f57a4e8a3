"""chrF, chrF++ and TER equal to sacreBLEU's; mtkit score (several metrics, systems, paired
bootstrap, the --sacrebleu cross-check); the metrics package stays free of torch."""

import json
import random
import subprocess
import sys
from collections import Counter

import pytest
import sacrebleu
from helpers import assert_one_line_error, run_in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtkit.data.textio import read_lines
from mtkit.metrics import corpus_chrf, corpus_ter, sentence_chrf, sentence_ter
from mtkit.metrics import ter as T

CHRF_OPTIONS = [dict(), dict(word_order=2), dict(lowercase=True), dict(whitespace=True), dict(eps_smoothing=True),
                dict(word_order=2, beta=1, char_order=4), dict(char_order=0, word_order=2)]
TER_OPTIONS = [dict(), dict(normalized=True), dict(no_punct=True), dict(case_sensitive=True),
               dict(normalized=True, asian_support=True), dict(no_punct=True, asian_support=True),
               dict(normalized=True, no_punct=True, asian_support=True, case_sensitive=True)]


def assert_chrf_same(hyps, refs, **kw):
    ours, theirs = corpus_chrf(hyps, refs, **kw), sacrebleu.CHRF(**kw).corpus_score(hyps, refs)
    assert ours.score == theirs.score, (kw, ours.score, theirs.score)
    assert ours.name == theirs.name


def assert_ter_same(hyps, refs, **kw):
    ours, theirs = corpus_ter(hyps, refs, **kw), sacrebleu.TER(**kw).corpus_score(hyps, refs)
    assert (ours.score, ours.num_edits, ours.ref_length) == (theirs.score, theirs.num_edits, theirs.ref_length), kw


# ------------------------------------------------------------------ known values and tricky strings
TRICKY = ["", " ", "   a  ", ".", "...", "a", "a a a a a a a", "(hi)", "'s", "&amp; &lt;tag&gt; &quot;x&quot;",
          "3.14 1,000 x-y 10-20", "Ünïcödé straße", "日本語のテキスト。", "中文，句子！", "カタカナ と ひらがな",
          "The cat sat on the mat .", "the cat the cat the cat", "a\tb", "\u3001\uff0c\uff01", "x" * 60]


@pytest.mark.parametrize("kw", CHRF_OPTIONS, ids=str)
def test_chrf_on_tricky_strings(kw):
    for hyp in TRICKY:
        for ref in TRICKY:
            assert sentence_chrf(hyp, [ref], **kw).score == sacrebleu.CHRF(**kw).sentence_score(hyp, [ref]).score, (hyp, ref)
    assert_chrf_same(TRICKY, [TRICKY[::-1], TRICKY[1:] + TRICKY[:1]], **kw)


@pytest.mark.parametrize("kw", TER_OPTIONS, ids=str)
def test_ter_on_tricky_strings(kw):
    for hyp in TRICKY:
        for ref in TRICKY:
            ours, theirs = sentence_ter(hyp, [ref], **kw), sacrebleu.TER(**kw).sentence_score(hyp, [ref])
            assert (ours.score, ours.num_edits) == (theirs.score, theirs.num_edits), (hyp, ref)
    assert_ter_same(TRICKY, [TRICKY[::-1], TRICKY[1:] + TRICKY[:1]], **kw)


def test_ter_shifts_count_as_one_edit():
    assert sentence_ter("d e f a b c", ["a b c d e f"]).num_edits == 1  # one block moved
    assert sentence_ter("a b c", ["a b c"]).score == 0.0
    assert sentence_ter("a b", [""]).score == 100.0 and sentence_ter("", [""]).score == 0.0
    assert T._moved(list("abcdef"), 1, 2, 0) == list("bcadef")
    assert T._moved(list("abcdef"), 1, 2, 5) == list("adebcf")


def test_signatures():
    chrf = corpus_chrf(["a b"], [["a b"]], word_order=2)
    assert chrf.name == "chrF2++" and chrf.signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:mtkit")
    ter = corpus_ter(["a b"], [["a b"], ["a c"]], normalized=True)
    assert ter.signature.startswith("nrefs:2|case:lc|tok:tercom|norm:yes|punct:yes|asian:no|version:mtkit")
    assert ter.format(1).startswith("TER|nrefs:2|") and ter.format(1).endswith(" = 0.0")


# ------------------------------------------------------------------ property-based
WORDS = st.sampled_from(["the", "a", "cat", "Cat", "mat", ".", ",", "3.14", "1,000", "-", "x-y", "'s", "&amp;", "!",
                         "(a)", "日本", "。", "ß", "é", "a", "a", "b", "c"])
SENT = st.lists(WORDS, max_size=14).map(" ".join) | st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=24)


@st.composite
def corpora(draw):
    n = draw(st.integers(1, 5))
    hyps = draw(st.lists(SENT, min_size=n, max_size=n))
    refs = [draw(st.lists(SENT, min_size=n, max_size=n)) for _ in range(draw(st.integers(1, 3)))]
    return hyps, refs


def _clipped_by_definition(hyp, refs, max_order):
    """Per order, the sum over n-grams of min(hypothesis count, largest count in one reference)."""
    def counts(seq, n):
        return Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))

    expected = []
    for n in range(1, max_order + 1):
        ref = Counter()
        for r in refs:
            ref |= counts(r, n)
        expected.append(sum(min(c, ref[g]) for g, c in counts(hyp, n).items()))
    return expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("aab", max_size=14), min_size=1, max_size=3), st.text("abc", max_size=14),
       st.integers(1, 6))
def test_clipped_matches_are_the_clipped_counts(refs, hyp, max_order):
    """base.clipped_matches (distinct hits by sets, repeats the reference allows counted one by one,
    no set once an order's hits do not repeat) against its definition, on text made of repeats:
    BLEU's n-grams of tokens (the best of several references) and chrF's of characters."""
    from mtkit.metrics import base
    from mtkit.metrics.bleu import max_ngram_counts, ngram_orders
    from mtkit.metrics.chrf import char_ngrams

    expected = _clipped_by_definition(hyp, refs, max_order)
    assert base.clipped_matches(ngram_orders(list(hyp), max_order), max_ngram_counts(list(map(list, refs)),
                                                                                    max_order)) == expected
    assert base.clipped_matches(char_ngrams(hyp, max_order), base.count_ngrams(char_ngrams(refs[0], max_order))) \
        == _clipped_by_definition(hyp, refs[:1], max_order)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpora(), st.sampled_from(CHRF_OPTIONS))
def test_random_corpora_chrf(corpus, kw):
    assert_chrf_same(*corpus, **kw)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpora(), st.sampled_from(TER_OPTIONS))
def test_random_corpora_ter(corpus, kw):
    assert_ter_same(*corpus, **kw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from("abcdefgh"), min_size=5, max_size=40), st.randoms(use_true_random=False))
def test_ter_on_permutations(words, rnd):
    """Shuffled blocks of a sentence: what TER's shift search is for (long inputs reach its limits)."""
    hyp = words[:]
    for _ in range(rnd.randint(1, 4)):
        i, j = sorted(rnd.sample(range(len(hyp) + 1), 2))
        block = hyp[i:j]
        del hyp[i:j]
        k = rnd.randint(0, len(hyp))
        hyp[k:k] = block
    assert_ter_same([" ".join(hyp)], [[" ".join(words)]])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(26, 120), st.integers(1, 360), st.integers(2, 30), st.floats(0, 1), st.randoms(use_true_random=False))
def test_ter_bit_parallel_distance_is_tercoms_banded_one(m, n, vocabulary, copied, rnd):
    """Where the band binds (long references, very unequal lengths) as where it cannot: the distance
    and trace TER's shift search uses equal Tercom's banded matrix's, or fall back to it."""
    words = [f"w{i}" for i in range(vocabulary)]
    ref = [rnd.choice(words) for _ in range(m)]
    hyp = [w if rnd.random() > 0.2 else rnd.choice(words) for w in (ref * 3)[:n]] if rnd.random() < copied else \
        [rnd.choice(words) for _ in range(n)]
    reference = T.Reference(ref)
    banded = T.BandedDistance(ref)(hyp)
    assert T._distance_and_trace(reference, hyp)[:2] == banded
    assert T._columns(reference, hyp, 0, T._start(reference))[2] <= banded[0]  # no band: a lower bound


# ------------------------------------------------------------------ real text
def _perturb(lines, seed):
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = line.split()
        if len(words) > 3 and rng.random() < 0.3:
            i = rng.randrange(len(words) - 2)
            block = words[i:i + 2]
            del words[i:i + 2]
            words[rng.randrange(len(words) + 1):0] = block
        if words and rng.random() < 0.3:
            words.pop(rng.randrange(len(words)))
        out.append(" ".join(words) if rng.random() > 0.02 else "")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("split,lang", [("val", "de"), ("test_2016_flickr", "fr")])
def test_multi30k(multi30k, split, lang):
    refs = read_lines(multi30k / f"{split}.{lang}.gz")
    hyps, second = _perturb(refs, 1), _perturb(refs, 2)
    english = read_lines(multi30k / f"{split}.en.gz")  # real text with little overlap: low scores
    for kw in CHRF_OPTIONS[:3]:
        assert_chrf_same(hyps, [refs], **kw)
        assert_chrf_same(english, [refs, second], **kw)
    for kw in TER_OPTIONS[:3]:
        assert_ter_same(hyps[:400], [refs[:400]], **kw)
        assert_ter_same(english[:200], [refs[:200], second[:200]], **kw)


# ------------------------------------------------------------------ mtkit score
@pytest.fixture
def files(tmp_path):
    rng = random.Random(3)
    words = "a man dog runs in the park with ball red blue".split()
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(60)]
    paths = {"ref": tmp_path / "ref.txt"}
    paths["ref"].write_text("".join(r + "\n" for r in refs))
    for k, seed in (("a", 1), ("b", 2)):
        paths[k] = tmp_path / f"{k}.txt"
        paths[k].write_text("".join(h + "\n" for h in _perturb(refs, seed)))
    return paths


def test_score_prints_every_metric_for_every_system(files):
    code, out, err = run_in_process("score", str(files["ref"]), "-i", str(files["a"]), str(files["b"]),
                                    "-m", "bleu", "chrf", "ter", "--chrf-word-order", "2", "--sacrebleu")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 6 and lines[0].startswith(f"{files['a']}: BLEU|") and lines[1].startswith(f"{files['a']}: chrF2++|")
    assert lines[2].startswith(f"{files['a']}: TER|") and lines[3].startswith(f"{files['b']}: BLEU|")
    code, out, err = run_in_process("score", str(files["ref"]), "-i", str(files["a"]), "-f", "json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["BLEU", "chrF2", "TER"]
    ref_lines, hyp_lines = files["ref"].read_text().splitlines(), files["a"].read_text().splitlines()
    assert rows[1]["score"] == sacrebleu.corpus_chrf(hyp_lines, [ref_lines]).score
    assert rows[2]["num_edits"] == sacrebleu.corpus_ter(hyp_lines, [ref_lines]).num_edits


def test_score_paired_bootstrap_for_every_metric(files):
    code, out, err = run_in_process("score", str(files["ref"]), "-i", str(files["a"]), str(files["b"]),
                                    "--paired-bs", "--paired-bs-n", "100", "-m", "chrf", "ter")
    assert code == 0, err
    assert "chrF2: paired bootstrap" in out and "TER: paired bootstrap" in out and "baseline" in out


def test_sacrebleu_cross_check_fails_on_a_difference(files, monkeypatch):
    from mtkit.metrics import chrf

    real = chrf.f_score
    monkeypatch.setattr(chrf, "f_score", lambda *a: real(*a) + 1e-6)  # a deliberately different number
    code, _, err = run_in_process("score", str(files["ref"]), "-i", str(files["a"]), "-m", "chrf", "--sacrebleu")
    assert code == 1 and "differ in score" in err


def test_score_bad_input(files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("one\n")
    assert_one_line_error(*run_in_process("score", str(files["ref"]), "-i", str(short))[::2], "has 1 lines")
    assert_one_line_error(*run_in_process("score", str(files["ref"]), "-i", str(files["a"]), "-m", "meteor")[::2], "-m")
    assert_one_line_error(*run_in_process("score", str(files["ref"]), "-i", str(files["a"]), "--chrf-word-order", "-1",
                                          "-m", "chrf")[::2], "--chrf-word-order")


def test_score_in_several_processes_equals_one(files, tmp_path):
    """--jobs 2 splits the segments among forked processes: every number and every sentence score in
    the same order as in one process (run as a command, in a process of its own: forking pytest's
    process, which has torch's threads, is what the command never does)."""
    second = tmp_path / "ref2.txt"
    second.write_text("".join(line[::-1] + "\n" for line in files["ref"].read_text().splitlines()))
    args = ["score", str(files["ref"]), str(second), "-i", str(files["a"]), str(files["b"]), "-m", "bleu", "chrf", "ter",
            "--sentence-level", "-f", "json", "--paired-bs", "--paired-bs-n", "50"]
    outputs = []
    for jobs in ("1", "2"):
        done = subprocess.run([sys.executable, "-m", "mtkit", *args, "--jobs", jobs], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == 6 and all(len(r["sentences"]) == 60 for r in outputs[0])


def test_usable_jobs():
    from mtkit.errors import UserError
    from mtkit.metrics.base import PARALLEL_MIN_SEGMENTS, usable_jobs

    assert usable_jobs(1, 10**9) == 1 and usable_jobs(0, PARALLEL_MIN_SEGMENTS - 1) == 1
    if sys.platform == "linux":
        assert usable_jobs(3, 10) == 3
        assert usable_jobs(0, PARALLEL_MIN_SEGMENTS) == len(__import__("os").sched_getaffinity(0))
    with pytest.raises(UserError, match="--jobs"):
        usable_jobs(-1, 10)


def test_metrics_do_not_import_torch():
    code = "import sys, mtkit.metrics; assert 'torch' not in sys.modules and 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
