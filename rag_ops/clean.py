"""Small pure cleaning functions, composed in two lists.

``TEXT_CLEANERS`` map one text to another; ``BLOCK_CLEANERS`` map a document's block list to a
shorter one. ``clean_blocks`` applies the text cleaners to each block, then the block cleaners in
order. To add a rule, write a pure function and append it to the right list.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import replace
from typing import Callable

from rag_ops.parse import Block

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_PDF_CID = re.compile(r"\(cid:\d+\)")
_PAGE_NUMBER = re.compile(
    r"^(?:page\s*)?[-–—(\[]?\s*\d{1,4}\s*[-–—)\]]?(?:\s*(?:of|/)\s*\d{1,4})?$", re.IGNORECASE
)


def normalize_unicode(text: str) -> str:
    """NFKC (ligatures, full-width forms, compatibility characters) and no zero-width chars."""
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)


def drop_pdf_cid_codes(text: str) -> str:
    """Remove ``(cid:127)``-style codes pdfminer emits for glyphs it cannot map (bullets, dingbats)."""
    return _PDF_CID.sub(" ", text)


def normalize_whitespace(text: str) -> str:
    """Drop control characters, fold runs of spaces, trim lines, keep at most one blank line."""
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def drop_empty(blocks: list[Block]) -> list[Block]:
    """Remove blocks with no letters or digits at all (rules, bullets, stray punctuation)."""
    return [b for b in blocks if any(ch.isalnum() for ch in b.text)]


def drop_page_numbers(blocks: list[Block]) -> list[Block]:
    """Remove blocks that are only a page number ("3", "- 3 -", "Page 3 of 10")."""
    return [b for b in blocks if not _PAGE_NUMBER.match(b.text)]


def drop_repeated_headers_footers(blocks: list[Block]) -> list[Block]:
    """Remove short lines repeated on most pages of a multi-page document (running heads).

    A line counts when it is at most 120 characters (digits ignored, so "Page 3" and "Page 4"
    are the same line) and appears on at least 3 pages and on at least half of the pages.
    """
    pages = {b.page for b in blocks if b.page is not None}
    if len(pages) < 3:
        return blocks
    seen: dict[str, set[int]] = defaultdict(set)
    for b in blocks:
        if b.page is not None and len(b.text) <= 120:
            seen[_line_key(b.text)].add(b.page)
    repeated = {k for k, on in seen.items() if len(on) >= 3 and len(on) * 2 >= len(pages)}
    if not repeated:
        return blocks
    return [b for b in blocks if b.page is None or len(b.text) > 120 or _line_key(b.text) not in repeated]


def drop_consecutive_duplicates(blocks: list[Block]) -> list[Block]:
    """Remove a block identical to the one just before it (a parser artefact)."""
    out: list[Block] = []
    for b in blocks:
        if out and out[-1].text == b.text:
            continue
        out.append(b)
    return out


def _line_key(text: str) -> str:
    return re.sub(r"\d+", "#", text.casefold()).strip()


TEXT_CLEANERS: list[Callable[[str], str]] = [normalize_unicode, drop_pdf_cid_codes, normalize_whitespace]
BLOCK_CLEANERS: list[Callable[[list[Block]], list[Block]]] = [
    drop_empty,
    drop_page_numbers,
    drop_repeated_headers_footers,
    drop_consecutive_duplicates,
]


def clean_text(text: str) -> str:
    """Apply every text cleaner in order."""
    for fn in TEXT_CLEANERS:
        text = fn(text)
    return text


def clean_blocks(blocks: list[Block]) -> list[Block]:
    """Clean each block's text (and its section title), then filter the block list.

    Returns:
        A new list; the input is not modified.
    """
    cleaned = [
        replace(b, text=clean_text(b.text), section=clean_text(b.section) if b.section else b.section)
        for b in blocks
    ]
    for fn in BLOCK_CLEANERS:
        cleaned = fn(cleaned)
    return cleaned
