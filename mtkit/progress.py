"""Rendering with rich: errors, BLEU reports, training progress and summaries.

Library modules never print; they return values or emit events, and this module shows them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from mtkit.bleu import BLEUReport


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    stderr_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def print_warning(message: str) -> None:
    stderr_console().print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def render_bleu_report(report: BLEUReport, names: Sequence[str], fmt: str, width: int) -> None:
    if fmt == "json":
        _bleu_json(report, names)
        return
    out = sys.stdout
    for k, score in enumerate(report.scores):
        if report.sentence_scores:
            for sent in report.sentence_scores[k]:
                out.write(sent.format(width, signature=False) + "\n")
        prefix = f"{names[k]}: " if len(names) > 1 else ""
        out.write(prefix + score.format(width) + "\n")
    if report.paired:
        _paired_table(report, names, width)


def _bleu_json(report: BLEUReport, names: Sequence[str]) -> None:
    rows = []
    for k, score in enumerate(report.scores):
        row = {"name": "BLEU", "system": names[k], **score.to_dict()}
        if report.paired:
            p = report.paired[k]
            row.update(mean=p.mean, ci_low=p.ci_low, ci_high=p.ci_high, p_value=p.p_value)
        if report.sentence_scores:
            row["sentences"] = [s.score for s in report.sentence_scores[k]]
        rows.append(row)
    json.dump(rows[0] if len(rows) == 1 else rows, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


def _paired_table(report: BLEUReport, names: Sequence[str], width: int) -> None:
    table = Table(title="Paired bootstrap resampling (first system is the baseline)")
    for col in ("system", "BLEU", "mean", "95% CI", "p-value"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, p in zip(names, report.paired):
        p_str = "baseline" if p.p_value is None else f"{p.p_value:.4f}" + (" *" if p.p_value < 0.05 else "")
        table.add_row(
            escape(name), f"{p.score:.{width}f}", f"{p.mean:.{width}f}",
            f"[{p.ci_low:.{width}f}, {p.ci_high:.{width}f}]", p_str,
        )
    Console(highlight=False).print(table)
    Console(highlight=False).print("* p < 0.05: the difference to the baseline is significant")
