"""The HTTP application: LibreTranslate's API over a Batcher (Starlette; served by uvicorn).

    POST /translate   q (a string or a list of strings), source, target, format, alternatives,
                      api_key; as JSON or as form fields. Answers {"translatedText": ...} in the
                      shape of q, plus "alternatives" when asked (and "detectedLanguage" for auto)
    GET  /languages   [{"code", "name", "targets"}]
    GET  /health      {"status": "ok", ...}
    GET  /            a page to try the model

Errors are {"error": "..."} with LibreTranslate's status codes: 400 a bad request, 403 a bad or
missing API key, 408 a body that does not arrive in time, 413 too large, 429 overloaded, 500.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mtkit.serving.batcher import Batcher, Overloaded
from mtkit.serving.page import PAGE

NAMES = {"ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
         "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French", "hi": "Hindi", "hu": "Hungarian",
         "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
         "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
         "uk": "Ukrainian", "zh": "Chinese"}


@dataclass(frozen=True)
class ServeOptions:
    source: str  # the model's source language code
    target: str
    api_key: str | None = None
    max_chars: int = 20_000  # characters of q per request
    max_alternatives: int = 0  # beam - 1
    read_timeout: float = 30.0  # seconds for a request's body to arrive

    @property
    def max_body(self) -> int:
        """Bytes of a request's body: max_chars characters written as JSON escapes (\\uXXXX, 6
        bytes each, 12 for a surrogate pair: 6 bytes a character on average at worst) and room for
        the other fields."""
        return 6 * self.max_chars + 16_384


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(batcher: Batcher, options: ServeOptions, log: Callable[[str], None] = lambda line: None) -> Starlette:
    async def translate(request: Request) -> Response:
        started, sentences = time.monotonic(), 0
        response: Response
        try:
            fields = await _fields(request, options)
            texts, as_list = _texts(fields, options)
            nbest = 1 + _alternatives(fields, options)
            lines = [line for text in texts for line in text.split("\n")]
            sentences = len(lines)
            todo = [line for line in lines if line.strip()]
            if len(todo) > batcher.max_queue:
                raise ApiError(413, f"Request too large: {len(todo):,} sentences (at most {batcher.max_queue:,})")
            try:
                done = iter(await batcher.translate(todo, nbest)) if todo else iter(())
            except Overloaded as e:
                raise ApiError(429, f"Slowdown: the server is busy ({e}); try again shortly") from None
            response = _answer(texts, done, as_list, nbest, fields.get("source") == "auto", options)
            status = 200
        except ApiError as e:
            response, status = JSONResponse({"error": e.message}, status_code=e.status), e.status
        except ClientDisconnect:
            response, status = Response(status_code=499), 499
        except Exception as e:  # the model failed: this request gets a 500, the server goes on
            response, status = JSONResponse({"error": f"translation failed: {type(e).__name__}: {e}"}, 500), 500
        log(f"{request.method} {request.url.path} {status} {sentences} {1000 * (time.monotonic() - started):.1f}ms")
        return response

    async def languages(request: Request) -> Response:
        return JSONResponse([{"code": options.source, "name": NAMES.get(options.source, options.source),
                              "targets": [options.target]},
                             {"code": options.target, "name": NAMES.get(options.target, options.target),
                              "targets": []}])

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "source": options.source, "target": options.target,
                             "queued_sentences": batcher.queued, "batches": batcher.stats.batches,
                             "sentences": batcher.stats.sentences})

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.replace("{{SOURCE}}", options.source).replace("{{TARGET}}", options.target)
                            .replace("{{KEY}}", "true" if options.api_key else "false"))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    routes = [Route("/translate", translate, methods=["POST"]), Route("/languages", languages, methods=["GET", "POST"]),
              Route("/health", health, methods=["GET"]), Route("/", page, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


# ----------------------------------------------------------------------------- reading a request
async def _fields(request: Request, options: ServeOptions) -> dict:
    """The request's fields: a JSON object, or form fields (urlencoded or multipart)."""
    body = await _body(request, options)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            return await _multipart(request, body)
        text = body.decode("utf-8")
        if kind == "application/x-www-form-urlencoded" or (kind != "application/json" and "=" in text and
                                                             not text.lstrip().startswith("{")):
            return _form_fields(parse_qs(text, keep_blank_values=True).items())
        fields = json.loads(text) if text.strip() else {}
    except UnicodeDecodeError as e:
        raise ApiError(400, f"Invalid request: the body is not UTF-8 (byte {e.start + 1})") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"Invalid request: malformed JSON ({e.msg} at character {e.pos + 1})") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "Invalid request: expected a JSON object with q, source and target")
    return fields


