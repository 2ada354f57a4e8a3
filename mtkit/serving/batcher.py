"""Translating requests together. Each model worker (mtkit.serving.workers) has a thread here that,
when its worker is free, takes the requests waiting (its share, when other workers are free too;
after waiting at most `max_wait` seconds for company) and sends them to it as one batch; with
several workers, several batches are decoded at once, as `mtkit translate` does on a CPU.

Why wait for company, and how long: the clients just answered by a batch tend to ask again within
milliseconds. A worker that took the few requests already waiting would translate a small batch
(slow per sentence) while the rest queue behind it, and the clients split into cohorts of uneven
size; so a free worker waits, up to max_wait, until its share is as large as its last batch. Under
light load that is one request, so a lone request never waits.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mtkit.config import DecodeConfig
from mtkit.inference.types import Translation

# How long the main thread waits at most at a time. Python runs a signal's handler in the main
# thread only, and only between bytecodes: a SIGTERM that the kernel delivers to another thread
# (HTTP, a worker's) would wait for as long as the main thread is blocked on a lock.
SIGNAL_CHECK = 0.2


class Worker(Protocol):
    """Translates one batch at a time (a ModelWorker, or anything with its `translate`): raises
    WorkerLost when it cannot go on, anything else for a batch that failed."""

    def translate(self, lines: list[str], cfg: DecodeConfig) -> list[Translation]: ...


class WorkerLost(Exception):
    """A worker ended and could not be started again."""


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
    """The queue, and a thread per worker that feeds it batches. `translate` is awaited from the
    event loop; `run` is called from the main thread."""

    def __init__(self, workers: Sequence[Worker], cfg: DecodeConfig, max_queue: int = 2048, max_batch: int = 256,
                 max_wait: float = 0.005):
        self.workers, self.cfg = list(workers), cfg
        self.max_queue, self.max_batch, self.max_wait = max_queue, max_batch, max_wait
        self.stats = BatcherStats()
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued = 0  # sentences waiting
        self._idle = 0  # workers' threads waiting for requests
        self._cond = threading.Condition()
        self._closing = False
        self.error: Exception | None = None  # why `run` ended with no worker left
        self._lost: Exception | None = None  # why a worker stopped for good

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
            self._cond.notify_all()  # every idle worker: they share what waits
        return await request.future

    def close(self) -> None:
        """Refuse new requests; `run` returns once what is queued is translated."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the workers' threads
    def run(self) -> None:
        """Translate requests as they come, until close() and an empty queue, or until no worker is
        left (then `error` says why, and what is queued gets that error)."""
        feeders = [threading.Thread(target=self._feed, args=(w,), name=f"mtkit-feed-{i}", daemon=True)
                   for i, w in enumerate(self.workers)]
        for t in feeders:
            t.start()
        while any(t.is_alive() for t in feeders):
            for t in feeders:
                t.join(SIGNAL_CHECK)
        with self._cond:
            closed = self._closing
        if not closed:  # every worker was lost
            self.close()
            self.error = self._lost
            self._fail_queued(RuntimeError(f"no model worker is left to translate ({self.error})"))

    def _feed(self, worker: Worker) -> None:
        """One worker's loop; it ends when the batcher closes, or when the worker cannot go on."""
        expect = 1
        while (group := self._next_group(expect)) is not None:
            if lost := self._translate(worker, group):
                self._lost = lost
                return
            expect = sum(len(r.sentences) for r in group)

    def _next_group(self, expect: int) -> list[_Request] | None:
        """Wait for a request; then, while this worker's share of what waits (shared with the other
        idle workers) is under `expect` sentences (the size of its last batch: clients that were
        just answered tend to ask again at once), wait at most max_wait for company. Take whole
        requests up to the share (at most max_batch sentences, at least one request)."""
        with self._cond:
            self._idle += 1
            try:
                while True:
                    while not self._queue:
                        if self._closing:
                            return None
                        self._cond.wait()
                    deadline = time.monotonic() + self.max_wait
                    while (self._share() < min(expect, self.max_batch) and not self._closing
                           and (left := deadline - time.monotonic()) > 0):
                        self._cond.wait(left)
                    if self._queue:  # else other workers took it all while this one waited
                        break
                share = min(self.max_batch, self._share())
            finally:
                self._idle -= 1
            group: list[_Request] = []
            size = 0
            while self._queue and (not group or size + len(self._queue[0].sentences) <= share):
                request = self._queue.popleft()
                group.append(request)
                size += len(request.sentences)
            self._queued -= size
            return group

    def _share(self) -> int:
        return -(-self._queued // self._idle)

    def _translate(self, worker: Worker, group: list[_Request]) -> WorkerLost | None:
        """Translate a group and answer its requests; the error when the worker cannot go on. A
        group that fails is translated again one request at a time, so that a request that cannot
        be translated (or whose sentence took the worker's process down) fails alone."""
        lines = [s for r in group for s in r.sentences]
        nbest = max(r.nbest for r in group)
        cfg = dataclasses.replace(self.cfg, nbest=nbest)
        try:
            done = worker.translate(lines, cfg)
        except WorkerLost as e:
            _fail(group, e)
            return e
        except Exception as e:  # noqa: BLE001 (reported to the request, HTTP 500; the server goes on)
            if len(group) == 1:
                _fail(group, e)
                return None
            for k, request in enumerate(group):
                if lost := self._translate(worker, [request]):
                    _fail(group[k + 1:], lost)
                    return lost
            return None
        with self._cond:
            self.stats.batches += 1
            self.stats.sentences += len(lines)
            self.stats.requests += len(group)
        first = 0
        for r in group:
            mine = done[first:first + len(r.sentences)]
            first += len(r.sentences)
            r.loop.call_soon_threadsafe(_settle, r.future, mine, None)
        return None

    def _fail_queued(self, error: Exception) -> None:
        with self._cond:
            group, self._queue = list(self._queue), collections.deque()
            self._queued = 0
        for r in group:
            if not r.loop.is_closed():
                r.loop.call_soon_threadsafe(_settle, r.future, None, error)


def _fail(group: list[_Request], error: Exception) -> None:
    for r in group:
        r.loop.call_soon_threadsafe(_settle, r.future, None, error)


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
