"""Evaluation metrics written from scratch, standard library only, every number equal to
sacreBLEU's: BLEU, chrF / chrF++, TER. The functions mirror sacreBLEU's names and arguments.

    bleu.py          BLEU: n-gram statistics, smoothing, the score and its signature
    chrf.py          chrF and chrF++: character (and word) n-gram statistics
    ter.py           TER: edit distance with shifts, Tercom's normalisation
    tokenizers.py    BLEU's tokenizers (13a, intl, zh, char, none)
    base.py          what the metrics share: statistics rows (in parallel), references, signatures
    report.py        one metric on several systems: corpus and sentence scores, the paired bootstrap
    significance.py  paired bootstrap resampling
    registry.py      every metric in one table: options, sacreBLEU counterpart (CLI, cross-check, docs)
    check.py         the cross-check against sacreBLEU itself (mtkit bleu --sacrebleu)
"""

from mtkit.metrics.bleu import BLEU, BLEUScore, corpus_bleu, sentence_bleu
from mtkit.metrics.chrf import CHRF, CHRFScore, corpus_chrf, sentence_chrf
from mtkit.metrics.ter import TER, TERScore, corpus_ter, sentence_ter

__all__ = ["BLEU", "BLEUScore", "CHRF", "CHRFScore", "TER", "TERScore", "corpus_bleu",
           "corpus_chrf", "corpus_ter", "sentence_bleu", "sentence_chrf", "sentence_ter"]
