"""Text as a user sends it (paragraphs, line breaks, stray control characters) cut into the
sentences a model translates, and put back together around their translations.

    segments = split(text, "en")            the text as gaps and sentences, alternately
    segments.sentences                      what to translate
    segments.join(translations)             the translations with the text's own whitespace,
                                            line breaks and spacing between sentences

A text is first cut at line breaks (\\n, \\r\\n, \\r, U+2028, U+2029 and the other breaks
str.splitlines knows), then each line into sentences by sentencex (Wikimedia's splitter: rules
for ~250 languages with fallbacks between related ones, abbreviation lists, no model to load,
microseconds a sentence; pySBD, the other candidate, covers 22 languages and has not had a
release since 2021). Whatever surrounds a sentence (spaces, tabs, line breaks) is kept as it was;
a stretch holding no letter, digit, punctuation or symbol (only whitespace and control or format
characters) is not a sentence: it is kept as a gap, its control characters dropped, so that it
gets no invented translation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from mtkit.errors import UserError

# Line boundaries as str.splitlines sees them, \r\n first so that it stays one break.
LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


@dataclass(frozen=True)
class Segments:
    """A text as gaps and sentences, alternately: parts[0] is a gap (perhaps empty), then a
    sentence, a gap, ..., ending with a gap; joined, the parts give the text back (without the
    control characters of gaps)."""

    parts: tuple[str, ...]

    @property
    def sentences(self) -> list[str]:
        return list(self.parts[1::2])

    def join(self, translations: Iterable[str]) -> str:
        """The text with each sentence replaced by its translation, in order."""
        out, done = [self.parts[0]], iter(translations)
        for k in range(1, len(self.parts), 2):
            out.append(next(done))
            out.append(self.parts[k + 1])
        return "".join(out)


def has_content(text: str) -> bool:
    """Whether text holds anything to translate: a letter, mark, digit, punctuation or symbol
    (not only whitespace and control, format or unassigned characters)."""
    return any(unicodedata.category(c)[0] in "LMNPS" for c in text)


def _gap(text: str) -> str:
    """A gap as it is kept: whitespace stays, control and format characters go."""
    return "".join(c for c in text if c.isspace() or unicodedata.category(c)[0] != "C")


def split(text: str, language: str | None = None, sentences: bool = True) -> Segments:
    """The text as gaps and sentences (see the module docstring). With sentences=False only line
    breaks cut it: each line's content is one segment."""
    parts: list[str] = [""]
    position = 0
    for brk in LINE_BREAK.finditer(text):
        _add_line(parts, text[position:brk.start()], language, sentences)
        parts[-1] += brk.group()
        position = brk.end()
    _add_line(parts, text[position:], language, sentences)
    return Segments(tuple(parts))


def _add_line(parts: list[str], line: str, language: str | None, sentences: bool) -> None:
    """Append a line's gaps and sentences to parts (whose last entry is a gap)."""
    pieces = _sentence_pieces(line, language) if sentences and has_content(line) else [line]
    for piece in pieces:
        core = piece.strip()
        if not has_content(core):
            parts[-1] += _gap(piece)
            continue
        lead = piece[:len(piece) - len(piece.lstrip())]
        trail = piece[len(piece.rstrip()):]
        parts[-1] += _gap(lead)
        parts.extend((core, _gap(trail)))


def _sentence_pieces(line: str, language: str | None) -> list[str]:
    """The line cut into sentences, each with the whitespace around it (joined they give the line)."""
    try:
        import sentencex
    except ImportError:
        raise UserError("splitting text into sentences needs sentencex: pip install 'mtkit[sentences]' "
                        "(the serve extra includes it)") from None
    pieces = list(sentencex.segment(language or "en", line))
    if "".join(pieces) != line:  # a splitter that changed the text: keep the line whole rather than lose any of it
        return [line]
    return pieces
