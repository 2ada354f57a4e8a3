"""The documents say what the code does: docs/cli.md is the commands' own reference, and every
command and option the README and docs/ show exists."""

import re
from pathlib import Path

import pytest
import typer.main

from mtkit.cli import app
from mtkit.cli.reference import markdown

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands() -> dict[str, set[str]]:
    """'translate' / 'tokenizer train' -> the options it takes."""
    found: dict[str, set[str]] = {}

    def walk(group, prefix=""):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = {o for p in command.params for o in [*p.opts, *p.secondary_opts]} | {"--help"}

    walk(typer.main.get_command(app))
    found["bleu"] |= {"-i", "--input"}  # sacreBLEU's argument forms, parsed by the command itself
    found["score"] |= {"-i", "--input", "-m", "--metrics"}
    return found


def _invocations(text: str):
    """(the command, the options written after it) of every `mtkit ...` in code: inline spans and
    code blocks, one line at a time."""
    blocks = re.findall(r"```.*?\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    for piece in [*"\n".join(blocks).splitlines(), *spans]:
        for m in re.finditer(r"\bmtkit ((?:tokenizer )?[a-z]+)((?:[^|;&#`]|(?<= )#)*)", piece):
            yield m.group(1), re.findall(r"(?<![\w-])(-{1,2}[a-z][a-z0-9-]*)", m.group(2))


def test_the_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == markdown(), \
        "docs/cli.md is stale: run `make docs` (python -m mtkit.cli.reference > docs/cli.md)"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_command_and_option_shown_exists(document):
    commands = _commands()
    wrong = []
    for command, options in _invocations(document.read_text(encoding="utf-8")):
        if command not in commands and command.split()[0] in ("tokenizer",):
            wrong.append(f"mtkit {command}")
            continue
        if command not in commands:
            continue  # prose such as "mtkit is"; a real command name would be among them
        wrong += [f"mtkit {command} {o}" for o in options if o not in commands[command]]
    assert not wrong, wrong


def test_the_checker_catches_what_does_not_exist():
    bad = "Run `mtkit tokenizer decode -m tok --ids` or\n```\nmtkit translate -m m --beams 4\n```\n"
    commands = _commands()
    flagged = [(c, o) for c, opts in _invocations(bad) for o in opts if o not in commands.get(c, set())]
    assert sorted(flagged) == [("tokenizer decode", "--ids"), ("translate", "--beams")]


PACKAGES = sorted(p for p in (ROOT / "mtkit").iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_each_package_docstring_names_every_module_of_its_package(package):
    """The first page a newcomer opens says what is in the folder: every module is named there."""
    import ast

    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    missing = [m.name for m in sorted(package.glob("*.py")) if m.name != "__init__.py" and m.name not in doc]
    assert not missing, f"{package.name}/__init__.py does not name {missing}"


def test_the_readme_layout_names_every_module_of_a_stage_folder():
    layout = (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    missing = [f"{p.name}/{m.name}" for p in PACKAGES for m in sorted(p.glob("*.py"))
               if m.name != "__init__.py" and f"`{m.name}`" not in layout]
    assert not missing, f"the README's layout table does not name {missing}"