async def _body(request: Request, options: ServeOptions) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > options.max_body:
        raise ApiError(413, f"Request too large: {int(declared):,} bytes (at most {options.max_body:,})")
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > options.max_body:
                raise ApiError(413, f"Request too large: over {options.max_body:,} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), options.read_timeout)
    except TimeoutError:
        raise ApiError(408, f"Request timeout: the body did not arrive within {options.read_timeout:g} s") from None
    return b"".join(chunks)


async def _multipart(request: Request, body: bytes) -> dict:
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as e:  # python-multipart's parse errors
        raise ApiError(400, f"Invalid request: malformed form data ({e})") from None
    values: dict[str, list] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise ApiError(400, f"Invalid request: {key} must be text, not a file")
        values.setdefault(key, []).append(value)
    return _form_fields(values.items())


def _form_fields(items) -> dict:
    """Form fields as JSON would give them: a field given once is a string, one repeated a list."""
    return {key: values[0] if len(values) == 1 else values for key, values in items}


def _texts(fields: dict, options: ServeOptions) -> tuple[list[str], bool]:
    """q as a list, and whether it was one; every other field checked."""
    if options.api_key is not None and fields.get("api_key") != options.api_key:
        raise ApiError(403, "Invalid API key")
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise ApiError(400, "Invalid request: missing q parameter")
    as_list = isinstance(q, list)
    texts = q if as_list else [q]
    if not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    for name in ("source", "target"):
        if not isinstance(fields.get(name), str) or not fields[name]:
            raise ApiError(400, f"Invalid request: missing {name} parameter")
    if (fields["source"] not in (options.source, "auto")) or fields["target"] != options.target:
        raise ApiError(400, f"{fields['source']} -> {fields['target']} is not supported: this server translates "
                            f"{options.source} -> {options.target}")
    if fields.get("format", "text") not in ("text", "html"):
        raise ApiError(400, f"Invalid request: format must be text, got {fields.get('format')!r}")
    if fields.get("format") == "html":
        raise ApiError(400, "format html is not supported: send the text without markup (format text)")
    chars = sum(len(t) for t in texts)
    if chars > options.max_chars:
        raise ApiError(413, f"Request too large: {chars:,} characters (at most {options.max_chars:,} per request)")
    return texts, as_list


def _alternatives(fields: dict, options: ServeOptions) -> int:
    value = fields.get("alternatives", 0)
    try:
        n = int(value)
        if isinstance(value, float | bool) or str(n) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid request: alternatives must be a whole number, got {value!r}") from None
    if not 0 <= n <= options.max_alternatives:
        raise ApiError(400, f"Invalid request: alternatives must be between 0 and {options.max_alternatives} "
                            "(the beam size - 1)")
    return n


def _answer(texts: list[str], done, as_list: bool, nbest: int, auto: bool,
            options: ServeOptions) -> JSONResponse:
    """Each text's translation, line by line (blank lines stay blank), in q's shape."""
    best, alternatives = [], []
    for text in texts:
        rows = []
        for line in text.split("\n"):
            t = next(done) if line.strip() else None
            hyps = [h for h, _ in t.nbest] if t is not None and t.nbest else [t.text if t else ""]
            rows.append(hyps + [hyps[-1]] * (nbest - len(hyps)))
        best.append("\n".join(r[0] for r in rows))
        alternatives.append(["\n".join(r[k] for r in rows) for k in range(1, nbest)])
    answer: dict = {"translatedText": best if as_list else best[0]}
    if nbest > 1:
        answer["alternatives"] = alternatives if as_list else alternatives[0]
    if auto:
        detected = {"confidence": 100.0, "language": options.source}
        answer["detectedLanguage"] = [detected] * len(texts) if as_list else detected
    return JSONResponse(answer)
