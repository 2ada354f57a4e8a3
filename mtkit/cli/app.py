"""The `mtkit` application and what every command shares: the typer app, the entry point that
turns expected mistakes into one line on stderr, start-up without the cycle collector, and
standard input and output. The commands live in the modules beside this one."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import IO, cast

import typer

from mtkit.errors import CheckFailed, Interrupted, UserError

try:  # typer >= 0.2x carries its own click, whose errors derive from TyperException
    from typer import TyperException as _CommandLineError
except ImportError:  # pragma: no cover - older typer uses the click package
    from click import ClickException as _CommandLineError  # type: ignore[assignment]

app = typer.Typer(
    name="mtkit",
    help="Machine translation toolkit: SentencePiece tokenizers, Transformer training, beam search, BLEU.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from mtkit import __version__

        typer.echo(f"mtkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Machine translation toolkit: SentencePiece tokenizers, Transformer training, beam search, BLEU."""


tokenizer_app = typer.Typer(help="Train and inspect SentencePiece tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


def config_options(keys: Sequence[str], root: type | None = None, show_defaults: bool = False):
    """Give a command one option per config setting of `keys` (of mtkit.config's `root`, RunConfig
    by default): name, type and help come from the setting's declaration, so that each is declared
    once. The command receives them as `settings`: {key: the value given, or None}."""
    import inspect

    from mtkit.config import RunConfig
    from mtkit.config_io import describe

    def decorate(command):
        names = {key: key.rpartition(".")[2] for key in keys}
        options = []
        for key, name in names.items():
            s = describe(key, root or RunConfig)
            text = s.help
            if show_defaults and not key.startswith("model."):  # a model's defaults are its preset's
                # escaped: rich would read a bare [default: 5] as markup
                shown = s.flag.split("/")[0 if s.default else 1] if s.kind is bool else s.default
                text = f"{text} \\[default: {shown}]"
            options.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=s.kind | None,
                                             default=typer.Option(None, s.flag, help=text or None, show_default=False)))

        @functools.wraps(command)
        def run(**kwargs):
            return command(**{k: v for k, v in kwargs.items() if k not in names.values()},
                           settings={key: kwargs[name] for key, name in names.items()})

        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "settings"]
        run.__signature__ = inspect.Signature(own + options)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in own + options}
        return run

    return decorate


def main() -> None:
    """Entry point: expected mistakes become one line on stderr and exit status 2; a signal
    (SIGTERM, SIGINT) stops the command with its clean-up run, one line, and status 128 + signal."""
    bound_onednn_cache()
    try:
        with _start_up_without_cycle_collection(), _interrupt_on_signals():
            rv = app(standalone_mode=False)
            if sys.stdout is not None:
                Stdout(sys.stdout).flush()  # here, where a full or closed output is handled below
    except UserError as e:
        if not e.quiet:
            _print_error(str(e))
        if isinstance(e, StdoutFailed):
            _discard_stdout()
        sys.exit(2)
    except CheckFailed as e:
        _print_error(str(e))
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except _CommandLineError as e:  # a missing option, a value of the wrong type: one line too
        _print_error(e.format_message().rstrip(".") + " (see --help)")  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        _print_error(f"interrupted by {signal.Signals(signum).name}; nothing half-written was left behind")
        sys.exit(128 + signum)
    except (_PipeClosed, BrokenPipeError):
        _discard_stdout()
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)


def _discard_stdout() -> None:
    """Nothing more can be written: point stdout at /dev/null so that the flush at exit cannot fail."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextlib.contextmanager
def _interrupt_on_signals():
    """SIGTERM (what `kill`, timeout and job schedulers send) and SIGINT (Ctrl-C) raise Interrupted
    in the command, so that its clean-up runs and it exits with 128 + the signal; the handlers
    found are put back afterwards. (`mtkit train` arms its own: the first signal lets the step
    finish and saves.) Only the main thread may set handlers; in-process callers may not be it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _start_up_without_cycle_collection():
    """Each full pass of Python's cycle collector walks every live object, and `import torch`
    leaves ~170,000 (84 ms a pass on the 2-core EPYC). Left alone, the collector made four such
    passes in a one-sentence `mtkit translate` (~270 ms, a sixth of the whole run), and none
    found anything worth the time. So it is off while a command starts; a command with work that
    may run long calls `work_begins()` once it is set up; and the process exits without the final
    pass (atexit runs before it). The collector is left as it was found, for callers in-process."""
    was_enabled = gc.isenabled()
    gc.disable()
    atexit.unregister(gc.freeze)  # once, however often main() runs in one process
    atexit.register(gc.freeze)
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def work_begins() -> None:
    """The command is set up (libraries imported, model loaded): freeze what start-up allocated,
    which lives as long as the process and need never be walked again, and collect cycles from
    here on as usual."""
    gc.freeze()
    gc.enable()


def bound_onednn_cache() -> None:
    """torch's CPU bf16 kernels come from oneDNN, which caches one compiled primitive per distinct
    tensor shape, up to 1,024. Length-bucketed batches bring new shapes at every step: bf16 training
    of the `small` model measured 4.4 GB after 600 updates (5.4 GB later) with the default, 2.7 GB
    with 16 entries, at the same speed (docs/benchmarks.md, Speed). It is read when torch creates its first
    primitive; a value in the environment wins. (mtkit.training.trainer.train sets it too, for library use.)"""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def _print_error(message: str) -> None:
    from mtkit.cli.render import print_error  # rich is imported only when there is something to show

    print_error(message)


class StdoutFailed(UserError):
    """Standard output cannot take what a command writes (a full disk, /dev/full, an I/O error)."""


class Stdout:
    """Standard output as the commands write it: a write that fails (other than a reader that went
    away, which stays a BrokenPipeError) becomes one line naming standard output."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as e:
            raise self._failed(e) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            raise self._failed(e) from None

    @staticmethod
    def _failed(e: OSError) -> Exception:
        if isinstance(e, BrokenPipeError):
            return e
        return StdoutFailed(f"standard output: cannot write ({e.strerror or e})")

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def stdout() -> IO[str]:
    if sys.stdout is None:
        raise UserError("standard output is closed: nowhere to write the result (redirect it, or use -o FILE)")
    return cast(IO[str], Stdout(sys.stdout))


def stdin_lines(alternative: str = "give the input with -i FILE (or pipe it in)"):
    """Lines of stdin, decoded as UTF-8 with errors naming <stdin> and the line. `alternative`
    says how else the command takes its input, should stdin be closed."""
    from mtkit.data.textio import decode_line

    if sys.stdin is None:
        raise UserError(f"standard input is closed: {alternative}")
    for i, raw in enumerate(sys.stdin.buffer, start=1):
        yield decode_line(raw, "<stdin>", i)


class _PipeClosed(Exception):
    """The reader of our output went away (`mtkit ... | head -1`): a normal end, exit status 0."""


def closed_pipe_is_normal(command):
    """Wrap a command so that a closed output pipe reaches main() as _PipeClosed (click would
    turn it into exit status 1)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            raise _PipeClosed from None
    return wrapper
