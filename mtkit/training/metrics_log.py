"""metrics.jsonl: one JSON object per line (mtkit.training.events.record), appended as events happen."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mtkit.files import write_error, write_text_atomic
from mtkit.training.events import Event, record


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, event: Event) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": round(time.time(), 3), **record(event)}) + "\n")
        except OSError as e:
            raise write_error(self.path, e) from None

    def resume_at(self, step: int) -> int:
        """Drop what a resumed run will log again (events after `step`) and the earlier runs'
        `done` events, so that the log reads as one run; returns how many damaged lines (not
        JSON objects, or not UTF-8) were dropped with them."""
        if not self.enabled or not self.path.is_file():
            return 0
        events, damaged = read_counting(self.path)
        kept = [e for e in events if e.get("kind") != "done" and e.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(e) + "\n" for e in kept))
        return damaged


def read(path: Path) -> list[dict]:
    """The events of a log; a line cut short by a kill (the last one), or otherwise damaged, is
    skipped."""
    return read_counting(path)[0]


def read_counting(path: Path) -> tuple[list[dict], int]:
    """(the events of a log, how many of its whole lines were damaged); a last line without its
    newline was cut short by a kill and is skipped without counting."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: nothing, or a line that a kill cut short
    events, damaged = [], 0
    for raw in lines:
        try:
            event = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            damaged += 1
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            damaged += 1
    return events, damaged
