"""Every setting of mtkit in typed dataclasses, the model presets, TOML loading and overrides.

Defaults live here and nowhere else. Standard library only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from mtkit.errors import UserError


class ConfigError(UserError):
    """An invalid setting. `key` is its config name (`train.lr`); the CLI shows the name the user
    typed instead (`--lr`, `--set train.lr`, the config file's line) with `relabel`."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem

    def relabel(self, labels: dict[str, str]) -> UserError:
        return UserError(f"{labels.get(self.key, self.key)} {self.problem}")

def setting(default: Any, help: str = "", flag: str | None = None) -> Any:
    """A config field: its default, and the one line of help that `--help` and docs/cli.md show
    for it; `flag` names a yes/no option's two forms when --NAME/--no-NAME would read badly."""
    return field(default=default, metadata={"help": help, "flag": flag})


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelConfig:
    """The Transformer. Sizes of "Attention Is All You Need" for base/big; see PRESETS."""

    src_vocab_size: int = setting(8000, "set from the tokenizer at training time")
    tgt_vocab_size: int = setting(8000, "set from the tokenizer at training time")
    d_model: int = setting(256, "width of every residual stream")
    n_heads: int = setting(4, "attention heads (d_model must divide evenly)")
    d_ff: int = setting(1024, "hidden width of the position-wise feed-forward")
    n_enc_layers: int = setting(3, "encoder layers")
    n_dec_layers: int = setting(3, "decoder layers")
    dropout: float = setting(0.1, "on embeddings, sub-layer outputs and in the feed-forward")
    attn_dropout: float = setting(0.0, "on attention probabilities")
    activation_dropout: float = setting(0.0, "inside the feed-forward, after the activation (fairseq's default)")
    activation: Literal["relu", "gelu"] = setting("relu", "of the feed-forward")
    norm: Literal["pre", "post"] = setting("pre", "pre-norm (stable) or post-norm (the original paper)")
    positions: Literal["sinusoidal", "learned"] = setting("sinusoidal", "position embeddings: fixed or trained")
    max_positions: int = setting(1024, "longest sequence the position table covers")
    share_embeddings: bool = setting(True, "one embedding for source and target (needs a joint vocabulary)")
    tie_output: bool = setting(True, "output projection shares the target embedding matrix")

    def approx_parameters(self) -> int:
        """The parameter count to within biases and norms (for a size check before any allocation)."""
        d, f = self.d_model, self.d_ff
        embeddings = d * self.src_vocab_size + (0 if self.share_embeddings else d * self.tgt_vocab_size)
        output = 0 if self.tie_output else d * self.tgt_vocab_size
        positions = 2 * d * self.max_positions if self.positions == "learned" else 0
        return (embeddings + output + positions + self.n_enc_layers * (4 * d * d + 2 * d * f)
                + self.n_dec_layers * (8 * d * d + 2 * d * f))

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "d_model", "n_heads", "d_ff", "n_enc_layers", "n_dec_layers", "src_vocab_size",
                        "tgt_vocab_size")
        if self.d_model % self.n_heads:
            raise ConfigError("model.d_model", f"({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError("model.share_embeddings", "needs one joint vocabulary (source and target sizes differ)")
        if self.max_positions < 2:
            raise ConfigError("model.max_positions", f"must be at least 2 (bos or eos and one token), got {self.max_positions}")
        _check_range(self, "dropout", 0.0, 1.0)
        _check_range(self, "attn_dropout", 0.0, 1.0)
        _check_range(self, "activation_dropout", 0.0, 1.0)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=32, n_heads=2, d_ff=64, n_enc_layers=1, n_dec_layers=1, dropout=0.0),
    "multi30k": dict(d_model=128, n_heads=4, d_ff=256, n_enc_layers=4, n_dec_layers=4, dropout=0.3),
    "small": dict(d_model=256, n_heads=4, d_ff=1024, n_enc_layers=3, n_dec_layers=3, dropout=0.1),
    "base": dict(d_model=512, n_heads=8, d_ff=2048, n_enc_layers=6, n_dec_layers=6, dropout=0.1),
    "big": dict(d_model=1024, n_heads=16, d_ff=4096, n_enc_layers=6, n_dec_layers=6, dropout=0.3),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError("preset", f"{name!r} is unknown (choose from {', '.join(PRESETS)})")
    return ModelConfig(**{**PRESETS[name], **overrides})


