"""Serving: `mtkit serve` behind LibreTranslate's HTTP API. Imports inference, data and config.

    server.py    the server's life: the socket, the model's processes, HTTP in a thread, signals,
                 and the guards on connections (header timeout, a bound, lingering close)
    workers.py   the model's processes: each loads the model once and translates one batch at a time
    batcher.py   requests that arrive together translated in batches, a feeding thread per worker
                 (the event loop never waits for the model); a bounded queue (429 beyond)
    app.py       the HTTP application (Starlette): /translate, /detect, /languages, /health, /, CORS
    detect.py    which language a text is in (py3langid)
    page.py      the page at /: a form and a few lines of JavaScript
"""
