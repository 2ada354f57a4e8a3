"""mtkit serve: a model behind LibreTranslate's HTTP API (`pip install 'mtkit[serve]'`)."""

from __future__ import annotations

import os
import re

import typer

from mtkit.cli.app import app, config_options, work_begins
from mtkit.config import DecodeConfig
from mtkit.errors import UserError
from mtkit.model.directory import LANG_RE, ModelDir, ModelRef

SERVE_OPTIONS = ("beam", "length_penalty", "max_len_a", "max_len_b", "max_tokens")


@app.command()
@config_options(SERVE_OPTIONS, root=DecodeConfig, show_defaults=True)
def serve(
    models: list[str] = typer.Option(..., "-m", "--model", help="Model directory (or a converted CTranslate2 model); "
                                     "repeat for an ensemble; DIR:CHECKPOINT picks a checkpoint."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, averaged or a path."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16, fp16, or int8 (on the CPU)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(5000, "--port", help="Port to listen on (LibreTranslate's; 0: any free port)."),
    api_key: str | None = typer.Option(None, "--api-key", help="Every request must carry this api_key, as a field "
                                       "or in the query string (else 403).", envvar="MTKIT_API_KEY", show_envvar=True),
    max_chars: int = typer.Option(20_000, "--max-chars", help="Characters of q per request (413 above)."),
    max_queue: int = typer.Option(2048, "--max-queue", help="Sentences waiting for the model (429 above)."),
    max_batch: int = typer.Option(256, "--max-batch", help="Sentences translated together at most."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="How long a free model process waits at most "
                                        "for company, when fewer sentences wait than its last batch had."),
    workers: int = typer.Option(0, "--workers", help="Model processes, each decoding its own batches, each with "
                                "its own copy of the model (0: on a CPU one per thread, at most 4, the threads "
                                "shared among them; on a GPU one)."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds a request's headers, and then its body, may take "
                                  "to arrive (408 after)."),
    max_connections: int = typer.Option(0, "--max-connections", help="Connections open at once (503 and closed "
                                        "beyond; 0: what the file descriptors allow, at most 4,096)."),
    cors_origins: list[str] = typer.Option(["*"], "--cors-origin", help="An origin whose pages may call the API "
                                           "from a browser (repeatable; * any, as LibreTranslate; none: no CORS)."),
    source_lang: str | None = typer.Option(None, "--source-lang", help="The model's source language code "
                                           "(default: from the training files' names, e.g. train.en)."),
    target_lang: str | None = typer.Option(None, "--target-lang", help="The model's target language code."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per request."),
    *,
    settings: dict,
) -> None:
    """Serve a model over HTTP with LibreTranslate's API: POST /translate and /detect, GET /languages,
    /health, and a page at / to try it."""
    from mtkit.cli import render
    from mtkit.config import validate_labelled
    from mtkit.config_io import option_name

    try:
        import uvicorn  # noqa: F401 (the serve extra is installed)

        from mtkit.serving import server
        from mtkit.serving.workers import ModelSpec
    except ImportError as e:
        raise UserError(f"mtkit serve needs the serve extra: pip install 'mtkit[serve]' ({e.name} is missing)") from None

    cfg = DecodeConfig(**{key: value for key, value in settings.items() if value is not None})
    validate_labelled(cfg, {f"decode.{key}": option_name(key) for key in SERVE_OPTIONS})
    for name, value, low in (("--max-chars", max_chars, 1), ("--max-queue", max_queue, 1), ("--max-batch", max_batch, 1),
                             ("--batch-wait-ms", batch_wait_ms, 0), ("--port", port, 0), ("--workers", workers, 0),
                             ("--timeout", timeout, 0.001), ("--max-connections", max_connections, 0)):
        if value < low or (name == "--port" and value > 65535):
            raise UserError(f"{name} must be {'in 0..65535' if name == '--port' else f'at least {low}'}, got {value}")
    if api_key is None and os.environ.get("MTKIT_API_KEY") is not None:  # click reads an empty variable as unset
        api_key = os.environ["MTKIT_API_KEY"]
    if api_key is not None and not api_key.strip():
        raise UserError("--api-key (or MTKIT_API_KEY) is empty: give a key, or leave both unset to serve without one")
    origins = _cors_origins(cors_origins)
    refs = tuple(ModelRef.parse(m, checkpoint) for m in models)
    for ref in refs:
        ModelDir(ref.path).require("run", "converted")
    source, target = _languages(ModelDir(refs[0].path), source_lang, target_lang)
    if api_key is None and not server.is_loopback(host):
        render.print_warning(f"--host {host} serves other machines, and no --api-key is set: anyone who can reach "
                             "it can use it")
    spec = server.ServerSettings(ModelSpec(refs, device, precision), cfg, source, target, host, port,
                                 api_key, max_chars, max_queue, max_batch, batch_wait_ms / 1000, workers, timeout,
                                 max_connections, origins)

    def started(s: server.Started) -> None:
        render.print_info(f"serving {' + '.join(models)} ({source} -> {target}; {s.processes} model process"
                          f"{'es' * (s.processes > 1)} x {s.threads} thread{'s' * (s.threads > 1)}) on {s.url} "
                          "(POST /translate, /detect, GET /languages, /health, and / in a browser)")
        work_begins()

    stats = server.serve(spec, started, _request_log(quiet))
    render.print_info(f"stopped after {stats.requests:,} requests ({stats.sentences:,} sentences)")


def _cors_origins(given: list[str]) -> tuple[str, ...]:
    """--cors-origin values: * (any), none (no CORS headers at all), or origins (scheme://host[:port])."""
    if "none" in given:
        if len(given) > 1:
            raise UserError("--cors-origin none cannot be given with other origins")
        return ()
    for origin in given:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise UserError(f"--cors-origin: {origin!r} is not an origin (e.g. https://example.org, *, or none)")
    return tuple(given)


def _request_log(quiet: bool):
    """Where the app writes its line per request: stderr, or nowhere."""
    from mtkit.cli import render

    if quiet:
        return lambda line: None
    console = render.stderr_console()
    return lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False)


def _languages(model: ModelDir, source: str | None, target: str | None) -> tuple[str, str]:
    """The model's languages: given, or read from the training files' names (train.en, train.de)."""
    guessed = model.languages()
    source, target = source or guessed[0], target or guessed[1]
    if source is None or target is None:
        raise UserError(f"{model}: its languages are unknown (its training files' names do not say): give "
                        "--source-lang and --target-lang, e.g. --source-lang en --target-lang de")
    for name, code in (("--source-lang", source), ("--target-lang", target)):
        if not LANG_RE.fullmatch(code):
            raise UserError(f"{name}: {code!r} is not a language code (e.g. en, de, pt-BR)")
    return source, target