# Decoding's batch budget (source tokens x beam) when DecodeConfig.max_tokens is 0: on a GPU a few
# large batches keep it busy (1,000 Multi30k sentences at beam 5 are two batches); on a CPU smaller
# batches waste less work on finished sentences.
AUTO_MAX_TOKENS = {"cpu": 8000, "cuda": 65536}


CORPUS_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class CorpusSpec:
    """One training corpus: a `[[data.corpora]]` table of a config file. Its text is two files
    (`src`, `tgt`), one TSV/JSONL file (`table`), or a `datasets` hub id (`hub`)."""

    name: str = setting("", "a short name (letters, digits, . _ -): reports and the prepared data use it")
    src: str = setting("", "source text file (with tgt)")
    tgt: str = setting("", "target text file (with src)")
    table: str = setting("", "a TSV (source<TAB>target) or JSONL file, instead of src/tgt")
    hub: str = setting("", "a `datasets` hub id, instead of files")
    hub_config: str = setting("", "the hub dataset's config, e.g. de-en")
    split: str = setting("train", "the hub dataset's split")
    src_key: str = setting("", "field of the source text (JSONL: default src; hub: e.g. translation.en)")
    tgt_key: str = setting("", "field of the target text (JSONL: default tgt; hub: e.g. translation.de)")
    weight: float = setting(1.0, "times its pairs are drawn per epoch; a fraction draws that share of them")
    tag: str = setting("", "a token put before every source sentence (e.g. <BT>); one piece of the tokenizer")

    def validate(self, where: str) -> None:
        if not CORPUS_NAME_RE.fullmatch(self.name):
            raise UserError(f"{where} name: {self.name!r} is not a name (1-64 letters, digits, . _ -, "
                            "starting with a letter or digit)")
        kinds = [k for k, given in (("src/tgt", self.src or self.tgt), ("table", self.table), ("hub", self.hub)) if given]
        if len(kinds) != 1:
            raise UserError(f"{where}: give exactly one of src + tgt, table, or hub (got {' + '.join(kinds) or 'none'})")
        if kinds == ["src/tgt"] and not (self.src and self.tgt):
            raise UserError(f"{where} {'tgt' if self.src else 'src'}: missing (src and tgt go together)")
        if kinds == ["hub"] and not (self.src_key and self.tgt_key):
            raise UserError(f"{where}: a hub corpus needs src_key and tgt_key (e.g. translation.en)")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise UserError(f"{where} weight: must be a positive number, got {self.weight}")
        if self.tag and (self.tag != self.tag.strip() or not self.tag.isprintable()):
            raise UserError(f"{where} tag: {self.tag!r} must be printable and without spaces around it")


