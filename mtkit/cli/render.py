"""Rendering with rich: errors, BLEU reports, training progress and summaries.

Library modules never print; they return values or emit events, and this module shows them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mtkit.metrics.base import short_signature
from mtkit.training import events as ev

if TYPE_CHECKING:
    from mtkit.metrics.report import Report


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def _printable(message: str) -> str:
    """One printable line: control characters (which may come from user input) are escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def print_error(message: str) -> None:
    stderr_console().print(f"[bold red]error:[/] {escape(_printable(message))}", soft_wrap=True)


def print_warning(message: str) -> None:
    stderr_console().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def render_reports(reports: Sequence[Report], names: Sequence[str], fmt: str, width: int, out: IO[str],
                   short: bool = False) -> None:
    """Each metric's report (mtkit.metrics.report.Report) on each system, as text lines or JSON, to
    `out`; `short`: text lines with sacreBLEU's short signatures (JSON keeps the long ones, as sacreBLEU)."""
    if fmt == "json":
        rows = [_json_row(report, k, name, width) for report in reports for k, name in enumerate(names)]
        out.write(json.dumps(rows[0] if len(rows) == 1 else rows, indent=1, ensure_ascii=False) + "\n")
        return
    for k, name in enumerate(names):
        for report in reports:
            if report.sentence_scores:
                for sent in report.sentence_scores[k]:
                    out.write(sent.format(width, signature=False) + "\n")
            score = report.scores[k]
            if short:
                score = copy.copy(score)
                score.signature = short_signature(score.name, score.signature)
            line = score.format(width)
            if report.intervals:  # as sacreBLEU writes it
                line += f" (μ = {report.intervals[k].mean:.{width}f} ± {report.intervals[k].ci:.{width}f})"
            out.write((f"{name}: " if len(names) > 1 else "") + line + "\n")
    for report in reports:
        if report.paired:
            _paired_table(report, names, width, out)
        if report.ar_p_values:
            _ar_table(report, names, width, out)


