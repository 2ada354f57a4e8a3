"""The HTTP application: LibreTranslate's API over a Batcher (Starlette; served by uvicorn).

    POST /translate   q (a string or a list of strings), source, target, format, alternatives,
                      api_key; as JSON or as form fields. Answers {"translatedText": ...} in the
                      shape of q, plus "alternatives" when asked (and "detectedLanguage" for auto)
    POST /detect      q: [{"language", "confidence"}] (confidence in percent), most likely first
    GET  /languages   [{"code", "name", "targets"}]
    GET  /health      {"status": "ok", ...}
    GET  /            a page to try the model

Each text is cut into sentences (mtkit.data.sentences), which are translated in the same batches
as every other request's, and put back together with the text's own whitespace and line breaks.
The API key may come as a field or in the query string, as LibreTranslate reads it. Every origin
may call the API from a browser unless the server is told otherwise (CORS, preflight included).

Errors are {"error": "..."} with LibreTranslate's status codes: 400 a bad request, 403 a bad or
missing API key, 408 a body that does not arrive in time, 413 too large, 429 overloaded, 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mtkit.data.sentences import Segments, split
from mtkit.inference.types import Translation, joined
from mtkit.serving import detect
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
    cors_origins: tuple[str, ...] = ("*",)  # origins whose pages may call the API (none: no CORS headers)
    max_positions: int = 0  # the model's longest source, eos included (for the log's notice of a cut sentence)

    @property
    def max_body(self) -> int:
        """Bytes of a request's body: max_chars characters at their longest encoding (a character
        outside the BMP written as two JSON escapes, \\uXXXX\\uXXXX, or as %XX four times in a
        form: 12 bytes) and room for the other fields."""
        return 12 * self.max_chars + 16_384


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # text from a request may not encode
        super().__init__(message)
        self.status, self.message = status, message


def create_app(batcher: Batcher, options: ServeOptions, log: Callable[[str], None] = lambda line: None) -> Starlette:
    async def translate(request: Request) -> Response:
        started, sentences, notes = time.monotonic(), 0, ""
        response: Response
        try:
            fields = await _fields(request, options)
            _check_key(fields, request, options)
            texts, as_list = _texts(fields, options)
            nbest = 1 + _alternatives(fields, options)
            detected = await _detected(texts, options) if fields["source"] == "auto" else None
            segmented = [split(text, options.source) for text in texts]
            todo = [sentence for segments in segmented for sentence in segments.sentences]
            sentences = len(todo)
            if len(todo) > batcher.max_queue:
                raise ApiError(413, f"Request too large: {len(todo):,} sentences (at most {batcher.max_queue:,})")
            try:
                done = await batcher.translate(todo, nbest) if todo else []
            except Overloaded as e:
                raise ApiError(429, f"Slowdown: the server is busy ({e}); try again shortly") from None
            if cut := sum(t.truncated for t in done):
                notes = f" ({cut} sentence(s) longer than the model's {options.max_positions - 1} tokens were cut)"
            response = _answer(segmented, iter(done), as_list, nbest, detected)
            status = 200
        except ApiError as e:
            response, status = JSONResponse({"error": e.message}, status_code=e.status), e.status
        except ClientDisconnect:
            response, status = Response(status_code=499), 499
        except Exception as e:  # the model failed: this request gets a 500, the server goes on
            message = ApiError(500, f"translation failed: {type(e).__name__}: {e}").message
            response, status = JSONResponse({"error": message}, 500), 500
        log(f"{request.method} {request.url.path} {status} {sentences} {1000 * (time.monotonic() - started):.1f}ms{notes}")
        return response

    async def detect_languages(request: Request) -> Response:
        started = time.monotonic()
        response: Response
        try:
            fields = await _fields(request, options)
            _check_key(fields, request, options)
            texts, as_list = _q(fields, options)
            found = [[{"language": code, "confidence": round(100 * p, 2)} for code, p in ranked]
                     for ranked in await asyncio.to_thread(lambda: [detect.detect(t) for t in texts])]
            response, status = JSONResponse(found if as_list else found[0]), 200
        except ApiError as e:
            response, status = JSONResponse({"error": e.message}, status_code=e.status), e.status
        except ClientDisconnect:
            response, status = Response(status_code=499), 499
        log(f"{request.method} {request.url.path} {status} {1000 * (time.monotonic() - started):.1f}ms")
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

    routes = [Route("/translate", translate, methods=["POST"]), Route("/detect", detect_languages, methods=["POST"]),
              Route("/languages", languages, methods=["GET", "POST"]), Route("/health", health, methods=["GET"]),
              Route("/", page, methods=["GET"])]
    middleware = [Middleware(CORSMiddleware, allow_origins=list(options.cors_origins), allow_methods=["GET", "POST"],
                             allow_headers=["*"], max_age=600)] if options.cors_origins else []
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})


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
    except RecursionError:
        raise ApiError(400, "Invalid request: the JSON is nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ApiError(400, f"Invalid request: malformed JSON ({e})") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "Invalid request: expected a JSON object with q, source and target")
    return fields


async def _body(request: Request, options: ServeOptions) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > options.max_body:  # answered at once; the rest of the body is
        # read and discarded after the answer (mtkit.serving.server: a lingering close)
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


def _check_key(fields: dict, request: Request, options: ServeOptions) -> None:
    """The API key, from the fields or the query string, compared in constant time."""
    if options.api_key is None:
        return
    given = fields.get("api_key", request.query_params.get("api_key"))
    if not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                                             options.api_key.encode("utf-8")):
        raise ApiError(403, "Invalid API key")


def _unicode(value: str, name: str) -> str:
    """value, refused when it holds what no encoder takes (a lone surrogate escape, valid JSON)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"Invalid request: {name} is not valid Unicode (a lone surrogate at character "
                            f"{e.start + 1})") from None
    return value