def parse_corpora(value: Any, where: str) -> list[CorpusSpec]:
    """`[[data.corpora]]` tables as CorpusSpecs, each checked; errors name the table and key."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise UserError(f"{where}: expected [[data.corpora]] tables")
    known, hints = {f.name for f in fields(CorpusSpec)}, _type_hints(CorpusSpec)
    specs, names = [], set()
    for i, table in enumerate(value, start=1):
        label = f"{where} #{i}" + (f" ({table['name']})" if isinstance(table.get("name"), str) else "")
        for key in table:
            if key not in known:
                raise UserError(f"{label} {key}: unknown key (known: {', '.join(sorted(known))})")
        spec = CorpusSpec(**{k: coerce(v, hints[k], f"{label} {k}") for k, v in table.items()})
        spec.validate(label)
        if spec.name in names:
            raise UserError(f"{label} name: {spec.name!r} is used by another corpus")
        names.add(spec.name)
        specs.append(spec)
    return specs


@dataclass
class DataConfig:
    """Reading, cleaning and batching a parallel corpus."""

    max_tokens: int = setting(4096, "batch budget: sentences x longest padded length, per side")
    max_len: int = setting(250, "drop pairs longer than this many tokens on either side")
    max_ratio: float = setting(3.0, "drop pairs whose token-length ratio exceeds this (0 disables)")
    dedup: bool = setting(False, "drop exact duplicate pairs")
    num_proc: int = setting(0, "processes that encode the corpus (0: every CPU this process may use)")
    seed: int = setting(1, "batch order is shuffled per epoch from this seed")
    corpora: list[CorpusSpec] = field(default_factory=list, metadata={"help": "the training corpora, as "
                                      "[[data.corpora]] tables of a config file"})

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "max_tokens", "max_len")
        _check_non_negative(self, "max_ratio", "num_proc")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    lr: float = setting(5e-4, "peak learning rate, reached after warmup")
    warmup: int = setting(4000, "linear warmup steps, then the schedule's decay")
    schedule: Literal["inverse_sqrt", "linear"] = setting("inverse_sqrt", "linear decays to 0 at the end of max_steps/max_time")
    betas: tuple[float, float] = setting((0.9, 0.98), "AdamW's beta1, beta2")
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay")
    label_smoothing: float = setting(0.1, "probability mass spread over the vocabulary in the target")
    clip_norm: float = setting(1.0, "largest gradient norm, larger ones are scaled down (0 disables)")
    update_freq: int = setting(1, "gradient accumulation: batches per optimiser step")
    max_steps: int = setting(0, "updates to train (0: no limit)")
    max_epochs: int = setting(0, "passes over the corpus (0: no limit)")
    max_time: float = setting(0.0, "seconds of wall time, 0: no limit")
    valid_every: int = setting(1000, "steps between validations (0: only at the end)")
    save_every: int = setting(1000, "steps between checkpoints (0: only at validations and the end)")
    keep_last: int = setting(10, "step checkpoints kept besides last/best")
    patience: int = setting(0, "validations without a better best_metric before stopping (0: never)")
    best_metric: Literal["bleu", "chrf"] = setting("bleu", "validation metric that picks best.pt and drives patience")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting("auto", "auto: bf16 on GPUs that have it, fp16 on older ones, fp32 on CPUs")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N")
    seed: int = setting(1, "random seed of initialisation and dropout (data.seed orders the batches)")
    compile: bool = setting(False, "torch.compile each layer (dynamic shapes): pays on a GPU with large batches")
    log_every: int = setting(50, "steps between progress events")
    valid_max_sentences: int = setting(0, "decode only the first N validation sentences (0: all)")
    max_nonfinite: int = setting(10, "consecutive non-finite losses before giving up")
    threads: int = setting(0, "torch CPU threads (0: torch's default)")

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "lr", "update_freq", "keep_last", "max_nonfinite", "log_every")
        _check_range(self, "label_smoothing", 0.0, 1.0)
        _check_non_negative(self, "warmup", "max_steps", "max_epochs", "max_time", "valid_every", "save_every",
                            "patience", "clip_norm", "weight_decay", "threads", "valid_max_sentences")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError("train.betas", f"must both be in [0, 1), got {self.betas}")
        if self.schedule == "linear" and not (self.max_steps or self.max_time):
            raise ConfigError("train.schedule", "linear decays to 0 at the end of a budget: give --max-steps or --max-time")
        if not DEVICE_RE.fullmatch(self.device):
            raise ConfigError("train.device", f"{self.device!r} is not a device (auto, cpu, cuda or cuda:N)")


@dataclass
class DecodeConfig:
    """Search settings for translate and validation."""

    beam: int = setting(5, "beam size (1: greedy search)")
    length_penalty: float = setting(1.0, "alpha: a hypothesis scores log p / length ** alpha (fairseq --lenpen, "
                                         "Marian --normalize); 0: the raw log-probability")
    max_len_a: float = setting(1.2, "longest output: a * source length + b tokens (this is a)")
    max_len_b: int = setting(10, "longest output: a * source length + b tokens (this is b)")
    nbest: int = setting(1, "hypotheses per sentence (jsonl output lists them)")
    max_tokens: int = setting(0, f"batch budget, source tokens x beam (0: {AUTO_MAX_TOKENS['cpu']:,} on a CPU, "
                                 f"{AUTO_MAX_TOKENS['cuda']:,} on a GPU)")
    sampling: bool = setting(False, "sample each token instead of searching (back-translation); --nbest N gives N samples")
    topk: int = setting(0, "sampling: from the k most probable tokens only (0: all)")
    topp: float = setting(1.0, "sampling: from the most probable tokens whose probability reaches p (nucleus)")
    temperature: float = setting(1.0, "sampling: divides the log-probabilities (below 1: closer to greedy)")
    seed: int = setting(0, "sampling: with the sentence's line number, fixes its samples")

    @property
    def rows_per_sentence(self) -> int:
        """Decoder rows a sentence takes: its samples, or its beam (what the batch budget counts)."""
        return self.nbest if self.sampling else self.beam

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "beam", "nbest", "max_len_b", "temperature")
        _check_non_negative(self, "max_len_a", "max_tokens", "topk", "seed")
        if not 0.0 < self.topp <= 1.0:
            raise ConfigError("decode.topp", f"must be in (0, 1], got {self.topp}")
        if abs(self.length_penalty) > 10:
            raise ConfigError("decode.length_penalty", f"must be in [-10, 10] (useful values are 0 to 2), got {self.length_penalty}")
        if self.beam > MAX_BEAM:
            raise ConfigError("decode.beam", f"must be at most {MAX_BEAM} (larger beams do not translate better), got {self.beam}")
        if self.nbest > self.beam and not self.sampling:
            raise ConfigError("decode.nbest", f"({self.nbest}) cannot exceed the beam size ({self.beam})")
        if self.sampling and self.nbest > MAX_BEAM:
            raise ConfigError("decode.nbest", f"must be at most {MAX_BEAM} samples, got {self.nbest}")


@dataclass
class TokenizerOptions:
    """A SentencePiece model to train (`mtkit tokenizer train`, or `mtkit train` without --tokenizer)."""

    vocab_size: int = setting(8000, "pieces in the vocabulary (per side with --separate)")
    model_type: str = setting("unigram", "unigram or bpe")
    character_coverage: float = setting(1.0, "share of the characters that get pieces of their own")
    joint: bool = setting(True, "one model for both sides, or one per side", flag="--joint/--separate")
    input_sentence_size: int = setting(2_000_000, "sentences sampled per model (0: all)")
    seed: int = setting(1, "of the sample")
    tags: tuple[str, ...] = setting((), "tokens kept as one piece each (corpus tags such as <BT>)")

    @property
    def byte_fallback(self) -> bool:
        """Unseen characters become UTF-8 byte pieces, so decoding restores them exactly. It takes
        256 vocabulary entries, so it is used only when the vocabulary has room for them."""
        return self.vocab_size >= 1024

    def validate(self) -> None:
        if self.model_type not in ("unigram", "bpe"):
            raise UserError(f"--model-type: expected unigram or bpe, got {self.model_type!r}")
        if self.vocab_size < 8:
            raise UserError(f"--vocab-size must be at least 8, got {self.vocab_size}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise UserError(f"--character-coverage must be in (0, 1], got {self.character_coverage}")
        for tag in self.tags:
            if not tag or tag != tag.strip() or not tag.isprintable():
                raise UserError(f"--tag {tag!r}: a tag is printable text without spaces around it, e.g. <BT>")


@dataclass
class RunConfig:
    """Everything a training run needs; what a model directory's config.toml holds."""

    preset: str = "small"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(beam=1))  # validation decoding

    def validate(self) -> None:
        for section in (self.model, self.data, self.train, self.decode):
            section.validate()
        if self.data.max_len + 1 > self.model.max_positions:
            raise ConfigError("data.max_len", f"({self.data.max_len}) + 1 for bos/eos exceeds model.max_positions "
                                              f"({self.model.max_positions})")


