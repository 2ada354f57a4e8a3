"""Settings in and out: config.toml files (read, written), `--set key=value` overrides, the named
options' values, and each setting as the command line shows it (option name, type, help, default).
Standard library only."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from mtkit.config import (
    PRESETS,
    SECTIONS,
    ConfigError,
    CorpusSpec,
    DataConfig,
    RunConfig,
    preset,
    section_of,
    type_hints,
    validate_labelled,
)
from mtkit.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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


def parse_corpora(value: Any, where: str) -> list[CorpusSpec]:
    """`[[data.corpora]]` tables as CorpusSpecs, each checked; errors name the table and key."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise UserError(f"{where}: expected [[data.corpora]] tables")
    known, hints = {f.name for f in fields(CorpusSpec)}, type_hints(CorpusSpec)
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


def _apply(section: Any, key: str, value: Any, where: str) -> None:
    names = {f.name for f in fields(section)}
    if key not in names:
        raise UserError(f"{where}: unknown setting {section_of(section)}.{key}")
    if isinstance(section, DataConfig) and key == "corpora":
        if isinstance(value, str):
            raise UserError(f"{where}: corpora are [[data.corpora]] tables of a --config file")
        section.corpora = parse_corpora(value, where)
        return
    cls: type = type(section)
    setattr(section, key, coerce(value, type_hints(cls)[key], where))


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
    cls: Any = type_hints(root)[section] if section else root
    hint = type_hints(cls)[name]
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


def given_settings(config_file: str | Path | None, options: dict[str, Any], overrides: list[str]) -> dict[str, str]:
    """The settings a command was given, not left at their defaults: `section.key` -> how it was
    given (the option, --set, or the config file's table), as `assemble` names them. Call it after
    `assemble`, which has checked the file and the assignments."""
    given: dict[str, str] = {}
    if config_file:
        data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        for section in SECTIONS:
            for key in data.get(section, {}) if isinstance(data.get(section), dict) else ():
                given[f"{section}.{key}"] = f"{config_file} [{section}] {key}"
    given.update({key: option_name(key) for key, value in options.items() if value is not None})
    for assignment in overrides:
        key = _resolve_key(RunConfig(), assignment.split("=", 1)[0].strip(), "--set")
        given[key] = f"--set {key}"
    return given


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
