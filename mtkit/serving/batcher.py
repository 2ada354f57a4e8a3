"""Translating requests together: the thread that calls `run` (the main one: torch's CPU thread
team driven from another thread ran a sentence 2x slower on 2 cores) takes every request waiting
when it is free and translates them in one call of the engine (up to a sentence budget, after
waiting at most `max_wait` seconds for company), which cuts them into length-sorted batches and,
on a CPU, decodes several at once as `mtkit translate` does.

A sentence's translation does not depend on its batch (the search is batch-size invariant), so a
request gets what `mtkit translate` gives. The queue is bounded: a request that would take it
past `max_queue` sentences is refused at once (the server answers 429), so none waits behind an
unbounded backlog.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from dataclasses import dataclass, field

from mtkit.config import DecodeConfig
from mtkit.inference.engine import Engine
from mtkit.inference.types import TranslateStats, Translation

# How long the model's thread (the main one) waits at most at a time. Python runs a signal's handler
# in the main thread only, and only between bytecodes: a SIGTERM that the kernel delivers to another
# thread (HTTP, OpenMP) would wait for as long as the main thread is blocked on a lock.
SIGNAL_CHECK = 0.2


class Overloaded(Exception):
    """The queue is full: try again later (HTTP 429)."""


@dataclass
class _Request:
    sentences: list[str]
    nbest: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    batches: int = 0
    sentences: int = 0
    requests: int = 0


class Batcher:
    """The model's thread and its queue. `translate` is awaited from the event loop."""

    def __init__(self, engine: Engine, cfg: DecodeConfig, max_queue: int = 2048, max_batch: int = 256,
                 max_wait: float = 0.002):
        self.engine, self.cfg = engine, cfg
        self.max_queue, self.max_batch, self.max_wait = max_queue, max_batch, max_wait
        self.stats = BatcherStats()
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued = 0  # sentences waiting
        self._cond = threading.Condition()
        self._closing = False

    @property
    def queued(self) -> int:
        return self._queued

    async def translate(self, sentences: list[str], nbest: int = 1) -> list[Translation]:
        """The translations of `sentences` (each with up to `nbest` hypotheses); Overloaded when the
        queue has no room for them."""
        loop = asyncio.get_running_loop()
        request = _Request(sentences, nbest, loop.create_future(), loop)
        with self._cond:
            if self._closing:
                raise Overloaded("the server is shutting down")
            if self._queued + len(sentences) > self.max_queue:
                raise Overloaded(f"{self._queued} sentences are waiting (at most {self.max_queue})")
            self._queue.append(request)
            self._queued += len(sentences)
            self._cond.notify()
        return await request.future

    def close(self) -> None:
        """Refuse new requests; `run` returns once what is queued is translated."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the model's thread
    def run(self) -> None:
        """Translate requests as they come, until close() and an empty queue."""
        while True:
            group = self._next_group()
            if group is None:
                return
            self._translate(group)

    def _next_group(self) -> list[_Request] | None:
        """Wait for a request, then for company (at most max_wait, while under max_batch
        sentences); take whole requests up to max_batch sentences (at least one)."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait(SIGNAL_CHECK)
            deadline = time.monotonic() + self.max_wait
            while self._queued < self.max_batch and not self._closing and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            group: list[_Request] = []
            size = 0
            while self._queue and (not group or size + len(self._queue[0].sentences) <= self.max_batch):
                request = self._queue.popleft()
                group.append(request)
                size += len(request.sentences)
            self._queued -= size
            return group

    def _translate(self, group: list[_Request]) -> None:
        lines = [s for r in group for s in r.sentences]
        nbest = max(r.nbest for r in group)
        cfg = dataclasses.replace(self.cfg, nbest=nbest)
        try:
            done = list(self.engine.translate(lines, cfg, TranslateStats(), chunk_size=max(len(lines), 1)))
        except Exception as e:  # reported to every request of the batch (HTTP 500); the server goes on
            for r in group:
                r.loop.call_soon_threadsafe(_settle, r.future, None, e)
            return
        with self._cond:
            self.stats.batches += 1
            self.stats.sentences += len(lines)
            self.stats.requests += len(group)
        first = 0
        for r in group:
            mine = done[first:first + len(r.sentences)]
            first += len(r.sentences)
            r.loop.call_soon_threadsafe(_settle, r.future, mine, None)


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