SECTIONS = ("model", "data", "train", "decode")
MAX_BEAM = 256
DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate_labelled(cfg: Any, labels: dict[str, str]) -> None:
    """cfg.validate(), naming each setting as the user wrote it (labels: config key -> name)."""
    try:
        cfg.validate()
    except ConfigError as e:
        raise e.relabel(labels) from None


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{_section(obj)}.{name}", f"must be positive, got {getattr(obj, name)}")


def _check_non_negative(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{_section(obj)}.{name}", f"must be >= 0, got {getattr(obj, name)}")


def _check_range(obj: Any, name: str, low: float, high: float) -> None:
    value = getattr(obj, name)
    if not low <= value < high:
        raise ConfigError(f"{_section(obj)}.{name}", f"must be in [{low}, {high}), got {value}")


def _check_finite(obj: Any) -> None:
    for f in fields(obj):
        values = getattr(obj, f.name)
        for value in values if isinstance(values, tuple) else (values,):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{_section(obj)}.{f.name}", f"must be a finite number, got {value}")


def _section(obj: Any) -> str:
    return type(obj).__name__.removesuffix("Config").lower()


# ----------------------------------------------------------------------------- TOML and overrides
def coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a TOML value or a command-line string into the field's type, or explain why not."""
    origin = typing.get_origin(hint)
    try:
        if origin is Literal:
            if value not in typing.get_args(hint):
                choices = ", ".join(map(str, typing.get_args(hint)))
                raise ValueError(f"expected one of {choices}")
            return value
        if origin in (tuple,):
            items = value.split(",") if isinstance(value, str) else list(value)
            if len(items) != len(typing.get_args(hint)):
                raise ValueError(f"expected {len(typing.get_args(hint))} comma-separated values, got {len(items)}")
            return tuple(coerce(v, t, where) for v, t in zip(items, typing.get_args(hint), strict=True))
        if origin in (typing.Union, types.UnionType):
            return coerce(value, next(a for a in typing.get_args(hint) if a is not type(None)), where)
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("expected an integer")
        return hint(value)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: invalid value {value!r} ({e})") from None


def _apply(section: Any, key: str, value: Any, where: str) -> None:
    names = {f.name for f in fields(section)}
    if key not in names:
        raise UserError(f"{where}: unknown setting {_section(section)}.{key}")
    if isinstance(section, DataConfig) and key == "corpora":
        if isinstance(value, str):
            raise UserError(f"{where}: corpora are [[data.corpora]] tables of a --config file")
        section.corpora = parse_corpora(value, where)
        return
    cls: type = type(section)
    setattr(section, key, coerce(value, _type_hints(cls)[key], where))


def _resolve_key(cfg: RunConfig, key: str, where: str) -> str:
    """`section.key` for a key given with or without its section (when it is unique)."""
    if key == "preset":
        return key
    if "." in key:
        section_name = key.split(".", 1)[0]
        if section_name not in SECTIONS:
            raise UserError(f"{where}: unknown section {section_name!r} (one of {', '.join(SECTIONS)})")
        return key
    owners = [s for s in SECTIONS if key in {f.name for f in fields(getattr(cfg, s))}]
    if len(owners) != 1:
        hint = f"ambiguous, write one of {', '.join(f'{s}.{key}' for s in owners)}" if owners else "unknown setting"
        raise UserError(f"{where}: {hint}")
    return f"{owners[0]}.{key}"


def set_value(cfg: RunConfig, key: str, value: Any, where: str) -> None:
    """Set `section.key` (or `preset`, which replaces the whole model section) from a string or
    TOML value; errors name the setting as `where`."""
    try:
        if key == "preset":
            cfg.preset, cfg.model = str(value), preset(str(value))
            return
        section_name, name = key.split(".", 1)
        _apply(getattr(cfg, section_name), name, value, where)
    except ConfigError as e:
        raise e.relabel({e.key: where}) from None


def apply_override(cfg: RunConfig, assignment: str) -> str:
    """Apply `section.key=value` (or `key=value` when the key is unique across sections);
    returns the setting's full key. `preset=NAME` replaces the whole model section."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected key=value, e.g. train.lr=0.001")
    key, value = (s.strip() for s in assignment.split("=", 1))
    key = _resolve_key(cfg, key, f"--set {key}")
    set_value(cfg, key, value, f"--set {key}")
    return key


def describe(key: str, root: type = RunConfig) -> Setting:
    """A setting of `root` (`train.lr` of RunConfig, `preset`, or `vocab_size` of TokenizerOptions)
    as the command line shows it: its option, type, help (the field's), default (root()'s)."""
    section, _, name = key.rpartition(".")
    cls: Any = _type_hints(root)[section] if section else root
    hint = _type_hints(cls)[name]
    meta: Any = next((f.metadata for f in fields(cls) if f.name == name), {})
    text, default = meta.get("help", ""), getattr(getattr(root(), section) if section else root(), name)
    flag = meta.get("flag") or option_name(key)
    if typing.get_origin(hint) is Literal:
        choices = ", ".join(str(c) for c in typing.get_args(hint))
        return Setting(flag, str, f"{choices}: {text}" if text else choices, default)
    if key == "preset" and root is RunConfig:
        return Setting(flag, str, ", ".join(PRESETS), default)
    if hint is bool and "/" not in flag:
        flag = f"{flag}/--no-{flag[2:]}"
    return Setting(flag, hint, text, default)


@dataclass(frozen=True)
class Setting:
    """A config field as a command-line option."""

    flag: str  # --max-tokens, or --joint/--separate for a yes/no option
    kind: Any  # its type
    help: str
    default: Any


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def option_name(key: str) -> str:
    """The `mtkit train` option of a setting that has one: data.max_tokens -> --max-tokens."""
    return "--" + key.rsplit(".", 1)[-1].replace("_", "-")


def from_dict(data: dict[str, Any], where: str) -> RunConfig:
    """A RunConfig from a dict shaped like config.toml: preset first, then the sections."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: not a config (expected a table of sections)")
    unknown = set(data) - {"preset", *SECTIONS}
    if unknown:
        raise UserError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    cfg = RunConfig()
    set_value(cfg, "preset", data.get("preset", "small"), f"{where} preset")
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise UserError(f"{where} [{section}]: expected a table of settings")
        for key, value in table.items():
            set_value(cfg, f"{section}.{key}", value, f"{where} [{section}] {key}")
    return cfg


