"""docs/cli.md, generated from the commands themselves: every command, its usage and every option
with its type, default and help, so that the reference cannot drift from the code.

    python -m mtkit.cli.reference > docs/cli.md     (`make docs`; a test checks the file is current)
"""

from __future__ import annotations

import typing
from typing import Any

import typer.main

HEADER = """# mtkit command reference

Generated from the code by `python -m mtkit.cli.reference` (`make docs`); a test fails when this
file and the commands disagree. Every command also prints this with `--help`. The settings that
`mtkit train` takes as options are a subset: every setting of `mtkit.config` is reachable with
`--set section.key=value` or a `--config` TOML file.
"""


def _plain(text: str | None) -> str:
    """Help text without rich markup's escapes and styles, on one line."""
    text = (text or "").replace("\\[", "[").replace("[bold]", "").replace("[/]", "")
    return " ".join(text.split()).replace("|", "\\|")


def _kind(param: Any) -> str:
    """The value an option takes: int, float, str, path, a yes/no flag; list: repeatable."""
    if getattr(param, "is_flag", False):
        return "flag"
    annotation = param.type_descriptor.annotation
    if typing.get_origin(annotation) is list:
        return f"{_kind_name(typing.get_args(annotation)[0])}, repeatable"
    choices = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _kind_name(choices[0] if choices else annotation)


def _kind_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).lower().replace("posixpath", "path")


def _option_row(param: Any) -> str:
    flags = ", ".join(f"`{f}`" for f in [*param.opts, *param.secondary_opts])
    kind = _kind(param)
    default = param.default
    hidden = default is None or default is False or default == [] or default == () or param.show_default is False
    shown = "" if hidden else f"`{default}`"
    required = " (required)" if param.required else ""
    return f"| {flags} | {kind}{required} | {shown} | {_plain(getattr(param, 'help', ''))} |"


def _command(path: str, command: Any) -> list[str]:
    lines = [f"## `mtkit {path}`", ""]
    usage = " ".join(command.collect_usage_pieces(command.context_class(command)))
    lines += [f"`mtkit {path} {usage}`", "", _plain(command.help).replace(" · ", "; "), ""]
    options = [p for p in command.params if p.param_type_name == "option"]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    for arg in arguments:
        lines += [f"Argument `{arg.metavar or arg.name.upper()}`: {_plain(arg.help) or _kind(arg)}.", ""]
    if options:
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        lines += [_option_row(p) for p in options]
        lines.append("")
    return lines


def _walk(group: Any, prefix: str = "") -> list[str]:
    lines: list[str] = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):  # a group: its commands
            lines += _walk(command, path + " ")
        else:
            lines += _command(path, command)
    return lines


def markdown() -> str:
    from mtkit.cli import app

    return "\n".join([HEADER, *_walk(typer.main.get_command(app))]).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