def _q(fields: dict, options: ServeOptions) -> tuple[list[str], bool]:
    """q as a list of texts, and whether it was one; each text valid Unicode, all within max_chars."""
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise ApiError(400, "Invalid request: missing q parameter")
    as_list = isinstance(q, list)
    texts = q if as_list else [q]
    if not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    chars = sum(len(t) for t in texts)
    if chars > options.max_chars:
        raise ApiError(413, f"Request too large: {chars:,} characters (at most {options.max_chars:,} per request)")
    for k, text in enumerate(texts):
        _unicode(text, f"q[{k}]" if as_list else "q")
    return texts, as_list


def _texts(fields: dict, options: ServeOptions) -> tuple[list[str], bool]:
    """q as a list, and whether it was one; every other field checked."""
    texts, as_list = _q(fields, options)
    for name in ("source", "target"):
        if not isinstance(fields.get(name), str) or not fields[name]:
            raise ApiError(400, f"Invalid request: missing {name} parameter")
        _unicode(fields[name], name)
    if (fields["source"] not in (options.source, "auto")) or fields["target"] != options.target:
        raise ApiError(400, f"{fields['source']} -> {fields['target']} is not supported: this server translates "
                            f"{options.source} -> {options.target}")
    if fields.get("format", "text") not in ("text", "html"):
        raise ApiError(400, f"Invalid request: format must be text, got {fields.get('format')!r}")
    if fields.get("format") == "html":
        raise ApiError(400, "format html is not supported: send the text without markup (format text)")
    return texts, as_list


async def _detected(texts: list[str], options: ServeOptions) -> list[dict]:
    """source "auto": each text's detected language, which must be the model's source language
    unless the detection is unsure; text sure to be in another language is refused (400)."""
    found = []
    for ranked in await asyncio.to_thread(lambda: [detect.detect(t, top=None) for t in texts]):
        code, p = ranked[0]
        if code != options.source and p >= detect.SURE:
            raise ApiError(400, f"the text is in {NAMES.get(code, code)} ({code}, confidence {100 * p:.0f}%): this "
                                f"server translates {options.source} -> {options.target}")
        mine = next((q for c, q in ranked if c == options.source), 0.0)
        found.append({"confidence": round(100 * mine, 2), "language": options.source})
    return found


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


def _answer(segmented: list[Segments], done: Iterator[Translation], as_list: bool, nbest: int,
            detected: list[dict] | None) -> JSONResponse:
    """Each text's translation, its sentences' translations put back in place, in q's shape."""
    texts = [joined(segments, [next(done) for _ in segments.sentences], nbest) for segments in segmented]
    best = [t.text for t in texts]
    answer: dict = {"translatedText": best if as_list else best[0]}
    if nbest > 1:
        alternatives = [[text for text, _ in t.nbest[1:]] for t in texts]
        answer["alternatives"] = alternatives if as_list else alternatives[0]
    if detected is not None:
        answer["detectedLanguage"] = detected if as_list else detected[0]
    return JSONResponse(answer)