def _ar_table(report: Report, names: Sequence[str], width: int, out: IO[str]) -> None:
    metric = report.scores[0].name
    table = Table(title=f"{metric}: paired approximate randomization (first system is the baseline)")
    for col in ("system", metric, "p-value"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, score, p in zip(names, report.scores, report.ar_p_values):
        p_str = "baseline" if p is None else f"{p:.4f}" + (" *" if p < 0.05 else "")
        table.add_row(escape(name), f"{score.score:.{width}f}", p_str)
    console = Console(file=out, highlight=False)
    console.print(table)
    console.print("* p < 0.05: the difference to the baseline is significant (p as sacreBLEU computes it)")


def _json_row(report: Report, k: int, name: str, width: int = 1) -> dict:
    score = report.scores[k]
    row = {"name": score.name, "system": name, **score.to_dict()}
    if report.paired:
        p = report.paired[k]
        row.update(mean=p.mean, ci_low=p.ci_low, ci_high=p.ci_high, p_value=p.p_value,
                   p_value_definition="mtkit: two-sided, centred differences (Koehn, 2004)")
    if report.intervals:
        mean, ci = f"{report.intervals[k].mean:.{width}f}", f"{report.intervals[k].ci:.{width}f}"
        row.update(confidence_mean=float(mean), confidence_var=float(ci), confidence=f"μ = {mean} ± {ci}")
    if report.ar_p_values:
        row.update(p_value=report.ar_p_values[k], p_value_definition="sacreBLEU's approximate randomization")
    if report.sentence_scores:
        row["sentences"] = [s.score for s in report.sentence_scores[k]]
    return row


def _paired_table(report: Report, names: Sequence[str], width: int, out: IO[str]) -> None:
    metric = report.scores[0].name
    table = Table(title=f"{metric}: paired bootstrap resampling (first system is the baseline)")
    for col in ("system", metric, "mean", "95% CI", "p-value"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, p in zip(names, report.paired):
        p_str = "baseline" if p.p_value is None else f"{p.p_value:.4f}" + (" *" if p.p_value < 0.05 else "")
        table.add_row(
            escape(name), f"{p.score:.{width}f}", f"{p.mean:.{width}f}",
            f"[{p.ci_low:.{width}f}, {p.ci_high:.{width}f}]", p_str,
        )
    console = Console(file=out, highlight=False)
    console.print(table)
    console.print("* p < 0.05: the difference to the baseline is significant. mean and 95% CI as sacreBLEU's; the "
                  "p-value is mtkit's (two-sided, differences centred on their mean: Koehn, 2004), not sacreBLEU's")


def print_info(message: str) -> None:
    stderr_console().print(escape(message), soft_wrap=True)


def status(message: str):
    """A spinner on a terminal; nothing otherwise."""
    return stderr_console().status(escape(message))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class WorkProgress:
    """Progress of long work on stderr, never stdout: on a terminal a live bar (done of the total
    when it is known, the rate, the time left); otherwise a plain line every `every` seconds;
    nothing when quiet. `update(done)` as the work goes; `fraction` stands in for the total
    where only the share done is known (bytes of a file read)."""

    def __init__(self, what: str, unit: str, total: int | None = None, quiet: bool = False, every: float = 30.0):
        import time

        self.what, self.unit, self.total, self.quiet, self.every = what, unit, total, quiet, every
        self.console = stderr_console()
        self.started = self.shown = time.monotonic()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> WorkProgress:
        if not self.quiet and self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(escape(self.what)), BarColumn(), TextColumn("{task.fields[info]}"),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.what, total=None, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, done: int, fraction: float | None = None) -> None:
        import time

        if self.quiet:
            return
        now = time.monotonic()
        rate = done / max(now - self.started, 1e-9)
        share = fraction if fraction is not None else (done / self.total if self.total else None)
        counted = f"{done:,}" + (f" of {self.total:,}" if self.total else "") + f" {self.unit}"
        if self.bar is not None:  # the bar counts thousandths of the work when its share is known
            self.bar.update(self.task, total=1000 if share is not None else None,
                            completed=1000 * share if share is not None else done, info=f"{counted}, {rate:,.1f}/s")
            return
        if now - self.shown < self.every:
            return
        self.shown = now
        eta = f", eta {_duration((now - self.started) * (1 - share) / share)}" if share else ""
        percent = f" ({100 * share:.0f}%)" if share is not None else ""
        self.console.print(f"{escape(self.what)}: {counted}{percent}, {rate:,.1f} {self.unit}/s{eta}",
                           soft_wrap=True, highlight=False)


class PrepareProgress:
    """Pairs read while preparing a corpus: a line every 10 seconds with the share of its text read
    and the time left, where known (a corpus of millions of pairs takes minutes; a small one
    shows nothing)."""

    def __init__(self, console: Console, quiet: bool = False, every: float = 10.0):
        import time

        self.console, self.quiet, self.every = console, quiet, every
        self.last = time.monotonic()
        self.started: dict[str, float] = {}  # when each corpus began

    def show(self, corpus: str, pairs: int, fraction: float | None = None) -> None:
        import time

        now = time.monotonic()
        began = self.started.setdefault(corpus, now)
        if self.quiet or now - self.last < self.every:
            return
        share = ""
        if fraction:
            share = f" ({100 * fraction:.0f}% of its text, eta {_duration((now - began) * (1 - fraction) / fraction)})"
        self.console.print(f"preparing {escape(corpus)}: {pairs:,} pairs read{share}", soft_wrap=True, highlight=False)
        self.last = now


class TrainRenderer:
    """Shows training's events (mtkit.training.events): a live line on a terminal, plain log lines
    otherwise, a summary table at the end. Warnings and the summary are shown even when quiet."""

    def __init__(self, quiet: bool = False):
        self.console = stderr_console()
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self.progress: Any = None  # a rich Progress while it is live
        self.task: Any = None
        self.prepared = PrepareProgress(self.console, quiet)

    def __enter__(self) -> TrainRenderer:
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]step {task.completed}"), BarColumn(),
                                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, soft_wrap=True, highlight=False)

    def __call__(self, event: ev.Event) -> None:
        match event:
            case ev.Info(message):
                self._line(escape(message))
            case ev.Warn(message):
                self.console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True, highlight=False)
            case ev.Preparing(corpus, pairs, fraction):
                self.prepared.show(corpus, pairs, fraction)
            case ev.DataReport():
                removed = ", ".join(f"{k} {v}" for k, v in event.removed.items())
                self._line(f"corpus: {event.read:,} pairs read, {event.kept:,} kept (removed: {removed})")
                for c in event.corpora:
                    removed = ", ".join(f"{k} {v}" for k, v in c.removed.items())
                    tag = f", tag {c.tag}" if c.tag else ""
                    self._line(f"  {c.name}: {c.read:,} read, {c.kept:,} kept (removed: {removed}); weight {c.weight:g}"
                               f"{tag}: {c.per_epoch:,} pairs per epoch")
            case ev.Start():
                self._on_start(event)
            case ev.TrainStats():
                self._on_train(event)
            case ev.Validation():
                mark = " (best)" if event.improved else ""
                self._line(f"valid step {event.step}: loss {event.valid_loss:.3f} ppl {event.valid_ppl:.2f} "
                           f"BLEU {event.bleu:.2f} chrF2 {event.chrf:.2f}{mark}")
            case ev.Done():
                self._on_done(event)

    def _on_start(self, e: ev.Start) -> None:
        self._line(f"training {e.parameters:,} parameters on {e.device} ({e.precision}, "
                   f"{e.world_size} process(es)), {e.pairs:,} pairs, from step {e.step}")
        if self.progress is not None:
            self.task = self.progress.add_task("train", total=None, completed=e.step, info="")

    def _on_train(self, e: ev.TrainStats) -> None:
        eta = ""
        if e.max_steps:
            rate = e.elapsed / max(e.step, 1)
            eta = f" eta {_duration(rate * (e.max_steps - e.step))}"
        info = (f"epoch {e.epoch} loss {e.loss:.3f} ppl {e.ppl:.2f} lr {e.lr:.2e} "
                f"{e.tgt_tokens_per_update:,.0f} tgt tok/update (fill {e.fill:.2f}) "
                f"{e.tgt_tokens_per_s:,.0f} tgt tok/s elapsed {_duration(e.elapsed)}{eta}")
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=e.step, total=e.max_steps or None, info=info)
        else:
            self._line(f"step {e.step} {info}")

    def _on_done(self, e: ev.Done) -> None:
        table = Table(title="training summary")
        table.add_column("")
        table.add_column("", justify="right")
        rows = [("stopped by", e.reason), ("steps", f"{e.step:,}"), ("epoch", str(e.epoch)),
                ("wall time", _duration(e.elapsed)), ("skipped updates", str(e.skipped_steps)),
                ("pairs longer than --max-tokens", str(e.oversized_pairs))]
        if e.best_score is not None:
            rows.append((f"best valid {'BLEU' if e.best_metric == 'bleu' else 'chrF2'}", f"{e.best_score:.2f}"))
        for k, v in rows:
            table.add_row(k, v)
        self.console.print(table)


def attention_table(result) -> None:
    """The attention matrix in the terminal: rows are output pieces, shaded by weight."""
    table = Table(title=escape(result.translation), show_lines=False)
    table.add_column("")
    for piece in result.src_pieces:
        table.add_column(escape(piece), justify="center")
    for piece, row in zip(result.tgt_pieces, result.weights):
        cells = []
        for w in row:
            level = int(round(w * 255))
            cells.append(f"[on rgb({255 - level},{255 - level},255)]{w:.2f}[/]")
        table.add_row(escape(piece), *cells)
    Console().print(table)


def attention_png(result, path) -> None:
    from mtkit.errors import UserError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("writing a PNG needs matplotlib: pip install 'mtkit[plot]' (or leave out -o for the terminal view)") from None
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(result.src_pieces), 1 + 0.4 * len(result.tgt_pieces)))
    ax.imshow(result.weights, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(result.src_pieces)), result.src_pieces, rotation=60, ha="right")
    ax.set_yticks(range(len(result.tgt_pieces)), result.tgt_pieces)
    ax.set_title(result.translation)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
