"""Blocks -> chunks that fit the embedding model's window, with deterministic ids.

How chunks are built (token counts use the embedding model's own tokenizer):

1. Blocks are grouped into sections; a ``Title`` block starts a section and is its heading.
2. A section that fits in ``chunk_size`` tokens (heading included) is one unit. A longer one is
   split by LangChain's ``RecursiveCharacterTextSplitter`` (paragraphs, lines, sentences, words),
   with ``chunk_overlap`` tokens of overlap, and **every piece is prefixed with the heading**.
   So no chunk is a bare title (LangChain's splitter alone emits one whenever a titled document
   is longer than one chunk), and each piece keeps its context. Title-like lines that
   unstructured left as prose (a plain-text title, a short line before a long paragraph) are
   treated the same way: leading ones join the heading, later ones lead the piece after them.
3. Consecutive whole sections are packed together while they fit, so short sections do not
   become tiny chunks.

The length of a text is ``max(tokens, characters / 12)``: ordinary prose is ~4-5 characters a
token so the token count rules, but a run of characters the tokenizer maps to one ``[UNK]`` can
never make a giant chunk.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from rag_ops.identity import chunk_id_for, text_hash
from rag_ops.parse import Block

MAX_HEADING_TOKENS = 48
CHARS_PER_TOKEN_CAP = 12
LONG_WORD = re.compile(r"\S{200,}")
NOT_HEADINGS = frozenset({"ListItem", "Table", "PageBreak", "Formula", "CodeSnippet"})
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    source_uri: str
    seq: int
    text: str
    text_hash: str
    page: int | None
    section: str | None
    tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Unit:
    text: str
    tokens: int
    page: int | None
    section: str | None
    whole: bool  # a whole section (may be packed with neighbours) or a split piece


class Chunker:
    """Token-aware chunker bound to one tokenizer and one (size, overlap) setting."""

    def __init__(self, tokenizer, chunk_size: int, chunk_overlap: int, fingerprint: str, *, model_path: str | None = None):
        """``tokenizer``: a transformers tokenizer; or None with ``model_path``, whose
        ``tokenizer.json`` is then read directly (the transformers tokenizer is loaded only if
        :attr:`tokenizer` is asked for)."""
        self._tokenizer = tokenizer
        self._model_path = model_path
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.fingerprint = fingerprint
        self._splitters: dict[int, object] = {}  # one LangChain splitter per token budget
        # lengths measured while chunking one document: LangChain's splitter measures every
        # piece twice (when splitting and when merging); half the tokenizer calls on SciFact
        self._lengths: dict[str, int] = {}
        self._backend = None
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # a private copy of the Rust tokenizer without the padding/truncation it was saved with
            self._backend = Tokenizer.from_str(backend.to_str())
        elif tokenizer is None:
            if model_path is None:
                raise ValueError("Chunker needs a tokenizer or a model_path")
            # the model's own tokenizer.json, without importing transformers (and torch): the
            # prepare helper process only chunks, and starts faster and smaller this way
            self._backend = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        if self._backend is not None:
            self._backend.no_padding()
            self._backend.no_truncation()
        self._fast = hasattr(self._backend, "encode_batch_fast")  # tokenizers >= 0.20

    @property
    def tokenizer(self):
        """The model's transformers tokenizer (loaded on first use when built from a path)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._model_path)
        return self._tokenizer

    # ------------------------------------------------------------------ lengths
    def length(self, text: str) -> int:
        """Tokens the model will see (no special tokens), guarded by a character cap."""
        if not text:
            return 0
        n = self._lengths.get(text)
        if n is None:
            if len(self._lengths) > 50_000:  # only called outside chunk_document: stay bounded
                self._lengths.clear()
            n = self._lengths[text] = max(self._n_tokens(text), math.ceil(len(text) / CHARS_PER_TOKEN_CAP))
        return n

    def _n_tokens(self, text: str) -> int:
        # the Rust tokenizer directly: the transformers wrapper costs a third more per call, and
        # the splitter measures thousands of candidate pieces per document. encode_batch_fast
        # skips the offsets (same ids; 45% less time per call measured on SciFact sentences).
        if self._backend is not None:
            if self._fast:
                return len(self._backend.encode_batch_fast([text], add_special_tokens=False)[0].ids)
            return len(self._backend.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

    def _splitter(self, budget: int):
        if budget in self._splitters:
            return self._splitters[budget]
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self._splitters[budget] = RecursiveCharacterTextSplitter(
            chunk_size=budget,
            chunk_overlap=min(self.chunk_overlap, budget // 2),
            length_function=self.length,
            separators=SEPARATORS,
            keep_separator="end",
            strip_whitespace=True,
        )
        return self._splitters[budget]

    def _heading(self, heading: str | None) -> tuple[str, int]:
        """The heading as it prefixes each piece: at most a quarter of a chunk (and 48 tokens)."""
        if not heading:
            return "", 0
        cap = self._heading_cap
        n = self.length(heading)
        if n > cap:
            words = heading.split()
            while words and self.length(" ".join(words) + " …") > cap:
                words = words[: max(1, len(words) * 3 // 4)] if len(words) > 1 else []
            heading = (" ".join(words) + " …") if words else ""
            n = self.length(heading)
        return heading, n

    # ------------------------------------------------------------------ chunking
    def chunk_document(self, doc_id: str, source_uri: str, blocks: list[Block]) -> list[Chunk]:
        """Chunks of one document, in reading order, with ids from content.

        Args:
            doc_id: the document's id (``identity.doc_id_for``).
            source_uri: where it came from; stored with each chunk.
            blocks: cleaned blocks.

        Returns:
            A possibly empty list; the same input always yields the same chunks and ids.
        """
        try:
            packed = self._pack(self._units(blocks))
        finally:
            self._lengths.clear()
        chunks = []
        for seq, u in enumerate(packed):
            chunks.append(
                Chunk(
                    chunk_id=chunk_id_for(doc_id, seq, u.text, self.fingerprint),
                    doc_id=doc_id,
                    source_uri=source_uri,
                    seq=seq,
                    text=u.text,
                    text_hash=text_hash(u.text),
                    page=u.page,
                    section=u.section,
                    tokens=u.tokens,
                )
            )
        return chunks

    def _sections(self, blocks: list[Block]) -> list[tuple[str | None, list[Block]]]:
        sections: list[tuple[str | None, list[Block]]] = []
        pending: list[str] = []  # headings with no body yet (e.g. a chapter title before 1.1)
        heading: str | None = None
        body: list[Block] = []
        for b in blocks:
            if b.kind == "Title":
                if body:
                    sections.append((heading, body))
                    body, pending = [], []
                pending.append(b.text)
                if len(pending) > 1 and self.length("\n".join(pending)) > self._heading_cap:
                    # a run of title-like lines too long to prefix a chunk (a list of short lines
                    # unstructured calls titles) is text of the document, not a heading: cut to
                    # a heading's size it would lose all but its first lines
                    sections.append((None, [Block(text="\n".join(pending[:-1]), kind="Title")]))
                    pending = pending[-1:]
                heading = "\n".join(pending)
            else:
                body.append(b)
        if body:
            sections.append((heading, body))
        elif heading:  # trailing headings with no body are still text of the document
            sections.append((None, [Block(text=heading, kind="Title")]))
        return sections

    def _units(self, blocks: list[Block]) -> list[_Unit]:
        units: list[_Unit] = []
        for heading_raw, body_blocks in self._sections(blocks):
            page = next((b.page for b in body_blocks if b.page is not None), None)
            body = "\n\n".join(LONG_WORD.sub(_break_long_word, b.text) for b in body_blocks)
            heading, _ = self._heading(heading_raw)
            whole = (heading + "\n" if heading else "") + body
            n = self.length(whole)
            if n <= self.chunk_size:
                section = heading_raw.split("\n")[-1] if heading_raw else None
                units.append(_Unit(whole, n, page, section, whole=True))
                continue
            heading_raw, body_blocks = self._promote_title_lines(heading_raw, body_blocks)
            units.extend(self._split_section(heading_raw, body_blocks, page))
        return units

    @property
    def _heading_cap(self) -> int:
        return min(MAX_HEADING_TOKENS, self.chunk_size // 4)

    def _title_line(self, block: Block, limit: int | None = None) -> bool:
        """A block that reads like a heading: one line of at most ``limit`` tokens (a heading's
        cap by default) that is not a list item or a table (unstructured may call a heading prose)."""
        text = block.text.strip()
        limit = self._heading_cap if limit is None else limit
        return block.kind not in NOT_HEADINGS and "\n" not in text and self.length(text) <= limit

    def _promote_title_lines(self, heading_raw: str | None, body: list[Block]) -> tuple[str | None, list[Block]]:
        """Leading title-like lines of a section too long for one chunk join its heading, so they
        prefix every piece instead of becoming a chunk of their own (a plain-text title line, or
        a subtitle under a recognised title)."""
        while len(body) > 1 and self._title_line(body[0]):
            promoted = f"{heading_raw}\n{body[0].text.strip()}" if heading_raw else body[0].text.strip()
            if self.length(promoted) > self._heading_cap:
                break
            heading_raw, body = promoted, body[1:]
        return heading_raw, body

    def _split_section(self, heading_raw: str | None, body_blocks: list[Block], page: int | None) -> list[_Unit]:
        heading, h_tokens = self._heading(heading_raw)
        section = heading_raw.split("\n")[-1] if heading_raw else None
        body = "\n\n".join(LONG_WORD.sub(_break_long_word, b.text) for b in body_blocks)
        prefix = heading + "\n" if heading else ""
        # the heading takes at most a quarter of the chunk, so the budget stays >= 3/4 of it
        budget = self.chunk_size - h_tokens
        page_at = _page_locator(body_blocks)
        pieces = self._splitter(budget).split_text(body)
        lines = {b.text.strip() for b in body_blocks if self._title_line(b, self.chunk_size // 2)}
        units: list[_Unit] = []
        start = 0
        carry = ""  # a short piece (an unrecognised sub-heading) waiting to lead the next piece
        for i, piece in enumerate(pieces):
            # pieces come in order and may overlap: search from just after the previous start
            found = body.find(piece, start)
            start = found if found >= 0 else start
            at = page_at(start) or page
            start += 1
            # only a whole one-line block is carried (a sub-heading, or a title too long to be a
            # heading), never a short sentence piece; the next piece keeps at least a quarter chunk
            if i + 1 < len(pieces) and piece.strip() in lines and self.length(carry + piece) <= self.chunk_size // 2:
                carry = f"{carry}{piece}\n"
                continue
            if carry and self.length(prefix + carry + piece) > self.chunk_size:
                # the carried line leads each part of the piece, as a heading would
                sub = self._splitter(budget - self.length(carry)).split_text(piece)
                units.extend(_Unit(prefix + carry + p, self.length(prefix + carry + p), at, section, whole=False) for p in sub)
            else:
                text = prefix + carry + piece
                units.append(_Unit(text, self.length(text), at, section, whole=False))
            carry = ""
        return units

    def _pack(self, units: list[_Unit]) -> list[_Unit]:
        packed: list[_Unit] = []
        for u in units:
            last = packed[-1] if packed else None
            if last and last.whole and u.whole and last.tokens + u.tokens <= self.chunk_size:
                text = last.text + "\n\n" + u.text
                packed[-1] = _Unit(text, self.length(text), last.page, last.section, whole=True)
            else:
                packed.append(u)
        return packed


def _break_long_word(match: re.Match[str]) -> str:
    word = match.group(0)
    return " ".join(word[i : i + 100] for i in range(0, len(word), 100))


def _page_locator(blocks: list[Block]) -> Callable[[int], int | None]:
    """Map a character offset in the section body (blocks joined by blank lines) to its page."""
    starts, pages, offset = [], [], 0
    for b in blocks:
        starts.append(offset)
        pages.append(b.page)
        offset += len(LONG_WORD.sub(_break_long_word, b.text)) + 2  # the "\n\n" joiner

    def locate(start: int) -> int | None:
        i = bisect.bisect_right(starts, max(start, 0)) - 1
        return pages[i] if i >= 0 else None

    return locate


@lru_cache(maxsize=4)
def load_tokenizer(model_path: str):
    """The model's fast tokenizer, offline (once per process and path)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, local_files_only=True)


def make_chunker(settings, tokenizer=None) -> Chunker:
    """A chunker for the settings: the model's ``tokenizer.json`` when it has one, else its
    transformers tokenizer (also when one is given)."""
    path = settings.model_path
    if tokenizer is None and not (Path(path) / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(path)
    return Chunker(tokenizer, settings.chunk_size, settings.chunk_overlap, settings.chunker_fingerprint, model_path=path)
