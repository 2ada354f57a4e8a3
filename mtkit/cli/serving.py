"""mtkit serve: a model behind LibreTranslate's HTTP API (`pip install 'mtkit[serve]'`)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import typer

from mtkit.cli.app import app, config_options, work_begins
from mtkit.config import DecodeConfig
from mtkit.errors import Interrupted, UserError

SERVE_OPTIONS = ("beam", "length_penalty", "max_len_a", "max_len_b", "max_tokens")
LANG_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z]{2,4})?")


@app.command()
@config_options(SERVE_OPTIONS, root=DecodeConfig, show_defaults=True)
def serve(
    model_dir: Path = typer.Option(..., "-m", "--model", help="Model directory (or a converted CTranslate2 model)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, averaged or a path."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16, fp16, or int8 (on the CPU)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(5000, "--port", help="Port to listen on (LibreTranslate's; 0: any free port)."),
    api_key: str | None = typer.Option(None, "--api-key", help="Every request must carry this api_key (else 403).",
                                       envvar="MTKIT_API_KEY", show_envvar=True),
    max_chars: int = typer.Option(20_000, "--max-chars", help="Characters of q per request (413 above)."),
    max_queue: int = typer.Option(2048, "--max-queue", help="Sentences waiting for the model (429 above)."),
    max_batch: int = typer.Option(256, "--max-batch", help="Sentences translated together at most."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="How long a free model process waits at most "
                                        "for company, when fewer sentences wait than its last batch had."),
    workers: int = typer.Option(0, "--workers", help="Model processes, each decoding its own batches, each with "
                                "its own copy of the model (0: on a CPU one per thread, at most 4, the threads "
                                "shared among them; on a GPU one)."),
    source_lang: str | None = typer.Option(None, "--source-lang", help="The model's source language code "
                                           "(default: from the training files' names, e.g. train.en)."),
    target_lang: str | None = typer.Option(None, "--target-lang", help="The model's target language code."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per request."),
    *,
    settings: dict,
) -> None:
    """Serve a model over HTTP with LibreTranslate's API: POST /translate, GET /languages, /health,
    and a page at / to try it."""
    from mtkit.cli import render
    from mtkit.config import validate_labelled
    from mtkit.config_io import option_name

    try:
        import uvicorn  # noqa: F401 (the serve extra is installed)

        from mtkit.serving import workers as model_workers
        from mtkit.serving.app import ServeOptions, create_app
        from mtkit.serving.batcher import Batcher
    except ImportError as e:
        raise UserError(f"mtkit serve needs the serve extra: pip install 'mtkit[serve]' ({e.name} is missing)") from None

    cfg = DecodeConfig(**{key: value for key, value in settings.items() if value is not None})
    validate_labelled(cfg, {f"decode.{key}": option_name(key) for key in SERVE_OPTIONS})
    for name, value, low in (("--max-chars", max_chars, 1), ("--max-queue", max_queue, 1), ("--max-batch", max_batch, 1),
                             ("--batch-wait-ms", batch_wait_ms, 0), ("--port", port, 0), ("--workers", workers, 0)):
        if value < low or (name == "--port" and value > 65535):
            raise UserError(f"{name} must be {'in 0..65535' if name == '--port' else f'at least {low}'}, got {value}")
    source, target = _languages(model_dir, source_lang, target_lang)
    sock = _listen(host, port)
    count, threads = model_workers.plan(model_dir, device, precision, workers)
    pool = model_workers.start(model_workers.ModelSpec(model_dir, checkpoint, device, precision, threads), count)
    try:
        batcher = Batcher(pool, cfg, max_queue=max_queue, max_batch=max_batch, max_wait=batch_wait_ms / 1000)
        options = ServeOptions(source, target, api_key, max_chars, max_alternatives=cfg.beam - 1)
        server = _http_server(create_app(batcher, options, _request_log(quiet)))
        where = sock.getsockname()
        render.print_info(f"serving {model_dir} ({source} -> {target}; {count} model process{'es' * (count > 1)} "
                          f"x {threads} thread{'s' * (threads > 1)}) on http://{_url_host(where[0])}:{where[1]} "
                          "(POST /translate, GET /languages, /health, and / in a browser)")
        work_begins()
        _run(server, sock, batcher)
    finally:
        model_workers.close_all(pool, timeout=10)
    if batcher.error is not None:
        raise UserError(f"mtkit serve stopped: {batcher.error}")
    render.print_info(f"stopped after {batcher.stats.requests:,} requests ({batcher.stats.sentences:,} sentences)")


def _request_log(quiet: bool):
    """Where the app writes its line per request: stderr, or nowhere."""
    from mtkit.cli import render

    if quiet:
        return lambda line: None
    console = render.stderr_console()
    return lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False)


def _http_server(app):
    """uvicorn serving app; answers in flight get 20 s after SIGTERM."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=20,
                                         lifespan="off"))


def _run(server, sock: socket.socket, batcher) -> None:
    """HTTP in a thread of its own, the batcher's feeding of the model processes driven from this
    (the main) thread. The first SIGTERM or SIGINT stops accepting; what is in flight is answered,
    then the command returns (exit 0); a second one stops at once. When no model process is left,
    the server stops too (after answering what is in flight with the error)."""
    import signal
    import threading

    from mtkit.serving.batcher import SIGNAL_CHECK

    def stop(signum: int, frame: object) -> None:
        if server.should_exit:
            raise Interrupted(signum)
        server.should_exit = True

    def serve_http() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            batcher.close()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    http = threading.Thread(target=serve_http, name="mtkit-http", daemon=True)
    http.start()
    try:
        batcher.run()
        server.should_exit = True  # already, unless the model processes are gone
        while http.is_alive():  # with a timeout, as in Batcher: a signal to another thread is still handled
            http.join(SIGNAL_CHECK)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads (a taken port is found at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of such a socket; without it a
    # kept-alive connection waited 40 ms for each answer (Nagle's algorithm against delayed ACKs)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _languages(model_dir: Path, source: str | None, target: str | None) -> tuple[str, str]:
    """The model's languages: given, or read from the training files' names (train.en, train.de)."""
    guessed = _guess_languages(model_dir)
    source, target = source or guessed[0], target or guessed[1]
    if source is None or target is None:
        raise UserError(f"{model_dir}: its languages are unknown (its training files' names do not say): give "
                        "--source-lang and --target-lang, e.g. --source-lang en --target-lang de")
    for name, code in (("--source-lang", source), ("--target-lang", target)):
        if not LANG_RE.fullmatch(code):
            raise UserError(f"{name}: {code!r} is not a language code (e.g. en, de, pt-BR)")
    return source, target


def _guess_languages(model_dir: Path) -> tuple[str | None, str | None]:
    try:
        manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
        args = [str(a) for a in manifest.get("command_line", [])]
        files = [args[args.index(flag) + 1] for flag in ("--src", "--tgt") if flag in args[:-1]]
        if len(files) != 2 and isinstance(manifest.get("data"), dict) and manifest["data"].get("prepared"):
            info = json.loads((Path(manifest["data"]["prepared"]) / "prepared.json").read_text(encoding="utf-8"))
            quick = info["corpora"][0]["quick"]
            files = [quick["src"][0], quick["tgt"][0]]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None, None
    codes = [Path(f).name.removesuffix(".gz").rpartition(".")[2] for f in files]
    if len(codes) == 2 and all(LANG_RE.fullmatch(c) for c in codes) and codes[0] != codes[1]:
        return codes[0], codes[1]
    return None, None