def load_toml(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a TOML config file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid TOML ({e})") from None
    return from_dict(data, str(path))


def assemble(config_file: str | Path | None, options: dict[str, Any], overrides: list[str]) -> RunConfig:
    """`mtkit train`'s settings in order of precedence: the config file (or the defaults), then the
    named options that were given (`section.key` -> value, None meaning not given), then each --set.
    The result is validated; an invalid setting is named as the user gave it."""
    cfg = load_toml(config_file) if config_file else RunConfig()
    labels: dict[str, str] = {}
    if config_file:
        labels = {f"{s}.{f.name}": f"{config_file} [{s}] {f.name}" for s in SECTIONS for f in fields(getattr(cfg, s))}
    for key, value in options.items():
        if value is not None:
            labels[key] = option_name(key)
            set_value(cfg, key, value, labels[key])
    for assignment in overrides:
        key = apply_override(cfg, assignment)
        labels[key] = f"--set {key}"
    validate_labelled(cfg, labels)
    return cfg


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_toml(cfg: RunConfig) -> str:
    """Serialise to TOML (sections of scalars, lists for tuples, then [[data.corpora]] tables)."""
    lines = [f'preset = "{cfg.preset}"']
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for f in fields(getattr(cfg, section)):
            if f.name != "corpora":
                lines.append(f"{f.name} = {_toml_value(getattr(getattr(cfg, section), f.name))}")
    for spec in cfg.data.corpora:
        lines += ["", "[[data.corpora]]"]
        lines += [f"{f.name} = {_toml_value(getattr(spec, f.name))}" for f in fields(spec)
                  if getattr(spec, f.name) != f.default or f.name == "name"]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
