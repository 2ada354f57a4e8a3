"""Every metric in one table: its name (what `mtkit score -m` takes), its options class, the
command-line options that set it, its sacreBLEU counterpart and the numbers a cross-check
compares. The command line (mtkit.cli.scoring), the cross-check (mtkit.metrics.check) and the
documents (docs/cli.md, generated from the commands) all read it: adding a metric is one entry.
Standard library only (sacreBLEU is imported by the cross-check alone)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mtkit.metrics.bleu import BLEU
from mtkit.metrics.chrf import CHRF
from mtkit.metrics.ter import TER


@dataclass(frozen=True)
class Option:
    """A command-line option setting one field of a metric's options class."""

    field: str  # the options class's field (its type and default come from there)
    flags: tuple[str, ...]  # e.g. ("--lowercase", "-lc")
    help: str
    chosen_later: bool = False  # unset on the command line means "choose" (the tokenizer, by -l), not the default


@dataclass(frozen=True)
class MetricInfo:
    name: str  # what -m takes
    cls: type  # the options class (a frozen dataclass): BLEU, CHRF, TER
    options: tuple[Option, ...]
    sacrebleu: str  # the class of sacreBLEU with the same options, under the same names
    sacrebleu_extra: tuple[tuple[str, Any], ...] = ()  # further arguments it takes
    compared: tuple[str, ...] = ("score",)  # the score's numbers that must equal sacreBLEU's
    ours_only: tuple[str, ...] = ()  # fields sacreBLEU has no argument for

    def build(self, values: dict[str, Any]) -> Any:
        """The metric from option values (field -> value; the fields it does not have are ignored)."""
        own = {f.name for f in fields(self.cls)}
        return self.cls(**{k: v for k, v in values.items() if k in own})


LOWERCASE = Option("lowercase", ("--lowercase", "-lc"), "Lowercase before scoring (BLEU and chrF).")

METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("bleu", BLEU, (
        Option("tokenize", ("--tokenize",), "BLEU: 13a, intl, zh, char, none, ja-mecab, ko-mecab, flores101, "
               "flores200 or spm [default: by -l's target language, else 13a].", chosen_later=True),
        Option("spm_model", ("--spm-model",), "BLEU: the SentencePiece model of flores101, flores200 or spm "
               "(else MTKIT_SPM_MODEL, or sacreBLEU's downloaded copy)."),
        LOWERCASE,
        Option("smooth_method", ("--smooth-method",), "BLEU: none, floor, add-k or exp."),
        Option("smooth_value", ("--smooth-value",), "BLEU: for floor (0.1) and add-k (1)."),
        Option("max_ngram_order", ("--max-ngram-order",), "BLEU-N: the longest n-gram counted."),
    ), "BLEU", (("force", True),), ("score", "counts", "totals", "sys_len", "ref_len", "bp"), ("spm_model",)),
    MetricInfo("chrf", CHRF, (
        Option("char_order", ("--chrf-char-order",), "chrF: character n-gram order."),
        Option("word_order", ("--chrf-word-order",), "chrF: word n-gram order (2: chrF++)."),
        Option("beta", ("--chrf-beta",), "chrF: weight of recall against precision."),
        LOWERCASE,
        Option("whitespace", ("--chrf-whitespace",), "chrF: keep spaces in character n-grams."),
        Option("eps_smoothing", ("--chrf-eps-smoothing",), "chrF: chrF++.py's smoothing."),
    ), "CHRF"),
    MetricInfo("ter", TER, (
        Option("normalized", ("--ter-normalized",), "TER: Tercom's normalisation."),
        Option("no_punct", ("--ter-no-punct",), "TER: remove punctuation."),
        Option("asian_support", ("--ter-asian-support",), "TER: CJK characters as words."),
        Option("case_sensitive", ("--ter-case-sensitive",), "TER: keep case."),
    ), "TER", (), ("score", "num_edits", "ref_length")),
)}


def info_of(metric: Any) -> MetricInfo:
    """The table's entry of a metric object."""
    for info in METRICS.values():
        if isinstance(metric, info.cls):
            return info
    raise TypeError(f"{type(metric).__name__} is not a registered metric")


def options_of(names: list[str]) -> list[Option]:
    """The options of the named metrics, each once (in table order)."""
    seen: dict[str, Option] = {}
    for name in names:
        for option in METRICS[name].options:
            seen.setdefault(option.field, option)
    return list(seen.values())
