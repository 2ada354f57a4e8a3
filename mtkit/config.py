"""Every setting of mtkit in typed dataclasses, the model presets, TOML loading and overrides.

Defaults live here and nowhere else. Standard library only.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from mtkit.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ModelConfig:
    """The Transformer. Sizes of "Attention Is All You Need" for base/big; see PRESETS."""

    src_vocab_size: int = 8000  # set from the tokenizer at training time
    tgt_vocab_size: int = 8000
    d_model: int = 256  # width of every residual stream
    n_heads: int = 4  # attention heads (d_model must divide evenly)
    d_ff: int = 1024  # hidden width of the position-wise feed-forward
    n_enc_layers: int = 3
    n_dec_layers: int = 3
    dropout: float = 0.1  # on embeddings, sub-layer outputs and in the feed-forward
    attn_dropout: float = 0.0  # on attention probabilities
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation (fairseq's default)
    activation: Literal["relu", "gelu"] = "relu"
    norm: Literal["pre", "post"] = "pre"  # pre-norm (stable) or post-norm (the original paper)
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_positions: int = 1024  # longest sequence the position table covers
    share_embeddings: bool = True  # one embedding for source and target (needs a joint vocabulary)
    tie_output: bool = True  # output projection shares the target embedding matrix

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise UserError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise UserError("model.share_embeddings needs one joint vocabulary (source and target sizes differ)")
        _check_positive(self, "d_model", "n_heads", "d_ff", "n_enc_layers", "n_dec_layers", "max_positions")
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
        raise UserError(f"--preset: unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return ModelConfig(**{**PRESETS[name], **overrides})


@dataclass
class DataConfig:
    """Reading, cleaning and batching a parallel corpus."""

    max_tokens: int = 4096  # batch budget: sentences x longest padded length, per side
    max_len: int = 250  # drop pairs longer than this many tokens on either side
    max_ratio: float = 3.0  # drop pairs whose token-length ratio exceeds this (0 disables)
    dedup: bool = False  # drop exact duplicate pairs
    num_proc: int = 1  # processes for encoding
    seed: int = 1  # batch order is shuffled per epoch from this seed

    def validate(self) -> None:
        _check_positive(self, "max_tokens", "max_len", "num_proc")
        if self.max_ratio < 0:
            raise UserError(f"data.max_ratio must be >= 0, got {self.max_ratio}")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    lr: float = 5e-4  # peak learning rate, reached after warmup
    warmup: int = 4000  # linear warmup steps, then inverse square root decay
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 disables
    update_freq: int = 1  # gradient accumulation: batches per optimiser step
    max_steps: int = 0  # 0: no limit
    max_epochs: int = 0  # 0: no limit
    max_time: float = 0.0  # seconds of wall time, 0: no limit
    valid_every: int = 1000  # steps between validations (0: only at the end)
    save_every: int = 1000  # steps between checkpoints (0: only at validations and the end)
    keep_last: int = 10  # step checkpoints kept besides last/best
    patience: int = 0  # validations without a better BLEU before stopping (0: never)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    seed: int = 1
    compile: bool = False  # torch.compile the model
    log_every: int = 50  # steps between progress events
    valid_max_sentences: int = 0  # decode only the first N validation sentences (0: all)
    max_nonfinite: int = 10  # consecutive non-finite losses before giving up
    threads: int = 0  # torch CPU threads (0: torch's default)

    def validate(self) -> None:
        _check_positive(self, "lr", "update_freq", "keep_last", "max_nonfinite")
        _check_range(self, "label_smoothing", 0.0, 1.0)
        for name in ("warmup", "max_steps", "max_epochs", "max_time", "valid_every", "save_every", "patience"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class DecodeConfig:
    """Search settings for translate and validation."""

    beam: int = 5  # 1 is greedy search
    length_penalty: float = 1.0  # alpha: scores are log p / len ** alpha (fairseq --lenpen, Marian --normalize)
    max_len_a: float = 1.2  # longest output: a * source length + b tokens
    max_len_b: int = 10
    nbest: int = 1
    max_tokens: int = 8000  # batch budget (source tokens x beam)

    def validate(self) -> None:
        _check_positive(self, "beam", "nbest", "max_tokens")
        if self.nbest > self.beam:
            raise UserError(f"--nbest ({self.nbest}) cannot exceed --beam ({self.beam})")


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


SECTIONS = ("model", "data", "train", "decode")


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise UserError(f"{_section(obj)}.{name} must be positive, got {getattr(obj, name)}")


def _check_range(obj: Any, name: str, low: float, high: float) -> None:
    value = getattr(obj, name)
    if not low <= value < high:
        raise UserError(f"{_section(obj)}.{name} must be in [{low}, {high}), got {value}")


def _section(obj: Any) -> str:
    return type(obj).__name__.removesuffix("Config").lower()


# ----------------------------------------------------------------------------- TOML and overrides
def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


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
    setattr(section, key, coerce(value, _field_type(type(section), key), where))


def apply_override(cfg: RunConfig, assignment: str) -> None:
    """Apply `section.key=value` (or `key=value` when the key is unique across sections).
    `preset=NAME` replaces the whole model section with the preset's."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected key=value, e.g. train.lr=0.001")
    key, value = (s.strip() for s in assignment.split("=", 1))
    if key == "preset":  # the model section becomes the preset's; later settings apply on top
        cfg.preset, cfg.model = value, preset(value)
        return
    if "." in key:
        section_name, name = key.split(".", 1)
        if section_name not in SECTIONS:
            raise UserError(f"--set {assignment!r}: unknown section {section_name!r} (one of {', '.join(SECTIONS)})")
        _apply(getattr(cfg, section_name), name, value, f"--set {key}")
        return
    owners = [s for s in SECTIONS if key in {f.name for f in fields(getattr(cfg, s))}]
    if len(owners) != 1:
        hint = f"ambiguous, write one of {', '.join(f'{s}.{key}' for s in owners)}" if owners else "unknown setting"
        raise UserError(f"--set {key}: {hint}")
    _apply(getattr(cfg, owners[0]), key, value, f"--set {key}")


def from_dict(data: dict[str, Any], where: str) -> RunConfig:
    """A RunConfig from a dict shaped like config.toml: preset first, then the sections."""
    unknown = set(data) - {"preset", *SECTIONS}
    if unknown:
        raise UserError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    name = data.get("preset", "small")
    cfg = RunConfig(preset=name, model=preset(name))
    for section in SECTIONS:
        for key, value in data.get(section, {}).items():
            _apply(getattr(cfg, section), key, value, f"{where} [{section}] {key}")
    return cfg


def load_toml(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid TOML ({e})") from None
    return from_dict(data, str(path))


def assemble(config_file: str | Path | None, options: dict[str, Any], overrides: list[str]) -> RunConfig:
    """`mtkit train`'s settings in order of precedence: the config file (or the defaults), then the
    named options that were given (`section.key` -> value, None meaning not given), then each --set."""
    cfg = load_toml(config_file) if config_file else RunConfig()
    for key, value in options.items():
        if value is not None:
            apply_override(cfg, f"{key}={value}")
    for assignment in overrides:
        apply_override(cfg, assignment)
    return cfg


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_toml(cfg: RunConfig) -> str:
    """Serialise to TOML (flat sections of scalars, lists for tuples)."""
    lines = [f'preset = "{cfg.preset}"']
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for f in fields(getattr(cfg, section)):
            lines.append(f"{f.name} = {_toml_value(getattr(getattr(cfg, section), f.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
