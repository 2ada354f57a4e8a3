"""The layout is the architecture: folders by stage of the pipeline, imports only downward."""

import ast
from pathlib import Path

import mtkit

PACKAGE = Path(mtkit.__file__).parent
# Lowest first. A module may import from its own folder and from folders before it; the modules
# at the package's top (config, config_io, errors, files, runtime) are the shared ground under everything.
LAYERS = ["", "metrics", "data", "model", "inference", "training", "serving", "cli"]


def _layer(module: str) -> int:
    """The layer of a module named `mtkit.a.b` (`mtkit.__main__`, the entry point, is the CLI's)."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # the package itself (__version__)
    if parts[1:] == ["__main__"]:
        return LAYERS.index("cli")
    folder = parts[1] if len(parts) > 2 or (PACKAGE / parts[1]).is_dir() else ""
    return LAYERS.index(folder)


def _imports(path: Path, module: str) -> set[str]:
    """Every mtkit module that `path` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mtkit.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mtkit":
            for alias in node.names:  # `from mtkit.cli import render` imports the module mtkit.cli.render
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file()
                found.add(sub if is_module else node.module)
    return {m for m in found if m != "mtkit"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        yield path, name.removesuffix(".__init__")


def test_every_folder_is_a_known_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), folders - set(LAYERS)


def test_imports_only_go_downward():
    upward = []
    for path, module in _modules():
        for imported in _imports(path, module):
            if _layer(imported) > _layer(module):
                upward.append(f"{module} imports {imported}")
    assert not upward, "\n".join(upward)


def test_nothing_imports_the_command_line():
    cli = LAYERS.index("cli")
    offenders = [f"{module} imports {imported}" for path, module in _modules() if _layer(module) < cli
                 for imported in _imports(path, module) if _layer(imported) == cli]
    assert not offenders, offenders


def test_the_layering_test_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from mtkit.training.trainer import train\n    from mtkit.cli import render\n")
    assert _imports(bad, "mtkit.model.bad") == {"mtkit.training.trainer", "mtkit.cli.render"}
    assert _layer("mtkit.training.trainer") > _layer("mtkit.model.bad") < _layer("mtkit.cli.render")


def test_no_module_imports_itself_back():
    graph = {module: _imports(path, module) - {module} for path, module in _modules()}
    cycles = []

    def visit(module, trail):
        if module in trail:
            cycles.append(" -> ".join(trail[trail.index(module):] + [module]))
            return
        for imported in graph.get(module, ()):
            if imported.startswith(module + "."):
                continue  # a package importing its own modules (its __init__)
            visit(imported, trail + [module])

    for module in graph:
        visit(module, [])
    assert not cycles, cycles[0]


# The command line parses options, calls the library and renders: what it may not do itself.
CLI_FORBIDDEN = {"socket", "threading", "multiprocessing", "subprocess", "shutil", "signal", "torch.distributed"}
CLI_ENTRY = {"signal", "threading"}  # app.py: signals become Interrupted, for every command alike
CLI_LONGEST_BODY = 45  # lines of a function's body, its signature (the options) aside


def _foreign_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("mtkit"):
            found.add(node.module)
    return found


def test_the_command_line_only_parses_and_renders():
    """No sockets, threads, processes, signals or file juggling of its own (the library's rooms
    hold them: serving.server, inference.distributed, data.prepare...), and no long function."""
    wrong = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        allowed = CLI_ENTRY if path.name == "app.py" else set()
        wrong += [f"{path.name} imports {m}" for m in _foreign_imports(path) & (CLI_FORBIDDEN - allowed)]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                body = (node.end_lineno or node.lineno) - node.body[0].lineno + 1
                if body > CLI_LONGEST_BODY:
                    wrong.append(f"{path.name}:{node.lineno} {node.name} has a body of {body} lines")
    assert not wrong, wrong
