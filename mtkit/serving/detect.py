"""Which language a text is in: py3langid (langid.py's model, shipped inside the package, ~100
languages; nothing is downloaded), loaded once, on first use, in the server's HTTP process.

    detect(text)   [(code, probability)], most likely first

Short texts give flat distributions (a two-word greeting rarely reaches 0.5 for any language),
so a caller that acts on a detection asks for a high probability (SURE).
"""

from __future__ import annotations

import functools
import threading

SURE = 0.9  # a detection acted upon (refusing text in another language) needs this probability


@functools.cache
def _lock() -> threading.Lock:
    return threading.Lock()


@functools.cache
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        from mtkit.errors import UserError

        raise UserError("language detection needs py3langid: pip install 'mtkit[serve]'") from None
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect(text: str, top: int | None = 3) -> list[tuple[str, float]]:
    """The `top` most likely languages of text (None: all it knows) with their probabilities
    (0..1), most likely first."""
    with _lock():  # the identifier is loaded once (about a second) and is not documented as thread-safe
        ranked = _identifier().rank(text)
    return [(code, float(p)) for code, p in ranked[:top]]
