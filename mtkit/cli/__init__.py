"""The `mtkit` command line. Each command parses options, calls one library function and renders
the result; heavy libraries (torch, datasets) are imported inside the commands that need them.

    app.py          the typer app, main() (the entry point), standard input and output
    render.py       what a person sees: errors, reports, progress, training's events
    reference.py    docs/cli.md, generated from the commands
    scoring.py      bleu, score
    tokenizers.py   tokenizer train / encode / decode
    training.py     train, prepare, average, export
    translating.py  translate, convert, attention
    serving.py      serve
"""

from mtkit.cli import scoring, serving, tokenizers, training, translating  # noqa: F401  (each adds its commands to app)
from mtkit.cli.app import app, bound_onednn_cache, closed_pipe_is_normal, main, tokenizer_app

for _info in [*app.registered_commands, *tokenizer_app.registered_commands]:
    _info.callback = closed_pipe_is_normal(_info.callback)

__all__ = ["app", "bound_onednn_cache", "main"]
