"""metrics.jsonl: one JSON object per line, appended and flushed as events happen."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mtkit.files import write_text_atomic


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, event: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")

    def resume_at(self, step: int) -> None:
        """Drop what a resumed run will log again (events after `step`) and the earlier runs'
        `done` events, so that the log reads as one run."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [e for e in read(self.path) if e.get("kind") != "done" and e.get("step", 0) <= step]
        write_text_atomic(self.path, "".join(json.dumps(e) + "\n" for e in kept))


def read(path: Path) -> list[dict]:
    """The events of a log; a line cut short by a kill (the last one) is skipped."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
