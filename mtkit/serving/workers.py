"""The model's processes: each loads the model once and translates the batches the server sends it,
one at a time, with CPU threads of its own.

Why processes and not threads: a decoding step is about a thousand small tensor operations, each
dispatched from Python while holding the interpreter's lock. With the batches a server sees (tens
of sentences, not thousands), two threads of one process spend much of their time waiting for each
other, and one thread team over a small batch leaves cores idle (measured: docs/design.md,
Serving). Processes share nothing but a pipe, so the HTTP process never waits for the model either.
Each worker holds its own copy of the model.

A worker ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a service manager reaches the whole
process group): the server decides when it stops, and a worker ends when its pipe closes, which is
also what happens when the server dies.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from mtkit.config import DecodeConfig
from mtkit.errors import UserError
from mtkit.inference.types import Translation, cpu_threads
from mtkit.model.directory import ModelDir, ModelRef
from mtkit.serving.batcher import WorkerLost

AUTO_WORKERS_MAX = 4  # each worker holds a copy of the model: beyond this, more threads per worker


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads (one model, or several as an ensemble), and with how many CPU threads."""

    models: tuple[ModelRef, ...]
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1

    @property
    def model_dir(self) -> Path:
        """The (first) model's directory: what messages name."""
        return Path(self.models[0].path)


class WorkerFailed(RuntimeError):
    """A worker could not translate a batch (its process ended, or the search raised)."""


def processes_and_threads(model_dir: Path, device: str, precision: str, workers: int) -> tuple[int, int]:
    """(workers, CPU threads each). On a CPU, one worker per thread up to AUTO_WORKERS_MAX, the
    threads shared among them (as `mtkit translate` decodes several batches at once, one thread
    each); on a GPU one worker, unless asked for more."""
    threads = cpu_threads()
    if _on_cpu(model_dir, device, precision):
        count = min(workers or min(threads, AUTO_WORKERS_MAX), threads)
    else:
        count = workers or 1
    return count, max(1, threads // count)


def _on_cpu(model_dir: Path, device: str, precision: str) -> bool:
    if device != "auto":
        return device == "cpu"
    if precision == "int8":  # mtkit's int8 decoding is for the CPU
        return True
    from mtkit.inference import ct2

    if ModelDir(model_dir).kind == "converted":
        return ct2.cuda_device_count() == 0
    import torch

    return not torch.cuda.is_available()


class ModelWorker:
    """One model process and the pipe to it; used by one thread at a time. Whether the process
    has ended is read from its pipe, which reads as ended once the process's last thread is gone."""

    def __init__(self, spec: ModelSpec, name: str):
        self.spec, self.name = spec, name
        self.max_positions = 0  # the model's longest input, eos included: known once ready
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, self.spec), name=self.name, daemon=True)
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        """Until the model is loaded; UserError with the worker's message when it could not be."""
        try:
            kind, message = self._conn.recv()
        except (EOFError, OSError):
            kind, message = "error", f"its process ended ({self._end()})"
        if kind == "ready":
            self.max_positions = message
        else:
            self.close()
            where = "" if str(self.spec.model_dir) in message else f"{self.spec.model_dir}: "
            raise UserError(f"{where}the model could not be loaded: {message}")

    def translate(self, lines: list[str], cfg: DecodeConfig) -> list[Translation]:
        """The translations of lines, in order. A process found dead before the batch is sent is
        replaced first; one that dies while translating is replaced too, and the batch fails with
        WorkerFailed (it may be what killed it). WorkerFailed also when the search raised;
        WorkerLost when no new process can be started."""
        if self._conn.poll():  # an idle worker says nothing: what is there is the end of its pipe
            self._restart()
        try:
            self._conn.send((lines, cfg))
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            end = self._restart()
            raise WorkerFailed(f"the model's process ended ({end}) while translating this batch; "
                               "a new one was started") from None
        if kind != "ok":
            raise WorkerFailed(value)
        return value

    def _restart(self) -> str:
        """A new process in place of one that ended; how the old one ended."""
        end = self._end()
        self._conn.close()
        self._start()
        try:
            self.wait_ready()
        except UserError as e:
            raise WorkerLost(f"the model's process ended ({end}) and no new one could start: {e}") from None
        return end

    def close(self, timeout: float = 10) -> None:
        """End the process: politely, then by force."""
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._conn.close()
        if not wait([self.process.sentinel], timeout):
            self.process.kill()
            wait([self.process.sentinel], 5)

    def _end(self) -> str:
        """How the process ended (after waiting a little for it to be gone)."""
        if not wait([self.process.sentinel], 5):
            self.process.kill()
            return "it stopped answering and was killed"
        self.process.join(1)
        return "exit code unknown" if self.process.exitcode is None else f"exit code {self.process.exitcode}"


def start(spec: ModelSpec, count: int) -> list[ModelWorker]:
    """`count` workers, loading the model at once; every one ready, or UserError and none left."""
    workers = [ModelWorker(spec, f"mtkit-model-{i}") for i in range(count)]
    # before multiprocessing's own exit handler, which would wait forever for processes that
    # ignore SIGTERM: a worker is closed the way it expects, however the server ends
    atexit.register(close_all, workers, 2)
    try:
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        close_all(workers, 2)
        raise
    return workers


def close_all(workers: list[ModelWorker], timeout: float) -> None:
    """End every worker: each finishes its batch, or is killed after `timeout` seconds."""
    for worker in workers:
        worker.close(timeout)


# ----------------------------------------------------------------------------- in the worker's process
def _serve(conn: Connection, spec: ModelSpec) -> None:
    """The worker's life: load, say ready, translate each batch that comes, until None or EOF."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(spec.threads)  # before torch or CTranslate2 starts its threads
    from mtkit.inference.engine import open_engine
    from mtkit.inference.types import TranslateStats

    try:
        engine = open_engine(list(spec.models), device=spec.device, precision=spec.precision, concurrent=1)
    except Exception as e:  # noqa: BLE001 (sent to the server, which stops with it)
        conn.send(("error", str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"))
        return
    if "torch" in sys.modules:  # OMP_NUM_THREADS is read once, when torch is first imported
        import torch

        torch.set_num_threads(spec.threads)
    conn.send(("ready", engine.max_positions))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        lines, cfg = job
        try:
            done = list(engine.translate(lines, cfg, TranslateStats(), chunk_size=max(len(lines), 1)))
        except Exception as e:  # noqa: BLE001 (this batch's requests get a 500; the worker goes on)
            conn.send(("error", f"{type(e).__name__}: {e}"))
            continue
        conn.send(("ok", done))
