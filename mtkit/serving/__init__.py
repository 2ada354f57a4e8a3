"""Serving: `mtkit serve` behind LibreTranslate's HTTP API. Imports inference, data and config.

    batcher.py   requests that arrive together translated in one batched search, in a thread of
                 its own (the event loop never waits for the model); a bounded queue (429 beyond)
    app.py       the HTTP application (Starlette): /translate, /languages, /health, the page at /
    page.py      the page at /: a form and a few lines of JavaScript
"""
