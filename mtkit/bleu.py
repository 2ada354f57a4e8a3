"""mtkit.bleu, as before the metrics package: BLEU now lives in mtkit.metrics.bleu."""

from mtkit.metrics.bleu import *  # noqa: F403
from mtkit.metrics.bleu import BLEUOptions, BLEUReport, BLEUScore, corpus_bleu, evaluate, sentence_bleu  # noqa: F401
