"""`mtkit serve` under load: sentences/s and latency from 1, 8, 32 and 128 concurrent clients, each
sending test_2016_flickr's sentences one per request, against translating the same sentences
offline in one process (the same engine, settings and machine, in the same run).

The server is a real `mtkit serve` process on 127.0.0.1; each client is a thread with a keep-alive
HTTP connection. Offline: the engine's `translate` over the 1,000 sentences at once (what
`mtkit translate -i` does after loading the model), and one sentence at a time (the latency floor
for a single client). Last, 10,000 more requests from 32 clients, and the server's resident memory
before and after them.

Usage: python recipes/benchmarks/bench_serve.py MODEL [--clients 1 8 32 128] [--device cpu] [--beam 5]
       [--precision auto] [--batch-wait-ms 5] [--workers 0]

MODEL: an mtkit model directory, or one written by `mtkit convert` (CTranslate2).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import corpus_lines


def start_server(model: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-m", "mtkit", "serve", "-m", str(model), "--port", "0", "--quiet",
                             "--device", args.device, "--precision", args.precision, "--beam", str(args.beam),
                             "--source-lang", "en", "--target-lang", "de", "--batch-wait-ms", str(args.batch_wait_ms),
                             "--workers", str(args.workers)],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if match := re.search(r"on http://([\d.]+):(\d+)", line):
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match.group(1), int(match.group(2))
    raise SystemExit("the server did not start")


def run_clients(host: str, port: int, sentences: list[str], clients: int) -> tuple[float, list[float]]:
    """Every sentence sent once, one per request, by `clients` threads: wall seconds, latencies."""
    todo: queue.Queue[str] = queue.Queue()
    for s in sentences:
        todo.put(s)
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=300)
        while True:
            try:
                sentence = todo.get_nowait()
            except queue.Empty:
                break
            body = json.dumps({"q": sentence, "source": "en", "target": "de"})
            start = time.perf_counter()
            conn.request("POST", "/translate", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                failures.append(f"{response.status} {answer[:100]!r}")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return time.perf_counter() - start, latencies


def offline(model: Path, sentences: list[str], args: argparse.Namespace) -> tuple[float, list[float], str]:
    """Seconds for all the sentences at once, seconds for each of 200 alone, and the engine's name."""
    from mtkit.config import DecodeConfig
    from mtkit.inference.engine import TorchEngine, open_engine
    from mtkit.inference.types import TranslateStats

    engine = open_engine(model, "best", args.device, args.precision)
    if isinstance(engine, TorchEngine):
        dtype = engine.autocast_dtype or next(engine.model.parameters()).dtype
        name = f"mtkit's search (torch {str(dtype).removeprefix('torch.')}, precision {args.precision})"
    else:
        name = f"CTranslate2 ({json.loads((model / 'mtkit.json').read_text())['quantization']})"
    cfg = DecodeConfig(beam=args.beam)
    list(engine.translate(sentences[:50], cfg, TranslateStats()))  # warm-up
    start = time.perf_counter()
    list(engine.translate(sentences, cfg, TranslateStats()))
    whole = time.perf_counter() - start
    one = []
    for s in sentences[:200]:
        start = time.perf_counter()
        list(engine.translate([s], cfg, TranslateStats()))
        one.append(time.perf_counter() - start)
    return whole, one, name


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the server's model processes)."""
    total = 0.0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mb(int(child))
    return total


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=0, help="the server's model processes (0: its default)")
    args = ap.parse_args()
    sentences = corpus_lines("test_2016_flickr", "en")
    whole, one, engine = offline(args.model, sentences, args)
    offline_rate = len(sentences) / whole
    flags = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in open("/proc/cpuinfo").read()]
    print(f"machine: {os.cpu_count()} CPUs ({', '.join(flags)}), device {args.device}, beam {args.beam}, {engine}")
    print(f"offline, {len(sentences):,} sentences at once: {offline_rate:,.1f} sentences/s; one sentence at a time: "
          f"p50 {pct(one, 0.5):.1f} ms")
    proc, host, port = start_server(args.model, args)
    try:
        run_clients(host, port, sentences[:64], 8)  # warm-up
        print("| clients | sentences/s | vs offline | p50 latency | p99 latency |")
        print("|---|---|---|---|---|")
        for clients in args.clients:
            seconds, latencies = run_clients(host, port, sentences, clients)
            rate = len(sentences) / seconds
            print(f"| {clients} | {rate:,.1f} | {rate / offline_rate:.2f}x | {pct(latencies, 0.5):.1f} ms | "
                  f"{pct(latencies, 0.99):.1f} ms |", flush=True)
            if clients == 1:
                print(f"  (one client: p50 {pct(latencies, 0.5) / pct(one, 0.5):.2f}x translating one sentence "
                      "in process)", flush=True)
        before = rss_mb(proc.pid)
        run_clients(host, port, sentences * 10, 32)
        print(f"server memory: {before:,.0f} MB before 10,000 more requests, {rss_mb(proc.pid):,.0f} MB after")
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"exit status after SIGTERM: {proc.returncode}")


if __name__ == "__main__":
    main()
