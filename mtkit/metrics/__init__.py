"""Evaluation metrics written from scratch, standard library only, every number equal to
sacreBLEU's: BLEU, chrF / chrF++, TER. The functions mirror sacreBLEU's names and arguments."""

from mtkit.metrics.bleu import BLEU, BLEUScore, corpus_bleu, sentence_bleu
from mtkit.metrics.chrf import CHRF, CHRFScore, corpus_chrf, sentence_chrf
from mtkit.metrics.ter import TER, TERScore, corpus_ter, sentence_ter

__all__ = ["BLEU", "BLEUScore", "CHRF", "CHRFScore", "TER", "TERScore", "corpus_bleu",
           "corpus_chrf", "corpus_ter", "sentence_bleu", "sentence_chrf", "sentence_ter"]
